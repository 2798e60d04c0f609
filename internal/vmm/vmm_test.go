package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"banger/internal/layout"
	"banger/internal/wait"
)

func TestSelect(t *testing.T) {
	tests := []struct {
		want          string
		fc, kvm, qemu bool
		out           string
		errHas        string
	}{
		{want: "auto", fc: true, kvm: true, qemu: true, out: Firecracker},
		{want: "", fc: true, kvm: true, qemu: false, out: Firecracker},
		{want: "auto", fc: true, kvm: false, qemu: true, out: QEMU},
		{want: "auto", fc: false, kvm: true, qemu: true, out: QEMU},
		{want: "auto", fc: false, kvm: false, qemu: false, errHas: "no firecracker binary, and qemu-system-x86_64 not found"},
		{want: "auto", fc: true, kvm: false, qemu: false, errHas: "KVM is not usable, and qemu"},
		{want: "firecracker", fc: true, kvm: true, out: Firecracker},
		{want: "firecracker", fc: false, kvm: true, errHas: "firecracker_bin"},
		{want: "firecracker", fc: true, kvm: false, errHas: "vmx or svm"},
		{want: "qemu", qemu: true, out: QEMU},
		{want: "qemu", fc: true, kvm: true, errHas: "qemu-system-x86_64 not found"},
		{want: "xen", qemu: true, errHas: `unknown vmm "xen"`},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/fc=%v,kvm=%v,qemu=%v", tt.want, tt.fc, tt.kvm, tt.qemu)
		t.Run(name, func(t *testing.T) {
			got, err := Select(tt.want, tt.fc, tt.kvm, tt.qemu)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("Select() = %q, %v; want error containing %q", got, err, tt.errHas)
				}
				return
			}
			if err != nil || got != tt.out {
				t.Fatalf("Select() = %q, %v; want %q", got, err, tt.out)
			}
		})
	}
}

func TestCheckSocketPath(t *testing.T) {
	if err := CheckSocketPath("/" + strings.Repeat("a", 106)); err != nil {
		t.Errorf("107-byte path rejected: %v", err)
	}
	long := "/" + strings.Repeat("a", 107)
	err := CheckSocketPath(long)
	if err == nil || !strings.Contains(err.Error(), long) {
		t.Errorf("108-byte path: err = %v, want an error naming the path", err)
	}
}

func TestSpec_Validate(t *testing.T) {
	ok := Spec{VMID: "v1", VCPU: 1, MemoryMiB: 128, Dir: "/d"}
	tests := []struct {
		name   string
		mod    func(*Spec)
		errHas string
	}{
		{"ok", func(*Spec) {}, ""},
		{"no id", func(s *Spec) { s.VMID = "" }, "vm id"},
		{"no vcpu", func(s *Spec) { s.VCPU = 0 }, "vcpu"},
		{"no mem", func(s *Spec) { s.MemoryMiB = 0 }, "memory"},
		{"no dir", func(s *Spec) { s.Dir = "" }, "dir"},
		{"tap without mac", func(s *Spec) { s.Tap = "tap0" }, "mac"},
		{"drive without path", func(s *Spec) { s.Drives = []Drive{{ID: "root"}} }, "drive 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.mod(&s)
			err := s.Validate()
			if tt.errHas == "" && err != nil || tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.errHas)
			}
		})
	}
}

func sampleHandles(dir string) Handles {
	return Handles{
		VMM: QEMU, PID: 4242, StartTime: 123456,
		QMPSocket:      filepath.Join(dir, layout.QMPSocketFile),
		SerialSocket:   filepath.Join(dir, layout.AgentSocketFile),
		ConsoleLog:     filepath.Join(dir, layout.ConsoleLogFile),
		VMMLog:         filepath.Join(dir, layout.VMMLogFile),
		Tap:            "bgtap0",
		AgentTransport: TransportSerial,
	}
}

