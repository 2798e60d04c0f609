package tui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"banger/internal/api"
	"banger/internal/procstat"
	"banger/internal/units"
	"banger/internal/vmname"
)

// view is one of the dashboard's tabs.
type view int

// The views, in tab order.
const (
	viewVMs view = iota
	viewImages
	viewSessions
	viewLogs
	numViews
)

var viewNames = [numViews]string{"VMs", "Images", "Sessions", "Logs"}

// Budgets of the dashboard.
const (
	defaultInterval = time.Second
	requestTimeout  = 10 * time.Second
	stopTimeout     = 3 * time.Minute // StopVM waits for the guest, then kills its VMM
	maxLogLines     = 1000
	logChunkBytes   = 32 << 10
	maxOpLogLines   = 50
)

// errNoSessions means the sessions view has nothing to ask.
var errNoSessions = errors.New("sessions: not available")

// Model is the dashboard's Bubble Tea model. Its zero value is not
// usable; build it with New.
type Model struct {
	client   Client
	opts     Options
	st       styles
	readProc ProcReader
	exec     ExecFunc
	now      func() time.Time
	interval time.Duration

	width, height int
	view          view

	vms       []api.VM
	selID     string // selected VM, kept by id across refreshes
	selIndex  int    // its last index, to land near it when it vanishes
	images    []api.Image
	imgCursor int
	pending   map[string]string // VM id -> "stopping", "deleting"
	fetching  bool
	updated   time.Time
	listErr   string

	procs   map[string]procUse // by VM id
	guest   *api.VMStats       // the selected VM's guest figures, when measured
	samples map[int]timedSample

	sessions    []api.Session
	sessionsFor string // VM id the sessions belong to
	sessionsErr string
	sessCursor  int

	logLines   []string
	logPartial string
	logsFor    string // VM id whose console is followed
	logReader  io.ReadCloser
	logOpening bool
	logErr     string

	op      *opState
	form    *createForm
	confirm *api.VM // delete awaiting y/n
	help    bool

	status    string
	statusErr bool
}

// procUse is the CPU and memory use of one VM's VMM process.
type procUse struct {
	CPU     float64 // percent of one CPU
	RSS     int64
	HaveCPU bool // two samples were seen
}

type timedSample struct {
	s  ProcSample
	at time.Time
}

// opState is the operation the dashboard follows.
type opState struct {
	id, kind, target string
	started          time.Time
	finished         time.Time // zero while running
	stages           []api.Stage
	log              []string
	state            api.OperationState
	err              string
	canceling        bool
	reader           *api.EventReader
}

func (o *opState) running() bool { return o != nil && o.state == api.OpRunning }

