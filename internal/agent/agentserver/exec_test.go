package agentserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
	"banger/internal/guestcontract"
)

// transports returns a client per real transport, each to its own
// in-process server.
func transports(t *testing.T) map[string]*agentclient.Client {
	t.Helper()
	out := map[string]*agentclient.Client{}

	out["unix"] = agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)

	srv := testServer(t)
	gl := agenttest.NewChanListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, gl) }()
	t.Cleanup(func() { cancel(); <-done })
	out["vsock"] = agentclient.NewClient(agentclient.NewVsockDialer(agenttest.FakeFirecracker(t, map[uint32]*agenttest.ChanListener{guestcontract.AgentVsockPort: gl}), guestcontract.AgentVsockPort), agenttest.Token)

	path, _ := agenttest.YamuxGuest(t, testServer(t))
	out["serial"] = agentclient.NewClient(agentclient.NewSerialDialer(path), agenttest.Token)
	for _, c := range out {
		t.Cleanup(func() { c.Close() })
	}
	return out
}

func TestClient_Exec(t *testing.T) {
	big := 10 << 20
	stdin := bytes.Repeat([]byte("stdin-data\n"), 300000) // 3.3 MB
	stdinSum := fmt.Sprintf("%x", sha256.Sum256(stdin))
	dir := t.TempDir()
	tests := []struct {
		name       string
		req        agent.ExecRequest
		stdin      []byte
		wantCode   int
		wantSig    string
		wantStdout string
		wantStderr string
		check      func(t *testing.T, stdout []byte)
	}{
		{
			name:       "stdout stderr and exit code",
			req:        agent.ExecRequest{Argv: []string{"sh", "-c", "printf out; printf err >&2; exit 3"}},
			wantCode:   3,
			wantStdout: "out",
			wantStderr: "err",
		},
		{
			name:       "success",
			req:        agent.ExecRequest{Argv: []string{"true"}},
			wantStdout: "",
		},
		{
			name:       "env and working directory",
			req:        agent.ExecRequest{Argv: []string{"sh", "-c", `printf '%s %s %s' "$FOO" "$PWD" "$HOME"`}, Env: []string{"FOO=bar baz", "HOME=/h"}, Dir: dir},
			wantStdout: "bar baz " + dir + " /h",
		},
		{
			name: "10 MiB to stdout",
			req:  agent.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("yes 0123456789abcdef | head -c %d", big)}},
			check: func(t *testing.T, out []byte) {
				if len(out) != big {
					t.Fatalf("stdout %d bytes, want %d", len(out), big)
				}
				want := bytes.Repeat([]byte("0123456789abcdef\n"), big/17+1)[:big]
				if !bytes.Equal(out, want) {
					t.Fatal("stdout content differs")
				}
			},
		},
		{
			name:       "stdin read to EOF",
			req:        agent.ExecRequest{Argv: []string{"sh", "-c", "sha256sum | cut -d' ' -f1"}},
			stdin:      stdin,
			wantStdout: stdinSum + "\n",
		},
		{
			name:       "no stdin means EOF",
			req:        agent.ExecRequest{Argv: []string{"wc", "-c"}},
			wantStdout: "0\n",
		},
		{
			name:       "killed by a signal",
			req:        agent.ExecRequest{Argv: []string{"sh", "-c", "kill -KILL $$"}},
			wantCode:   137,
			wantSig:    "SIGKILL",
			wantStdout: "",
		},
		{
			name:       "pty window size",
			req:        agent.ExecRequest{Argv: []string{"stty", "size"}, TTY: true, Cols: 123, Rows: 45},
			wantStdout: "45 123\r\n",
		},
		{
			name:       "pty is a terminal with TERM",
			req:        agent.ExecRequest{Argv: []string{"sh", "-c", `test -t 0 && test -t 1 && printf "$TERM"`}, TTY: true},
			wantStdout: "xterm-256color",
		},
	}
	for tname, c := range transports(t) {
		for _, tt := range tests {
			t.Run(tname+"/"+tt.name, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				var in io.Reader
				if tt.stdin != nil {
					in = bytes.NewReader(tt.stdin)
				}
				st, err := c.Exec(agenttest.CtxTimeout(t, 60*time.Second), tt.req, agentclient.ExecIO{Stdin: in, Stdout: &stdout, Stderr: &stderr})
				if err != nil {
					t.Fatal(err)
				}
				if st.Code != tt.wantCode || st.Signal != tt.wantSig {
					t.Fatalf("status %+v, want code %d signal %q", st, tt.wantCode, tt.wantSig)
				}
				if tt.check != nil {
					tt.check(t, stdout.Bytes())
				} else if stdout.String() != tt.wantStdout {
					t.Fatalf("stdout %q, want %q", stdout.String(), tt.wantStdout)
				}
				if stderr.String() != tt.wantStderr {
					t.Fatalf("stderr %q, want %q", stderr.String(), tt.wantStderr)
				}
			})
		}
	}
}

