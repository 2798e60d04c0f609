package tui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"banger/internal/api"
)

// fakeClient is a hand-written Client: canned VMs and images, recorded
// calls, and operations whose event streams the test scripts. An
// operation's stream blocks after its scripted events until the test (or
// CancelOperation) ends it.
type fakeClient struct {
	mu       sync.Mutex
	vms      []api.VM
	images   []api.Image
	sessions map[string][]api.Session // by VM id
	listErr  error
	startErr error
	stopErr  error
	logs     map[string]string // console by VM id
	calls    []string
	created  []api.CreateVMRequest
	streams  map[string]*io.PipeWriter
	// script holds the events an operation replays when followed; the
	// stream then stays open.
	script map[string][]api.Event
	// rollback holds the events sent when the operation is canceled.
	rollback map[string][]api.Event
	nextOp   int
	// stats answer Stats, by VM id.
	stats map[string]api.VMStats
}

var _ Client = (*fakeClient)(nil)

func newFake(vms ...api.VM) *fakeClient {
	return &fakeClient{
		vms:      vms,
		sessions: map[string][]api.Session{},
		logs:     map[string]string{},
		streams:  map[string]*io.PipeWriter{},
		script:   map[string][]api.Event{},
		rollback: map[string][]api.Event{},
	}
}

func (f *fakeClient) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeClient) called(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func (f *fakeClient) setVMs(vms ...api.VM) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vms = vms
}

func (f *fakeClient) ListVMs(context.Context) ([]api.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.VM(nil), f.vms...), f.listErr
}

func (f *fakeClient) Stats(_ context.Context, refs ...string) ([]api.VMStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.VMStats
	for _, r := range refs {
		if st, ok := f.stats[r]; ok {
			out = append(out, st)
		}
	}
	return out, nil
}

func (f *fakeClient) Images(context.Context) ([]api.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images, nil
}

func (f *fakeClient) newOp(kind string) api.OperationRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextOp++
	return api.OperationRef{ID: fmt.Sprintf("op%d", f.nextOp), Kind: kind}
}

func (f *fakeClient) CreateVM(_ context.Context, req api.CreateVMRequest) (api.OperationRef, error) {
	f.record("create %s", req.Name)
	f.mu.Lock()
	f.created = append(f.created, req)
	f.mu.Unlock()
	return f.newOp("vm.create"), nil
}

func (f *fakeClient) StartVM(_ context.Context, ref string, _ api.StartVMRequest) (api.OperationRef, error) {
	f.record("start %s", ref)
	if f.startErr != nil {
		return api.OperationRef{}, f.startErr
	}
	return f.newOp("vm.start"), nil
}

func (f *fakeClient) RestartVM(_ context.Context, ref string) (api.OperationRef, error) {
	f.record("restart %s", ref)
	return f.newOp("vm.restart"), nil
}

func (f *fakeClient) StopVM(_ context.Context, ref string) (api.VM, error) {
	f.record("stop %s", ref)
	if f.stopErr != nil {
		return api.VM{}, f.stopErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, v := range f.vms {
		if v.ID == ref {
			f.vms[i].State, f.vms[i].PID = "stopped", 0
			return f.vms[i], nil
		}
	}
	return api.VM{}, api.Errorf(api.CodeNotFound, "no vm %s", ref)
}

func (f *fakeClient) DeleteVM(_ context.Context, ref string, force bool) error {
	f.record("delete %s force=%v", ref, force)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, v := range f.vms {
		if v.ID == ref {
			f.vms = append(f.vms[:i:i], f.vms[i+1:]...)
			return nil
		}
	}
	return api.Errorf(api.CodeNotFound, "no vm %s", ref)
}

func (f *fakeClient) VMLogs(_ context.Context, ref string, follow bool) (io.ReadCloser, error) {
	f.record("logs %s follow=%v", ref, follow)
	f.mu.Lock()
	defer f.mu.Unlock()
	return io.NopCloser(strings.NewReader(f.logs[ref])), nil
}

func (f *fakeClient) OperationEvents(_ context.Context, id string) (*api.EventReader, error) {
	f.record("events %s", id)
	pr, pw := io.Pipe()
	f.mu.Lock()
	f.streams[id] = pw
	evs := f.script[id]
	f.mu.Unlock()
	go writeEvents(pw, id, evs)
	return api.NewEventReader(pr), nil
}

// writeEvents sends events on an operation stream, closing it after a
// done event.
func writeEvents(pw *io.PipeWriter, id string, evs []api.Event) {
	for _, ev := range evs {
		ev.Op = id
		b, _ := json.Marshal(ev)
		if _, err := pw.Write(append(b, '\n')); err != nil {
			return
		}
		if ev.Type == api.EventDone {
			pw.Close()
			return
		}
	}
}

// finish sends more events on a followed operation's stream.
func (f *fakeClient) finish(id string, evs ...api.Event) {
	f.mu.Lock()
	pw := f.streams[id]
	f.mu.Unlock()
	go writeEvents(pw, id, evs)
}

func (f *fakeClient) CancelOperation(_ context.Context, id string) error {
	f.record("cancel %s", id)
	f.mu.Lock()
	evs := f.rollback[id]
	f.mu.Unlock()
	f.finish(id, evs...)
	return nil
}

func (f *fakeClient) Sessions(_ context.Context, ref string) ([]api.Session, error) {
	f.record("sessions %s", ref)
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[ref]
	if !ok {
		return nil, api.Errorf(api.CodeNotImplemented, "sessions are not served")
	}
	return s, nil
}

// noSessions hides the Sessions method: a client without the capability.
type noSessions struct{ Client }

// harness drives a Model like the Bubble Tea runtime does: every command
// runs on its own goroutine and its message is fed back to Update. A
// command that blocks (an operation stream waiting for events) stays
// pending and delivers when it unblocks.
type harness struct {
	t     *testing.T
	m     Model
	fake  *fakeClient
	msgs  chan tea.Msg
	execs [][]string
	// execErr is what the suspended ssh/attach process returns.
	execErr error
	quit    bool

	mu      sync.Mutex
	samples map[int]ProcSample
	clock   time.Time
}

// setProc sets what ReadProc reports for pid.
func (h *harness) setProc(pid int, s ProcSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[pid] = s
}

// advance moves the clock.
func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clock = h.clock.Add(d)
}

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, f *fakeClient, opt ...func(*Options)) *harness {
	h := &harness{t: t, fake: f, msgs: make(chan tea.Msg, 1024), samples: map[int]ProcSample{}, clock: testNow}
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.Ascii)
	opts := Options{
		Client: f,
		Defaults: CreateDefaults{
			Image: "debian-12", VMM: "qemu", VCPU: 2, MemoryMiB: 1024, DiskBytes: 2 << 30,
		},
		Self:          "banger",
		AttachCommand: true,
		Interval:      time.Hour, // ticks never fire; tests refresh explicitly
		ReadProc: func(pid int) (ProcSample, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			s, ok := h.samples[pid]
			if !ok {
				return ProcSample{}, fmt.Errorf("no pid %d", pid)
			}
			return s, nil
		},
		Exec: func(cmd *exec.Cmd, fn tea.ExecCallback) tea.Cmd {
			h.execs = append(h.execs, cmd.Args)
			err := h.execErr
			return func() tea.Msg { return fn(err) }
		},
		Renderer: r,
		Now: func() time.Time {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.clock
		},
	}
	for _, o := range opt {
		o(&opts)
	}
	h.m = New(opts)
	h.m.width, h.m.height = 80, 24
	h.run(h.m.Init())
	h.settle()
	return h
}

