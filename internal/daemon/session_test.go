package daemon

import (
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/store"
)

func TestReconcileSession(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	code := 7
	running := store.Session{VMID: "v", Name: "s1", Command: []string{"sh"}, State: store.SessionRunning, CreatedAt: t0}
	starting := running
	starting.State = store.SessionStarting
	exited := running
	exited.State, exited.ExitCode = store.SessionExited, &code
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
		{"guest agent restarted", running, view(true, true, lost), api.SessionLost, 42, nil, store.SessionExited, true, nil},
		{"guest forgot it", running, view(true, true), api.SessionLost, 0, nil, store.SessionExited, true, nil},
		{"vm stopped", running, view(false, false), api.SessionLost, 0, nil, store.SessionExited, true, nil},
		{"agent unreachable", running, view(false, true), api.SessionUnknown, 0, nil, store.SessionRunning, false, nil},
		{"launch interrupted", starting, view(true, true), api.SessionFailed, 0, nil, store.SessionFailed, true, nil},
		{"exited stays exited", exited, view(true, true), api.SessionExited, 0, ptr(7), store.SessionExited, false, ptr(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, upd, changed := reconcileSession(tt.rec, tt.g)
			if s.State != tt.apiState || s.PID != tt.pid || !equalExit(s.ExitCode, tt.exit) {
				t.Errorf("api: state %s pid %d exit %v; want %s %d %v", s.State, s.PID, s.ExitCode, tt.apiState, tt.pid, tt.exit)
			}
			if upd.State != tt.storeSt || changed != tt.changed || !equalExit(upd.ExitCode, tt.storeExit) {
				t.Errorf("store: state %s changed %v exit %v; want %s %v %v", upd.State, changed, upd.ExitCode, tt.storeSt, tt.changed, tt.storeExit)
			}
			if s.Name != "s1" || len(s.Command) != 1 {
				t.Errorf("metadata lost: %+v", s)
			}
		})
	}
	// A record marked lost reads back as lost.
	_, upd, _ := reconcileSession(running, view(true, true))
	if s, _, changed := reconcileSession(upd, view(true, true)); s.State != api.SessionLost || changed {
		t.Errorf("stored lost session: %s changed %v", s.State, changed)
	}
}

func ptr(i int) *int { return &i }

func TestParseStatus(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		out  string
		want api.WorkspaceStatus
		err  bool
	}{
		{out: "missing\n", want: api.WorkspaceStatus{Path: "/root/repo"}},
		{out: "git\n" + sha + "\nmain\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: true, Head: sha, Branch: "main"}},
		{out: "git\n\n\n?? new.txt\n M README\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: true, Dirty: true, Changes: "?? new.txt\n M README"}},
		{out: "plain\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true}},
		{out: "plain\nfile\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Dirty: true, Changes: "file"}},
		{out: "git\n", err: true},
		{out: "", err: true},
	}
	for _, tt := range tests {
		got, err := parseStatus(tt.out)
		if (err != nil) != tt.err || (!tt.err && got != tt.want) {
			t.Errorf("parseStatus(%q) = %+v, %v; want %+v", tt.out, got, err, tt.want)
		}
	}
}

func TestPickSessionName(t *testing.T) {
	recs := []store.Session{{Name: "s1"}, {Name: "agent"}}
	guest := map[string]agent.SessionInfo{"s2": {}}
	if got := pickSessionName(recs, guest); got != "s3" {
		t.Errorf("pickSessionName = %s, want s3", got)
	}
}
