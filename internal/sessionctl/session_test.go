package sessionctl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/store"
)

func TestPickName(t *testing.T) {
	tests := []struct {
		recs  []store.Session
		guest map[string]agent.SessionInfo
		want  string
	}{
		{nil, nil, "s1"},
		{[]store.Session{{Name: "s1"}, {Name: "agent"}}, map[string]agent.SessionInfo{"s2": {}}, "s3"},
		{[]store.Session{{Name: "s2"}}, nil, "s1"},
		{nil, map[string]agent.SessionInfo{"s1": {}, "s3": {}}, "s2"},
	}
	for _, tt := range tests {
		if got := pickName(tt.recs, tt.guest); got != tt.want {
			t.Errorf("pickName(%v, %v) = %s, want %s", tt.recs, tt.guest, got, tt.want)
		}
	}
}

func TestManager_Start(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	vm, g := h.addVM(t, "box", true)

	s, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"sleep", "9"}, Env: []string{"A=1", "B=2"}, PTY: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "s1" || s.State != api.SessionRunning || s.PID == 0 || s.Cwd != "/root" || !s.PTY {
		t.Errorf("first start = %+v", s)
	}
	rec := h.session(t, vm, "s1")
	if rec.State != store.SessionRunning || rec.Cwd != "/root" || strings.Join(rec.EnvNames, ",") != "A,B" {
		t.Errorf("stored = %+v", rec)
	}
	// The guest holds a session the store does not: the next name skips it.
	g.sessions["s2"] = agent.SessionInfo{Name: "s2", State: agent.SessionRunning}
	if s, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"true"}}); err != nil || s.Name != "s3" {
		t.Errorf("second start = %s, %v; want s3", s.Name, err)
	}
	// A running name is a conflict and the guest is not asked.
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Name: "s1", Argv: []string{"true"}}); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("start of a running name: %v, want conflict", err)
	}
	// An ended session of the same name is replaced.
	g.mu.Lock()
	g.exitLocked("s1", agent.ExitStatus{Code: 0})
	g.mu.Unlock()
	if _, err := h.m.List(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if s, err := h.m.Start(ctx, "box", api.StartSessionRequest{Name: "s1", Argv: []string{"again"}}); err != nil || s.State != api.SessionRunning || s.Command[0] != "again" {
		t.Errorf("restart of an ended name = %+v, %v", s, err)
	}

	// Requests refused before the guest is asked.
	for _, req := range []api.StartSessionRequest{
		{},
		{Argv: []string{""}},
		{Name: "-x", Argv: []string{"true"}},
		{Name: strings.Repeat("a", 65), Argv: []string{"true"}},
		{Argv: []string{"true"}, Env: []string{"NOEQUALS"}},
		{Argv: []string{"true"}, Env: []string{"=v"}},
	} {
		if _, err := h.m.Start(ctx, "box", req); api.CodeOf(err) != api.CodeInvalid {
			t.Errorf("Start(%+v) = %v, want invalid", req, err)
		}
	}
	// A stopped VM: the agent lookup's error, as it came.
	h.addVM(t, "off", false)
	if _, err := h.m.Start(ctx, "off", api.StartSessionRequest{Argv: []string{"true"}}); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("start in a stopped vm: %v, want conflict", err)
	}
}

// TestManager_StartRefused: the agent's error code, never its message,
// decides the diagnostics and the API code, and the refusal is recorded.
func TestManager_StartRefused(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     api.Code
		wantDiag string
	}{
		{"command not found", apiErr(http.StatusNotFound, agent.CodeCommandNotFound, "nope: command not found"), api.CodeInvalid, `command "nope" not found in the guest (nope: command not found)`},
		{"no working dir", apiErr(http.StatusBadRequest, agent.CodeNoWorkingDir, "working directory /x does not exist"), api.CodeInvalid, "cwd: working directory /x does not exist in the guest"},
		// An agent that predates no_working_dir: still the user's mistake.
		{"old agent's working dir", apiErr(http.StatusBadRequest, agent.CodeBadRequest, "working directory /x does not exist"), api.CodeInvalid, "working directory /x does not exist"},
		// The code decides, whatever the text says.
		{"working dir words, other code", apiErr(http.StatusInternalServerError, agent.CodeInternal, "working directory: disk on fire"), api.CodeUnavailable, "working directory: disk on fire"},
		{"conflict", apiErr(http.StatusConflict, agent.CodeConflict, "session s1 is already running"), api.CodeConflict, "session s1 is already running"},
		{"transport", errors.New("connection reset"), api.CodeUnavailable, "guest agent: connection reset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			h := newHarness(t, Options{})
			vm, g := h.addVM(t, "box", true)
			g.startErr = tt.err
			_, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"nope"}, Cwd: "/x"})
			if api.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.wantDiag) {
				t.Errorf("err = %v (%s), want %s with %q", err, api.CodeOf(err), tt.code, tt.wantDiag)
			}
			rec := h.session(t, vm, "s1")
			if rec.State != store.SessionFailed || rec.Diagnostics != tt.wantDiag {
				t.Errorf("stored %s %q, want failed %q", rec.State, rec.Diagnostics, tt.wantDiag)
			}
		})
	}
}

