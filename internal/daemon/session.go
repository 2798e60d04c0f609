package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/store"
	"banger/internal/stream"
)

// sessionRoutes are the session and workspace endpoints of a VM.
func (d *Daemon) sessionRoutes() []Route {
	return slices.Concat([]Route{
		{"POST " + api.PathVMSessions, d.handleStartSession},
		{"GET " + api.PathVMSessions, d.handleListSessions},
		{"GET " + api.PathVMSession, d.handleGetSession},
		{"DELETE " + api.PathVMSession, d.handleRemoveSession},
		{"POST " + api.PathVMSessionStop, d.handleStopSession},
		{"GET " + api.PathVMSessionLogs, d.handleSessionLogs},
		{"POST " + api.PathVMSessionAttach, d.handleAttachSession},
	}, d.workspaceRoutes())
}

// sessionStartMu serialises session starts, so two requests never pick
// the same generated name.
var sessionStartMu sync.Mutex

// guestTimeout bounds the short agent calls of session handlers.
const guestTimeout = 30 * time.Second

var sessionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// guestView is what the daemon knows about a VM's guest sessions for a
// reconcile: the agent's list when it answered.
type guestView struct {
	// reachable says the agent answered; sessions is then its list.
	reachable bool
	// vmRunning says the VM runs (an unreachable agent of a running VM
	// leaves live sessions unknown; a stopped VM has none).
	vmRunning bool
	sessions  map[string]agent.SessionInfo
}

// lostDiagnostics marks a session the guest forgot (its agent restarted
// or the VM rebooted) while it ran.
const lostDiagnostics = "lost: the guest no longer runs this session (agent restart or VM reboot)"

// reconcileSession merges a stored session with the guest's view. It
// returns the API form and, when the record must change to match the
// guest, the updated record (changed true).
func reconcileSession(rec store.Session, g guestView) (api.Session, store.Session, bool) {
	out := api.Session{
		Name: rec.Name, Command: rec.Command, Cwd: rec.Cwd, EnvNames: rec.EnvNames, PTY: rec.PTY,
		State: rec.State, StartedAt: rec.CreatedAt, ExitCode: rec.ExitCode, Diagnostics: rec.Diagnostics,
	}
	if rec.State == store.SessionExited && rec.ExitCode == nil && strings.HasPrefix(rec.Diagnostics, "lost:") {
		out.State = api.SessionLost
	}
	updated := rec
	live := rec.State == store.SessionRunning || rec.State == store.SessionStarting
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
		default: // lost
			out.State = api.SessionLost
			if live {
				updated.State, updated.Diagnostics = store.SessionExited, lostDiagnostics
			}
		}
		if updated.Cwd == "" && info.Dir != "" {
			updated.Cwd = info.Dir
		}
	case g.reachable && rec.State == store.SessionStarting:
		// The launch never reached the agent (the daemon died first).
		out.State = api.SessionFailed
		updated.State, updated.Diagnostics = store.SessionFailed, "launch interrupted before the guest agent started it"
		out.Diagnostics = updated.Diagnostics
	case (g.reachable || !g.vmRunning) && live:
		out.State = api.SessionLost
		updated.State, updated.Diagnostics = store.SessionExited, lostDiagnostics
		out.Diagnostics = updated.Diagnostics
	case live:
		out.State = api.SessionUnknown
	}
	changed := updated.State != rec.State || updated.Diagnostics != rec.Diagnostics || updated.Cwd != rec.Cwd ||
		!equalExit(updated.ExitCode, rec.ExitCode)
	return out, updated, changed
}

