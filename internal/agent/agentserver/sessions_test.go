package agentserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
	"banger/internal/wait"
)

func sessionServer(t *testing.T, dir string, maxLog int64) *agentclient.Client {
	t.Helper()
	srv := testServer(t)
	ss, err := NewSessions(dir, maxLog)
	if err != nil {
		t.Fatal(err)
	}
	srv.Sessions = ss
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, srv)}, agenttest.Token)
	t.Cleanup(func() { c.Close() })
	return c
}

func waitSession(t *testing.T, c *agentclient.Client, name string, state string) agent.SessionInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.Session(agenttest.CtxTimeout(t, 5*time.Second), name)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still %s, want %s", name, info.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSessions_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	c := sessionServer(t, dir, 0)
	info, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{
		Name: "loop",
		Argv: []string{"sh", "-c", `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.05; done`},
		Env:  []string{"SECRET=hunter2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != agent.SessionRunning || info.PID == 0 || strings.Join(info.EnvNames, ",") != "SECRET" {
		t.Fatalf("started %+v", info)
	}
	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "loop", Argv: []string{"true"}}); !agentclient.IsCode(err, agent.CodeConflict) {
		t.Fatalf("duplicate running name: %v", err)
	}

	// Attach, see output, detach: the session keeps running.
	for round := 0; round < 2; round++ {
		out := newLineWatcher("tick")
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-out.seen; cancel() }()
		_, err := c.AttachSession(ctx, "loop", agentclient.AttachOptions{Replay: 1 << 20}, agentclient.ExecIO{Stdout: out})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: detach err = %v", round, err)
		}
		if got := waitSession(t, c, "loop", agent.SessionRunning); got.PID != info.PID {
			t.Fatalf("round %d: pid changed %d -> %d", round, info.PID, got.PID)
		}
	}

	list, err := c.Sessions(agenttest.CtxTimeout(t, 5*time.Second))
	if err != nil || len(list) != 1 || list[0].Name != "loop" {
		t.Fatalf("list %+v, %v", list, err)
	}

	if err := c.SignalSession(agenttest.CtxTimeout(t, 5*time.Second), "loop", "TERM"); err != nil {
		t.Fatal(err)
	}
	ended := waitSession(t, c, "loop", agent.SessionExited)
	if ended.Exit == nil || ended.Exit.Signal != "SIGTERM" || ended.EndedAt == nil {
		t.Fatalf("ended %+v", ended)
	}
	if err := c.SignalSession(agenttest.CtxTimeout(t, 5*time.Second), "loop", "TERM"); !agentclient.IsCode(err, agent.CodeConflict) {
		t.Fatalf("signal after exit: %v", err)
	}

	// Logs keep the output; attaching to an ended session reports its exit.
	rc, err := c.SessionLogs(agenttest.CtxTimeout(t, 5*time.Second), "loop", false)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.HasPrefix(logs, []byte("tick 0\n")) || int64(len(logs)) != ended.OutputBytes {
		t.Fatalf("logs %d bytes (want %d) starting %q", len(logs), ended.OutputBytes, logs[:min(len(logs), 20)])
	}
	st, err := c.AttachSession(agenttest.CtxTimeout(t, 5*time.Second), "loop", agentclient.AttachOptions{}, agentclient.ExecIO{})
	if err != nil || st.Signal != "SIGTERM" {
		t.Fatalf("attach ended: %+v, %v", st, err)
	}

	// A new agent process over the same state dir still knows it.
	c2 := sessionServer(t, dir, 0)
	again, err := c2.Session(agenttest.CtxTimeout(t, 5*time.Second), "loop")
	if err != nil || again.State != agent.SessionExited || again.Exit == nil || again.Exit.Signal != "SIGTERM" || again.OutputBytes != ended.OutputBytes {
		t.Fatalf("after agent restart: %+v, %v", again, err)
	}

	if err := c.RemoveSession(agenttest.CtxTimeout(t, 5*time.Second), "loop"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Session(agenttest.CtxTimeout(t, 5*time.Second), "loop"); !agentclient.IsCode(err, agent.CodeNotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

func TestSessions_StdinPTYAndFollow(t *testing.T) {
	c := sessionServer(t, t.TempDir(), 0)
	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "rd", Argv: []string{"sh", "-c", `read l; echo "got:$l"; exit 5`}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	st, err := c.AttachSession(agenttest.CtxTimeout(t, 20*time.Second), "rd", agentclient.AttachOptions{}, agentclient.ExecIO{Stdin: strings.NewReader("hi\n"), Stdout: &out})
	if err != nil || st.Code != 5 || !strings.Contains(out.String(), "got:hi") {
		t.Fatalf("stdin session: %+v %v %q", st, err, out.String())
	}

	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "tty", Argv: []string{"sh", "-c", "sleep 0.3; stty size"}, TTY: true, Cols: 99, Rows: 33}); err != nil {
		t.Fatal(err)
	}
	rc, err := c.SessionLogs(agenttest.CtxTimeout(t, 20*time.Second), "tty", true)
	if err != nil {
		t.Fatal(err)
	}
	followed, err := io.ReadAll(rc) // follow ends when the session does
	rc.Close()
	if err != nil || string(followed) != "33 99\r\n" {
		t.Fatalf("followed %q, %v", followed, err)
	}

	for _, tt := range []struct {
		req    agent.SessionRequest
		code   string
		status int
	}{
		{agent.SessionRequest{Argv: []string{"no-such-cmd-q"}}, agent.CodeCommandNotFound, http.StatusNotFound},
		{agent.SessionRequest{Argv: []string{"true"}, Dir: "/no/where"}, agent.CodeNoWorkingDir, http.StatusBadRequest},
		{agent.SessionRequest{Name: "../x", Argv: []string{"true"}}, agent.CodeBadRequest, http.StatusBadRequest},
	} {
		_, err := c.StartSession(agenttest.CtxTimeout(t, 5*time.Second), tt.req)
		var ae *agentclient.APIError
		if !errors.As(err, &ae) || ae.Code != tt.code || ae.Status != tt.status {
			t.Errorf("%+v: err = %v, want %s (%d)", tt.req, err, tt.code, tt.status)
		}
	}
}

