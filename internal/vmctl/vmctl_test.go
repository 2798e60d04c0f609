package vmctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
	"banger/internal/agent/agentmux"
	"banger/internal/agent/agentserver"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/guestcontract"
	"banger/internal/hostnet"
	"banger/internal/image"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/sshkey"
	"banger/internal/store"
	"banger/internal/testenv"
	"banger/internal/units"
	"banger/internal/vmm"
	"banger/internal/wait"
)

// fakeNet is a host network that hands out tap names and records what
// came back.
type fakeNet struct {
	mu        sync.Mutex
	out       map[string]bool
	released  []string
	adopted   []string
	ensureErr error
}

func (n *fakeNet) Ensure(context.Context) error { return n.ensureErr }
func (n *fakeNet) AcquireTap(_ context.Context, vmID string, ip netip.Addr) (string, error) {
	if !ip.IsValid() {
		return "", fmt.Errorf("acquire tap: no address")
	}
	name, err := hostnet.TapName(vmID)
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.out[name] {
		return "", fmt.Errorf("acquire tap %s: already in use", name)
	}
	n.out[name] = true
	return name, nil
}
func (n *fakeNet) ReleaseTap(_ context.Context, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.out, name)
	n.released = append(n.released, name)
	return nil
}
func (n *fakeNet) Adopt(_ context.Context, guests map[string]netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for tap := range guests {
		n.adopted = append(n.adopted, tap)
	}
	return nil
}
func (n *fakeNet) inUse() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.out)
}

type fakeDNS struct {
	mu sync.Mutex
	m  map[string]netip.Addr
}

func (d *fakeDNS) Set(name string, ip netip.Addr) { d.mu.Lock(); d.m[name] = ip; d.mu.Unlock() }
func (d *fakeDNS) Remove(name string)             { d.mu.Lock(); delete(d.m, name); d.mu.Unlock() }
func (d *fakeDNS) Replace(r map[string]netip.Addr) {
	d.mu.Lock()
	d.m = r
	d.mu.Unlock()
}
func (d *fakeDNS) get(name string) (netip.Addr, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ip, ok := d.m[name]
	return ip, ok
}

type fakeImages struct{ img store.Image }

func (f fakeImages) Ensure(_ context.Context, _ *operation.Op, ref string) (store.Image, error) {
	if ref != f.img.Name {
		return store.Image{}, api.Errorf(api.CodeNotFound, "image %q not found", ref)
	}
	return f.img, nil
}

type fakeHost struct{}

func (fakeHost) KVMUsable() (bool, string) { return false, "no vmx" }
func (fakeHost) Firecracker() string       { return "" }
func (fakeHost) QEMU() string              { return "/usr/bin/qemu-system-x86_64" }
func (fakeHost) MemoryMiB() int            { return 8192 }

// fakeVMM stands in for QEMU: its "VMM" is a shell process whose command
// line names the VM's QMP socket (so vmm.Alive recognises it), and an
// in-process guest agent serves the VM's token over yamux on the serial
// socket, as the real guest does.
type fakeVMM struct {
	t           testing.TB
	startErr    error
	noAgent     bool
	identityErr error

	mu     sync.Mutex
	agents map[string]net.Listener
}

func (f *fakeVMM) Name() string { return vmm.QEMU }