// New builds the dashboard model.
func New(opts Options) Model {
	m := Model{
		client:   opts.Client,
		opts:     opts,
		readProc: opts.ReadProc,
		exec:     opts.Exec,
		now:      opts.Now,
		interval: opts.Interval,
		width:    80,
		height:   24,
		pending:  map[string]string{},
		procs:    map[string]procUse{},
		samples:  map[int]timedSample{},
	}
	if m.readProc == nil {
		m.readProc = ReadProc
	}
	if m.exec == nil {
		m.exec = tea.ExecProcess
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.interval <= 0 {
		m.interval = defaultInterval
	}
	m.st = newStyles(opts.Renderer)
	return m
}

// Messages produced by the dashboard's commands.
type (
	tickMsg     struct{}
	snapshotMsg struct {
		vms       []api.VM
		images    []api.Image
		err       error
		imagesErr error
		samples   map[int]ProcSample
		at        time.Time
		// guest holds the selected running VM's figures, when measured.
		guest *api.VMStats
	}
	sessionsMsg struct {
		vmID     string
		sessions []api.Session
		err      error
	}
	opStartedMsg struct {
		kind, target string
		ref          api.OperationRef
		err          error
	}
	opStreamMsg struct {
		id     string
		reader *api.EventReader
		err    error
	}
	opEventMsg struct {
		id  string
		ev  api.Event
		err error
	}
	opCancelMsg struct {
		id  string
		err error
	}
	stopDoneMsg struct {
		vm  api.VM
		err error
	}
	deleteDoneMsg struct {
		vm  api.VM
		err error
	}
	execDoneMsg struct {
		what, vm, session string
		err               error
	}
	logOpenMsg struct {
		vmID   string
		reader io.ReadCloser
		err    error
	}
	logChunkMsg struct {
		reader io.ReadCloser
		data   []byte
		err    error
	}
)

// Init starts the first refresh and the refresh timer.
func (m Model) Init() tea.Cmd {
	return tea.Batch(m.fetch(), m.tick())
}

func (m Model) tick() tea.Cmd {
	return tea.Tick(m.interval, func(time.Time) tea.Msg { return tickMsg{} })
}

// fetch lists VMs and images and samples the running VMMs.
func (m *Model) fetch() tea.Cmd {
	m.fetching = true
	c, readProc, now := m.client, m.readProc, m.now
	sel, _ := m.selected()
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		var s snapshotMsg
		s.vms, s.err = c.ListVMs(ctx)
		if s.err != nil {
			return s
		}
		s.images, s.imagesErr = c.Images(ctx)
		s.samples = map[int]ProcSample{}
		for _, v := range s.vms {
			if v.PID > 0 {
				if smp, err := readProc(v.PID); err == nil {
					s.samples[v.PID] = smp
				}
			}
		}
		s.at = now()
		// The selected VM's guest figures, for the details pane.
		if sel.PID > 0 && sel.State == "running" {
			if st, err := c.Stats(ctx, sel.ID); err == nil && len(st) == 1 && st[0].Error == "" {
				s.guest = &st[0]
			}
		}
		return s
	}
}

// Update handles one message.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tea.KeyMsg:
		return m.key(msg)
	case tickMsg:
		cmds := []tea.Cmd{m.tick()}
		if !m.fetching {
			cmds = append(cmds, m.fetch())
		}
		return m, tea.Batch(cmds...)
	case snapshotMsg:
		return m.snapshot(msg)
	case sessionsMsg:
		if msg.vmID == m.selID {
			m.sessionsFor = msg.vmID
			m.sessions, m.sessionsErr = msg.sessions, ""
			if msg.err != nil {
				m.sessions, m.sessionsErr = nil, sessionsError(msg.err)
			}
			m.sessCursor = clamp(m.sessCursor, len(m.sessions))
		}
		return m, nil
	case opStartedMsg:
		if msg.err != nil {
			m.setErr(fmt.Errorf("%s %s: %w", msg.kind, msg.target, msg.err))
			if m.op != nil && m.op.id == "" {
				m.op = nil
			}
			return m, nil
		}
		m.op = &opState{id: msg.ref.ID, kind: msg.kind, target: msg.target, started: m.now(), state: api.OpRunning}
		m.setInfo(fmt.Sprintf("%s %s: following operation %s", msg.kind, msg.target, units.ShortID(msg.ref.ID)))
		return m, openEvents(m.client, msg.ref.ID)
	case opStreamMsg:
		if m.op == nil || m.op.id != msg.id {
			if msg.reader != nil {
				return m, closeCmd(msg.reader)
			}
			return m, nil
		}
		if msg.err != nil {
			m.op.state, m.op.err, m.op.finished = api.OpFailed, "follow operation: "+msg.err.Error(), m.now()
			return m, nil
		}
		m.op.reader = msg.reader
		return m, nextEvent(msg.id, msg.reader)
	case opEventMsg:
		return m.opEvent(msg)
	case opCancelMsg:
		if msg.err != nil {
			m.setErr(fmt.Errorf("cancel operation %s: %w", units.ShortID(msg.id), msg.err))
			if m.op != nil && m.op.id == msg.id {
				m.op.canceling = false
			}
		}
		return m, nil
	case stopDoneMsg:
		delete(m.pending, msg.vm.ID)
		if msg.err != nil {
			m.setErr(fmt.Errorf("stop %s: %w", msg.vm.Name, msg.err))
		} else {
			m.setInfo(fmt.Sprintf("vm %s stopped", msg.vm.Name))
		}
		return m, m.fetchIfIdle()
	case deleteDoneMsg:
		delete(m.pending, msg.vm.ID)
		if msg.err != nil {
			m.setErr(fmt.Errorf("delete %s: %w", msg.vm.Name, msg.err))
		} else {
			m.setInfo(fmt.Sprintf("vm %s deleted", msg.vm.Name))
		}
		return m, m.fetchIfIdle()
	case execDoneMsg:
		return m.execDone(msg)
	case logOpenMsg:
		m.logOpening = false
		if msg.vmID != m.logsFor || m.view != viewLogs {
			if msg.reader != nil {
				return m, closeCmd(msg.reader)
			}
			return m, nil
		}
		if msg.err != nil {
			m.logErr = msg.err.Error()
			return m, nil
		}
		m.logReader, m.logLines, m.logPartial, m.logErr = msg.reader, []string{}, "", ""
		return m, readChunk(msg.reader)
	case logChunkMsg:
		if msg.reader != m.logReader || m.logReader == nil {
			return m, nil
		}
		m.appendLog(msg.data)
		if msg.err != nil {
			m.logReader = nil
			cmd := closeCmd(msg.reader)
			if !errors.Is(msg.err, io.EOF) {
				m.logErr = msg.err.Error()
			}
			return m, cmd
		}
		return m, readChunk(msg.reader)
	}
	return m, nil
}

