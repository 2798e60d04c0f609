package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/testenv"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
	"banger/internal/wait"
)

// fault returns the fault_message of an API error body.
func fault(t *testing.T, body string) string {
	t.Helper()
	var f struct {
		Msg string `json:"fault_message"`
	}
	if err := json.Unmarshal([]byte(body), &f); err != nil || f.Msg == "" {
		t.Fatalf("no fault_message in %q: %v", body, err)
	}
	return f.Msg
}

// writeJSONFile writes v as JSON to path.
func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBootSnapshotRefusals loads what a boot-mode stand-in must refuse
// without starting QEMU: an echo-mode snapshot, a file that is no
// snapshot, a missing or truncated memory file, a Uffd backend and an
// override of an interface the snapshot lacks. Each is a 400 naming the
// problem, and the stand-in is left fresh: no QEMU child, no vsock socket,
// state "Not started", and a later load is still accepted for checking.
func TestBootSnapshotRefusals(t *testing.T) {
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		// QEMU is never started here: boot mode needs only the setting.
		qemuBin = "/nonexistent/qemu-system-x86_64"
	}
	bin := buildStandIn(t)
	s := startStandIn(t, bin, "FAKEFC_QEMU="+qemuBin, "FAKEFC_SWAGGER="+pinnedSpec(t))
	dir := filepath.Dir(s.sock)
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	echoSnap := filepath.Join(dir, "echo.state")
	writeJSONFile(t, echoSnap, snapshotFile{Marker: Version, Machine: map[string]any{"mem_size_mib": 128.0}, Drives: map[string]bool{}})
	garbage := filepath.Join(dir, "garbage.state")
	if err := os.WriteFile(garbage, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	sum := sha256.Sum256(zeros)
	bootSnap := filepath.Join(dir, "boot.state")
	writeJSONFile(t, bootSnap, snapshotFile{
		Marker: Version, Machine: map[string]any{"mem_size_mib": 128.0}, Drives: map[string]bool{}, VsockPath: s.vsock,
		Boot: &bootSnapshot{
			Kernel: kernel, BootArgs: "console=ttyS0", VsockCID: 3,
			Iface:    &savedIface{ID: "eth0", HostDevName: "bgt0", GuestMAC: "02:00:00:00:00:01"},
			MemBytes: int64(len(zeros)), MemSHA256: hex.EncodeToString(sum[:]),
		},
	})
	truncated := filepath.Join(dir, "truncated.mem")
	if err := os.WriteFile(truncated, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(dir, "full.mem")
	if err := os.WriteFile(full, zeros, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.mem")
	other := filepath.Join(dir, "other.sock")

	load := func(snap, backend, mem, extra string) string {
		return `{"snapshot_path":"` + snap + `","mem_backend":{"backend_type":"` + backend + `","backend_path":"` + mem + `"},"resume_vm":true` + extra + `}`
	}
	for _, c := range []struct {
		name, body string
		want       []string
	}{
		{"echo-mode snapshot", load(echoSnap, "File", full, ""), []string{echoSnap, "not a boot-mode snapshot"}},
		{"not a snapshot", load(garbage, "File", full, ""), []string{garbage, "cannot deserialize the microVM state", "not a snapshot of this firecracker"}},
		{"missing memory file", load(bootSnap, "File", missing, ""), []string{missing, "no such file"}},
		{"truncated memory file", load(bootSnap, "File", truncated, ""), []string{truncated, "4096 bytes", "truncated"}},
		{"uffd backend", load(bootSnap, "Uffd", full, ""), []string{"files only", "Uffd"}},
		{"unknown interface", load(bootSnap, "File", full, `,"network_overrides":[{"iface_id":"eth1","host_dev_name":"bgt1"}],"vsock_override":{"uds_path":"`+other+`"}`), []string{`"eth1"`, "no such interface"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := fault(t, s.call(t, "PUT", "/snapshot/load", c.body, 400))
			t.Logf("refused: %s", msg)
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("fault %q lacks %q", msg, w)
				}
			}
			if pid := qemuChild(t, s.cmd.Process.Pid); pid != 0 {
				t.Errorf("qemu pid %d runs after a refused load", pid)
			}
			for _, p := range []string{s.vsock, other} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("vsock socket %s bound by a refused load", p)
				}
			}
			if out := s.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Not started"`) {
				t.Errorf("state after a refused load: %s", out)
			}
		})
	}
	// Refusals leave no boot configuration behind: the process can still
	// be configured to boot.
	s.call(t, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 204)
}

