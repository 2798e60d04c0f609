package sessionctl

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/store"
)

// fakeGuest is a guest agent in memory: sessions it runs, commands it
// answers from a script, files it receives.
type fakeGuest struct {
	mu       sync.Mutex
	sessions map[string]agent.SessionInfo
	nextPID  int
	// startErr, when set, is the answer to every StartSession.
	startErr error
	// listErr, when set, is the answer to Sessions (an unreachable agent).
	listErr error
	// gate, when set, holds every Sessions call until it is closed;
	// entered receives one value per call that reached it.
	gate    chan struct{}
	entered chan struct{}
	// exitAfter is how many Session reads a signalled session still
	// reports running; -1 means it never exits.
	exitAfter int
	signals   []string
	removed   []string
	// attachOut is what AttachSession writes before the session exits;
	// attachBlock makes it wait for its context instead (a detach).
	attachOut   string
	attachBlock bool
	// exec answers Exec by argv; nil answers exit 0 with no output.
	exec     func(argv []string) (stdout, stderr string, code int)
	execs    [][]string
	uploaded map[string][]byte
	files    map[string][]byte
}

var _ Guest = (*fakeGuest)(nil)

func newFakeGuest() *fakeGuest {
	return &fakeGuest{sessions: map[string]agent.SessionInfo{}, nextPID: 100, uploaded: map[string][]byte{}, files: map[string][]byte{}}
}

func apiErr(status int, code, msg string) error {
	return &agentclient.APIError{Status: status, Code: code, Message: msg}
}

func (g *fakeGuest) StartSession(_ context.Context, req agent.SessionRequest) (agent.SessionInfo, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.startErr != nil {
		return agent.SessionInfo{}, g.startErr
	}
	if s, ok := g.sessions[req.Name]; ok && s.State == agent.SessionRunning {
		return agent.SessionInfo{}, apiErr(http.StatusConflict, agent.CodeConflict, "session "+req.Name+" is already running")
	}
	dir := req.Dir
	if dir == "" {
		dir = "/root"
	}
	g.nextPID++
	info := agent.SessionInfo{Name: req.Name, Argv: req.Argv, Dir: dir, TTY: req.TTY, PID: g.nextPID,
		State: agent.SessionRunning, StartedAt: time.Date(2030, 1, 1, 0, 0, g.nextPID, 0, time.UTC)}
	g.sessions[req.Name] = info
	return info, nil
}