// lineWatcher is an io.Writer that reports when a line appears.
type lineWatcher struct {
	buf  bytes.Buffer
	want string
	seen chan struct{}
	done bool
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, seen: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func TestClient_ExecSignals(t *testing.T) {
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)
	defer c.Close()

	t.Run("forwarded signal", func(t *testing.T) {
		out := newLineWatcher("ready")
		sigs := make(chan string, 1)
		go func() { <-out.seen; sigs <- "INT" }()
		st, err := c.Exec(agenttest.CtxTimeout(t, 30*time.Second), agent.ExecRequest{
			Argv: []string{"sh", "-c", `trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done`},
		}, agentclient.ExecIO{Stdout: out, Signal: sigs})
		if err != nil {
			t.Fatal(err)
		}
		if st.Code != 7 || !strings.Contains(out.buf.String(), "got-int") {
			t.Fatalf("status %+v, stdout %q", st, out.buf.String())
		}
	})

	t.Run("pty resize", func(t *testing.T) {
		out := newLineWatcher("start")
		resize := make(chan [2]uint16, 1)
		go func() { <-out.seen; resize <- [2]uint16{100, 50} }()
		st, err := c.Exec(agenttest.CtxTimeout(t, 30*time.Second), agent.ExecRequest{
			Argv: []string{"sh", "-c", `echo start; while :; do s=$(stty size); if [ "$s" = "50 100" ]; then echo "resized $s"; exit 0; fi; sleep 0.05; done`},
			TTY:  true, Cols: 80, Rows: 24,
		}, agentclient.ExecIO{Stdout: out, Resize: resize})
		if err != nil {
			t.Fatal(err)
		}
		if st.Code != 0 || !strings.Contains(out.buf.String(), "resized 50 100") {
			t.Fatalf("status %+v, stdout %q", st, out.buf.String())
		}
	})

	t.Run("cancel sends SIGTERM", func(t *testing.T) {
		out := newLineWatcher("ready")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { <-out.seen; cancel() }()
		st, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", "echo ready; exec sleep 100"}}, agentclient.ExecIO{Stdout: out})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if st.Signal != "SIGTERM" || st.Code != 143 {
			t.Fatalf("status %+v, want SIGTERM", st)
		}
	})

	t.Run("cancel kills a command ignoring SIGTERM", func(t *testing.T) {
		kc := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)
		kc.KillGrace = 300 * time.Millisecond
		defer kc.Close()
		out := newLineWatcher("\n")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { <-out.seen; cancel() }()
		_, err := kc.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", `trap '' TERM; echo $$; while :; do sleep 0.05; done`}}, agentclient.ExecIO{Stdout: out})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		pid, perr := strconv.Atoi(strings.TrimSpace(out.buf.String()))
		if perr != nil {
			t.Fatalf("pid line %q", out.buf.String())
		}
		// The agent SIGKILLs the group once the connection drops.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				break
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %d still alive after the connection dropped", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("interactive stdin", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		out := newLineWatcher("echo:hello")
		errc := make(chan error, 1)
		var st agent.ExitStatus
		go func() {
			var err error
			st, err = c.Exec(agenttest.CtxTimeout(t, 30*time.Second), agent.ExecRequest{Argv: []string{"sh", "-c", `while read l; do echo "echo:$l"; done; exit 4`}}, agentclient.ExecIO{Stdin: pr, Stdout: out})
			errc <- err
		}()
		fmt.Fprintln(pw, "hello")
		<-out.seen
		pw.Close()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if st.Code != 4 {
			t.Fatalf("status %+v", st)
		}
	})
}

func TestClient_ExecErrors(t *testing.T) {
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)
	defer c.Close()
	tests := []struct {
		name     string
		req      agent.ExecRequest
		wantCode string
		wantMsg  string
	}{
		{"command not found", agent.ExecRequest{Argv: []string{"no-such-command-xyz"}}, agent.CodeCommandNotFound, "no-such-command-xyz: command not found"},
		{"missing dir", agent.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, agent.CodeNoWorkingDir, "working directory /no/such/dir does not exist"},
		{"bad env", agent.ExecRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, agent.CodeBadRequest, "want KEY=VALUE"},
		{"PATH from the request", agent.ExecRequest{Argv: []string{"sh"}, Env: []string{"PATH=/nonexistent"}}, agent.CodeCommandNotFound, "sh: command not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Exec(agenttest.CtxTimeout(t, 10*time.Second), tt.req, agentclient.ExecIO{})
			if !agentclient.IsCode(err, tt.wantCode) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want code %s and %q", err, tt.wantCode, tt.wantMsg)
			}
		})
	}
	if _, err := c.Exec(context.Background(), agent.ExecRequest{}, agentclient.ExecIO{}); err == nil {
		t.Fatal("empty argv accepted")
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		err  bool
	}{
		{"TERM", syscall.SIGTERM, false},
		{"SIGINT", syscall.SIGINT, false},
		{"hup", syscall.SIGHUP, false},
		{"9", syscall.SIGKILL, false},
		{"0", 0, true},
		{"NOPE", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := parseSignal(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseSignal(%q) = %v, %v", tt.in, got, err)
		}
	}
}
