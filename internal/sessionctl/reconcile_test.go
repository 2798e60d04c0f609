package sessionctl

import (
	"context"
	"errors"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/store"
)

func ptr(i int) *int { return &i }

func TestReconcile(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	running := store.Session{VMID: "v", Name: "s1", Command: []string{"sh"}, State: store.SessionRunning, CreatedAt: t0}
	starting := running
	starting.State = store.SessionStarting
	exited := running
	exited.State, exited.ExitCode = store.SessionExited, ptr(7)
	lostRec := running
	lostRec.State, lostRec.Diagnostics = store.SessionLost, lostDiagnostics
	failed := running
	failed.State, failed.Diagnostics = store.SessionFailed, "cwd: nope"
	live := agent.SessionInfo{Name: "s1", PID: 42, State: agent.SessionRunning, StartedAt: t0.Add(time.Second), Dir: "/root/repo"}
	ended := live
	ended.State, ended.Exit = agent.SessionExited, &agent.ExitStatus{Code: 143, Signal: "SIGTERM"}
	lost := live
	lost.State = agent.SessionLost
	view := func(reachable, running bool, infos ...agent.SessionInfo) guestView {
		g := guestView{reachable: reachable, vmRunning: running, sessions: map[string]agent.SessionInfo{}}
		for _, i := range infos {
			g.sessions[i.Name] = i
		}
		return g
	}
	tests := []struct {
		name      string
		rec       store.Session
		g         guestView
		apiState  string
		pid       int
		exit      *int
		storeSt   string
		changed   bool
		storeExit *int
	}{
		{"running and running", running, view(true, true, live), api.SessionRunning, 42, nil, store.SessionRunning, true, nil},
		{"guest saw it exit", running, view(true, true, ended), api.SessionExited, 42, ptr(143), store.SessionExited, true, ptr(143)},
		{"guest agent restarted", running, view(true, true, lost), api.SessionLost, 42, nil, store.SessionLost, true, nil},
		{"guest forgot it", running, view(true, true), api.SessionLost, 0, nil, store.SessionLost, true, nil},
		{"guest forgot a start", starting, view(false, false), api.SessionLost, 0, nil, store.SessionLost, true, nil},
		{"vm stopped", running, view(false, false), api.SessionLost, 0, nil, store.SessionLost, true, nil},
		{"agent unreachable", running, view(false, true), api.SessionUnknown, 0, nil, store.SessionRunning, false, nil},
		{"launch interrupted", starting, view(true, true), api.SessionFailed, 0, nil, store.SessionFailed, true, nil},
		{"exited stays exited", exited, view(true, true), api.SessionExited, 0, ptr(7), store.SessionExited, false, ptr(7)},
		{"lost stays lost", lostRec, view(true, true), api.SessionLost, 0, nil, store.SessionLost, false, nil},
		{"lost stays lost, vm stopped", lostRec, view(false, false), api.SessionLost, 0, nil, store.SessionLost, false, nil},
		{"lost, guest says lost", lostRec, view(true, true, lost), api.SessionLost, 42, nil, store.SessionLost, true, nil},
		{"failed stays failed", failed, view(true, true), api.SessionFailed, 0, nil, store.SessionFailed, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, upd, changed := reconcile(tt.rec, tt.g)
			if s.State != tt.apiState || s.PID != tt.pid || !equalExit(s.ExitCode, tt.exit) {
				t.Errorf("api: state %s pid %d exit %v; want %s %d %v", s.State, s.PID, s.ExitCode, tt.apiState, tt.pid, tt.exit)
			}
			if upd.State != tt.storeSt || changed != tt.changed || !equalExit(upd.ExitCode, tt.storeExit) {
				t.Errorf("store: state %s changed %v exit %v; want %s %v %v", upd.State, changed, upd.ExitCode, tt.storeSt, tt.changed, tt.storeExit)
			}
			if upd.State == store.SessionLost && upd.Diagnostics != lostDiagnostics {
				t.Errorf("lost record diagnostics %q, want %q", upd.Diagnostics, lostDiagnostics)
			}
			if s.Name != "s1" || len(s.Command) != 1 {
				t.Errorf("metadata lost: %+v", s)
			}
		})
	}
	// A record marked lost reads back as lost and stays unchanged.
	_, upd, _ := reconcile(running, view(true, true))
	if s, _, changed := reconcile(upd, view(true, true)); s.State != api.SessionLost || changed || s.Diagnostics != lostDiagnostics {
		t.Errorf("stored lost session: %s %q changed %v", s.State, s.Diagnostics, changed)
	}
}