func (f *fakeVMM) Start(ctx context.Context, s vmm.Spec) (vmm.Handles, error) {
	if f.startErr != nil {
		return vmm.Handles{}, f.startErr
	}
	h := vmm.Handles{
		VMM:            vmm.QEMU,
		Accel:          s.Accel,
		QMPSocket:      filepath.Join(s.Dir, layout.QMPSocketFile),
		SerialSocket:   filepath.Join(s.Dir, layout.AgentSocketFile),
		ConsoleLog:     filepath.Join(s.Dir, layout.ConsoleLogFile),
		AgentTransport: vmm.TransportSerial,
	}
	cmd := exec.Command("sh", "-c", "sleep 600; true", h.QMPSocket)
	logf, err := vmm.Detach(cmd, filepath.Join(s.Dir, layout.VMMLogFile))
	if err != nil {
		return h, err
	}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return h, err
	}
	go cmd.Wait()
	h.PID = cmd.Process.Pid
	st, err := vmm.ProcStartTime(h.PID)
	if err != nil {
		return h, err
	}
	h.StartTime = st
	if f.noAgent {
		return h, nil
	}
	id, err := identityFromConfigDrive(s.Drives[3].Path)
	if err != nil {
		return h, err
	}
	token := id.Token
	if s.RestoreDir != "" {
		// A guest restored from a template or snapshot answers to the
		// token of the guest that was saved, until re-identified.
		if b, err := os.ReadFile(filepath.Join(s.RestoreDir, layout.TemplateFile)); err == nil {
			var t struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal(b, &t); err != nil {
				return h, err
			}
			token = t.Token
		}
	}
	l, err := net.Listen("unix", h.SerialSocket)
	if err != nil {
		return h, err
	}
	f.mu.Lock()
	f.agents[s.VMID] = l
	f.mu.Unlock()
	dir := f.t.TempDir()
	// The guest installs the host-made key it is given, as the agent
	// does; without one it has a key of its own.
	pub := "ssh-ed25519 AAAAfake root@guest"
	if len(id.HostKeys) > 0 && s.RestoreDir == "" {
		pub = id.HostKeys[0].Public
	}
	os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key.pub"), []byte(pub+"\n"), 0o644)
	srv := &agentserver.Server{Token: token, Version: "test", HostKeyGlob: filepath.Join(dir, "*.pub"),
		SetClock:   func(time.Time) error { return nil },
		AddEntropy: func([]byte) error { return nil },
		Reidentify: func(agent.Reidentify) error { return nil },
	}
	srv.SetIdentityResult(f.identityErr)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			sess, err := yamux.Server(conn, agentmux.Config())
			if err != nil {
				conn.Close()
				continue
			}
			go srv.Serve(context.Background(), sess)
		}
	}()
	return h, nil
}

func (f *fakeVMM) Stop(ctx context.Context, h vmm.Handles, _ time.Duration) error {
	return vmm.KillProcess(ctx, h)
}

func (f *fakeVMM) Kill(ctx context.Context, h vmm.Handles) error { return vmm.KillProcess(ctx, h) }

func identityFromConfigDrive(path string) (agent.Identity, error) {
	var id agent.Identity
	out, err := exec.Command("debugfs", "-R", "cat /"+guestcontract.IdentityFile, path).Output()
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(out, &id); err != nil {
		return id, fmt.Errorf("identity on config drive: %w", err)
	}
	return id, nil
}

type harness struct {
	m     *Manager
	st    *store.Store
	net   *fakeNet
	dns   *fakeDNS
	vmm   *fakeVMM
	cache *vmm.HandleCache
	dir   string
	ops   *operation.Manager
	cfg   *config.Config
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newSizedHarness(t, 64<<20, 0)
}

