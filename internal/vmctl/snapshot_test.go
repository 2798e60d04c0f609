package vmctl

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/vmm"
)

// snapVMM is fakeVMM that can also pause, resume and save: Save writes a
// small state file naming the VM's sockets, which is all vmctl reads of
// it. failStart makes the Nth Start (counted from 1) fail.
type snapVMM struct {
	*fakeVMM
	mu                             sync.Mutex
	starts, pauses, resumes, saves int
	failStart                      int
}

func (f *snapVMM) Start(ctx context.Context, s vmm.Spec) (vmm.Handles, error) {
	f.mu.Lock()
	f.starts++
	fail := f.starts == f.failStart
	f.mu.Unlock()
	if fail {
		return vmm.Handles{}, errors.New("injected start failure")
	}
	return f.fakeVMM.Start(ctx, s)
}

func (f *snapVMM) Pause(context.Context, vmm.Handles) error {
	f.mu.Lock()
	f.pauses++
	f.mu.Unlock()
	return nil
}

func (f *snapVMM) Resume(context.Context, vmm.Handles) error {
	f.mu.Lock()
	f.resumes++
	f.mu.Unlock()
	return nil
}

func (f *snapVMM) Save(_ context.Context, h vmm.Handles, dir string) (vmm.SavedState, error) {
	f.mu.Lock()
	f.saves++
	f.mu.Unlock()
	if err := os.WriteFile(filepath.Join(dir, "vmstate"), []byte("memory of "+h.QMPSocket), 0o600); err != nil {
		return vmm.SavedState{}, err
	}
	files, err := vmm.DescribeState(dir, "vmstate")
	return vmm.SavedState{VMM: vmm.QEMU, Version: "fake-1", Files: files}, err
}

func (f *snapVMM) Version(context.Context) (string, error) { return "fake-1", nil }

// Relocatable: the stand-in's state, like QEMU's, restores anywhere.
func (f *snapVMM) Relocatable(context.Context, vmm.Handles) error { return nil }

func (f *snapVMM) count() (starts, resumes, saves int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.resumes, f.saves
}

func withSnapVMM(h *harness) *snapVMM {
	sv := &snapVMM{fakeVMM: h.vmm}
	h.m.opt.Drivers[vmm.QEMU] = sv
	return sv
}

// run runs fn as an operation and returns its error and final snapshot.
func (h *harness) run(fn func(ctx context.Context, op *operation.Op) error) (api.Operation, error) {
	op := h.ops.Start("test", func(ctx context.Context, op *operation.Op) (any, error) { return nil, fn(ctx, op) })
	_, err := op.Wait(context.Background())
	return op.Snapshot(), err
}

// state is what a test checks stays the same across a refused or failed
// request: VM rows, VM directories, taps in use.
func (h *harness) state(t *testing.T) (names []string, dirs []string, taps int) {
	t.Helper()
	vms, err := h.st.ListVMs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		names = append(names, v.Name)
	}
	ents, _ := os.ReadDir(filepath.Join(h.dir, "vms"))
	for _, e := range ents {
		dirs = append(dirs, e.Name())
	}
	return names, dirs, h.net.inUse()
}