// TestManager_ListReconciles drives the state machine through the store:
// what List reports is what the next List reads back.
func TestManager_ListReconciles(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	vm, g := h.addVM(t, "box", true)
	for _, name := range []string{"kept", "forgotten"} {
		if err := h.st.CreateSession(ctx, store.Session{VMID: vm.ID, Name: name, Command: []string{"sleep", "9"}, State: store.SessionRunning}); err != nil {
			t.Fatal(err)
		}
	}
	g.sessions["kept"] = agent.SessionInfo{Name: "kept", Argv: []string{"sleep", "9"}, PID: 7, State: agent.SessionRunning, StartedAt: time.Now()}
	// Only the guest knows this one (started before the daemon's record).
	g.sessions["adopted"] = agent.SessionInfo{Name: "adopted", Argv: []string{"top"}, PID: 8, State: agent.SessionRunning, StartedAt: time.Now()}
	list, err := h.m.List(ctx, "box")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range list {
		got[s.Name] = s.State
	}
	want := map[string]string{"kept": api.SessionRunning, "forgotten": api.SessionLost, "adopted": api.SessionRunning}
	for n, st := range want {
		if got[n] != st {
			t.Errorf("session %s: %s, want %s (all: %v)", n, got[n], st, got)
		}
	}
	if rec := h.session(t, vm, "forgotten"); rec.State != store.SessionLost || rec.Diagnostics != lostDiagnostics {
		t.Errorf("forgotten session stored as %s %q, want lost", rec.State, rec.Diagnostics)
	}
	if rec := h.session(t, vm, "adopted"); rec.State != store.SessionRunning || rec.Command[0] != "top" {
		t.Errorf("adopted session stored as %+v", rec)
	}

	// An unreachable agent leaves live sessions unknown and the store as it is.
	g.listErr = errors.New("connection reset")
	s, err := h.m.Get(ctx, "box", "kept")
	if err != nil || s.State != api.SessionUnknown {
		t.Errorf("Get with the agent unreachable = %s, %v; want unknown", s.State, err)
	}
	if rec := h.session(t, vm, "kept"); rec.State != store.SessionRunning {
		t.Errorf("kept stored as %s after an unreachable agent", rec.State)
	}

	// A stopped VM runs nothing: live sessions are lost.
	delete(h.agents.guests, "box")
	s, err = h.m.Get(ctx, "box", "kept")
	if err != nil || s.State != api.SessionLost {
		t.Errorf("Get of a stopped vm's session = %s, %v; want lost", s.State, err)
	}
	if _, err := h.m.Get(ctx, "box", "never"); api.CodeOf(err) != api.CodeNotFound {
		t.Errorf("unknown session: %v, want not found", err)
	}
	if _, err := h.m.List(ctx, "nobox"); err == nil {
		t.Error("List of an unknown vm succeeded")
	}
}

// TestManager_ListKeepsLostAfterRestart: a session stored lost (as
// migration 0004 leaves the old "lost:" rows) is reported lost, with its
// diagnostics free of any prefix.
func TestManager_ListKeepsLostAfterRestart(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, Options{})
	vm, _ := h.addVM(t, "box", true)
	if err := h.st.CreateSession(ctx, store.Session{VMID: vm.ID, Name: "old", Command: []string{"x"}, State: store.SessionLost, Diagnostics: lostDiagnostics}); err != nil {
		t.Fatal(err)
	}
	list, err := h.m.List(ctx, "box")
	if err != nil || len(list) != 1 || list[0].State != api.SessionLost || list[0].Diagnostics != lostDiagnostics || list[0].ExitCode != nil {
		t.Fatalf("List = %+v, %v; want one lost session", list, err)
	}
}