func (g *fakeGuest) Sessions(ctx context.Context) ([]agent.SessionInfo, error) {
	g.mu.Lock()
	gate, entered, listErr := g.gate, g.entered, g.listErr
	g.mu.Unlock()
	if gate != nil {
		entered <- struct{}{}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if listErr != nil {
		return nil, listErr
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []agent.SessionInfo
	for _, s := range g.sessions {
		out = append(out, s)
	}
	return out, nil
}

func (g *fakeGuest) Session(_ context.Context, name string) (agent.SessionInfo, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[name]
	if !ok {
		return agent.SessionInfo{}, apiErr(http.StatusNotFound, agent.CodeNotFound, fmt.Sprintf("no session %q", name))
	}
	if s.State == agent.SessionRunning && len(g.signals) > 0 && g.exitAfter >= 0 {
		if g.exitAfter == 0 {
			s = g.exitLocked(name, agent.ExitStatus{Code: 143, Signal: "SIGTERM"})
		} else {
			g.exitAfter--
		}
	}
	return s, nil
}

// exitLocked ends session name with st.
func (g *fakeGuest) exitLocked(name string, st agent.ExitStatus) agent.SessionInfo {
	s := g.sessions[name]
	end := s.StartedAt.Add(time.Minute)
	s.State, s.Exit, s.EndedAt = agent.SessionExited, &st, &end
	g.sessions[name] = s
	return s
}

func (g *fakeGuest) SignalSession(_ context.Context, name, signal string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[name]
	switch {
	case !ok:
		return apiErr(http.StatusNotFound, agent.CodeNotFound, fmt.Sprintf("no session %q", name))
	case signal == "NOPE":
		return apiErr(http.StatusBadRequest, agent.CodeBadRequest, "unknown signal NOPE")
	case s.State != agent.SessionRunning:
		return apiErr(http.StatusConflict, agent.CodeConflict, "session "+name+" is not running")
	}
	g.signals = append(g.signals, signal)
	return nil
}

func (g *fakeGuest) RemoveSession(_ context.Context, name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.sessions[name]; !ok {
		return apiErr(http.StatusNotFound, agent.CodeNotFound, "gone")
	}
	delete(g.sessions, name)
	g.removed = append(g.removed, name)
	return nil
}

func (g *fakeGuest) SessionLogs(_ context.Context, name string, _ bool) (io.ReadCloser, error) {
	if _, err := g.Session(context.Background(), name); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("log of " + name)), nil
}

func (g *fakeGuest) AttachSession(ctx context.Context, name string, opts agentclient.AttachOptions, eio agentclient.ExecIO) (agent.ExitStatus, error) {
	g.mu.Lock()
	out, block := g.attachOut, g.attachBlock
	g.mu.Unlock()
	if eio.Stdout != nil {
		fmt.Fprintf(eio.Stdout, "replay=%d %s", opts.Replay, out)
	}
	if block {
		<-ctx.Done()
		return agent.ExitStatus{}, ctx.Err()
	}
	st := agent.ExitStatus{Code: 3}
	g.mu.Lock()
	g.exitLocked(name, st)
	g.mu.Unlock()
	return st, nil
}

func (g *fakeGuest) Exec(_ context.Context, req agent.ExecRequest, eio agentclient.ExecIO) (agent.ExitStatus, error) {
	g.mu.Lock()
	g.execs = append(g.execs, req.Argv)
	run := g.exec
	g.mu.Unlock()
	if run == nil {
		return agent.ExitStatus{}, nil
	}
	stdout, stderr, code := run(req.Argv)
	if eio.Stdout != nil {
		io.WriteString(eio.Stdout, stdout)
	}
	if eio.Stderr != nil {
		io.WriteString(eio.Stderr, stderr)
	}
	return agent.ExitStatus{Code: code}, nil
}

func (g *fakeGuest) Upload(_ context.Context, guestDir string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.uploaded[guestDir] = b
	g.mu.Unlock()
	return nil
}

func (g *fakeGuest) Download(_ context.Context, guestPath string) (io.ReadCloser, error) {
	g.mu.Lock()
	data, ok := g.files[guestPath]
	g.mu.Unlock()
	if !ok {
		return nil, apiErr(http.StatusNotFound, agent.CodeNotFound, guestPath+" not found")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(guestPath), Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(data))}); err != nil {
		return nil, err
	}
	tw.Write(data)
	tw.Close()
	return io.NopCloser(&buf), nil
}

func (g *fakeGuest) execLog() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]string(nil), g.execs...)
}

// fakeAgents maps VM names to their VM and guest; a VM without a guest
// is stopped.
type fakeAgents struct {
	vms    map[string]store.VM
	guests map[string]*fakeGuest
}

func (a *fakeAgents) Agent(_ context.Context, ref string) (Guest, store.VM, error) {
	vm, ok := a.vms[ref]
	if !ok {
		return nil, store.VM{}, &store.NotFoundError{Kind: "vm", Ref: ref}
	}
	g, ok := a.guests[ref]
	if !ok {
		return nil, vm, api.Errorf(api.CodeConflict, "vm %s is not running", vm.Name)
	}
	return g, vm, nil
}

// harness is a Manager over a real store and fake guests.
type harness struct {
	m      *Manager
	st     *store.Store
	agents *fakeAgents
}

func newHarness(t *testing.T, opt Options) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{st: st, agents: &fakeAgents{vms: map[string]store.VM{}, guests: map[string]*fakeGuest{}}}
	opt.Store, opt.Agents = st, h.agents
	if opt.StopPoll == 0 {
		opt.StopPoll = time.Millisecond
	}
	h.m = New(opt)
	return h
}

// addVM records a VM; running gives it a guest, which is returned.
func (h *harness) addVM(t *testing.T, name string, running bool) (store.VM, *fakeGuest) {
	t.Helper()
	vm := store.VM{ID: "id-" + name, Name: name, ImageID: "img", VCPU: 1, MemoryMiB: 512, DiskBytes: 1 << 30,
		VMM: store.VMMQEMU, State: store.StateRunning, DesiredState: store.StateRunning, AgentToken: "tok"}
	if !running {
		vm.State, vm.DesiredState = store.StateStopped, store.StateStopped
	}
	if err := h.st.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	h.agents.vms[name] = vm
	if !running {
		return vm, nil
	}
	g := newFakeGuest()
	h.agents.guests[name] = g
	return vm, g
}

func (h *harness) session(t *testing.T, vm store.VM, name string) store.Session {
	t.Helper()
	s, err := h.st.GetSession(context.Background(), vm.ID, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