func TestSnapshot_createFromAndFork(t *testing.T) {
	h := newHarness(t)
	sv := withSnapVMM(h)
	ctx := context.Background()
	src, _, err := h.create(t, api.CreateVMRequest{Name: "src", Image: "debian-12", VMM: "qemu", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.CreateSession(ctx, store.Session{VMID: src.ID, Name: "counter", Command: []string{"sh", "-c", "count"}, State: store.SessionRunning}); err != nil {
		t.Fatal(err)
	}

	// Take one: state, disks and description in snapshots/s1, the VM
	// running again, nothing half-made left.
	_, resumed, _ := sv.count()
	var snap Snapshot
	if _, err := h.run(func(ctx context.Context, op *operation.Op) (err error) {
		snap, err = h.m.TakeSnapshot(ctx, op, "src", "s1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.m.snapshotsDir(src.ID), "s1")
	for _, f := range []string{layout.TemplateFile, "vmstate", layout.OverlayFile, layout.WorkFile, layout.ConfigDriveFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("snapshot lacks %s: %v", f, err)
		}
	}
	if snap.Sessions != 1 || snap.VCPU != 1 || snap.DiskBytes != 1<<30 {
		t.Errorf("snapshot %+v", snap)
	}
	if hd, ok := h.m.alive(src.ID); !ok || hd.Paused {
		t.Errorf("src after the snapshot: alive %v, paused %v", ok, hd.Paused)
	}
	if _, resumes, _ := sv.count(); resumes != resumed+1 {
		t.Errorf("%d resumes, want 1", resumes-resumed)
	}
	ents, _ := os.ReadDir(h.m.snapshotsDir(src.ID))
	if len(ents) != 1 {
		t.Errorf("snapshots dir holds %d entries, want only s1", len(ents))
	}
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.TakeSnapshot(ctx, op, "src", "s1")
		return err
	}); err == nil || !strings.Contains(err.Error(), "already has a snapshot") {
		t.Errorf("second s1 = %v", err)
	}
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.TakeSnapshot(ctx, op, "src", "Bad_Name")
		return err
	}); err == nil || !strings.Contains(err.Error(), "snapshot name") {
		t.Errorf("bad name = %v", err)
	}

	// A VM from it: restored, with its own identity and the sessions.
	c1, op, err := h.create(t, api.CreateVMRequest{Name: "c1", From: "src@s1"})
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, st := range op.Stages {
		stages = append(stages, st.Name)
	}
	if got := strings.Join(stages, ","); got != "image,disks,network,config drive,restore,agent ready" {
		t.Errorf("stages %s", got)
	}
	if c1.AgentToken == src.AgentToken || c1.IP == src.IP || c1.MAC == src.MAC || c1.VCPU != src.VCPU {
		t.Errorf("c1 %+v shares identity with src %+v", c1, src)
	}
	if ss, err := h.st.ListSessions(ctx, c1.ID); err != nil || len(ss) != 1 || ss[0].Name != "counter" {
		t.Errorf("c1 sessions %v %v", ss, err)
	}

	// Refused before anything exists: another VMM, a bad reference, a
	// missing snapshot.
	names, dirs, taps := h.state(t)
	for _, tc := range []struct {
		req  api.CreateVMRequest
		want string
	}{
		{api.CreateVMRequest{Name: "x", From: "src@s1", VMM: "firecracker"}, "vmm firecracker: snapshot src@s1 was taken under qemu"},
		{api.CreateVMRequest{Name: "x", From: "src"}, "want VM@SNAPSHOT"},
		{api.CreateVMRequest{Name: "x", From: "src@nope"}, `no snapshot "nope"`},
		{api.CreateVMRequest{Name: "x", From: "ghost@s1"}, "ghost"},
		{api.CreateVMRequest{Name: "x", From: "src@s1", Net: "none", Allow: []string{"good.test"}}, "takes no allow rules"},
	} {
		if _, _, err := h.create(t, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %+v = %v, want %q", tc.req, err, tc.want)
		}
	}
	if n, d, tp := h.state(t); len(n) != len(names) || len(d) != len(dirs) || tp != taps {
		t.Errorf("refused creates left vms %v dirs %v taps %d (before %v %v %d)", n, d, tp, names, dirs, taps)
	}

	// Fork: two copies, the fork's own snapshot gone afterwards.
	var copies []store.VM
	if _, err := h.run(func(ctx context.Context, op *operation.Op) (err error) {
		copies, err = h.m.Fork(ctx, op, "src", 2, "f")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(copies) != 2 || copies[0].Name != "f-1" || copies[1].Name != "f-2" || copies[0].IP == copies[1].IP {
		t.Fatalf("copies %+v", copies)
	}
	for _, c := range copies {
		if !h.m.Alive(c.ID) {
			t.Errorf("%s not running", c.Name)
		}
		if ss, _ := h.st.ListSessions(ctx, c.ID); len(ss) != 1 {
			t.Errorf("%s has %d sessions, want the source's 1", c.Name, len(ss))
		}
	}
	ents, _ = os.ReadDir(h.m.snapshotsDir(src.ID))
	if len(ents) != 1 || ents[0].Name() != "s1" {
		t.Errorf("after the fork the snapshots dir holds %v", ents)
	}

	// Refused: a name taken, a count out of range. A copy that fails
	// takes the ones made before it along.
	names, dirs, taps = h.state(t)
	for _, tc := range []struct {
		n      int
		prefix string
		want   string
	}{{2, "f", "already exists"}, {0, "g", "fork count 0"}, {MaxForks + 1, "g", "fork count 17"}, {1, "Bad", "fork name prefix Bad"}} {
		if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
			_, err := h.m.Fork(ctx, op, "src", tc.n, tc.prefix)
			return err
		}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fork -n %d --name %s = %v, want %q", tc.n, tc.prefix, err, tc.want)
		}
	}
	starts, _, saves := sv.count()
	sv.mu.Lock()
	sv.failStart = starts + 2
	sv.mu.Unlock()
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.Fork(ctx, op, "src", 2, "g")
		return err
	}); err == nil || !strings.Contains(err.Error(), "copy g-2") {
		t.Errorf("fork with a failing second copy = %v", err)
	}
	if _, _, s := sv.count(); s != saves+1 {
		t.Errorf("%d saves for the failed fork, want 1", s-saves)
	}
	if n, d, tp := h.state(t); len(n) != len(names) || len(d) != len(dirs) || tp != taps {
		t.Errorf("failed fork left vms %v dirs %v taps %d (before %v %v %d)", n, d, tp, names, dirs, taps)
	}
	if hd, ok := h.m.alive(src.ID); !ok || hd.Paused {
		t.Errorf("src after the failed fork: alive %v, paused %v", ok, hd.Paused)
	}

	// A state file changed since the snapshot: refused, nothing made.
	f, err := os.OpenFile(filepath.Join(dir, "vmstate"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("X"), 0)
	f.Close()
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "c2", From: "src@s1"}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("create from a corrupt snapshot = %v", err)
	}
	if n, d, tp := h.state(t); len(n) != len(names) || len(d) != len(dirs) || tp != taps {
		t.Errorf("refused corrupt snapshot left vms %v dirs %v taps %d", n, d, tp)
	}

	// List and remove.
	all, err := h.m.Snapshots(ctx, "")
	if err != nil || len(all) != 1 || all[0].Name != "s1" || all[0].VM.Name != "src" {
		t.Errorf("Snapshots = %+v %v", all, err)
	}
	if err := h.m.DeleteSnapshot(ctx, "src@s1"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.DeleteSnapshot(ctx, "src@s1"); err == nil || !strings.Contains(err.Error(), "no snapshot") {
		t.Errorf("second rm = %v", err)
	}
}