// newSizedHarness makes a harness whose image has a work seed of seedSize
// bytes and, when rootfsSize > 0, a sparse rootfs of that size with data
// at both ends.
func newSizedHarness(t testing.TB, seedSize, rootfsSize int64) *harness {
	t.Helper()
	testenv.RequireCommand(t, "mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "ssh-keygen")
	// Short paths: the agent socket lives in the VM dir.
	dir, err := os.MkdirTemp("", "vmctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	imgDir := filepath.Join(dir, "img")
	os.MkdirAll(imgDir, 0o755)
	if err := disk.MakeExt4(ctx, filepath.Join(imgDir, image.FileWorkSeed), seedSize, guestcontract.LabelWork, ""); err != nil {
		t.Fatal(err)
	}
	if rootfsSize > 0 {
		f, err := os.Create(filepath.Join(imgDir, image.FileRootfs))
		if err != nil {
			t.Fatal(err)
		}
		chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
		f.WriteAt(chunk, 0)
		f.WriteAt(chunk, rootfsSize-int64(len(chunk)))
		f.Close()
	}
	img := store.Image{ID: store.NewID(), Name: "debian-12", Dir: imgDir, Manifest: []byte(`{"init":"systemd"}`)}
	if err := st.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	key, err := sshkey.Ensure(ctx, "", filepath.Join(dir, "ssh"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Network.Subnet = netip.MustParsePrefix("192.0.2.0/24")
	h := &harness{
		st:    st,
		net:   &fakeNet{out: map[string]bool{}},
		dns:   &fakeDNS{m: map[string]netip.Addr{}},
		vmm:   &fakeVMM{t: t, agents: map[string]net.Listener{}},
		cache: vmm.NewHandleCache(filepath.Join(dir, "vms")),
		dir:   dir,
		ops:   operation.NewManager(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		cfg:   cfg,
	}
	h.m = New(Options{
		Store: st, Images: fakeImages{img}, Network: h.net, DNS: h.dns, Host: fakeHost{},
		Drivers: map[string]vmm.Driver{vmm.QEMU: h.vmm}, Handles: h.cache, Config: cfg,
		VMsDir: filepath.Join(dir, "vms"), SSHKey: key,
		KnownHosts:   &sshkey.KnownHosts{Path: filepath.Join(dir, "ssh", "known_hosts")},
		AgentTimeout: 10 * time.Second, StopTimeout: time.Second, SSHWait: 200 * time.Millisecond,
	})
	t.Cleanup(func() {
		for _, hd := range h.cache.Snapshot() {
			vmm.KillProcess(context.Background(), hd)
		}
		h.m.Close()
	})
	return h
}

func spec() api.VMSpec { return api.VMSpec{VCPU: 1, MemoryMiB: 512, DiskBytes: 1 << 30} }

// create runs Create as an operation and returns the VM and the
// operation's final snapshot.
func (h *harness) create(t testing.TB, req api.CreateVMRequest) (store.VM, api.Operation, error) {
	t.Helper()
	var vm store.VM
	op := h.ops.Start("vm.create", func(ctx context.Context, op *operation.Op) (any, error) {
		var err error
		vm, err = h.m.Create(ctx, op, req)
		return nil, err
	})
	_, err := op.Wait(context.Background())
	return vm, op.Snapshot(), err
}

func TestCreate_bootsAndRegisters(t *testing.T) {
	h := newHarness(t)
	vm, snap, err := h.create(t, api.CreateVMRequest{Name: "t1", Image: "debian-12", VMM: "qemu", Spec: spec()})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var names []string
	for _, s := range snap.Stages {
		names = append(names, s.Name)
		if s.State != api.StageDone {
			t.Errorf("stage %s = %s", s.Name, s.State)
		}
	}
	want := []string{StageImage, StageDisks, StageNetwork, StageConfig, StageBoot, StageAgent}
	if !slices.Equal(names, want) {
		t.Errorf("stages = %v, want %v", names, want)
	}
	if vm.State != store.StateRunning || vm.IP != "192.0.2.2" || vm.CID < 3 || vm.MAC != "06:b6:c0:00:02:02" {
		t.Errorf("vm = %+v", vm)
	}
	if ip, ok := h.dns.get("t1"); !ok || ip.String() != vm.IP {
		t.Errorf("dns t1 = %v %v", ip, ok)
	}
	if !h.m.Alive(vm.ID) {
		t.Error("vm not alive after create")
	}
	if _, err := vmm.ReadHandles(filepath.Join(h.dir, "vms", vm.ID)); err != nil {
		t.Errorf("handles.json: %v", err)
	}
	// The work disk was grown to the VM's disk size; the overlay is sparse.
	if st, err := os.Stat(filepath.Join(h.dir, "vms", vm.ID, layout.WorkFile)); err != nil || st.Size() != 1<<30 {
		t.Errorf("work disk: %v %v", st, err)
	}
	if lbl, _ := disktest.Label(filepath.Join(h.dir, "vms", vm.ID, layout.ConfigDriveFile)); lbl != guestcontract.LabelConfig {
		t.Errorf("config drive label %q", lbl)
	}
	kh, _ := os.ReadFile(filepath.Join(h.dir, "ssh", "known_hosts"))
	pub, _ := os.ReadFile(filepath.Join(h.dir, "vms", vm.ID, layout.HostKeyFile+".pub"))
	if f := strings.Fields(string(pub)); len(f) < 2 || string(kh) != "t1.vm "+f[0]+" "+f[1]+"\n" {
		t.Errorf("known_hosts = %q, want the host-made key %q", kh, pub)
	}

	// Stop: VMM gone, tap back, DNS record dropped; twice is fine.
	for i := 0; i < 2; i++ {
		got, err := h.m.Stop(context.Background(), "t1")
		if err != nil || got.State != store.StateStopped {
			t.Fatalf("stop #%d: %v %v", i, got.State, err)
		}
	}
	if h.m.Alive(vm.ID) || h.net.inUse() != 0 {
		t.Errorf("after stop: alive=%v taps in use=%d", h.m.Alive(vm.ID), h.net.inUse())
	}
	if _, ok := h.dns.get("t1"); ok {
		t.Error("dns record kept after stop")
	}

	// Delete: row, lease and files gone.
	if err := h.m.Delete(context.Background(), "t1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.GetVM(context.Background(), vm.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("row after delete: %v", err)
	}
	if leases, _ := h.st.ListLeases(context.Background()); len(leases) != 0 {
		t.Errorf("leases after delete: %v", leases)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "vms", vm.ID)); !os.IsNotExist(err) {
		t.Errorf("vm dir after delete: %v", err)
	}
	kh, _ = os.ReadFile(filepath.Join(h.dir, "ssh", "known_hosts"))
	if strings.Contains(string(kh), "t1.vm") {
		t.Errorf("known_hosts still pins t1.vm")
	}
}

func TestCreate_rejectsBadInputBeforeAnythingExists(t *testing.T) {
	h := newHarness(t)
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "taken", Image: "debian-12", VMM: "qemu", Spec: spec()}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  api.CreateVMRequest
		want string
	}{
		{"bad name", api.CreateVMRequest{Name: "Bad_Name", Image: "debian-12", Spec: spec()}, `invalid vm name "Bad_Name"`},
		{"duplicate name", api.CreateVMRequest{Name: "taken", Image: "debian-12", Spec: spec()}, `vm "taken" already exists`},
		{"zero vcpu", api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 0, MemoryMiB: 512, DiskBytes: 1 << 30}}, "vcpu must be between 1 and 32, got 0"},
		{"memory below floor", api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 1, MemoryMiB: 64, DiskBytes: 1 << 30}}, "memory must be at least 256 MiB, got 64 MiB"},
		{"memory above host", api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 1, MemoryMiB: 1 << 20, DiskBytes: 1 << 30}}, "memory must be at most the host's"},
		{"disk below floor", api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 1, MemoryMiB: 512, DiskBytes: 1 << 20}}, "disk size must be at least 1G, got 1M"},
		{"disk above free space", api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 1, MemoryMiB: 512, DiskBytes: 1 << 60}}, "not enough disk space"},
		{"missing vmm", api.CreateVMRequest{Image: "debian-12", VMM: "firecracker", Spec: spec()}, "no firecracker binary"},
		{"unknown image", api.CreateVMRequest{Image: "nope", Spec: spec()}, `image "nope" not found`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.create(t, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			// The daemon answers the TUI and MCP too: no CLI flag names.
			if strings.Contains(err.Error(), "--") {
				t.Errorf("err = %v names a CLI flag", err)
			}
			vms, _ := h.st.ListVMs(context.Background())
			if len(vms) != 1 {
				t.Fatalf("%d VM rows after a rejected create, want 1", len(vms))
			}
			if h.net.inUse() != 1 {
				t.Fatalf("taps in use = %d, want 1", h.net.inUse())
			}
		})
	}
}