// sessionsError renders why sessions cannot be listed.
func sessionsError(err error) string {
	if errors.Is(err, errNoSessions) || errors.Is(err, api.ErrNotImplemented) || errors.Is(err, api.ErrNotFound) {
		return errNoSessions.Error()
	}
	return "sessions: " + err.Error()
}

func (m *Model) fetchIfIdle() tea.Cmd {
	if m.fetching {
		return nil
	}
	return m.fetch()
}

func (m *Model) setErr(err error) { m.status, m.statusErr = err.Error(), true }
func (m *Model) setInfo(s string) { m.status, m.statusErr = s, false }

// snapshot applies a refresh: the list, the selection (kept by id), the
// CPU and memory use, and the follow-ups of the current view.
func (m Model) snapshot(s snapshotMsg) (tea.Model, tea.Cmd) {
	m.fetching = false
	if s.err != nil {
		m.listErr = s.err.Error()
		return m, nil
	}
	m.listErr = ""
	m.vms = s.vms
	if s.imagesErr == nil {
		m.images = s.images
		m.imgCursor = clamp(m.imgCursor, len(m.images))
	}
	m.keepSelection()
	procs := map[string]procUse{}
	samples := map[int]timedSample{}
	for _, v := range m.vms {
		cur, ok := s.samples[v.PID]
		if v.PID == 0 || !ok {
			continue
		}
		u := procUse{RSS: cur.RSSBytes}
		if prev, ok := m.samples[v.PID]; ok {
			u.CPU, u.HaveCPU = procstat.CPUPercent(prev.s, cur, s.at.Sub(prev.at)), true
		}
		procs[v.ID] = u
		samples[v.PID] = timedSample{s: cur, at: s.at}
	}
	m.procs, m.samples = procs, samples
	m.guest = s.guest
	m.updated = s.at
	return m, m.viewFollowUp()
}

// keepSelection keeps the selected VM by id; when it is gone, the VM now
// at its old index (or the last one) is selected.
func (m *Model) keepSelection() {
	if len(m.vms) == 0 {
		m.selID, m.selIndex = "", 0
		return
	}
	for i, v := range m.vms {
		if v.ID == m.selID {
			m.selIndex = i
			return
		}
	}
	m.selIndex = clamp(m.selIndex, len(m.vms))
	m.selID = m.vms[m.selIndex].ID
}

func clamp(i, n int) int {
	if i >= n {
		i = n - 1
	}
	if i < 0 {
		i = 0
	}
	return i
}