// TestSnapshot_refusedWhenNotRunning: there is no memory to save.
func TestSnapshot_refusedWhenNotRunning(t *testing.T) {
	h := newHarness(t)
	withSnapVMM(h)
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "src", Image: "debian-12", Spec: spec()}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Stop(context.Background(), "src"); err != nil {
		t.Fatal(err)
	}
	_, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.TakeSnapshot(ctx, op, "src", "")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("snapshot of a stopped vm = %v", err)
	}
}

// TestReconcile_cleansUpAnInterruptedSnapshot: a daemon killed while a
// snapshot or fork held the VM frozen leaves the marker, a half-written
// snapshot and a fork's own snapshot; the next start lets the VM run
// again and removes them, and keeps finished snapshots.
func TestReconcile_cleansUpAnInterruptedSnapshot(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "src", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	hd, _ := h.cache.Get(vm.ID)
	hd.Paused = true
	if err := h.cache.Set(vm.ID, hd); err != nil {
		t.Fatal(err)
	}
	sd := h.m.snapshotsDir(vm.ID)
	for _, d := range []string{"keep", "half.tmp", forkSnapshotPrefix + "0badf00d"} {
		if err := os.MkdirAll(filepath.Join(sd, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sd, snapshotResumeMarker), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	opt := h.m.opt
	sv := &snapVMM{fakeVMM: h.vmm}
	opt.Drivers = map[string]vmm.Driver{vmm.QEMU: sv}
	opt.Network, opt.DNS, opt.Handles = &fakeNet{out: map[string]bool{}}, &fakeDNS{m: map[string]netip.Addr{}}, vmm.NewHandleCache(filepath.Join(h.dir, "vms"))
	m2 := New(opt)
	if err := m2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if _, resumes, _ := sv.count(); resumes != 1 {
		t.Errorf("%d resumes, want 1", resumes)
	}
	if got, ok := m2.alive(vm.ID); !ok || got.Paused {
		t.Errorf("after reconcile: alive %v paused %v", ok, got.Paused)
	}
	ents, _ := os.ReadDir(sd)
	if len(ents) != 1 || ents[0].Name() != "keep" {
		t.Errorf("snapshots dir after reconcile: %v", ents)
	}
	m2.Close()
}

func TestParseSnapshotRef(t *testing.T) {
	for ref, ok := range map[string]bool{
		"web@s1": true, "web@before-upgrade": true, "web": false, "@s1": false, "web@": false,
		"web@S1": false, "web@.fork-1": false, "web@-a": false, "web@" + strings.Repeat("a", MaxSnapshotName+1): false,
	} {
		if _, _, err := ParseSnapshotRef(ref); (err == nil) != ok {
			t.Errorf("ParseSnapshotRef(%q) = %v, want ok %v", ref, err, ok)
		}
	}
}

// TestCreate_makesTheWarmTemplateOnFirstUse: with warm_templates = "auto"
// the first cold create of a shape saves the new VM as the image's
// template and runs on; the next create of that shape restores from it.
// "manual" and --cold make none.
func TestCreate_makesTheWarmTemplateOnFirstUse(t *testing.T) {
	h := newHarness(t)
	sv := withSnapVMM(h)
	stagesOf := func(op api.Operation) string {
		var names []string
		for _, st := range op.Stages {
			names = append(names, st.Name)
		}
		return strings.Join(names, ",")
	}
	s := spec()
	imgs, err := h.st.ListImages(context.Background())
	if err != nil || len(imgs) != 1 {
		t.Fatalf("images %v %v", imgs, err)
	}
	dir := h.m.templateDir(imgs[0].ID, s.VCPU, s.MemoryMiB, s.DiskBytes)

	h.cfg.WarmTemplates = config.WarmManual
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "m1", Image: "debian-12", Spec: s}); err != nil {
		t.Fatal(err)
	}
	h.cfg.WarmTemplates = config.WarmAuto
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "c1", Image: "debian-12", Spec: s, Cold: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("manual or --cold made a template: %v", err)
	}

	first, op, err := h.create(t, api.CreateVMRequest{Name: "a1", Image: "debian-12", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if got := stagesOf(op); got != "image,disks,network,config drive,boot,agent ready,template,template disks,resume" {
		t.Errorf("first create stages %s", got)
	}
	if _, err := os.Stat(filepath.Join(dir, layout.TemplateFile)); err != nil {
		t.Fatalf("no template after the first create: %v", err)
	}
	if hd, ok := h.m.alive(first.ID); !ok || hd.Paused {
		t.Errorf("the first vm after making the template: alive %v paused %v", ok, hd.Paused)
	}
	starts, _, saves := sv.count()
	second, op, err := h.create(t, api.CreateVMRequest{Name: "a2", Image: "debian-12", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if got := stagesOf(op); got != "image,disks,network,config drive,restore,agent ready" {
		t.Errorf("second create stages %s, want a restore", got)
	}
	if st, _, sv2 := sv.count(); st != starts+1 || sv2 != saves {
		t.Errorf("second create: %d starts, %d saves", st-starts, sv2-saves)
	}
	if second.AgentToken == first.AgentToken {
		t.Error("the restored vm kept the template's token")
	}

	// A synced file that changed since the template was made: a restored
	// guest would keep the old content, so the next create boots cold
	// (saying why) and makes the template again.
	synced := filepath.Join(t.TempDir(), "token.json")
	os.WriteFile(synced, []byte("v1"), 0o600)
	h.cfg.FileSync = []config.FileSync{{Host: synced, Guest: "~/.token.json"}}
	_, op, err = h.create(t, api.CreateVMRequest{Name: "a3", Image: "debian-12", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	if got := stagesOf(op); !strings.Contains(got, ",boot,") || !strings.Contains(got, "template") {
		t.Errorf("create after a file_sync change: stages %s, want a cold boot that remakes the template", got)
	}
	if !strings.Contains(strings.Join(op.Log, "\n"), "[[file_sync]] files changed") {
		t.Errorf("no word of the file_sync change: %q", op.Log)
	}
	if _, op, err = h.create(t, api.CreateVMRequest{Name: "a4", Image: "debian-12", Spec: s}); err != nil || !strings.Contains(stagesOf(op), "restore") {
		t.Errorf("create with the remade template: %v, stages %s", err, stagesOf(op))
	}
	os.WriteFile(synced, []byte("v2"), 0o600)
	if _, op, err = h.create(t, api.CreateVMRequest{Name: "a5", Image: "debian-12", Spec: s}); err != nil || strings.Contains(stagesOf(op), "restore") {
		t.Errorf("create after the synced file's content changed: %v, stages %s", err, stagesOf(op))
	}
}

// TestCheckSaveSpace: a save that may not fit is refused before the
// guest is frozen, naming what it needs.
func TestCheckSaveSpace(t *testing.T) {
	m := New(Options{VMsDir: filepath.Join(t.TempDir(), "vms")})
	dir := filepath.Join(t.TempDir(), "snapshots")
	if err := m.checkSaveSpace(store.VM{ID: "x", Name: "huge", MemoryMiB: 1 << 30}, dir); err == nil || !strings.Contains(err.Error(), "not enough disk space") || !strings.Contains(err.Error(), "huge") {
		t.Errorf("a petabyte of memory = %v", err)
	}
	if err := m.checkSaveSpace(store.VM{ID: "x", Name: "small", MemoryMiB: 1}, dir); err != nil {
		t.Errorf("one MiB = %v", err)
	}
}

// TestCreate_hostMadeHostKey: a cold boot gives the guest a host key the
// host made and pinned before the guest ran; the VM keeps it across a
// restart.
func TestCreate_hostMadeHostKey(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "k1", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	identity := func() agent.Identity {
		out, err := exec.Command("debugfs", "-R", "cat /"+guestcontract.IdentityFile, filepath.Join(h.m.vmDir(vm.ID), layout.ConfigDriveFile)).Output()
		if err != nil {
			t.Fatal(err)
		}
		var id agent.Identity
		if err := json.Unmarshal(out, &id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := identity()
	if len(id.HostKeys) != 1 || id.HostKeys[0].Type != "ed25519" || !strings.HasPrefix(id.HostKeys[0].Public, "ssh-ed25519 ") || !strings.Contains(id.HostKeys[0].Private, "PRIVATE KEY") {
		t.Fatalf("identity host keys %+v", id.HostKeys)
	}
	pub, err := os.ReadFile(filepath.Join(h.m.vmDir(vm.ID), layout.HostKeyFile+".pub"))
	if err != nil || strings.TrimSpace(string(pub)) != id.HostKeys[0].Public {
		t.Fatalf("saved public key %q (%v), identity has %q", pub, err, id.HostKeys[0].Public)
	}
	known, err := os.ReadFile(h.m.opt.KnownHosts.Path)
	if err != nil || !strings.Contains(string(known), strings.Fields(id.HostKeys[0].Public)[1]) {
		t.Errorf("known_hosts does not pin the host-made key: %v\n%s", err, known)
	}
	if _, err := h.m.Stop(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.Start(ctx, op, "k1", false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if again := identity(); len(again.HostKeys) != 1 || again.HostKeys[0].Public != id.HostKeys[0].Public {
		t.Errorf("the restart gave a new host key: %+v", again.HostKeys)
	}
}