// run starts cmd the way the runtime does.
func (h *harness) run(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	go func() { h.msgs <- cmd() }()
}

// deliver feeds one message to the model.
func (h *harness) deliver(msg tea.Msg) {
	switch msg := msg.(type) {
	case nil:
		return
	case tea.BatchMsg:
		for _, c := range msg {
			h.run(c)
		}
		return
	case tea.QuitMsg:
		h.quit = true
		return
	}
	nm, cmd := h.m.Update(msg)
	h.m = nm.(Model)
	h.run(cmd)
}

// settle delivers messages until none arrives for a while.
func (h *harness) settle() {
	h.t.Helper()
	for {
		select {
		case msg := <-h.msgs:
			h.deliver(msg)
		case <-time.After(100 * time.Millisecond):
			return
		}
	}
}

// send delivers msg and settles.
func (h *harness) send(msg tea.Msg) {
	h.t.Helper()
	h.deliver(msg)
	h.settle()
}

// press types keys: single names ("tab", "enter", "esc", "up") or runes.
func (h *harness) press(keys ...string) {
	h.t.Helper()
	for _, k := range keys {
		h.send(keyMsg(k))
	}
}

// typeText types s rune by rune.
func (h *harness) typeText(s string) {
	h.t.Helper()
	for _, r := range s {
		h.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

// refresh runs one poll of the daemon.
func (h *harness) refresh() {
	h.t.Helper()
	h.send(tickMsg{})
}

func keyMsg(k string) tea.KeyMsg {
	switch k {
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case "backspace":
		return tea.KeyMsg{Type: tea.KeyBackspace}
	case "ctrl+u":
		return tea.KeyMsg{Type: tea.KeyCtrlU}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}

// screen renders the view.
func (h *harness) screen() string { return h.m.View() }

func (h *harness) wantScreen(subs ...string) {
	h.t.Helper()
	s := h.screen()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			h.t.Errorf("screen lacks %q:\n%s", sub, s)
		}
	}
}

func (h *harness) wantNoScreen(subs ...string) {
	h.t.Helper()
	s := h.screen()
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			h.t.Errorf("screen has %q:\n%s", sub, s)
		}
	}
}

// testVM builds a VM row.
func testVM(id, name, state string, pid int) api.VM {
	return api.VM{
		ID: id, Name: name, State: state, ImageID: "img0123456789", ImageName: "debian-12", VMM: "qemu",
		Spec: api.VMSpec{VCPU: 2, MemoryMiB: 1024, DiskBytes: 2 << 30},
		IP:   "192.0.2." + fmt.Sprint(10+len(name)), DNSName: name + ".vm", PID: pid,
		CreatedAt: testNow.Add(-5 * time.Minute),
	}
}

// stageEv and doneEv build operation events.
func stageEv(seq, i int, name string, state api.StageState) api.Event {
	return api.Event{Seq: seq, Type: api.EventStage, StageIndex: i, Stage: &api.Stage{Name: name, State: state, Started: testNow, Duration: 1500 * time.Millisecond}}
}

func doneEv(seq int, state api.OperationState, vm *api.VM, e *api.Error) api.Event {
	ev := api.Event{Seq: seq, Type: api.EventDone, State: state, Error: e}
	if vm != nil {
		ev.Result, _ = json.Marshal(vm)
	}
	return ev
}

// lines splits a screen.
func lines(s string) []string { return strings.Split(s, "\n") }