func equalExit(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// guestSessions asks the VM's agent for its sessions. An unreachable agent
// is not an error: the view says so.
func (d *Daemon) guestSessions(ctx context.Context, r *http.Request) (store.VM, *agentclient.Client, guestView, error) {
	c, vm, err := d.VMs.Agent(ctx, r.PathValue("ref"))
	if err != nil && vm.ID == "" {
		return vm, nil, guestView{}, err
	}
	g := guestView{vmRunning: err == nil, sessions: map[string]agent.SessionInfo{}}
	if err != nil {
		return vm, nil, g, nil
	}
	actx, cancel := context.WithTimeout(ctx, guestTimeout)
	defer cancel()
	list, lerr := c.Sessions(actx)
	if lerr != nil {
		d.Logger.Warn("list guest sessions", "vm", vm.Name, logKeyErr, lerr)
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
func (d *Daemon) reconcileAll(ctx context.Context, vm store.VM, g guestView) ([]api.Session, error) {
	recs, err := d.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := make([]api.Session, 0, len(recs))
	for _, rec := range recs {
		seen[rec.Name] = true
		s, err := d.reconcileOne(ctx, vm, rec, g)
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
		if err := d.Store.CreateSession(ctx, rec); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		s, err := d.reconcileOne(ctx, vm, rec, g)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b api.Session) int { return a.StartedAt.Compare(b.StartedAt) })
	return out, nil
}

func (d *Daemon) reconcileOne(ctx context.Context, vm store.VM, rec store.Session, g guestView) (api.Session, error) {
	s, updated, changed := reconcileSession(rec, g)
	if !changed {
		return s, nil
	}
	_, err := d.Store.UpdateSession(ctx, vm.ID, rec.Name, func(ss *store.Session) error {
		ss.State, ss.ExitCode, ss.Diagnostics, ss.Cwd = updated.State, updated.ExitCode, updated.Diagnostics, updated.Cwd
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("record session %s: %w", rec.Name, err)
	}
	return s, nil
}

// sessionByName reconciles and returns one session; a session neither the
// store nor the guest knows is a not-found error.
func (d *Daemon) sessionByName(ctx context.Context, vm store.VM, name string, g guestView) (api.Session, error) {
	rec, err := d.Store.GetSession(ctx, vm.ID, name)
	if errors.Is(err, store.ErrNotFound) {
		if _, ok := g.sessions[name]; !ok {
			return api.Session{}, api.Errorf(api.CodeNotFound, "vm %s has no session %q (list them with: banger vm session list %s)", vm.Name, name, vm.Name)
		}
		all, err := d.reconcileAll(ctx, vm, g)
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
	return d.reconcileOne(ctx, vm, rec, g)
}

func (d *Daemon) handleStartSession(w http.ResponseWriter, r *http.Request) error {
	var req api.StartSessionRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return api.Errorf(api.CodeInvalid, "session: no command given")
	}
	if req.Name != "" && !sessionNameRE.MatchString(req.Name) {
		return api.Errorf(api.CodeInvalid, "session name %q: want letters, digits, '.', '_' or '-' (at most 64, not starting with a symbol)", req.Name)
	}
	var envNames []string
	for _, kv := range req.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return api.Errorf(api.CodeInvalid, "session env %q: want KEY=VALUE", kv)
		}
		envNames = append(envNames, k)
	}
	ctx := r.Context()
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	sessionStartMu.Lock()
	defer sessionStartMu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, guestTimeout)
	guest, err := c.Sessions(lctx)
	cancel()
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: list guest sessions: %v", vm.Name, err)
	}
	inGuest := map[string]agent.SessionInfo{}
	for _, s := range guest {
		inGuest[s.Name] = s
	}
	recs, err := d.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return err
	}
	name := req.Name
	if name == "" {
		name = pickSessionName(recs, inGuest)
	}
	if g, ok := inGuest[name]; ok && g.State == agent.SessionRunning {
		return api.Errorf(api.CodeConflict, "vm %s: session %s is already running (stop it with: banger vm session stop %s %s)", vm.Name, name, vm.Name, name)
	}
	// An ended session of the same name is replaced.
	if err := d.Store.DeleteSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	rec := store.Session{VMID: vm.ID, Name: name, Command: req.Argv, Cwd: req.Cwd, EnvNames: envNames, PTY: req.PTY, State: store.SessionStarting}
	if err := d.Store.CreateSession(ctx, rec); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, guestTimeout)
	defer cancel()
	info, err := c.StartSession(sctx, agent.SessionRequest{Name: name, Argv: req.Argv, Env: req.Env, Dir: req.Cwd, TTY: req.PTY, Cols: req.Cols, Rows: req.Rows})
	if err != nil {
		diag, code := launchDiagnostics(req, err)
		if _, uerr := d.Store.UpdateSession(context.WithoutCancel(ctx), vm.ID, name, func(ss *store.Session) error {
			ss.State, ss.Diagnostics = store.SessionFailed, diag
			return nil
		}); uerr != nil {
			d.Logger.Warn("record failed session", "vm", vm.Name, "session", name, logKeyErr, uerr)
		}
		return api.Errorf(code, "vm %s: session %s: %s", vm.Name, name, diag)
	}
	rec, err = d.Store.UpdateSession(context.WithoutCancel(ctx), vm.ID, name, func(ss *store.Session) error {
		ss.State, ss.Cwd = store.SessionRunning, info.Dir
		return nil
	})
	if err != nil {
		return err
	}
	s, _, _ := reconcileSession(rec, guestView{reachable: true, vmRunning: true, sessions: map[string]agent.SessionInfo{name: info}})
	return writeJSON(w, http.StatusCreated, s)
}