func TestSessions_LogRotation(t *testing.T) {
	const maxLog = 64 << 10
	c := sessionServer(t, t.TempDir(), maxLog)
	// 5 * maxLog bytes of numbered lines.
	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "big", Argv: []string{"sh", "-c", "seq 1 60000"}}); err != nil {
		t.Fatal(err)
	}
	info := waitSession(t, c, "big", agent.SessionExited)
	rc, err := c.SessionLogs(agenttest.CtxTimeout(t, 10*time.Second), "big", false)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if info.OutputBytes < 5*maxLog {
		t.Fatalf("output %d bytes, test needs more", info.OutputBytes)
	}
	if len(logs) > 2*maxLog || len(logs) < maxLog/2 {
		t.Fatalf("kept %d bytes, want within (%d, %d]", len(logs), maxLog/2, 2*maxLog)
	}
	if !bytes.HasSuffix(logs, []byte("\n59999\n60000\n")) {
		t.Fatalf("log does not end with the last lines: %q", logs[len(logs)-20:])
	}
}

func TestSessions_LostAfterAgentRestart(t *testing.T) {
	dir := t.TempDir()
	c := sessionServer(t, dir, 0)
	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "sleeper", Argv: []string{"sleep", "30"}}); err != nil {
		t.Fatal(err)
	}
	// Before the temp dir goes: end the session and wait until its last
	// state is on disk, so no write races the removal.
	t.Cleanup(func() {
		if err := c.SignalSession(context.Background(), "sleeper", "KILL"); err != nil {
			t.Error(err)
			return
		}
		meta := filepath.Join(dir, "sleeper", "meta.json")
		err := wait.Until(agenttest.CtxTimeout(t, 20*time.Second), 10*time.Millisecond, func() (bool, error) {
			var info agent.SessionInfo
			b, err := os.ReadFile(meta)
			return err == nil && json.Unmarshal(b, &info) == nil && info.State == agent.SessionExited, nil
		})
		if err != nil {
			t.Errorf("session state never saved as exited: %v", err)
		}
	})
	ss, err := NewSessions(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := ss.get("sleeper")
	if !ok || e.snapshot().State != agent.SessionLost {
		t.Fatalf("reloaded running session: ok=%v %+v", ok, e.snapshot())
	}
}

// TestSessions_AttachSignalPassesUnreadStdin: a session that never reads
// stdin, given more stdin than a pipe holds, still gets the signal sent
// after it.
func TestSessions_AttachSignalPassesUnreadStdin(t *testing.T) {
	c := sessionServer(t, t.TempDir(), 0)
	if _, err := c.StartSession(agenttest.CtxTimeout(t, 10*time.Second), agent.SessionRequest{Name: "deaf",
		Argv: []string{"sh", "-c", `trap 'exit 7' USR1; echo ready; while :; do sleep 0.02; done`}}); err != nil {
		t.Fatal(err)
	}
	// The signal must not reach the shell before its trap is set.
	logs, err := c.SessionLogs(agenttest.CtxTimeout(t, 10*time.Second), "deaf", true)
	if err != nil {
		t.Fatal(err)
	}
	ready := newLineWatcher("ready")
	go io.Copy(ready, logs)
	select {
	case <-ready.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("session never printed ready")
	}
	logs.Close()
	sigs := make(chan string, 1)
	stdin := &signalAfter{n: 512 << 10, after: 256 << 10, fire: func() { sigs <- "USR1" }, stop: make(chan struct{})}
	defer close(stdin.stop)
	st, err := c.AttachSession(agenttest.CtxTimeout(t, 15*time.Second), "deaf", agentclient.AttachOptions{}, agentclient.ExecIO{Stdin: stdin, Signal: sigs})
	if err != nil || st.Code != 7 {
		t.Fatalf("attach: %+v, %v (signal stuck behind stdin?)", st, err)
	}
}

// signalAfter is a stdin of n bytes that calls fire once after bytes
// have been read, then blocks at the end until stop instead of returning
// EOF.
type signalAfter struct {
	n, after, read int
	fire           func()
	fired          bool
	stop           chan struct{}
}

func (s *signalAfter) Read(p []byte) (int, error) {
	if s.read >= s.n {
		<-s.stop // no EOF: the session must end by the signal
		return 0, io.EOF
	}
	k := min(len(p), s.n-s.read)
	for i := range p[:k] {
		p[i] = 'x'
	}
	s.read += k
	if !s.fired && s.read >= s.after {
		s.fired = true
		s.fire()
	}
	return k, nil
}