// TestApplyOverrides checks that network_overrides replace the tap of the
// snapshot's interface (without changing the snapshot read), that
// vsock_override replaces the socket path, and that overrides of what
// the snapshot lacks are refused.
func TestApplyOverrides(t *testing.T) {
	saved := &savedIface{ID: "eth0", HostDevName: "bgt0", GuestMAC: "02:00:00:00:00:01"}
	bs := bootSnapshot{Iface: saved}
	m := map[string]any{
		"network_overrides": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "bgt9"}},
		"vsock_override":    map[string]any{"uds_path": "/vm2/v.sock"},
	}
	p, err := applyOverrides(&bs, "/vm1/v.sock", m)
	if err != nil {
		t.Fatal(err)
	}
	if p != "/vm2/v.sock" || bs.Iface.HostDevName != "bgt9" || bs.Iface.GuestMAC != saved.GuestMAC {
		t.Fatalf("after overrides: vsock %q, iface %+v", p, *bs.Iface)
	}
	if saved.HostDevName != "bgt0" {
		t.Fatalf("the snapshot read was changed: %+v", *saved)
	}
	if p, err := applyOverrides(&bootSnapshot{Iface: saved}, "/vm1/v.sock", map[string]any{}); err != nil || p != "/vm1/v.sock" {
		t.Fatalf("no overrides: %q, %v", p, err)
	}
	if _, err := applyOverrides(&bootSnapshot{}, "/vm1/v.sock", map[string]any{"network_overrides": m["network_overrides"]}); err == nil || !strings.Contains(err.Error(), "no such interface") {
		t.Fatalf("override of a missing interface: %v", err)
	}
	if _, err := applyOverrides(&bootSnapshot{}, "", map[string]any{"vsock_override": m["vsock_override"]}); err == nil || !strings.Contains(err.Error(), "no vsock device") {
		t.Fatalf("override of a missing vsock device: %v", err)
	}
}

// buildAgent compiles a static banger-agent into a temp dir.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "banger-agent")
	cmd := exec.Command("go", "build", "-o", bin, "banger/cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build banger-agent: %v: %s", err, out)
	}
	return bin
}

// agentModules are the modules the agent initramfs loads, in dependency
// order: the virtio-mmio transport, virtio-blk for the drives and
// virtio-console for the agent's serial port.
var agentModules = []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_blk", "virtio_console"}

