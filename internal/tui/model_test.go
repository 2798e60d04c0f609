package tui

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
	"banger/internal/vmname"
)

func TestModel_TabSwitching(t *testing.T) {
	h := newHarness(t, newFake(testVM("id-a", "alpha", "running", 0)))
	tests := []struct {
		keys []string
		want view
		tab  string
	}{
		{[]string{"tab"}, viewImages, "[2 Images]"},
		{[]string{"tab"}, viewSessions, "[3 Sessions]"},
		{[]string{"tab"}, viewLogs, "[4 Logs]"},
		{[]string{"tab"}, viewVMs, "[1 VMs]"},
		{[]string{"shift+tab"}, viewLogs, "[4 Logs]"},
		{[]string{"2"}, viewImages, "[2 Images]"},
		{[]string{"1"}, viewVMs, "[1 VMs]"},
		{[]string{"l"}, viewLogs, "[4 Logs]"},
		{[]string{"9"}, viewLogs, "[4 Logs]"}, // not a view: ignored
	}
	for _, tt := range tests {
		h.press(tt.keys...)
		if h.m.view != tt.want {
			t.Fatalf("after %v: view %d, want %d", tt.keys, h.m.view, tt.want)
		}
		h.wantScreen(tt.tab)
	}
}

func TestModel_SelectionKeptAcrossRefresh(t *testing.T) {
	a, b, c := testVM("id-a", "alpha", "running", 0), testVM("id-b", "bravo", "stopped", 0), testVM("id-c", "charlie", "running", 0)
	f := newFake(a, b, c)
	h := newHarness(t, f)
	if h.m.selID != "id-a" {
		t.Fatalf("initial selection %q, want the first VM", h.m.selID)
	}
	h.press("down")
	if h.m.selID != "id-b" {
		t.Fatalf("after down: %q, want id-b", h.m.selID)
	}
	// A new VM sorts first and the order changes: the selection follows bravo.
	d := testVM("id-d", "aaa-new", "creating", 0)
	f.setVMs(d, c, b, a)
	h.refresh()
	if h.m.selID != "id-b" {
		t.Fatalf("after reorder: selection %q, want id-b", h.m.selID)
	}
	if got := selectedLine(h.screen()); !strings.Contains(got, "bravo") {
		t.Errorf("selected row %q, want bravo", got)
	}
	// The selected VM vanishes: the VM now at its index is selected.
	f.setVMs(d, c, a)
	h.refresh()
	if h.m.selID != "id-a" {
		t.Fatalf("after bravo vanished: selection %q, want id-a (its old index)", h.m.selID)
	}
	// Moving stays within the list.
	h.press("down", "down", "down")
	if h.m.selID != "id-a" {
		t.Fatalf("past the end: %q", h.m.selID)
	}
	h.press("up", "k")
	if h.m.selID != "id-d" {
		t.Fatalf("up twice: %q, want id-d", h.m.selID)
	}
}

// selectedLine returns the row marked with the cursor.
func selectedLine(screen string) string {
	for _, l := range lines(screen) {
		if strings.HasPrefix(l, cursorMark) {
			return l
		}
	}
	return ""
}