// selected returns the selected VM.
func (m Model) selected() (api.VM, bool) {
	for _, v := range m.vms {
		if v.ID == m.selID {
			return v, true
		}
	}
	return api.VM{}, false
}

// viewFollowUp fetches what the current view needs beyond the list: the
// selected VM's sessions or its console stream.
func (m *Model) viewFollowUp() tea.Cmd {
	vm, ok := m.selected()
	switch m.view {
	case viewSessions:
		if !ok {
			m.sessions, m.sessionsFor, m.sessionsErr = nil, "", ""
			return nil
		}
		return listSessions(m.client, vm)
	case viewLogs:
		return m.followLogs()
	}
	return nil
}

// followLogs makes the console stream follow the selected VM: it closes a
// stream of another VM and opens one when none is open.
func (m *Model) followLogs() tea.Cmd {
	vm, ok := m.selected()
	var cmds []tea.Cmd
	if !ok || vm.ID != m.logsFor {
		cmds = append(cmds, m.stopLogs())
		m.logLines, m.logPartial, m.logErr = nil, "", ""
	}
	if !ok {
		return tea.Batch(cmds...)
	}
	m.logsFor = vm.ID
	if m.logReader == nil && !m.logOpening && (m.logLines == nil || vm.State == "running") {
		m.logOpening = true
		cmds = append(cmds, openLogs(m.client, vm))
	}
	return tea.Batch(cmds...)
}

// stopLogs closes the console stream.
func (m *Model) stopLogs() tea.Cmd {
	r := m.logReader
	m.logReader, m.logsFor, m.logOpening = nil, "", false
	if r == nil {
		return nil
	}
	return closeCmd(r)
}

// appendLog adds console bytes, keeping the last maxLogLines lines.
func (m *Model) appendLog(data []byte) {
	if len(data) == 0 {
		return
	}
	if m.logLines == nil {
		m.logLines = []string{}
	}
	parts := strings.Split(m.logPartial+string(data), "\n")
	m.logPartial = parts[len(parts)-1]
	m.logLines = append(m.logLines, parts[:len(parts)-1]...)
	if over := len(m.logLines) - maxLogLines; over > 0 {
		m.logLines = append([]string(nil), m.logLines[over:]...)
	}
}

// closeStreams closes the console and operation streams (on quit).
func (m Model) closeStreams() {
	if m.logReader != nil {
		m.logReader.Close()
	}
	if m.op != nil && m.op.reader != nil {
		m.op.reader.Close()
	}
}

// key handles a key press: overlays (form, confirmation, help) first.
func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.String() == "ctrl+c" {
		m.closeStreams()
		return m, tea.Quit
	}
	switch {
	case m.form != nil:
		return m.formKey(k)
	case m.confirm != nil:
		vm := *m.confirm
		m.confirm = nil
		switch k.String() {
		case "y", "Y":
			m.pending[vm.ID] = "deleting"
			m.setInfo(fmt.Sprintf("deleting %s…", vm.Name))
			return m, deleteVM(m.client, vm)
		default:
			m.setInfo(fmt.Sprintf("kept %s", vm.Name))
			return m, nil
		}
	case m.help:
		m.help = false // any key closes the help
		return m, nil
	}
	switch k.String() {
	case "q":
		m.closeStreams()
		return m, tea.Quit
	case "?":
		m.help = true
	case "tab", "right":
		return m.switchView((m.view + 1) % numViews)
	case "shift+tab", "left":
		return m.switchView((m.view + numViews - 1) % numViews)
	case "1", "2", "3", "4":
		return m.switchView(view(k.String()[0] - '1'))
	case "up", "k":
		return m.moveCursor(-1)
	case "down", "j":
		return m.moveCursor(1)
	case "esc":
		if m.op != nil && !m.op.running() {
			m.op = nil
		}
		m.status, m.statusErr = "", false
	case "c", "n":
		d := m.opts.Defaults
		if d.Name == "" {
			d.Name = vmname.Generate(func(n string) bool {
				for _, v := range m.vms {
					if v.Name == n {
						return true
					}
				}
				return false
			})
		}
		m.form = newCreateForm(d)
		m.setInfo("create a VM: tab moves, enter creates, esc cancels")
	case "s":
		return m.startOp("start")
	case "r":
		return m.startOp("restart")
	case "x":
		vm, ok := m.selected()
		if !ok {
			return m, nil
		}
		if vm.State != "running" {
			m.setErr(fmt.Errorf("stop %s: it is %s", vm.Name, vm.State))
			return m, nil
		}
		m.pending[vm.ID] = "stopping"
		m.setInfo(fmt.Sprintf("stopping %s…", vm.Name))
		return m, stopVM(m.client, vm)
	case "d", "delete":
		if vm, ok := m.selected(); ok {
			m.confirm = &vm
		}
	case "C":
		if !m.op.running() {
			m.setErr(errors.New("no operation is running"))
			return m, nil
		}
		if m.op.canceling {
			return m, nil
		}
		m.op.canceling = true
		m.setInfo(fmt.Sprintf("canceling %s %s: rolling back…", m.op.kind, m.op.target))
		return m, cancelOp(m.client, m.op.id)
	case "e", "enter":
		if m.view == viewSessions && k.String() == "enter" {
			return m.attach()
		}
		return m.ssh()
	case "a":
		return m.attach()
	case "l":
		return m.switchView(viewLogs)
	}
	return m, nil
}

