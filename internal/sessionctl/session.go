package sessionctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/store"
	"banger/internal/wait"
)

// Stop defaults.
const (
	defaultStopSignal = "TERM"
	defaultStopWait   = 10 * time.Second
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// checkStart validates a start request and returns the names of its
// environment variables.
func checkStart(req api.StartSessionRequest) ([]string, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, api.Errorf(api.CodeInvalid, "session: no command given")
	}
	if req.Name != "" && !nameRE.MatchString(req.Name) {
		return nil, api.Errorf(api.CodeInvalid, "session name %q: want letters, digits, '.', '_' or '-' (at most 64, not starting with a symbol)", req.Name)
	}
	var envNames []string
	for _, kv := range req.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, api.Errorf(api.CodeInvalid, "session env %q: want KEY=VALUE", kv)
		}
		envNames = append(envNames, k)
	}
	return envNames, nil
}

// Start launches a session in VM ref's guest and records it. Starts on
// one VM are serialised from the name choice to the record of the
// outcome; starts on different VMs do not wait for each other. A session
// the agent refuses is recorded as failed with its diagnostics, and the
// error says why.
func (m *Manager) Start(ctx context.Context, ref string, req api.StartSessionRequest) (api.Session, error) {
	envNames, err := checkStart(req)
	if err != nil {
		return api.Session{}, err
	}
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return api.Session{}, err
	}
	unlock, err := m.locks.lock(ctx, vm.ID)
	if err != nil {
		return api.Session{}, fmt.Errorf("vm %s: wait for another session start: %w", vm.Name, err)
	}
	defer unlock()
	lctx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
	guest, err := c.Sessions(lctx)
	cancel()
	if err != nil {
		return api.Session{}, api.Errorf(api.CodeUnavailable, "vm %s: list guest sessions: %v", vm.Name, err)
	}
	inGuest := map[string]agent.SessionInfo{}
	for _, s := range guest {
		inGuest[s.Name] = s
	}
	recs, err := m.opt.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return api.Session{}, err
	}
	name := req.Name
	if name == "" {
		name = pickName(recs, inGuest)
	}
	if g, ok := inGuest[name]; ok && g.State == agent.SessionRunning {
		return api.Session{}, api.Errorf(api.CodeConflict, "vm %s: session %s is already running (stop it with: banger vm session stop %s %s)", vm.Name, name, vm.Name, name)
	}
	// An ended session of the same name is replaced.
	if err := m.opt.Store.DeleteSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return api.Session{}, err
	}
	rec := store.Session{VMID: vm.ID, Name: name, Command: req.Argv, Cwd: req.Cwd, EnvNames: envNames, PTY: req.PTY, State: store.SessionStarting}
	if err := m.opt.Store.CreateSession(ctx, rec); err != nil {
		return api.Session{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
	defer cancel()
	info, err := c.StartSession(sctx, agent.SessionRequest{Name: name, Argv: req.Argv, Env: req.Env, Dir: req.Cwd, TTY: req.PTY, Cols: req.Cols, Rows: req.Rows})
	// The outcome is recorded even when the caller has gone.
	rctx := context.WithoutCancel(ctx)
	if err != nil {
		diag, code := launchDiagnostics(req, err)
		if _, uerr := m.opt.Store.UpdateSession(rctx, vm.ID, name, func(ss *store.Session) error {
			ss.State, ss.Diagnostics = store.SessionFailed, diag
			return nil
		}); uerr != nil {
			m.log.Warn("record failed session", logKeyVM, vm.Name, logKeySession, name, logKeyErr, uerr)
		}
		return api.Session{}, api.Errorf(code, "vm %s: session %s: %s", vm.Name, name, diag)
	}
	rec, err = m.opt.Store.UpdateSession(rctx, vm.ID, name, func(ss *store.Session) error {
		ss.State, ss.Cwd = store.SessionRunning, info.Dir
		return nil
	})
	if err != nil {
		return api.Session{}, err
	}
	info.Name = name
	s, _, _ := reconcile(rec, oneSession(info))
	return s, nil
}

// pickName returns the first "sN" neither the store nor the guest uses.
func pickName(recs []store.Session, guest map[string]agent.SessionInfo) string {
	used := map[string]bool{}
	for _, r := range recs {
		used[r.Name] = true
	}
	for n := range guest {
		used[n] = true
	}
	for i := 1; ; i++ {
		if n := "s" + strconv.Itoa(i); !used[n] {
			return n
		}
	}
}

// launchDiagnostics says why the agent refused to start a session, and
// with which API code. It decides on the agent's error code only.
func launchDiagnostics(req api.StartSessionRequest, err error) (string, api.Code) {
	var ae *agentclient.APIError
	if !errors.As(err, &ae) {
		return fmt.Sprintf("guest agent: %v", err), api.CodeUnavailable
	}
	switch ae.Code {
	case agent.CodeCommandNotFound:
		return fmt.Sprintf("command %q not found in the guest (%s)", req.Argv[0], ae.Message), api.CodeInvalid
	case agent.CodeNoWorkingDir:
		return fmt.Sprintf("cwd: %s in the guest", ae.Message), api.CodeInvalid
	case agent.CodeBadRequest:
		return ae.Message, api.CodeInvalid
	case agent.CodeConflict:
		return ae.Message, api.CodeConflict
	}
	return ae.Message, api.CodeUnavailable
}

// List returns VM ref's sessions, oldest first, reconciled with the
// guest (a stopped VM's live sessions become lost).
func (m *Manager) List(ctx context.Context, ref string) ([]api.Session, error) {
	vm, _, g, err := m.view(ctx, ref)
	if err != nil {
		return nil, err
	}
	return m.reconcileAll(ctx, vm, g)
}

// Get returns one session of VM ref, reconciled with the guest.
func (m *Manager) Get(ctx context.Context, ref, name string) (api.Session, error) {
	vm, _, g, err := m.view(ctx, ref)
	if err != nil {
		return api.Session{}, err
	}
	return m.byName(ctx, vm, name, g)
}

// Remove forgets an ended session: its record, and its log in the guest
// when the guest still has it. A running (or unknown) session is a
// conflict.
func (m *Manager) Remove(ctx context.Context, ref, name string) error {
	vm, c, g, err := m.view(ctx, ref)
	if err != nil {
		return err
	}
	s, err := m.byName(ctx, vm, name, g)
	if err != nil {
		return err
	}
	if s.State == api.SessionRunning || s.State == api.SessionUnknown {
		return api.Errorf(api.CodeConflict, "vm %s: session %s is %s; stop it first", vm.Name, name, s.State)
	}
	if c != nil && g.reachable {
		if _, ok := g.sessions[name]; ok {
			if err := c.RemoveSession(ctx, name); err != nil && !agentclient.IsCode(err, agent.CodeNotFound) {
				return api.Errorf(api.CodeUnavailable, "vm %s: remove session %s: %v", vm.Name, name, err)
			}
		}
	}
	if err := m.opt.Store.DeleteSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// Stop signals a session (TERM unless req names another signal) and
// waits up to req.WaitSeconds (10 s when unset) for it to exit. It
// returns the session as it is then: exited, or still running when the
// wait ran out. A session that had already ended is returned as it is.
func (m *Manager) Stop(ctx context.Context, ref, name string, req api.StopSessionRequest) (api.Session, error) {
	sig := req.Signal
	if sig == "" {
		sig = defaultStopSignal
	}
	limit := time.Duration(req.WaitSeconds) * time.Second
	if limit <= 0 {
		limit = defaultStopWait
	}
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return api.Session{}, err
	}
	if _, err := m.opt.Store.GetSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return api.Session{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
	err = c.SignalSession(sctx, name, sig)
	cancel()
	switch {
	case agentclient.IsCode(err, agent.CodeNotFound):
		return api.Session{}, api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
	case agentclient.IsCode(err, agent.CodeBadRequest):
		return api.Session{}, api.Errorf(api.CodeInvalid, "signal %q: %v", sig, err)
	case agentclient.IsCode(err, agent.CodeConflict):
		// Already ended: report it.
	case err != nil:
		return api.Session{}, api.Errorf(api.CodeUnavailable, "vm %s: signal session %s: %v", vm.Name, name, err)
	}
	deadline := m.opt.Now().Add(limit)
	var info agent.SessionInfo
	err = wait.Until(ctx, m.opt.StopPoll, func() (bool, error) {
		ictx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
		defer cancel()
		i, err := c.Session(ictx, name)
		if err != nil {
			return false, api.Errorf(api.CodeUnavailable, "vm %s: session %s: %v", vm.Name, name, err)
		}
		info = i
		return i.State != agent.SessionRunning || m.opt.Now().After(deadline), nil
	})
	if err != nil {
		return api.Session{}, err
	}
	info.Name = name
	return m.byName(ctx, vm, name, oneSession(info))
}

// Logs returns the session's kept output from the guest; with follow it
// continues until the session ends or ctx does.
func (m *Manager) Logs(ctx context.Context, ref, name string, follow bool) (io.ReadCloser, error) {
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	body, err := c.SessionLogs(ctx, name, follow)
	if err != nil {
		if agentclient.IsCode(err, agent.CodeNotFound) {
			return nil, api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
		}
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: session %s logs: %v", vm.Name, name, err)
	}
	return body, nil
}

// Attachment is an attach to one session that the guest confirmed
// exists; Run bridges it.
type Attachment struct {
	m      *Manager
	c      Guest
	vm     store.VM
	name   string
	replay int64
}

// Attach checks that the guest runs or ran session name of VM ref and
// returns the attachment, before the caller commits to a stream. Replay
// is how many bytes of earlier output to send first.
func (m *Manager) Attach(ctx context.Context, ref, name string, replay int64) (*Attachment, error) {
	if replay < 0 {
		return nil, api.Errorf(api.CodeInvalid, "replay %d: want a byte count", replay)
	}
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, m.opt.GuestTimeout)
	_, err = c.Session(ictx, name)
	cancel()
	if agentclient.IsCode(err, agent.CodeNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
	}
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: session %s: %v", vm.Name, name, err)
	}
	return &Attachment{m: m, c: c, vm: vm, name: name, replay: replay}, nil
}

// Run bridges eio to the session (output to eio.Stdout, stderr merged
// into it by the guest) until the session exits or ctx ends. Ending ctx
// detaches and leaves the session running; Run then returns ctx's error.
// When the session exits, its status is recorded before Run returns it,
// so a list right after sees it.
func (a *Attachment) Run(ctx context.Context, eio agentclient.ExecIO) (agent.ExitStatus, error) {
	st, err := a.c.AttachSession(ctx, a.name, agentclient.AttachOptions{Replay: a.replay}, eio)
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	if err != nil {
		return st, fmt.Errorf("vm %s: attach session %s: %w", a.vm.Name, a.name, err)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.m.opt.GuestTimeout)
	defer cancel()
	if info, err := a.c.Session(rctx, a.name); err == nil {
		info.Name = a.name
		if _, err := a.m.byName(rctx, a.vm, a.name, oneSession(info)); err != nil {
			a.m.log.Warn("record session exit", logKeyVM, a.vm.Name, logKeySession, a.name, logKeyErr, err)
		}
	}
	return st, nil
}