func TestModel_CreateForm(t *testing.T) {
	f := newFake()
	h := newHarness(t, f)
	h.press("c")
	if h.m.form == nil {
		t.Fatal("c did not open the form")
	}
	if err := vmname.Validate(h.m.form.value(fieldName)); err != nil {
		t.Errorf("pre-filled name %q: %v", h.m.form.value(fieldName), err)
	}
	h.wantScreen("create a VM", "debian-12", "1024", "2G", "enter create", "esc cancel")
	// Replace the generated name, change the memory.
	h.press("ctrl+u")
	h.typeText("web1")
	h.press("tab", "tab", "tab", "backspace", "backspace", "backspace", "backspace")
	h.typeText("512")
	created := testVM("id-w", "web1", "running", 0)
	f.script["op1"] = []api.Event{
		stageEv(1, 0, "image", api.StageDone),
		stageEv(2, 1, "boot", api.StageRunning),
	}
	h.press("enter")
	if h.m.form != nil {
		t.Fatal("form still open after a valid submit")
	}
	want := []api.CreateVMRequest{{Name: "web1", Image: "debian-12", VMM: "qemu", Spec: api.VMSpec{VCPU: 2, MemoryMiB: 512, DiskBytes: 2 << 30}}}
	if diff := cmp.Diff(want, f.created); diff != "" {
		t.Fatalf("create requests (-want +got):\n%s", diff)
	}
	h.wantScreen("create web1", "✓ image", "→ boot", "C cancel")
	// The operation ends; the new VM becomes the selection.
	f.setVMs(testVM("id-a", "alpha", "running", 0), created)
	f.finish("op1", stageEv(3, 1, "boot", api.StageDone), doneEv(4, api.OpSucceeded, &created, nil))
	h.settle()
	if h.m.op.running() {
		t.Fatal("operation still running after its done event")
	}
	if h.m.selID != "id-w" {
		t.Errorf("selection %q, want the created VM", h.m.selID)
	}
	h.wantScreen("create web1: done", "✓ boot", "esc dismiss", "succeeded · 0s")
	h.advance(time.Minute) // a finished operation's time stands still
	h.wantScreen("succeeded · 0s")
	h.press("esc")
	if h.m.op != nil {
		t.Error("esc did not dismiss the finished operation")
	}
}

func TestModel_CreateFormValidation(t *testing.T) {
	tests := []struct {
		name  string
		field int
		value string
		want  string
	}{
		{"bad name", fieldName, "Not_A_Label", "name"},
		{"zero vcpu", fieldVCPU, "0", "vcpu must be between 1 and 32, got 0"},
		{"vcpu not a number", fieldVCPU, "x", `vcpu "x"`},
		{"tiny memory", fieldMemory, "64", "memory must be at least 256 MiB, got 64 MiB"},
		{"bad disk", fieldDisk, "lots", "disk"},
		{"small disk", fieldDisk, "10M", "disk size must be at least 1G, got 10M"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			h := newHarness(t, f)
			h.press("c")
			for range tt.field {
				h.press("tab")
			}
			h.press("ctrl+u")
			h.typeText(tt.value)
			h.press("enter")
			if h.m.form == nil || !strings.Contains(h.m.form.err, tt.want) {
				t.Fatalf("form error %+v, want one about %q", h.m.form, tt.want)
			}
			if f.called("create") {
				t.Fatal("an invalid form reached the daemon")
			}
			h.wantScreen(tt.want)
			h.press("esc")
			if h.m.form != nil {
				t.Fatal("esc did not close the form")
			}
			h.wantScreen("create canceled")
		})
	}
}

func TestModel_StartRestart(t *testing.T) {
	tests := []struct {
		key, kind, call string
		state           string
	}{
		{"s", "start", "start id-a", "stopped"},
		{"r", "restart", "restart id-a", "running"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			vm := testVM("id-a", "alpha", tt.state, 0)
			f := newFake(vm)
			f.script["op1"] = []api.Event{stageEv(1, 0, "boot", api.StageRunning)}
			h := newHarness(t, f)
			h.press(tt.key)
			if !f.called(tt.call) || !f.called("events op1") {
				t.Fatalf("calls %v, want %q and its events", f.calls, tt.call)
			}
			h.wantScreen(tt.kind+" alpha", "→ boot")
			// A second long action waits for the first.
			h.press("r")
			h.wantScreen("an operation is running")
			up := vm
			up.State = "running"
			f.finish("op1", stageEv(2, 0, "boot", api.StageDone), doneEv(3, api.OpSucceeded, &up, nil))
			h.settle()
			h.wantScreen(tt.kind+" alpha: done", "✓ boot")
		})
	}
}