// formKey drives the create form.
func (m Model) formKey(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "esc":
		m.form = nil
		m.setInfo("create canceled")
		return m, nil
	case "tab", "down":
		m.form.move(1)
		return m, nil
	case "shift+tab", "up":
		m.form.move(-1)
		return m, nil
	case "enter":
		req, err := m.form.request()
		if err != nil {
			m.form.err = err.Error()
			return m, nil
		}
		if m.op.running() {
			m.form.err = "an operation is running; wait for it or cancel it (C)"
			return m, nil
		}
		m.form = nil
		target := req.Name
		if target == "" {
			target = "new vm"
		}
		m.op = &opState{kind: "create", target: target, started: m.now(), state: api.OpRunning}
		m.setInfo(fmt.Sprintf("creating %s…", target))
		return m, createVM(m.client, req, target)
	}
	m.form.update(k)
	return m, nil
}

// startOp starts a start or restart operation on the selection.
func (m Model) startOp(kind string) (tea.Model, tea.Cmd) {
	vm, ok := m.selected()
	if !ok {
		return m, nil
	}
	if m.op.running() {
		m.setErr(fmt.Errorf("%s %s: an operation is running; wait for it or cancel it (C)", kind, vm.Name))
		return m, nil
	}
	if kind == "start" && vm.State == "running" {
		m.setErr(fmt.Errorf("start %s: it is already running", vm.Name))
		return m, nil
	}
	m.op = &opState{kind: kind, target: vm.Name, started: m.now(), state: api.OpRunning}
	m.setInfo(fmt.Sprintf("%s %s…", kind, vm.Name))
	return m, vmOp(m.client, kind, vm)
}

