package sessionctl

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/store"
)

// Diagnostics the reconcile records.
const (
	// lostDiagnostics says why a session is lost.
	lostDiagnostics = "the guest no longer runs this session (agent restart or VM reboot)"
	// interruptedDiagnostics says why a session that was starting failed.
	interruptedDiagnostics = "launch interrupted before the guest agent started it"
)

// guestView is what the daemon knows about a VM's guest sessions for a
// reconcile.
type guestView struct {
	// reachable says the agent answered; sessions is then its list.
	reachable bool
	// vmRunning says the VM runs (an unreachable agent of a running VM
	// leaves live sessions unknown; a stopped VM has none).
	vmRunning bool
	sessions  map[string]agent.SessionInfo
}

// oneSession is the view of a reachable guest that reported info.
func oneSession(info agent.SessionInfo) guestView {
	return guestView{reachable: true, vmRunning: true, sessions: map[string]agent.SessionInfo{info.Name: info}}
}

// reconcile is the session state machine: it merges a stored session
// with the guest's view and returns the API form and, when the record
// must change to match the guest, the updated record (changed true).
//
//	store \ guest        running   exited          lost / forgotten     unreachable
//	starting, running    running   exited (code)   lost                 unknown (VM runs) / lost (VM stopped)
//	exited, failed, lost what the guest says when it knows the session, else unchanged
//
// A starting session the reachable guest does not know failed: the
// daemon died before the agent launched it.
func reconcile(rec store.Session, g guestView) (api.Session, store.Session, bool) {
	out := api.Session{
		Name: rec.Name, Command: rec.Command, Cwd: rec.Cwd, EnvNames: rec.EnvNames, PTY: rec.PTY,
		State: apiState(rec.State), StartedAt: rec.CreatedAt, ExitCode: rec.ExitCode, Diagnostics: rec.Diagnostics,
	}
	updated := rec
	live := rec.State == store.SessionRunning || rec.State == store.SessionStarting
	markLost := func() {
		out.State = api.SessionLost
		if live {
			updated.State, updated.Diagnostics = store.SessionLost, lostDiagnostics
			out.Diagnostics = updated.Diagnostics
		}
	}
	info, known := g.sessions[rec.Name]
	switch {
	case known:
		out.PID, out.StartedAt, out.EndedAt, out.OutputBytes = info.PID, info.StartedAt, info.EndedAt, info.OutputBytes
		if info.Dir != "" {
			out.Cwd = info.Dir
		}
		switch info.State {
		case agent.SessionRunning:
			out.State = api.SessionRunning
			updated.State = store.SessionRunning
		case agent.SessionExited:
			out.State = api.SessionExited
			updated.State = store.SessionExited
			if info.Exit != nil {
				code := info.Exit.Code
				out.ExitCode, out.Signal = &code, info.Exit.Signal
				updated.ExitCode = &code
			}
		default: // agent.SessionLost, or a state this daemon does not know
			markLost()
		}
		if updated.Cwd == "" && info.Dir != "" {
			updated.Cwd = info.Dir
		}
	case g.reachable && rec.State == store.SessionStarting:
		out.State = api.SessionFailed
		updated.State, updated.Diagnostics = store.SessionFailed, interruptedDiagnostics
		out.Diagnostics = updated.Diagnostics
	case (g.reachable || !g.vmRunning) && live:
		markLost()
	case live:
		out.State = api.SessionUnknown
	}
	changed := updated.State != rec.State || updated.Diagnostics != rec.Diagnostics || updated.Cwd != rec.Cwd ||
		!equalExit(updated.ExitCode, rec.ExitCode)
	return out, updated, changed
}

// apiState is the API name of a stored state.
func apiState(s string) string {
	switch s {
	case store.SessionStarting:
		return api.SessionStarting
	case store.SessionRunning:
		return api.SessionRunning
	case store.SessionExited:
		return api.SessionExited
	case store.SessionFailed:
		return api.SessionFailed
	case store.SessionLost:
		return api.SessionLost
	}
	return api.SessionUnknown
}

func equalExit(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// view asks VM ref's agent for its sessions. An unreachable agent is not
// an error: the view says so. The returned Guest is nil when the VM does
// not run.
func (m *Manager) view(ctx context.Context, ref string) (store.VM, Guest, guestView, error) {
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil && vm.ID == "" {
		return vm, nil, guestView{}, err
	}
	g := guestView{vmRunning: err == nil, sessions: map[string]agent.SessionInfo{}}
	if err != nil {
		return vm, nil, g, nil
	}
	actx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
	defer cancel()
	list, lerr := c.Sessions(actx)
	if lerr != nil {
		m.log.Warn("list guest sessions", logKeyVM, vm.Name, logKeyErr, lerr)
		return vm, c, g, nil
	}
	g.reachable = true
	for _, s := range list {
		g.sessions[s.Name] = s
	}
	return vm, c, g, nil
}

// reconcileAll merges the VM's stored sessions with the guest's, writing
// back what changed and adopting sessions only the guest knows.
func (m *Manager) reconcileAll(ctx context.Context, vm store.VM, g guestView) ([]api.Session, error) {
	recs, err := m.opt.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := make([]api.Session, 0, len(recs))
	for _, rec := range recs {
		seen[rec.Name] = true
		s, err := m.reconcileOne(ctx, vm, rec, g)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	for name, info := range g.sessions {
		if seen[name] {
			continue
		}
		rec := store.Session{VMID: vm.ID, Name: name, Command: info.Argv, Cwd: info.Dir, EnvNames: info.EnvNames,
			PTY: info.TTY, State: store.SessionRunning, CreatedAt: info.StartedAt}
		if len(rec.Command) == 0 {
			rec.Command = []string{"?"}
		}
		if err := m.opt.Store.CreateSession(ctx, rec); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		s, err := m.reconcileOne(ctx, vm, rec, g)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b api.Session) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

// reconcileOne reconciles one record and writes back what changed.
func (m *Manager) reconcileOne(ctx context.Context, vm store.VM, rec store.Session, g guestView) (api.Session, error) {
	s, updated, changed := reconcile(rec, g)
	if !changed {
		return s, nil
	}
	_, err := m.opt.Store.UpdateSession(ctx, vm.ID, rec.Name, func(ss *store.Session) error {
		ss.State, ss.ExitCode, ss.Diagnostics, ss.Cwd = updated.State, updated.ExitCode, updated.Diagnostics, updated.Cwd
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("record session %s: %w", rec.Name, err)
	}
	return s, nil
}

// byName reconciles and returns one session; a session neither the
// store nor the guest knows is a not-found error.
func (m *Manager) byName(ctx context.Context, vm store.VM, name string, g guestView) (api.Session, error) {
	rec, err := m.opt.Store.GetSession(ctx, vm.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		if _, ok := g.sessions[name]; !ok {
			return api.Session{}, api.Errorf(api.CodeNotFound, "vm %s has no session %q (list them with: banger vm session list %s)", vm.Name, name, vm.Name)
		}
		all, err := m.reconcileAll(ctx, vm, g)
		if err != nil {
			return api.Session{}, err
		}
		for _, s := range all {
			if s.Name == name {
				return s, nil
			}
		}
		return api.Session{}, api.Errorf(api.CodeNotFound, "vm %s has no session %q", vm.Name, name)
	}
	if err != nil {
		return api.Session{}, err
	}
	return m.reconcileOne(ctx, vm, rec, g)
}