func TestModel_StartErrors(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0), testVM("id-b", "bravo", "stopped", 0))
	h := newHarness(t, f)
	h.press("s")
	h.wantScreen("error: start alpha: it is already running")
	if f.called("start") {
		t.Fatal("start sent for a running VM")
	}
	f.startErr = api.Errorf(api.CodeConflict, "vm bravo is being deleted")
	h.press("down", "s")
	h.wantScreen("error: start bravo: vm bravo is being deleted")
	if h.m.op != nil {
		t.Errorf("a failed start left an operation: %+v", h.m.op)
	}
}

func TestModel_Stop(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 42))
	h := newHarness(t, f)
	h.press("x")
	if !f.called("stop id-a") {
		t.Fatalf("calls %v", f.calls)
	}
	h.wantScreen("vm alpha stopped")
	if got := selectedLine(h.screen()); !strings.Contains(got, "stopped") {
		t.Errorf("row after stop: %q", got)
	}
	// Stopping a stopped VM is refused locally.
	f.calls = nil
	h.press("x")
	h.wantScreen("error: stop alpha: it is stopped")
	if f.called("stop") {
		t.Error("stop sent for a stopped VM")
	}
}

func TestModel_StopPendingAndError(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 42))
	f.stopErr = errors.New("guest did not shut down")
	h := newHarness(t, f)
	// Before the stop returns the row says stopping.
	nm, cmd := h.m.Update(keyMsg("x"))
	h.m = nm.(Model)
	if got := selectedLine(h.screen()); !strings.Contains(got, "stopping") {
		t.Errorf("row while stopping: %q", got)
	}
	h.run(cmd)
	h.settle()
	h.wantScreen("error: stop alpha: guest did not shut down")
	if got := selectedLine(h.screen()); strings.Contains(got, "stopping") {
		t.Errorf("row still pending after the stop failed: %q", got)
	}
}

func TestModel_DeleteConfirm(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0), testVM("id-b", "bravo", "stopped", 0))
	h := newHarness(t, f)
	h.press("d")
	h.wantScreen("delete vm alpha and everything it owns?", "y delete", "n keep")
	h.press("n")
	if f.called("delete") {
		t.Fatal("delete sent after n")
	}
	h.wantScreen("kept alpha")
	h.press("d", "esc")
	if f.called("delete") {
		t.Fatal("delete sent after esc")
	}
	h.press("d", "y")
	if !f.called("delete id-a force=false") {
		t.Fatalf("calls %v", f.calls)
	}
	h.wantScreen("vm alpha deleted")
	h.wantNoScreen("alpha.vm", "alpha ·")
	if h.m.selID != "id-b" {
		t.Errorf("selection after delete %q, want the remaining VM", h.m.selID)
	}
}

func TestModel_SSH(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0), testVM("id-b", "bravo", "stopped", 0))
	h := newHarness(t, f)
	h.press("e")
	if diff := cmp.Diff([][]string{{"banger", "vm", "ssh", "alpha"}}, h.execs); diff != "" {
		t.Fatalf("exec (-want +got):\n%s", diff)
	}
	h.wantScreen("vm alpha is still running", "banger vm stop alpha")

	h.execErr = errors.New("ssh died")
	h.press("enter")
	h.wantScreen("error: ssh alpha: ssh died")

	h.press("down", "e")
	if len(h.execs) != 2 {
		t.Fatalf("ssh ran for a stopped VM: %v", h.execs)
	}
	h.wantScreen("error: ssh bravo: it is stopped")
}