// opEvent applies one event of the followed operation.
func (m Model) opEvent(msg opEventMsg) (tea.Model, tea.Cmd) {
	op := m.op
	if op == nil || op.id != msg.id {
		return m, nil
	}
	op = &opState{}
	*op = *m.op
	m.op = op
	if msg.err != nil {
		op.state, op.err, op.reader, op.finished = api.OpFailed, "follow operation: "+msg.err.Error(), nil, m.now()
		return m, m.fetchIfIdle()
	}
	ev := msg.ev
	switch ev.Type {
	case api.EventStage:
		if ev.Stage != nil && ev.StageIndex >= 0 {
			stages := append([]api.Stage(nil), op.stages...)
			for len(stages) <= ev.StageIndex {
				stages = append(stages, api.Stage{})
			}
			stages[ev.StageIndex] = *ev.Stage
			op.stages = stages
		}
	case api.EventLog:
		op.log = append(append([]string(nil), op.log...), ev.Message)
		if len(op.log) > maxOpLogLines {
			op.log = op.log[len(op.log)-maxOpLogLines:]
		}
	case api.EventDone:
		op.state, op.reader, op.finished = ev.State, nil, m.now()
		if ev.Error != nil {
			op.err = ev.Error.Message
		}
		switch ev.State {
		case api.OpSucceeded:
			var vm api.VM
			if json.Unmarshal(ev.Result, &vm) == nil && vm.ID != "" {
				op.target = vm.Name
				if op.kind == "create" {
					m.selID = vm.ID
				}
			}
			m.setInfo(fmt.Sprintf("%s %s: done", op.kind, op.target))
		case api.OpCanceled:
			m.setInfo(fmt.Sprintf("%s %s: canceled and rolled back", op.kind, op.target))
		default:
			m.setErr(fmt.Errorf("%s %s: %s", op.kind, op.target, op.err))
		}
		return m, m.fetchIfIdle()
	}
	return m, nextEvent(op.id, op.reader)
}

// ssh suspends the dashboard and runs `banger vm ssh NAME`.
func (m Model) ssh() (tea.Model, tea.Cmd) {
	vm, ok := m.selected()
	if !ok {
		return m, nil
	}
	if vm.State != "running" {
		m.setErr(fmt.Errorf("ssh %s: it is %s", vm.Name, vm.State))
		return m, nil
	}
	cmd := m.command("vm", "ssh", vm.Name)
	name := vm.Name
	return m, m.exec(cmd, func(err error) tea.Msg { return execDoneMsg{what: "ssh", vm: name, err: err} })
}

// attach suspends the dashboard and attaches to the selected session.
func (m Model) attach() (tea.Model, tea.Cmd) {
	vm, ok := m.selected()
	if !ok {
		return m, nil
	}
	if !m.opts.AttachCommand {
		m.setErr(errors.New("attach: this banger has no `vm session attach`"))
		return m, nil
	}
	if m.sessionsFor != vm.ID || len(m.sessions) == 0 {
		m.setErr(fmt.Errorf("attach: %s has no sessions (see the Sessions view)", vm.Name))
		return m, nil
	}
	s := m.sessions[clamp(m.sessCursor, len(m.sessions))]
	if s.State != api.SessionRunning {
		m.setErr(fmt.Errorf("attach %s/%s: it is %s", vm.Name, s.Name, s.State))
		return m, nil
	}
	cmd := m.command("vm", "session", "attach", vm.Name, s.Name)
	name, sess := vm.Name, s.Name
	return m, m.exec(cmd, func(err error) tea.Msg { return execDoneMsg{what: "attach", vm: name, session: sess, err: err} })
}

func (m Model) command(args ...string) *exec.Cmd {
	cmd := exec.Command(m.opts.selfBinary(), args...)
	cmd.Env = m.opts.Env
	return cmd
}

// execDone reports how ssh or attach ended and reminds that the VM is
// still running.
func (m Model) execDone(msg execDoneMsg) (tea.Model, tea.Cmd) {
	var what string
	switch msg.what {
	case "attach":
		what = fmt.Sprintf("attach %s/%s", msg.vm, msg.session)
	default:
		what = "ssh " + msg.vm
	}
	var ee *exec.ExitError
	switch {
	case errors.As(msg.err, &ee):
		m.setErr(fmt.Errorf("%s: exit status %d", what, ee.ExitCode()))
	case msg.err != nil:
		m.setErr(fmt.Errorf("%s: %w", what, msg.err))
	default:
		m.setInfo(what + ": ended")
	}
	for _, v := range m.vms {
		if v.Name == msg.vm && v.State == "running" && msg.err == nil {
			m.setInfo(fmt.Sprintf("vm %s is still running: x stops it, d deletes it (banger vm stop %s)", v.Name, v.Name))
		}
	}
	return m, m.fetchIfIdle()
}