func TestCreate_failureRollsBackEverything(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*harness)
		want  string
	}{
		{"vmm fails to start", func(h *harness) { h.vmm.startErr = errors.New("qemu: boom") }, "qemu: boom"},
		{"agent never answers", func(h *harness) {
			h.vmm.noAgent = true
			h.m.opt.AgentTimeout = 2 * time.Second
		}, "did not answer"},
		{"network unavailable", func(h *harness) { h.net.ensureErr = errors.New("no bridge for you") }, "no bridge for you"},
		{"guest cannot apply its identity", func(h *harness) {
			h.vmm.identityErr = errors.New("file_sync /root/.aws: permission denied")
		}, "could not apply its identity: file_sync /root/.aws: permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.setup(h)
			_, snap, err := h.create(t, api.CreateVMRequest{Name: "t1", Image: "debian-12", Spec: spec()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if snap.State != api.OpFailed {
				t.Errorf("operation state %s", snap.State)
			}
			ctx := context.Background()
			if vms, _ := h.st.ListVMs(ctx); len(vms) != 0 {
				t.Errorf("rows left: %+v", vms)
			}
			if leases, _ := h.st.ListLeases(ctx); len(leases) != 0 {
				t.Errorf("leases left: %+v", leases)
			}
			if h.net.inUse() != 0 {
				t.Errorf("taps left in use: %d", h.net.inUse())
			}
			if ents, _ := os.ReadDir(filepath.Join(h.dir, "vms")); len(ents) != 0 {
				t.Errorf("vm dirs left: %v", ents)
			}
			if len(h.cache.Snapshot()) != 0 {
				t.Errorf("handles left: %v", h.cache.Snapshot())
			}
		})
	}
}