func TestHandles_RoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := sampleHandles(dir)
	if err := WriteHandles(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadHandles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	// Overwrite: the new value wins and no temporary file is left behind.
	want.PID = 99
	if err := WriteHandles(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadHandles(dir); got.PID != 99 {
		t.Fatalf("after overwrite pid = %d, want 99", got.PID)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != layout.HandlesFile {
		t.Fatalf("dir holds %v, want only %s", entries, layout.HandlesFile)
	}
	if err := RemoveHandles(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveHandles(dir); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestReadHandles_Bad(t *testing.T) {
	tests := []struct {
		name    string
		content *string
		noHand  bool
	}{
		{name: "missing", noHand: true},
		{name: "garbage", content: ptr("{not json")},
		{name: "truncated", content: ptr(`{"vmm":"qemu","pid":12`)},
		{name: "unknown field", content: ptr(`{"vmm":"qemu","pid":12,"start_time":1,"color":"red"}`)},
		{name: "no pid", content: ptr(`{"vmm":"qemu"}`)},
		{name: "empty", content: ptr("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != nil {
				if err := os.WriteFile(filepath.Join(dir, layout.HandlesFile), []byte(*tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ReadHandles(dir)
			if err == nil {
				t.Fatal("ReadHandles succeeded")
			}
			if got := errors.Is(err, ErrNoHandles); got != tt.noHand {
				t.Fatalf("errors.Is(err, ErrNoHandles) = %v, want %v (err %v)", got, tt.noHand, err)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, layout.HandlesFile)) {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestHandleCache_Concurrent(t *testing.T) {
	root := t.TempDir()
	c := NewHandleCache(root)
	const n = 16
	for i := range n {
		if err := os.Mkdir(c.Dir(fmt.Sprintf("vm%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("vm%d", i)
			for j := range 20 {
				h := sampleHandles(c.Dir(id))
				h.PID = i*1000 + j + 1
				if err := c.Set(id, h); err != nil {
					t.Error(err)
					return
				}
				if got, ok := c.Get(id); !ok || got.PID != h.PID {
					t.Errorf("Get(%s) = %d, %v; want %d", id, got.PID, ok, h.PID)
				}
				_ = c.Snapshot()
			}
		}()
	}
	wg.Wait()
	snap := c.Snapshot()
	if len(snap) != n {
		t.Fatalf("snapshot has %d entries, want %d", len(snap), n)
	}
	// Every Set was written through: a fresh cache loads the last value.
	fresh := NewHandleCache(root)
	for i := range n {
		id := fmt.Sprintf("vm%d", i)
		h, err := fresh.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		if want := i*1000 + 20; h.PID != want {
			t.Errorf("loaded %s pid %d, want %d", id, h.PID, want)
		}
	}
	// Snapshot is a copy.
	snap["vm0"] = Handles{}
	if h, _ := c.Get("vm0"); h.PID == 0 {
		t.Fatal("Snapshot aliases the cache")
	}
	if err := c.Delete("vm0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("vm0"); ok {
		t.Fatal("vm0 still cached after Delete")
	}
	if _, err := ReadHandles(c.Dir("vm0")); !errors.Is(err, ErrNoHandles) {
		t.Fatalf("handles.json of vm0 after Delete: %v", err)
	}
	if err := c.Delete("vm0"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	// A failed write leaves the cache unchanged.
	if err := c.Set("no-such-dir", sampleHandles("x")); err == nil {
		t.Fatal("Set into a missing dir succeeded")
	}
	if _, ok := c.Get("no-such-dir"); ok {
		t.Fatal("failed Set was cached")
	}
}

// startFakeVMM runs a detached shell whose command line names sock, like a
// VMM naming its control socket, and returns its handles.
func startFakeVMM(t *testing.T, sock string, reap bool) (Handles, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 60; : "+sock)
	logf, err := Detach(cmd, filepath.Join(t.TempDir(), layout.VMMLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	if reap {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	} else {
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	st, err := ProcStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	waitExeced(t, cmd.Process.Pid)
	return Handles{VMM: QEMU, PID: cmd.Process.Pid, StartTime: st, QMPSocket: sock}, cmd
}

// waitExeced waits until pid's command line reads non-empty. Start can
// return while the kernel still finishes the execve; until then the
// command line is empty and Check counts any start-time match as alive,
// which would make the tests of which socket or jail it names flaky.
func waitExeced(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wait.Until(ctx, time.Millisecond, func() (bool, error) {
		argv, err := ProcCmdline(pid)
		return len(argv) > 0, err
	}); err != nil {
		t.Fatalf("command line of %d: %v", pid, err)
	}
}

func TestAlive(t *testing.T) {
	sock := filepath.Join(t.TempDir(), layout.QMPSocketFile)
	h, cmd := startFakeVMM(t, sock, false)
	if sid, err := unix.Getsid(h.PID); err != nil || sid != h.PID {
		t.Fatalf("session of detached process = %d, %v; want its own pid %d", sid, err, h.PID)
	}
	tests := []struct {
		name string
		mod  func(*Handles)
		want bool
	}{
		{"ours", func(*Handles) {}, true},
		{"pid reused (start time differs)", func(h *Handles) { h.StartTime++ }, false},
		{"another vm's socket", func(h *Handles) { h.QMPSocket = "/elsewhere/qmp.sock" }, false},
		{"no socket", func(h *Handles) { h.QMPSocket = "" }, false},
		{"no pid", func(h *Handles) { h.PID = 0 }, false},
		{"no start time", func(h *Handles) { h.StartTime = 0 }, false},
		{"other process", func(h *Handles) { h.PID = os.Getpid() }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hh := h
			tt.mod(&hh)
			if got := Alive(hh); got != tt.want {
				t.Fatalf("Alive() = %v, want %v", got, tt.want)
			}
		})
	}
	// Killed behind our back: a zombie (not yet reaped) is not alive, and
	// neither is a reaped process.
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitExit(ctx, h); err != nil {
		t.Fatalf("WaitExit on a zombie: %v", err)
	}
	_ = cmd.Wait()
	if Alive(h) {
		t.Fatal("Alive() after kill and reap")
	}
}

// TestAlive_jailed: a jailed VMM names its socket inside its jail, the
// same path in every jail, so its --id must match as well.
func TestAlive_jailed(t *testing.T) {
	jail := filepath.Join(t.TempDir(), "jail", "firecracker", "0123456789ab", "root")
	cmd := exec.Command("sh", "-c", "sleep 60; :", "firecracker", "--id", "0123456789ab", "--api-sock", "/api.sock")
	logf, err := Detach(cmd, filepath.Join(t.TempDir(), layout.VMMLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	st, err := ProcStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	waitExeced(t, cmd.Process.Pid)
	h := Handles{VMM: Firecracker, PID: cmd.Process.Pid, StartTime: st, Jail: jail, APISocket: filepath.Join(jail, "api.sock")}
	if got := h.ControlSocket(); got != "/api.sock" {
		t.Fatalf("ControlSocket() = %q, want /api.sock", got)
	}
	if !Alive(h) {
		t.Error("a jailed VMM with its id and socket is not alive")
	}
	other := h
	other.Jail = filepath.Join(filepath.Dir(filepath.Dir(jail)), "ba9876543210", "root")
	other.APISocket = filepath.Join(other.Jail, "api.sock")
	if Alive(other) {
		t.Error("a jailed VMM is alive under another jail's id")
	}
	outside := h
	outside.APISocket = "/elsewhere/api.sock"
	if Alive(outside) {
		t.Error("a socket outside the jail matched")
	}
}

func TestKillAndStopProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Run("kill", func(t *testing.T) {
		h, _ := startFakeVMM(t, filepath.Join(t.TempDir(), layout.APISocketFile), true)
		if err := KillProcess(ctx, h); err != nil {
			t.Fatal(err)
		}
		if Alive(h) {
			t.Fatal("alive after KillProcess")
		}
		if err := KillProcess(ctx, h); err != nil {
			t.Fatalf("second KillProcess: %v", err)
		}
	})
	t.Run("ask ignored, killed after timeout", func(t *testing.T) {
		h, _ := startFakeVMM(t, filepath.Join(t.TempDir(), layout.APISocketFile), true)
		asked := 0
		start := time.Now()
		err := StopProcess(ctx, h, 200*time.Millisecond, func(context.Context) error { asked++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		if asked != 1 || Alive(h) || time.Since(start) < 200*time.Millisecond {
			t.Fatalf("asked %d times, alive %v, after %v", asked, Alive(h), time.Since(start))
		}
		if err := StopProcess(ctx, h, time.Second, func(context.Context) error { t.Fatal("asked a dead VMM"); return nil }); err != nil {
			t.Fatalf("second StopProcess: %v", err)
		}
	})
	t.Run("ask honoured", func(t *testing.T) {
		h, _ := startFakeVMM(t, filepath.Join(t.TempDir(), layout.APISocketFile), true)
		err := StopProcess(ctx, h, time.Minute, func(context.Context) error { return syscall.Kill(h.PID, syscall.SIGTERM) })
		if err != nil || Alive(h) {
			t.Fatalf("StopProcess = %v, alive %v", err, Alive(h))
		}
	})
	t.Run("a dropped ask is repeated", func(t *testing.T) {
		h, _ := startFakeVMM(t, filepath.Join(t.TempDir(), layout.APISocketFile), true)
		defer func(d time.Duration) { AskEvery = d }(AskEvery)
		AskEvery = 50 * time.Millisecond
		// The first press falls on a guest not yet listening; the third is heard.
		asked := 0
		err := StopProcess(ctx, h, time.Minute, func(context.Context) error {
			if asked++; asked == 3 {
				return syscall.Kill(h.PID, syscall.SIGTERM)
			}
			return nil
		})
		if err != nil || Alive(h) || asked != 3 {
			t.Fatalf("StopProcess = %v, alive %v, asked %d times", err, Alive(h), asked)
		}
	})
	t.Run("ask fails, killed at once", func(t *testing.T) {
		h, _ := startFakeVMM(t, filepath.Join(t.TempDir(), layout.APISocketFile), true)
		err := StopProcess(ctx, h, time.Minute, func(context.Context) error { return errors.New("socket gone") })
		if err != nil || Alive(h) {
			t.Fatalf("StopProcess = %v, alive %v", err, Alive(h))
		}
	})
}

// TestKillProcess_Orphan covers the daemon-restart case: the VMM is not a
// child of the caller (here: re-parented after its parent exited), so only
// /proc polling can see it exit.
func TestKillProcess_Orphan(t *testing.T) {
	sock := filepath.Join(t.TempDir(), layout.QMPSocketFile)
	out, err := exec.Command("sh", "-c", `sh -c "sleep 60; : `+sock+`" >/dev/null 2>&1 & echo $!`).Output()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	st, err := ProcStartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	h := Handles{VMM: QEMU, PID: pid, StartTime: st, QMPSocket: sock}
	if !Alive(h) {
		t.Fatal("orphan not Alive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := KillProcess(ctx, h); err != nil {
		t.Fatal(err)
	}
	if Alive(h) {
		t.Fatal("orphan Alive after KillProcess")
	}
}

// TestCheck_unreadableProc: when /proc cannot be read (the daemon out of
// file descriptors after a guest's flood), liveness is unknown, not "dead":
// Alive stays true so nothing is reaped, and KillProcess and StopProcess
// fail without signalling. Before, Alive said false and `vm delete`
// reported success while the VMM kept running.
func TestCheck_unreadableProc(t *testing.T) {
	sock := filepath.Join(t.TempDir(), layout.QMPSocketFile)
	h, _ := startFakeVMM(t, sock, false)

	fake := t.TempDir()
	// A directory where the stat file should be: reading it fails with
	// EISDIR, an error that is not "no such process".
	if err := os.MkdirAll(filepath.Join(fake, strconv.Itoa(h.PID), "stat"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := procDir
	procDir = fake
	t.Cleanup(func() { procDir = old })

	if ok, err := Check(h); ok || err == nil {
		t.Fatalf("Check() = %v, %v; want an error", ok, err)
	}
	if !Alive(h) {
		t.Fatal("Alive() = false while liveness is unknown")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := KillProcess(ctx, h); err == nil {
		t.Fatal("KillProcess reported success without knowing the VMM is gone")
	}
	if err := StopProcess(ctx, h, time.Second, func(context.Context) error { return nil }); err == nil {
		t.Fatal("StopProcess reported success without knowing the VMM is gone")
	}
	procDir = old
	if ok, err := Check(h); !ok || err != nil {
		t.Fatalf("the VMM was signalled: Check() = %v, %v", ok, err)
	}
	// A process that is really gone is dead without error.
	gone := h
	gone.PID = 1 << 22 // above pid_max's default
	if ok, err := Check(gone); ok || err != nil {
		t.Fatalf("Check(no such pid) = %v, %v; want false, nil", ok, err)
	}
}

// TestFindStrays: a VMM whose arguments point into the VM directory root
// is found without handles (a daemon was killed before recording them) and
// ended; known PIDs, other roots and non-VMM processes are left alone.
func TestFindStrays(t *testing.T) {
	bin := t.TempDir()
	// A VMM stand-in whose argv[0] is named like qemu: sh under that name.
	qemu := filepath.Join(bin, "qemu-system-x86_64")
	shell, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(shell, qemu); err != nil {
		t.Fatal(err)
	}
	vms := filepath.Join(t.TempDir(), "vms")
	other := filepath.Join(t.TempDir(), "vms")
	start := func(argv ...string) *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	stray := start(qemu, "-c", "sleep 60; :", "unix:"+vms+"/vm1/qmp.sock,server=on")
	known := start(qemu, "-c", "sleep 60; :", "unix:"+vms+"/vm2/qmp.sock,server=on")
	start(qemu, "-c", "sleep 60; :", "unix:"+other+"/vm3/qmp.sock,server=on") // another daemon's
	start("sh", "-c", "sleep 60; : "+vms+"/vm4/console.log")                  // a user's pager, say

	// The processes exec asynchronously: wait until the stray is visible.
	var found []Stray
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := wait.Until(fctx, 10*time.Millisecond, func() (bool, error) {
		var err error
		found, err = FindStrays(vms, map[int]bool{known.Process.Pid: true})
		return len(found) > 0, err
	}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].PID != stray.Process.Pid || found[0].VMID != "vm1" {
		t.Fatalf("FindStrays = %+v, want only pid %d of vm1", found, stray.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := KillStray(ctx, found[0]); err != nil {
		t.Fatal(err)
	}
	if st, err := readProcStat(stray.Process.Pid); err == nil && st.State != 'Z' {
		t.Fatalf("stray still runs: state %c", st.State)
	}
	if st, err := readProcStat(known.Process.Pid); err != nil || st.State == 'Z' {
		t.Fatal("a known VMM was killed")
	}
}

// TestFindStrays_skipsDescendantsOfKnownVMMs uses a /proc of files: a
// known VMM's child and grandchild (between fork and exec, or helpers it
// runs) show VMM arguments naming its VM dir and are not strays; a
// process naming a VM dir with no known ancestor is.
func TestFindStrays_skipsDescendantsOfKnownVMMs(t *testing.T) {
	proc := t.TempDir()
	old := procDir
	procDir = proc
	t.Cleanup(func() { procDir = old })
	vms := "/state/vms"
	add := func(pid, ppid int, argv ...string) {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := fmt.Sprintf("%d (x) S %d 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 %d 0 0", pid, ppid, 1000+pid)
		os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644)
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644)
	}
	add(100, 1, "/usr/bin/firecracker", "--api-sock", vms+"/vm2/api.sock")
	add(101, 100, "qemu-system-x86_64", "-qmp", "unix:"+vms+"/vm2/qmp.sock")
	add(102, 101, "qemu-system-x86_64", "-qmp", "unix:"+vms+"/vm2/qmp.sock")
	add(200, 1, "qemu-system-x86_64", "-qmp", "unix:"+vms+"/vm1/qmp.sock")
	found, err := FindStrays(vms, map[int]bool{100: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].PID != 200 || found[0].VMID != "vm1" {
		t.Fatalf("FindStrays = %+v, want only pid 200 of vm1", found)
	}
}