// switchView changes the view and starts or stops what it follows.
func (m Model) switchView(v view) (tea.Model, tea.Cmd) {
	if v < 0 || v >= numViews {
		return m, nil
	}
	m.view = v
	var cmds []tea.Cmd
	if v != viewLogs {
		cmds = append(cmds, m.stopLogs())
	}
	cmds = append(cmds, m.viewFollowUp())
	return m, tea.Batch(cmds...)
}

// moveCursor moves the cursor of the current view.
func (m Model) moveCursor(d int) (tea.Model, tea.Cmd) {
	switch m.view {
	case viewImages:
		m.imgCursor = clamp(m.imgCursor+d, len(m.images))
		return m, nil
	case viewSessions:
		if len(m.sessions) > 0 {
			m.sessCursor = clamp(m.sessCursor+d, len(m.sessions))
			return m, nil
		}
	}
	if len(m.vms) == 0 {
		return m, nil
	}
	i := clamp(m.selIndex+d, len(m.vms))
	for j, v := range m.vms {
		if v.ID == m.selID {
			i = clamp(j+d, len(m.vms))
		}
	}
	if m.vms[i].ID == m.selID {
		return m, nil
	}
	m.selIndex, m.selID = i, m.vms[i].ID
	m.sessions, m.sessionsFor, m.sessionsErr, m.sessCursor = nil, "", "", 0
	return m, m.viewFollowUp()
}

// Commands: each one calls the client off the update loop and reports
// back with a message.

func createVM(c Client, req api.CreateVMRequest, target string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		ref, err := c.CreateVM(ctx, req)
		return opStartedMsg{kind: "create", target: target, ref: ref, err: err}
	}
}

func vmOp(c Client, kind string, vm api.VM) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		var ref api.OperationRef
		var err error
		if kind == "restart" {
			ref, err = c.RestartVM(ctx, vm.ID)
		} else {
			ref, err = c.StartVM(ctx, vm.ID, api.StartVMRequest{})
		}
		return opStartedMsg{kind: kind, target: vm.Name, ref: ref, err: err}
	}
}

func openEvents(c Client, id string) tea.Cmd {
	return func() tea.Msg {
		r, err := c.OperationEvents(context.Background(), id)
		return opStreamMsg{id: id, reader: r, err: err}
	}
}

func nextEvent(id string, r *api.EventReader) tea.Cmd {
	return func() tea.Msg {
		ev, err := r.Next()
		if err != nil {
			r.Close()
		} else if ev.Type == api.EventDone {
			r.Close()
		}
		return opEventMsg{id: id, ev: ev, err: err}
	}
}

func cancelOp(c Client, id string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		return opCancelMsg{id: id, err: c.CancelOperation(ctx, id)}
	}
}

func stopVM(c Client, vm api.VM) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		_, err := c.StopVM(ctx, vm.ID)
		return stopDoneMsg{vm: vm, err: err}
	}
}

func deleteVM(c Client, vm api.VM) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		return deleteDoneMsg{vm: vm, err: c.DeleteVM(ctx, vm.ID, false)}
	}
}

func listSessions(c Client, vm api.VM) tea.Cmd {
	return func() tea.Msg {
		sl, ok := c.(SessionLister)
		if !ok {
			return sessionsMsg{vmID: vm.ID, err: errNoSessions}
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		s, err := sl.Sessions(ctx, vm.ID)
		return sessionsMsg{vmID: vm.ID, sessions: s, err: err}
	}
}

func openLogs(c Client, vm api.VM) tea.Cmd {
	return func() tea.Msg {
		r, err := c.VMLogs(context.Background(), vm.ID, vm.State == "running")
		return logOpenMsg{vmID: vm.ID, reader: r, err: err}
	}
}

func readChunk(r io.ReadCloser) tea.Cmd {
	return func() tea.Msg {
		buf := make([]byte, logChunkBytes)
		n, err := r.Read(buf)
		return logChunkMsg{reader: r, data: buf[:n], err: err}
	}
}

func closeCmd(c io.Closer) tea.Cmd {
	return func() tea.Msg {
		c.Close()
		return nil
	}
}
