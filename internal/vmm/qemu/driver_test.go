package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// bootSpec is a one-vCPU TCG VM booting the busybox initramfs with a
// read-only and a writable drive and no network.
func bootSpec(t testing.TB, k vmmtest.Kernel, initrd string) vmm.Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "bq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var drives []vmm.Drive
	for _, d := range []vmm.Drive{{ID: "rootfs", ReadOnly: true}, {ID: "work"}} {
		d.Path = filepath.Join(dir, d.ID+".img")
		if err := os.WriteFile(d.Path, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		drives = append(drives, d)
	}
	return vmm.Spec{
		VMID: "qemutest", Name: "qemutest", VCPU: 1, MemoryMiB: 256,
		BzImage: k.BzImage, Initrd: initrd, Cmdline: vmmtest.BootCmdline,
		Drives: drives, CID: 3, Dir: dir, Accel: vmm.AccelTCG,
	}
}

// waitConsole polls the console log until it holds marker.
func waitConsole(ctx context.Context, t testing.TB, path, marker string) string {
	t.Helper()
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), marker) {
			return string(b)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no %q in %s: %v\n%s", marker, path, ctx.Err(), b)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitGone waits until the process of h has disappeared from /proc
// (reaped by Start's waiter, as it is the test's child).
func waitGone(t testing.TB, h vmm.Handles) {
	t.Helper()
	for range 200 {
		if st, err := vmm.ProcStartTime(h.PID); err != nil || st != h.StartTime {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d still in /proc after Stop", h.PID)
}

func TestDriver_BootTCG(t *testing.T) {
	vmmtest.RequireBinary(t, DefaultBinary)
	k := vmmtest.DebianKernel(t)
	initrd := vmmtest.BusyboxInitramfs(t, k)
	s := bootSpec(t, k, initrd)
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	if h.VMM != vmm.QEMU || h.AgentTransport != vmm.TransportSerial || h.SerialSocket != filepath.Join(s.Dir, layout.AgentSocketFile) {
		t.Fatalf("handles %+v", h)
	}
	if !vmm.Alive(h) {
		t.Fatal("not Alive right after Start")
	}
	if sid, err := unix.Getsid(h.PID); err != nil || sid != h.PID {
		t.Fatalf("qemu session %d, %v; want its own (%d)", sid, err, h.PID)
	}
	if b, err := os.ReadFile(filepath.Join(s.Dir, layout.PIDFile)); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(h.PID) {
		t.Fatalf("pidfile %q, %v; want %d", b, err, h.PID)
	}
	argv, _ := vmm.ProcCmdline(h.PID)
	if !strings.Contains(strings.Join(argv, " "), "tsc_early_khz=") {
		t.Fatalf("TCG argv lacks tsc_early_khz: %v", argv)
	}

	console := waitConsole(ctx, t, h.ConsoleLog, vmmtest.MarkerReady)
	for _, want := range []string{vmmtest.MarkerBooted, "virtio-port: ", " " + guestcontract.AgentSerialPort, "block: vda", "block: vdb"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}

	// The agent channel: the guest echoes what the host writes on the
	// virtio-serial port.
	t.Run("agent port echo", func(t *testing.T) { echo(ctx, t, h.SerialSocket) })

	// busybox init ignores the ACPI power button, so Stop must fall back
	// to killing qemu after the timeout.
	if err := d.Stop(ctx, h, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(h) {
		t.Fatal("qemu Alive after Stop")
	}
	waitGone(t, h)
	if err := d.Stop(ctx, h, time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatalf("Kill after Stop: %v", err)
	}
}

func TestDriver_KillBehindBack(t *testing.T) {
	vmmtest.RequireBinary(t, DefaultBinary)
	k := vmmtest.DebianKernel(t)
	s := bootSpec(t, k, vmmtest.BusyboxInitramfs(t, k))
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	if err := exec.Command("kill", "-9", strconv.Itoa(h.PID)).Run(); err != nil {
		t.Fatal(err)
	}
	if err := vmm.WaitExit(ctx, h); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(h) {
		t.Fatal("Alive after kill -9")
	}
	if err := d.Stop(ctx, h, time.Second); err != nil {
		t.Fatalf("Stop of a dead VM: %v", err)
	}
}

func TestDriver_StartFailures(t *testing.T) {
	vmmtest.RequireBinary(t, DefaultBinary)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := vmm.Spec{VMID: "bad", VCPU: 1, MemoryMiB: 64, Cmdline: "console=ttyS0", Accel: vmm.AccelTCG}
	tests := []struct {
		name   string
		mod    func(*vmm.Spec)
		errHas string
	}{
		{"missing kernel", func(s *vmm.Spec) { s.BzImage = filepath.Join(s.Dir, "nope") }, "qemu exited during start"},
		{"socket path too long", func(s *vmm.Spec) {
			s.Dir = filepath.Join(s.Dir, strings.Repeat("d", 100))
			s.BzImage = "/x"
			_ = os.MkdirAll(s.Dir, 0o755)
		}, "longer than the 107-byte limit"},
		{"no accel", func(s *vmm.Spec) { s.Accel = ""; s.BzImage = "/x" }, "neither kvm nor tcg"},
		{"missing drive", func(s *vmm.Spec) {
			s.BzImage = "/x"
			s.Drives = []vmm.Drive{{ID: "root", Path: filepath.Join(s.Dir, "missing.img")}}
		}, "qemu exited during start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.Dir = t.TempDir()
			tt.mod(&s)
			h, err := (&Driver{}).Start(ctx, s)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Start = %+v, %v; want error containing %q", h, err, tt.errHas)
			}
			if h.PID != 0 {
				t.Fatalf("handles returned on error: %+v", h)
			}
		})
	}
}

// TestDriver_StopACPI checks the clean path of Stop: the guest handles the
// ACPI power button pressed through QMP and powers off, which ends qemu
// before the timeout.
func TestDriver_StopACPI(t *testing.T) {
	vmmtest.RequireBinary(t, DefaultBinary)
	k := vmmtest.DebianKernel(t)
	s := bootSpec(t, k, vmmtest.BusyboxInitramfsWith(t, k, vmmtest.InitramfsOptions{ACPIPowerOff: true}))
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	waitConsole(ctx, t, h.ConsoleLog, vmmtest.MarkerReady)
	if err := d.Stop(ctx, h, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(h) {
		t.Fatal("Alive after Stop")
	}
	b, _ := os.ReadFile(h.ConsoleLog)
	if !strings.Contains(string(b), vmmtest.MarkerPowerOff) || !strings.Contains(string(b), "Power down") {
		t.Fatalf("guest did not power off through ACPI; console:\n%s", b)
	}
}

// TestDriver_StartRecordsHandlesAtSpawn: the handles reach OnSpawn while
// Start still waits for QMP, so a daemon killed during that wait (which
// can last many seconds under TCG) leaves a record of the process. The
// stand-in binary never opens QMP.
func TestDriver_StartRecordsHandlesAtSpawn(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu-never-ready")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := vmm.Spec{
		VMID: "spawn", VCPU: 1, MemoryMiB: 64, Cmdline: "console=ttyS0", Accel: vmm.AccelKVM,
		BzImage: "/x", Dir: filepath.Join(dir, "vm"),
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &Driver{Binary: fake, StartTimeout: time.Minute}
	h, errc := vmmtest.StartUntilSpawn(t, ctx, d, s)
	spawned := make(chan vmm.Handles, 1)
	// The agent is reached over the virtio-serial socket on every host:
	// a QEMU guest once got vhost-vsock where /dev/vhost-vsock existed,
	// and the daemon, with no unix socket to dial, never reached it.
	if h.AgentTransport != vmm.TransportSerial || h.SerialSocket != filepath.Join(s.Dir, layout.AgentSocketFile) || h.VsockSocket != "" {
		t.Errorf("agent channel %q serial %q vsock %q, want the virtio-serial socket", h.AgentTransport, h.SerialSocket, h.VsockSocket)
	}
	// The daemon gives up (cancel): Start ends the process it spawned.
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("Start succeeded against a VMM that never answered")
	}
	if ok, _ := vmm.Check(h); ok {
		t.Fatal("the VMM outlived a failed Start")
	}

	// An OnSpawn error fails Start and ends the process.
	s.OnSpawn = func(h vmm.Handles) error { spawned <- h; return os.ErrPermission }
	if _, err := d.Start(context.Background(), s); err == nil || !strings.Contains(err.Error(), "permission") {
		t.Fatalf("Start with a failing OnSpawn = %v", err)
	}
	if ok, _ := vmm.Check(<-spawned); ok {
		t.Fatal("the VMM outlived a failed OnSpawn")
	}
}