func TestModel_Sessions(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0))
	f.sessions["id-a"] = []api.Session{
		{Name: "s1", Command: []string{"sleep", "1000"}, State: api.SessionExited, StartedAt: testNow},
		{Name: "build", Command: []string{"make", "-j4"}, State: api.SessionRunning, PID: 77, PTY: true, StartedAt: testNow},
	}
	h := newHarness(t, f)
	h.press("3")
	h.wantScreen("sessions of alpha", "s1", "build", "make -j4", "a attach")
	// The first session exited: attach refuses it.
	h.press("a")
	h.wantScreen("error: attach alpha/s1: it is exited")
	h.press("down", "a")
	if diff := cmp.Diff([][]string{{"banger", "vm", "session", "attach", "alpha", "build"}}, h.execs); diff != "" {
		t.Fatalf("exec (-want +got):\n%s", diff)
	}
	h.wantScreen("vm alpha is still running")
	// enter attaches too in this view.
	h.press("enter")
	if len(h.execs) != 2 {
		t.Fatalf("enter in sessions: %v", h.execs)
	}
}

func TestModel_SessionsNotAvailable(t *testing.T) {
	tests := []struct {
		name string
		opt  func(*Options)
	}{
		{"client without sessions", func(o *Options) { o.Client = noSessions{o.Client} }},
		{"daemon without sessions", func(o *Options) {}}, // the fake answers not_implemented
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(testVM("id-a", "alpha", "running", 0))
			h := newHarness(t, f, tt.opt)
			h.press("3")
			h.wantScreen("sessions: not available")
			h.press("a")
			if len(h.execs) != 0 {
				t.Fatalf("attach ran: %v", h.execs)
			}
			h.wantScreen("error: attach: alpha has no sessions")
		})
	}
}

func TestModel_AttachWithoutCommand(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0))
	f.sessions["id-a"] = []api.Session{{Name: "s1", State: api.SessionRunning}}
	h := newHarness(t, f, func(o *Options) { o.AttachCommand = false })
	h.press("3", "a")
	if len(h.execs) != 0 {
		t.Fatalf("attach ran: %v", h.execs)
	}
	h.wantScreen("has no `vm session attach`")
}

func TestModel_Logs(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 0), testVM("id-b", "bravo", "stopped", 0))
	f.logs["id-a"] = "[    0.000000] Linux version 6.1\n\x1b[32mOK\x1b[0m Reached target multi-user\r\nlogin: "
	f.logs["id-b"] = "bravo booted once\n"
	h := newHarness(t, f)
	h.press("l")
	if !f.called("logs id-a follow=true") {
		t.Fatalf("calls %v", f.calls)
	}
	h.wantScreen("console of alpha", "Linux version 6.1", "OK Reached target multi-user", "login:")
	h.wantNoScreen("\x1b[32m")
	// Moving the selection follows the other VM's console (not followed:
	// it is stopped).
	h.press("down")
	if !f.called("logs id-b follow=false") {
		t.Fatalf("calls %v", f.calls)
	}
	h.wantScreen("console of bravo", "bravo booted once")
	h.wantNoScreen("Linux version")
}

func TestModel_CancelOperation(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "stopped", 0))
	f.script["op1"] = []api.Event{
		stageEv(1, 0, "network", api.StageDone),
		stageEv(2, 1, "boot", api.StageRunning),
	}
	f.rollback["op1"] = []api.Event{
		stageEv(3, 1, "boot", api.StageFailed),
		stageEv(4, 2, "rollback", api.StageRunning),
		{Seq: 5, Type: api.EventLog, Message: "release tap"},
		stageEv(6, 2, "rollback", api.StageDone),
		doneEv(7, api.OpCanceled, nil, &api.Error{Code: api.CodeCanceled, Message: "start alpha: canceled"}),
	}
	h := newHarness(t, f)
	h.press("C")
	h.wantScreen("error: no operation is running")
	h.press("s")
	h.wantScreen("start alpha", "→ boot", "C cancel")
	// Hold the rollback until the screen showed "canceling".
	nm, cmd := h.m.Update(keyMsg("C"))
	h.m = nm.(Model)
	h.wantScreen("canceling, rolling back")
	h.run(cmd)
	h.settle()
	if !f.called("cancel op1") {
		t.Fatalf("calls %v", f.calls)
	}
	h.wantScreen("canceled and rolled back", "✗ boot", "✓ rollback", "start alpha: canceled")
	if h.m.op.running() {
		t.Error("operation still running after the canceled done event")
	}
}