// pickSessionName returns the first "sN" neither the store nor the guest
// uses.
func pickSessionName(recs []store.Session, guest map[string]agent.SessionInfo) string {
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
// with which API code.
func launchDiagnostics(req api.StartSessionRequest, err error) (string, api.Code) {
	var ae *agentclient.APIError
	if !errors.As(err, &ae) {
		return fmt.Sprintf("guest agent: %v", err), api.CodeUnavailable
	}
	switch ae.Code {
	case agent.CodeCommandNotFound:
		return fmt.Sprintf("command %q not found in the guest (%s)", req.Argv[0], ae.Message), api.CodeInvalid
	case agent.CodeBadRequest:
		if strings.Contains(ae.Message, "working directory") {
			return fmt.Sprintf("cwd: %s in the guest", ae.Message), api.CodeInvalid
		}
		return ae.Message, api.CodeInvalid
	case agent.CodeConflict:
		return ae.Message, api.CodeConflict
	}
	return ae.Message, api.CodeUnavailable
}

func (d *Daemon) handleListSessions(w http.ResponseWriter, r *http.Request) error {
	vm, _, g, err := d.guestSessions(r.Context(), r)
	if err != nil {
		return err
	}
	out, err := d.reconcileAll(r.Context(), vm, g)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetSession(w http.ResponseWriter, r *http.Request) error {
	vm, _, g, err := d.guestSessions(r.Context(), r)
	if err != nil {
		return err
	}
	s, err := d.sessionByName(r.Context(), vm, r.PathValue("name"), g)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s)
}

func (d *Daemon) handleRemoveSession(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	vm, c, g, err := d.guestSessions(ctx, r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	s, err := d.sessionByName(ctx, vm, name, g)
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
	if err := d.Store.DeleteSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// stopPoll is how often a stop checks whether the session exited.
const stopPoll = 200 * time.Millisecond

func (d *Daemon) handleStopSession(w http.ResponseWriter, r *http.Request) error {
	var req api.StopSessionRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	sig := req.Signal
	if sig == "" {
		sig = "TERM"
	}
	wait := time.Duration(req.WaitSeconds) * time.Second
	if wait <= 0 {
		wait = 10 * time.Second
	}
	ctx := r.Context()
	name := r.PathValue("name")
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	if _, err := d.Store.GetSession(ctx, vm.ID, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, guestTimeout)
	err = c.SignalSession(sctx, name, sig)
	cancel()
	switch {
	case agentclient.IsCode(err, agent.CodeNotFound):
		return api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
	case agentclient.IsCode(err, agent.CodeBadRequest):
		return api.Errorf(api.CodeInvalid, "signal %q: %v", sig, err)
	case agentclient.IsCode(err, agent.CodeConflict):
		// Already ended: report it.
	case err != nil:
		return api.Errorf(api.CodeUnavailable, "vm %s: signal session %s: %v", vm.Name, name, err)
	}
	deadline := time.Now().Add(wait)
	for {
		ictx, cancel := context.WithTimeout(ctx, guestTimeout)
		info, err := c.Session(ictx, name)
		cancel()
		if err != nil {
			return api.Errorf(api.CodeUnavailable, "vm %s: session %s: %v", vm.Name, name, err)
		}
		if info.State != agent.SessionRunning || time.Now().After(deadline) {
			g := guestView{reachable: true, vmRunning: true, sessions: map[string]agent.SessionInfo{name: info}}
			s, err := d.sessionByName(ctx, vm, name, g)
			if err != nil {
				return err
			}
			return writeJSON(w, http.StatusOK, s)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(stopPoll):
		}
	}
}

func (d *Daemon) handleSessionLogs(w http.ResponseWriter, r *http.Request) error {
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	follow := r.URL.Query().Get("follow") != ""
	body, err := c.SessionLogs(r.Context(), name, follow)
	if err != nil {
		if agentclient.IsCode(err, agent.CodeNotFound) {
			return api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
		}
		return api.Errorf(api.CodeUnavailable, "vm %s: session %s logs: %v", vm.Name, name, err)
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, stream.ChunkSize)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil
			}
			_ = flush(w)
		}
		if rerr != nil {
			return nil
		}
	}
}

// handleAttachSession bridges an attach stream from the CLI to the
// session in the guest. The CLI closing the stream detaches (the session
// keeps running); the session ending sends the Exit frame, after its exit
// status is recorded.
func (d *Daemon) handleAttachSession(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var replay int64
	if s := r.URL.Query().Get("replay"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return api.Errorf(api.CodeInvalid, "replay %q: want a byte count", s)
		}
		replay = v
	}
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	ictx, cancel := context.WithTimeout(r.Context(), guestTimeout)
	_, err = c.Session(ictx, name)
	cancel()
	if agentclient.IsCode(err, agent.CodeNotFound) {
		return api.Errorf(api.CodeNotFound, "vm %s has no session %q in the guest", vm.Name, name)
	}
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: session %s: %v", vm.Name, name, err)
	}
	conn, err := d.Upgrade(w, r)
	if err != nil {
		return err
	}
	defer conn.Close()
	b := newFrameBridge(r.Context(), conn)
	defer b.close()
	eio := b.execIO()
	eio.Stderr = nil // sessions merge stderr into stdout
	st, err := c.AttachSession(b.ctx, name, agentclient.AttachOptions{Replay: replay}, eio)
	if b.ctx.Err() != nil {
		return nil // detached
	}
	if err != nil {
		b.fail(err)
		return nil
	}
	// Record the exit before telling the CLI, so a list right after sees it.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(r.Context()), guestTimeout)
	if info, err := c.Session(rctx, name); err == nil {
		g := guestView{reachable: true, vmRunning: true, sessions: map[string]agent.SessionInfo{name: info}}
		if _, err := d.sessionByName(rctx, vm, name, g); err != nil {
			d.Logger.Warn("record session exit", "vm", vm.Name, "session", name, logKeyErr, err)
		}
	}
	rcancel()
	b.exit(st)
	return nil
}