func TestReconcile_adoptsLiveAndTearsDownDead(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	live, _, err := h.create(t, api.CreateVMRequest{Name: "live", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	dead, _, err := h.create(t, api.CreateVMRequest{Name: "dead", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	deadHandles, _ := h.cache.Get(dead.ID)
	if err := vmm.KillProcess(ctx, deadHandles); err != nil {
		t.Fatal(err)
	}
	liveHandles, _ := h.cache.Get(live.ID)

	// A new manager over the same state plays the restarted daemon.
	net2 := &fakeNet{out: map[string]bool{}}
	dns2 := &fakeDNS{m: map[string]netip.Addr{}}
	opt := h.m.opt
	opt.Network, opt.DNS, opt.Handles = net2, dns2, vmm.NewHandleCache(filepath.Join(h.dir, "vms"))
	m2 := New(opt)
	if err := m2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !m2.Alive(live.ID) || !slices.Equal(net2.adopted, []string{liveHandles.Tap}) {
		t.Errorf("live vm not adopted: alive=%v adopted=%v", m2.Alive(live.ID), net2.adopted)
	}
	if ip, ok := dns2.get("live"); !ok || ip.String() != live.IP {
		t.Errorf("dns not rebuilt for live vm: %v", dns2.m)
	}
	if _, ok := dns2.get("dead"); ok {
		t.Error("dns record for a dead vm")
	}
	got, _ := h.st.GetVM(ctx, dead.ID)
	if got.State != store.StateStopped || !strings.Contains(got.LastError, "exited while bangerd was not running") {
		t.Errorf("dead vm = %s %q", got.State, got.LastError)
	}
	if !slices.Contains(net2.released, deadHandles.Tap) {
		t.Errorf("dead vm's tap %s not released: %v", deadHandles.Tap, net2.released)
	}
	if _, err := vmm.ReadHandles(filepath.Join(h.dir, "vms", dead.ID)); !errors.Is(err, vmm.ErrNoHandles) {
		t.Errorf("dead vm handles: %v", err)
	}
}

// A daemon killed during create leaves a row in state creating with
// handles recorded at spawn and a live VMM: the next daemon ends it rather
// than adopting a VM whose create never finished.
func TestReconcile_endsTheVMMOfAnInterruptedCreate(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "half", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	hd, _ := h.cache.Get(vm.ID)
	if _, err := h.st.UpdateVM(ctx, vm.ID, func(v *store.VM) error { v.State = store.StateCreating; return nil }); err != nil {
		t.Fatal(err)
	}
	opt := h.m.opt
	net2 := &fakeNet{out: map[string]bool{}}
	dns2 := &fakeDNS{m: map[string]netip.Addr{}}
	opt.Network, opt.DNS, opt.Handles = net2, dns2, vmm.NewHandleCache(filepath.Join(h.dir, "vms"))
	m2 := New(opt)
	if err := m2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(hd) {
		t.Fatalf("vmm pid %d of the interrupted create still runs", hd.PID)
	}
	got, _ := h.st.GetVM(ctx, vm.ID)
	if got.State != store.StateFailed || !strings.Contains(got.LastError, "create interrupted") {
		t.Errorf("vm = %s %q, want failed with the reason", got.State, got.LastError)
	}
	if len(net2.adopted) != 0 || !slices.Contains(net2.released, hd.Tap) {
		t.Errorf("tap adopted %v, released %v; want %s released", net2.adopted, net2.released, hd.Tap)
	}
	if _, ok := dns2.get("half"); ok {
		t.Error("dns record for an interrupted create")
	}
}

func TestWatch_reapsAVMMKilledBehindItsBack(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "t1", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	go h.m.Watch(ctx, 50*time.Millisecond)
	hd, _ := h.cache.Get(vm.ID)
	if err := vmm.KillProcess(ctx, hd); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	var got store.VM
	if err := wait.Until(wctx, 20*time.Millisecond, func() (bool, error) {
		got, _ = h.st.GetVM(ctx, vm.ID)
		return got.State == store.StateStopped, nil
	}); err != nil {
		t.Fatalf("state = %s after the VMM died", got.State)
	}
	if !strings.Contains(got.LastError, "exited unexpectedly") {
		t.Errorf("last_error = %q", got.LastError)
	}
	if h.net.inUse() != 0 {
		t.Error("tap of the dead vm still in use")
	}
	if _, ok := h.dns.get("t1"); ok {
		t.Error("dns record of the dead vm kept")
	}
}

func TestStageFileSync(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "token"), []byte("s3cret"), 0o644)
	os.MkdirAll(filepath.Join(home, ".aws", "sub"), 0o755)
	os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte("k"), 0o640)
	os.WriteFile(filepath.Join(home, ".aws", "sub", "x"), []byte("x"), 0o755)
	entries := []config.FileSync{
		{Host: "~/token", Guest: "~/.config/tool/token", Mode: "0644"},
		{Host: "~/missing", Guest: "~/missing"},
		{Host: "~/.aws", Guest: "/root/.aws"},
	}
	dir := t.TempDir()
	files, warnings, n, err := stageFileSync(entries, home, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "file_sync[1]") {
		t.Errorf("warnings = %v", warnings)
	}
	want := []agent.SyncFile{
		{Source: "0", Guest: "/root/.config/tool/token", Mode: 0o644},
		{Source: "2", Guest: "/root/.aws", Mode: 0o600, Dir: true},
	}
	if !slices.Equal(files, want) {
		t.Errorf("files = %+v, want %+v", files, want)
	}
	if n != int64(len("s3cret")+2) {
		t.Errorf("bytes = %d", n)
	}
	if st, err := os.Stat(filepath.Join(dir, "2", "sub", "x")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("directory entry lost its mode: %v %v", st, err)
	}
}

// BenchmarkCreate_imageSize shows that create copies nothing proportional
// to the image: the same VM (9G disk) from an image with a 1 GiB and an
// 8 GiB rootfs and work seed takes the same time. The VMM and agent are
// the test's fakes, so this is banger's own work: disks, lease, config
// drive, handles, agent handshake; delete is outside the timer.
//
//	go test -run '^$' -bench Create_imageSize -benchtime 10x ./internal/vmctl
func BenchmarkCreate_imageSize(b *testing.B) {
	for _, size := range []int64{1 << 30, 8 << 30} {
		b.Run(units.FormatSize(size), func(b *testing.B) {
			h := newSizedHarness(b, size, size)
			req := api.CreateVMRequest{Image: "debian-12", Spec: api.VMSpec{VCPU: 1, MemoryMiB: 512, DiskBytes: 9 << 30}}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req.Name = fmt.Sprintf("b%d", i)
				vm, _, err := h.create(b, req)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := h.m.Delete(context.Background(), vm.ID, false); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// TestWatch_boundsTheConsoleLog: a guest that floods its console cannot
// grow the host's copy past its bound; the watcher rotates it.
func TestWatch_boundsTheConsoleLog(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "noisy", Image: "debian-12", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	hd, _ := h.cache.Get(vm.ID)
	if hd.ConsoleLog == "" {
		hd.ConsoleLog = filepath.Join(h.dir, "vms", vm.ID, layout.ConsoleLogFile)
		if err := h.cache.Set(vm.ID, hd); err != nil {
			t.Fatal(err)
		}
	}
	const max = 64 << 10
	h.m.opt.ConsoleLogMax = max
	f, err := os.OpenFile(hd.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte("x"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	go h.m.Watch(ctx, time.Hour)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	var size int64
	if err := wait.Until(wctx, 20*time.Millisecond, func() (bool, error) {
		fi, err := os.Stat(hd.ConsoleLog)
		if err == nil {
			size = fi.Size()
		}
		return err == nil && size <= max, nil
	}); err != nil {
		t.Fatalf("console log still %d bytes, bound %d", size, max)
	}
	if fi, err := os.Stat(hd.ConsoleLog + vmm.RotatedSuffix); err != nil || fi.Size() != max {
		t.Fatalf("rotated copy: %v %v, want %d bytes", fi, err, max)
	}
}