func TestModel_ErrorDisplay(t *testing.T) {
	f := newFake()
	f.listErr = &api.DialError{Socket: "/run/bangerd.sock", Err: errors.New("connection refused")}
	h := newHarness(t, f)
	h.wantScreen("daemon unreachable", "cannot list VMs", "is bangerd running?")
	// The daemon comes back.
	f.listErr = nil
	f.setVMs(testVM("id-a", "alpha", "failed", 0))
	f.vms[0].LastError = "vmm exited: signal killed"
	h.refresh()
	h.wantNoScreen("daemon unreachable")
	h.wantScreen("alpha", "failed", "last error: vmm exited: signal killed")
	// An operation that fails shows its error.
	f.script["op1"] = []api.Event{
		stageEv(1, 0, "boot", api.StageFailed),
		doneEv(2, api.OpFailed, nil, &api.Error{Code: api.CodeUnavailable, Message: "qemu: cannot open tap"}),
	}
	h.press("s")
	h.wantScreen("error: start alpha: qemu: cannot open tap", "✗ boot")
}

func TestModel_ProcessUse(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 4242))
	h := newHarness(t, f)
	h.setProc(4242, ProcSample{CPUTicks: 1000, RSSBytes: 300 << 20})
	h.refresh()
	if u := h.m.procs["id-a"]; u.RSS != 300<<20 || u.HaveCPU {
		t.Fatalf("first sample: %+v", u)
	}
	h.setProc(4242, ProcSample{CPUTicks: 1150, RSSBytes: 310 << 20})
	h.advance(time.Second)
	h.refresh()
	u := h.m.procs["id-a"]
	if !u.HaveCPU || u.CPU < 149.9 || u.CPU > 150.1 {
		t.Fatalf("cpu after 150 ticks in 1s = %+v, want 150%%", u)
	}
	h.wantScreen("150%", "310.0 MiB", "pid 4242")
}

func TestModel_GuestStats(t *testing.T) {
	f := newFake(testVM("id-a", "alpha", "running", 4242), testVM("id-b", "beta", "stopped", 0))
	f.stats = map[string]api.VMStats{"id-a": {VM: "alpha", ID: "id-a", CPUPercent: 42, MemUsed: 300 << 20, MemTotal: 1 << 30,
		Load: [3]float64{0.5}, Root: api.DiskUse{Used: 64 << 20, Size: 2 << 30}, Overlay: api.DiskUse{Used: 10 << 20, Size: 3 << 30}, RxRate: 2048}}
	h := newHarness(t, f)
	h.setProc(4242, ProcSample{CPUTicks: 1000, RSSBytes: 300 << 20})
	h.refresh()
	h.refresh()                                                                      // the first refresh selects alpha; the next measures it
	h.wantScreen("guest 42% cpu", "300.0 MiB/1.0 GiB mem", "/root 64.0 MiB/2.0 GiB") // the rest is cut at 80 columns
	// A stopped VM is not measured.
	h.press("j")
	h.refresh()
	h.wantNoScreen("guest 42% cpu")
}

func TestModel_HelpAndQuit(t *testing.T) {
	h := newHarness(t, newFake(testVM("id-a", "alpha", "running", 0)))
	h.press("?")
	h.wantScreen("keys", "cancel the running operation", "press any key to close")
	h.press("j") // closes the help, does not move
	if h.m.help {
		t.Fatal("help still open")
	}
	h.wantNoScreen("press any key to close")
	h.press("q")
	if !h.quit {
		t.Fatal("q did not quit")
	}
}