// agentInitramfs builds an initramfs holding static busybox, the modules
// above, banger-agent and token as its bearer token: /init mounts the
// pseudo file systems, loads the modules, prints bootMarker and runs the
// agent (serving on the virtio-serial port) in the background.
func agentInitramfs(t *testing.T, k vmmtest.Kernel, token string) string {
	t.Helper()
	busybox := vmmtest.RequireBinary(t, "busybox")
	vmmtest.RequireBinary(t, "cpio")
	root := t.TempDir()
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	install := func(from, to string, mode os.FileMode) { vmmtest.CopyFile(t, from, filepath.Join(root, to), mode) }
	install(busybox, "bin/busybox", 0o755)
	install(buildAgent(t), "bin/banger-agent", 0o755)
	for _, m := range agentModules {
		p, err := k.Module(m)
		if err != nil {
			t.Fatal(err)
		}
		install(p, "lib/modules/"+m+".ko", 0o644)
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for pass in 1 2 3; do
  for m in ` + strings.Join(agentModules, " ") + `; do
    [ -d /sys/module/$m ] || insmod /lib/modules/$m.ko 2>/dev/null
  done
done
echo ` + bootMarker + `
/bin/banger-agent serve --no-boot --token-file /token &
while true; do sleep 3600; done
`
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return vmmtest.PackInitramfs(t, root)
}

// bootMarker is printed on the console by the agent initramfs at boot.
const bootMarker = "FAKEFC-GUEST-BOOTED"

// health asks the agent behind the vsock socket at vsock for its health,
// retrying until it answers or ctx ends.
func health(ctx context.Context, t *testing.T, vsock, token string) agent.Health {
	t.Helper()
	var h agent.Health
	var last error
	err := wait.Until(ctx, 200*time.Millisecond, func() (bool, error) {
		c := agentclient.NewClient(agentclient.NewVsockDialer(vsock, guestcontract.AgentVsockPort), token)
		defer c.Close()
		hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		h, last = c.Health(hctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("agent behind %s: %v (last: %v)", vsock, err, last)
	}
	return h
}

// TestBootSnapshot boots a guest running banger-agent under one stand-in,
// pauses it and snapshots it (the agent session open at the time is
// quiesced first), resumes it and reaches the agent again, then ends that
// stand-in and its QEMU. A fresh stand-in loads the snapshot with a
// vsock_override to a different socket and resumes it: the agent answers
// there with the same boot_id and no less uptime, and the console shows
// no second boot (the guest's state survived, it was not rebooted).
// Pause, resume and SendCtrlAltDel work on the loaded guest, and the
// stand-in exits when its QEMU does.
func TestBootSnapshot(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64")
	if testing.Short() && !testenv.InCI() {
		t.Skip("-short outside CI: boots a guest under QEMU (the suite runs without -short; with CI=true it always runs)")
	}
	qemuBin, _ := exec.LookPath("qemu-system-x86_64")
	k := vmmtest.DebianKernel(t)
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	if err := image.ExtractVmlinux(k.BzImage, vmlinux); err != nil {
		t.Fatal(err)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	initrd := agentInitramfs(t, k, token)
	bin := buildStandIn(t)
	env := []string{"FAKEFC_QEMU=" + qemuBin, "FAKEFC_SWAGGER=" + pinnedSpec(t)}
	dir := t.TempDir()
	for _, d := range []string{"rootfs.img", "work.img"} {
		if err := os.WriteFile(filepath.Join(dir, d), make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	s1 := startStandIn(t, bin, env...)
	s1.call(t, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256}`, 204)
	s1.call(t, "PUT", "/boot-source", `{"kernel_image_path":"`+vmlinux+`","initrd_path":"`+initrd+`","boot_args":"console=ttyS0 reboot=k panic=-1 quiet loglevel=4"}`, 204)
	s1.call(t, "PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"`+filepath.Join(dir, "rootfs.img")+`","is_root_device":false,"is_read_only":true}`, 204)
	s1.call(t, "PUT", "/drives/work", `{"drive_id":"work","path_on_host":"`+filepath.Join(dir, "work.img")+`","is_root_device":false,"is_read_only":false}`, 204)
	s1.call(t, "PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+s1.vsock+`"}`, 204)
	start := time.Now()
	s1.call(t, "PUT", "/actions", `{"action_type":"InstanceStart"}`, 204)
	before := health(ctx, t, s1.vsock, token)
	t.Logf("agent answered %s after InstanceStart (boot_id %s)", time.Since(start).Round(100*time.Millisecond), before.BootID)
	if before.BootID == "" {
		t.Fatal("agent reported no boot_id")
	}
	child1 := qemuChild(t, s1.cmd.Process.Pid)
	if child1 == 0 {
		t.Fatal("no qemu child")
	}

	s1.call(t, "PATCH", "/vm", `{"state":"Paused"}`, 204)
	snap, mem := filepath.Join(dir, "vmstate"), filepath.Join(dir, "memory")
	start = time.Now()
	s1.call(t, "PUT", "/snapshot/create", `{"snapshot_path":"`+snap+`","mem_file_path":"`+mem+`","snapshot_type":"Full"}`, 204)
	t.Logf("snapshot created in %s", time.Since(start).Round(100*time.Millisecond))
	for _, p := range []string{snap, mem} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
			t.Errorf("%s: mode %v, %d bytes; want 0600 and not empty", p, fi.Mode().Perm(), fi.Size())
		}
	}
	if strings.Contains(s1.output(), "not quiesced") {
		t.Errorf("the guest did not close its agent port before the save:\n%s", s1.output())
	}
	if leftover, _ := filepath.Glob(filepath.Join(dir, ".fakefc-save-*")); len(leftover) > 0 {
		t.Errorf("save left %v", leftover)
	}
	if out := s1.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Paused"`) {
		t.Fatalf("state after the snapshot: %s", out)
	}
	s1.call(t, "PATCH", "/vm", `{"state":"Resumed"}`, 204)
	if h := health(ctx, t, s1.vsock, token); h.BootID != before.BootID {
		t.Fatalf("boot_id after snapshot and resume %s, want %s", h.BootID, before.BootID)
	}

	if err := s1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s1.exited
	if err := wait.Until(ctx, 20*time.Millisecond, func() (bool, error) { return gone(child1), nil }); err != nil {
		t.Fatalf("qemu pid %d outlived its stand-in: %v", child1, err)
	}

	s2 := startStandIn(t, bin, env...)
	if s2.vsock == s1.vsock {
		t.Fatal("the second stand-in has the first one's vsock path")
	}
	start = time.Now()
	s2.call(t, "PUT", "/snapshot/load", `{"snapshot_path":"`+snap+`","mem_backend":{"backend_type":"File","backend_path":"`+mem+`"},"resume_vm":true,"vsock_override":{"uds_path":"`+s2.vsock+`"}}`, 204)
	t.Logf("snapshot loaded in %s", time.Since(start).Round(100*time.Millisecond))
	if out := s2.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Running"`) {
		t.Fatalf("state after the load: %s", out)
	}
	child2 := qemuChild(t, s2.cmd.Process.Pid)
	if child2 == 0 {
		t.Fatal("no qemu child after the load")
	}
	if argv, _ := vmm.ProcCmdline(child2); !strings.Contains(strings.Join(argv, " "), "-incoming fd:3 -S") {
		t.Errorf("qemu not started to load the state: %q", argv)
	}
	after := health(ctx, t, s2.vsock, token)
	if after.BootID != before.BootID {
		t.Fatalf("boot_id after the load %s, want %s: the guest booted again", after.BootID, before.BootID)
	}
	if after.Uptime < before.Uptime {
		t.Errorf("uptime after the load %s, before the save %s", after.Uptime, before.Uptime)
	}
	if out := s2.output(); strings.Contains(out, bootMarker) || strings.Contains(out, "Linux version") {
		t.Errorf("the loaded guest booted on the console:\n%s", out)
	}
	s2.call(t, "PATCH", "/vm", `{"state":"Paused"}`, 204)
	if out := s2.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Paused"`) {
		t.Fatalf("state after pausing the loaded guest: %s", out)
	}
	s2.call(t, "PATCH", "/vm", `{"state":"Resumed"}`, 204)
	if h := health(ctx, t, s2.vsock, token); h.BootID != before.BootID {
		t.Fatalf("boot_id after pause and resume %s", h.BootID)
	}
	// The power button reaches QMP (this guest has nothing to act on it).
	s2.call(t, "PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`, 204)

	// The loaded guest's QEMU is the stand-in's: when it ends, the
	// stand-in exits too (code 1: QEMU did not end on its own).
	if err := syscall.Kill(child2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s2.exited:
	case <-ctx.Done():
		t.Fatal("stand-in still runs after its loaded guest's QEMU was killed")
	}
	if code := s2.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d after QEMU was killed, want 1", code)
	}
}