func TestManager_Stop(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	vm, g := h.addVM(t, "box", true)
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"sleep", "9"}}); err != nil {
		t.Fatal(err)
	}
	g.exitAfter = 3 // still running for three more looks
	s, err := h.m.Stop(ctx, "box", "s1", api.StopSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != api.SessionExited || s.ExitCode == nil || *s.ExitCode != 143 || s.Signal != "SIGTERM" {
		t.Errorf("Stop = %+v; want exited 143 by SIGTERM", s)
	}
	if strings.Join(g.signals, ",") != "TERM" {
		t.Errorf("signals sent = %v, want TERM", g.signals)
	}
	if rec := h.session(t, vm, "s1"); rec.State != store.SessionExited || rec.ExitCode == nil || *rec.ExitCode != 143 {
		t.Errorf("stored after stop: %+v", rec)
	}
	// Stopping what already ended reports it.
	if s, err := h.m.Stop(ctx, "box", "s1", api.StopSessionRequest{Signal: "KILL"}); err != nil || s.State != api.SessionExited {
		t.Errorf("second stop = %s, %v; want exited", s.State, err)
	}
	if _, err := h.m.Stop(ctx, "box", "ghost", api.StopSessionRequest{}); api.CodeOf(err) != api.CodeNotFound {
		t.Errorf("stop of an unknown session: %v, want not found", err)
	}
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Name: "s2", Argv: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Stop(ctx, "box", "s2", api.StopSessionRequest{Signal: "NOPE"}); api.CodeOf(err) != api.CodeInvalid {
		t.Errorf("stop with a bad signal: %v, want invalid", err)
	}
}

// TestManager_StopWaitRunsOut: a session that ignores the signal is
// returned running once the wait is over.
func TestManager_StopWaitRunsOut(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(4 * time.Second) // every look is 4 s later
		return now
	}
	ctx := ctxT(t)
	h := newHarness(t, Options{Now: clock})
	_, g := h.addVM(t, "box", true)
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"stubborn"}}); err != nil {
		t.Fatal(err)
	}
	g.exitAfter = -1
	s, err := h.m.Stop(ctx, "box", "s1", api.StopSessionRequest{WaitSeconds: 10})
	if err != nil || s.State != api.SessionRunning {
		t.Fatalf("Stop = %s, %v; want running after the wait", s.State, err)
	}
}

func TestManager_Attach(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	vm, g := h.addVM(t, "box", true)
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"build"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Attach(ctx, "box", "ghost", 0); api.CodeOf(err) != api.CodeNotFound {
		t.Errorf("attach to an unknown session: %v, want not found", err)
	}
	if _, err := h.m.Attach(ctx, "box", "s1", -1); api.CodeOf(err) != api.CodeInvalid {
		t.Errorf("negative replay: %v, want invalid", err)
	}

	// Detach: the caller's context ends; the session keeps running.
	g.attachBlock = true
	a, err := h.m.Attach(ctx, "box", "s1", 0)
	if err != nil {
		t.Fatal(err)
	}
	dctx, detach := context.WithCancel(ctx)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		_, err := a.Run(dctx, agentclient.ExecIO{Stdout: &out})
		done <- err
	}()
	detach()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("detached Run = %v, want context.Canceled", err)
	}
	if rec := h.session(t, vm, "s1"); rec.State != store.SessionRunning {
		t.Errorf("after detach stored %s, want running", rec.State)
	}

	// The session exits while attached: its status is recorded before
	// Run returns.
	g.mu.Lock()
	g.attachBlock, g.attachOut = false, "done\n"
	g.mu.Unlock()
	a, err = h.m.Attach(ctx, "box", "s1", 64)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	st, err := a.Run(ctx, agentclient.ExecIO{Stdout: &out})
	if err != nil || st.Code != 3 {
		t.Fatalf("Run = %+v, %v; want exit 3", st, err)
	}
	if out.String() != "replay=64 done\n" {
		t.Errorf("output %q", out.String())
	}
	if rec := h.session(t, vm, "s1"); rec.State != store.SessionExited || rec.ExitCode == nil || *rec.ExitCode != 3 {
		t.Errorf("after exit stored %+v, want exited 3", rec)
	}
}

func TestManager_RemoveAndLogs(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	vm, g := h.addVM(t, "box", true)
	if _, err := h.m.Start(ctx, "box", api.StartSessionRequest{Argv: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	rc, err := h.m.Logs(ctx, "box", "s1", false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "log of s1" {
		t.Errorf("logs %q", b)
	}
	if _, err := h.m.Logs(ctx, "box", "ghost", false); api.CodeOf(err) != api.CodeNotFound {
		t.Errorf("logs of an unknown session: %v, want not found", err)
	}
	if err := h.m.Remove(ctx, "box", "s1"); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("remove of a running session: %v, want conflict", err)
	}
	g.mu.Lock()
	g.exitLocked("s1", agent.ExitStatus{})
	g.mu.Unlock()
	if err := h.m.Remove(ctx, "box", "s1"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(g.removed, ",") != "s1" {
		t.Errorf("guest removed %v, want s1", g.removed)
	}
	if _, err := h.st.GetSession(ctx, vm.ID, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record after remove: %v", err)
	}
	// A lost session is removed from the store alone.
	if err := h.st.CreateSession(ctx, store.Session{VMID: vm.ID, Name: "old", Command: []string{"x"}, State: store.SessionLost}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Remove(ctx, "box", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.GetSession(ctx, vm.ID, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lost record after remove: %v", err)
	}
}
