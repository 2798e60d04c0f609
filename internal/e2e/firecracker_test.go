package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/wait"
)

// TestFirecracker runs one guest through banger's Firecracker driver with
// the Firecracker stand-in (internal/vmm/firecracker/fakefc) in boot mode
// as firecracker_bin: the stand-in serves Firecracker's API, validates
// every request against the pinned v1.16.1 spec and boots the configured
// machine under QEMU TCG as its child, bridging the vsock CONNECT protocol
// to the guest agent's virtio-serial port.
//
// It proves banger's Firecracker driver, its use of the API against the
// pinned spec, the CONNECT protocol of its agent dialer, and the
// handle, re-adoption and reconcile logic of a Firecracker VM, with a real
// guest: create, exec, ssh, stop and start, a daemon kill -9, a VMM killed
// behind the daemon's back, delete. It does not prove real Firecracker's
// device model, KVM, Firecracker's seccomp filter or its timing: those
// need a Firecracker binary on a KVM host.
func TestFirecracker(t *testing.T) {
	e, fcBin := newFirecrackerEnv(t, "")

	const name = "fc1"
	exec1 := func(t *testing.T) {
		t.Helper()
		r := e.must(e.banger("", "vm", "exec", name, "--", "cat", "/etc/hostname"))
		if strings.TrimSpace(r.stdout) != name {
			t.Fatalf("hostname = %q, want %s\nstderr: %s", r.stdout, name, r.stderr)
		}
	}
	// standIn returns the VM's VMM PID, checked to be the stand-in, and
	// the PID of its QEMU child.
	standIn := func(t *testing.T) (int, int) {
		t.Helper()
		v := e.vm(name)
		if v["vmm"] != "firecracker" {
			t.Fatalf("vmm = %v, want firecracker", v["vmm"])
		}
		pid := int(v["pid"].(float64))
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != fcBin {
			t.Fatalf("vmm pid %d runs %q (%v), want the stand-in %s", pid, exe, err, fcBin)
		}
		child := childOf(pid, "fakefc-qemu")
		if child == 0 {
			t.Fatalf("the stand-in (pid %d) has no QEMU child", pid)
		}
		return pid, child
	}

	t.Run("create: the agent answers", func(t *testing.T) {
		start := time.Now()
		r := e.must(e.banger("", "vm", "create", "--name", name))
		t.Logf("create through the stand-in (boot to agent ready, TCG): %s\n%s", time.Since(start).Round(100*time.Millisecond), r.stderr)
		if !strings.Contains(r.stderr, "agent ready") {
			t.Errorf("no agent ready stage in the create output:\n%s", r.stderr)
		}
		if v := e.vm(name); v["state"] != "running" {
			t.Fatalf("state = %v, want running", v["state"])
		}
	})

	t.Run("exec", exec1)

	t.Run("ssh", func(t *testing.T) { e.must(e.banger("", "vm", "ssh", name, "--", "true")) })

	t.Run("the VMM is the stand-in with a QEMU child", func(t *testing.T) { standIn(t) })

	// Unjailed, Firecracker's state names this VM's disk paths: it cannot
	// become another VM, and a fork says why before touching anything.
	t.Run("fork without the jailer is refused", func(t *testing.T) {
		r := e.banger("", "vm", "fork", name, "-n", "1", "--name", "nf")
		if r.code == 0 || !strings.Contains(r.stderr, "jailer") {
			t.Fatalf("fork: code %d, stderr %q; want a refusal naming the jailer", r.code, r.stderr)
		}
		if v := e.banger("", "vm", "show", "nf-1"); v.code == 0 {
			t.Errorf("a refused fork left vm nf-1")
		}
		if v := e.vm(name); v["state"] != "running" {
			t.Errorf("source is %v after a refused fork", v["state"])
		}
	})

	t.Run("stop, then start and exec again", func(t *testing.T) {
		pid, child := standIn(t)
		console, _ := e.vm(name)["console_log"].(string)
		e.must(e.banger("", "vm", "stop", name))
		if v := e.vm(name); v["state"] != "stopped" {
			t.Fatalf("state after stop = %v", v["state"])
		}
		if processRunning(pid) || processRunning(child) {
			t.Fatalf("stand-in %d or its QEMU %d still running after stop", pid, child)
		}
		// SendCtrlAltDel became an ACPI power button press: the guest
		// powered off rather than being killed at the stop timeout.
		if b, err := os.ReadFile(console); err != nil || !bytes.Contains(b, []byte("reboot: Power down")) {
			t.Errorf("the guest did not power off on its own (console %s: %v)", console, err)
		}
		start := time.Now()
		r := e.must(e.banger("", "vm", "start", name))
		t.Logf("start through the stand-in: %s\n%s", time.Since(start).Round(100*time.Millisecond), r.stderr)
		exec1(t)
	})

	t.Run("kill -9 of the daemon: the VM is re-adopted", func(t *testing.T) {
		pid, child := standIn(t)
		d := e.daemonPID()
		if d == 0 {
			t.Fatal("no daemon running")
		}
		syscall.Kill(d, syscall.SIGKILL)
		waitGone(d, 5*time.Second)
		exec1(t)
		if v := e.vm(name); v["state"] != "running" {
			t.Fatalf("state after daemon restart = %v", v["state"])
		}
		// The restarted daemon kills stray VMMs: neither the stand-in nor
		// its QEMU child may be taken for one.
		if again, againChild := standIn(t); again != pid || againChild != child {
			t.Fatalf("VMM changed across the daemon restart: %d/%d -> %d/%d", pid, child, again, againChild)
		}
	})

	t.Run("a stand-in killed behind the daemon's back is cleaned up", func(t *testing.T) {
		pid, child := standIn(t)
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var v map[string]any
		if err := wait.Until(ctx, 500*time.Millisecond, func() (bool, error) {
			v = e.vm(name)
			return v["state"] == "stopped", nil
		}); err != nil {
			t.Fatalf("state = %v, want stopped: %v", v["state"], err)
		}
		if le, _ := v["last_error"].(string); !strings.Contains(le, "exited") {
			t.Errorf("last_error = %q", le)
		}
		if processRunning(child) {
			t.Errorf("QEMU pid %d outlived its stand-in", child)
		}
	})

	t.Run("delete leaves nothing", func(t *testing.T) {
		v := e.vm(name)
		dir, _ := v["dir"].(string)
		e.must(e.banger("", "vm", "delete", name))
		if pids := procsWithArg(dir); len(pids) != 0 {
			t.Errorf("processes naming the vm dir remain: %v", pids)
		}
		if taps := tapLinks.FindAllString(e.links(), -1); len(taps) != 0 {
			t.Errorf("taps left after deleting the last vm: %q", taps)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("vm dir %s still exists", dir)
		}
	})
}

// newFirecrackerEnv builds the Firecracker stand-in and makes a test
// world whose daemon drives it as firecracker_bin, with extra appended to
// the config's top-level keys.
func newFirecrackerEnv(t *testing.T, extra string) (*env, string) {
	qemuBin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64: %v", err)
	}
	fcBin := filepath.Join(t.TempDir(), "firecracker")
	build := exec.Command("go", "build", "-o", fcBin, "./internal/vmm/firecracker/fakefc")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the firecracker stand-in: %v\n%s", err, out)
	}
	e := newEnv(t, func(s string) string {
		s = strings.Replace(s, `vmm = "qemu"`, fmt.Sprintf("vmm = %q\nfirecracker_bin = %q\n%s", "firecracker", fcBin, extra), 1)
		// Another documentation range than the default config's, which
		// some hosts' own networks use (the daemon refuses an overlap).
		return strings.Replace(s, `subnet = "192.0.2.0/24"`, `subnet = "198.51.100.0/24"`, 1)
	})
	// The daemon starts VMMs with its own environment, and the CLI starts
	// the daemon with the CLI's: the stand-in's settings reach it so.
	e.envv = append(e.envv,
		"FAKEFC_QEMU="+qemuBin,
		"FAKEFC_SWAGGER="+filepath.Join(repoRoot(t), "internal", "vmm", "firecracker", "testdata", "firecracker-v1.16.1.yaml"),
	)
	// e.cleanup ends the QEMU processes it finds; the stand-ins are ended
	// here (their QEMU children die with them).
	t.Cleanup(func() {
		for _, pid := range procsWithArg(e.state) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "firecracker" {
				syscall.Kill(pid, syscall.SIGKILL)
				waitGone(pid, 5*time.Second)
			}
		}
	})
	e.ensureImage()
	return e, fcBin
}

// TestFirecrackerJailed runs one guest through the Firecracker driver
// under the jailer stand-in (internal/vmm/firecracker/fakejailer), which
// jails for real: a mount namespace, pivot_root into
// <state>/jail/firecracker/<id>/root, device nodes, uid and gid 65534.
// The Firecracker stand-in then boots the guest with QEMU inside that
// jail, as 65534. It proves the driver's jailer command line, the hard
// links and owners it gives the jail, the paths it gives the API inside
// the jail, the tap owned by the jail's user, the liveness check by jail
// id, suspend and restore, a fork restored into another jail (the state
// sealed, the tap overridden, the copy re-identified), and that delete
// removes the jails; it does not prove a real jailer's cgroups or a real
// Firecracker inside it.
func TestFirecrackerJailed(t *testing.T) {
	jailer := filepath.Join(t.TempDir(), "jailer")
	build := exec.Command("go", "build", "-o", jailer, "./internal/vmm/firecracker/fakejailer")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the jailer stand-in: %v\n%s", err, out)
	}
	e, _ := newFirecrackerEnv(t, fmt.Sprintf("jailer_bin = %q", jailer))
	const name = "jl1"
	r := e.must(e.banger("", "vm", "create", "--name", name))
	t.Logf("create through the jailer and the stand-in:\n%s", r.stderr)
	v := e.vm(name)
	pid := int(v["pid"].(float64))
	id, _ := v["id"].(string)
	jail := filepath.Join(e.state, "jail", "firecracker", id[:12], "root")

	t.Run("the guest answers", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "exec", name, "--", "cat", "/etc/hostname"))
		if strings.TrimSpace(r.stdout) != name {
			t.Fatalf("hostname = %q", r.stdout)
		}
	})
	t.Run("the VMM and its QEMU run jailed as 65534", func(t *testing.T) {
		child := childOf(pid, "fakefc-qemu")
		if child == 0 {
			t.Fatalf("the jailed stand-in (pid %d) has no QEMU child", pid)
		}
		for _, p := range []int{pid, child} {
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) {
				t.Errorf("pid %d does not run as 65534", p)
			}
			// Its root is the jail: the host's /etc is not there.
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/etc/passwd", p)); err == nil {
				t.Errorf("pid %d sees the host's /etc/passwd", p)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/api.sock", p)); err != nil {
				t.Errorf("pid %d's root is not the jail (no api.sock): %v", p, err)
			}
		}
		if _, err := os.Stat(filepath.Join(jail, "api.sock")); err != nil {
			t.Errorf("no API socket in the jail %s: %v", jail, err)
		}
		// The jail has no /proc/cpuinfo, yet the TCG guest still gets the
		// host's TSC frequency (without it, its boot often hangs).
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child)); err != nil || !bytes.Contains(cmdline, []byte("tsc_early_khz=")) {
			t.Errorf("the jailed QEMU's kernel command line has no tsc_early_khz (%v)", err)
		}
	})
	// Saved state through the jailed stand-in: its snapshot is QEMU's
	// migration stream of the whole machine, so what survives is the
	// guest's memory, as with Firecracker's own snapshots.
	e.must(e.banger("", "vm", "session", "start", name, "--name", "counter", "--",
		"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done"))
	bootID := e.bootID(t, name)
	t.Run("suspend, then start restores the memory", func(t *testing.T) {
		before := e.waitCount(t, name, 0)
		r := e.must(e.banger("", "vm", "suspend", name))
		t.Logf("suspend through the jailed stand-in:\n%s", r.stderr)
		if v := e.vm(name); v["state"] != "suspended" {
			t.Fatalf("state after suspend = %v", v["state"])
		}
		if processRunning(pid) {
			t.Fatalf("jailed VMM %d still runs after suspend", pid)
		}
		r = e.must(e.banger("", "vm", "start", name))
		t.Logf("restore through the jailed stand-in:\n%s", r.stderr)
		if !strings.Contains(r.stderr, "restore") {
			t.Errorf("start did not restore:\n%s", r.stderr)
		}
		if got := e.bootID(t, name); got != bootID {
			t.Errorf("boot id %s after restore, %s before: the guest rebooted", got, bootID)
		}
		e.waitCount(t, name, before)
		e.checkClock(t, name)
		pid = int(e.vm(name)["pid"].(float64))
	})
	t.Run("fork -n 1: a copy in its own jail with its own identity", func(t *testing.T) {
		base := e.waitCount(t, name, 0)
		r := e.must(e.banger("", "vm", "fork", name, "-n", "1", "--name", "jf"))
		t.Logf("fork through the jailed stand-in:\n%s", r.stderr)
		const c = "jf-1"
		v := e.vm(c)
		cid, _ := v["id"].(string)
		out := e.must(e.banger("", "vm", "exec", c, "--", "sh", "-c", "hostname; cat /sys/class/net/e*/address; cat /etc/machine-id")).stdout
		if want := fmt.Sprintf("%s\n%v\n%s\n", c, v["mac"], cid); out != want {
			t.Errorf("copy's hostname, mac and machine-id %q, want %q", out, want)
		}
		// The memory came along: same boot, the counter goes on.
		if got := e.bootID(t, c); got != bootID {
			t.Errorf("copy's boot id %s, source's %s: it booted instead of restoring", got, bootID)
		}
		e.waitCount(t, c, base)
		copyJail := filepath.Join(e.state, "jail", "firecracker", cid[:12], "root")
		if _, err := os.Stat(filepath.Join(copyJail, "api.sock")); err != nil {
			t.Errorf("the copy has no jail of its own: %v", err)
		}
		e.waitCount(t, name, base) // the source runs on
		e.must(e.banger("", "vm", "delete", c))
		if _, err := os.Stat(filepath.Dir(copyJail)); !os.IsNotExist(err) {
			t.Errorf("copy's jail %s left after delete: %v", filepath.Dir(copyJail), err)
		}
	})
	t.Run("delete removes the jail", func(t *testing.T) {
		e.must(e.banger("", "vm", "delete", name))
		if processRunning(pid) {
			t.Errorf("jailed VMM %d still running", pid)
		}
		if _, err := os.Stat(filepath.Dir(jail)); !os.IsNotExist(err) {
			t.Errorf("jail %s left after delete: %v", filepath.Dir(jail), err)
		}
	})
}

// childOf returns the PID of a live child of parent whose argv[0] is
// argv0, 0 when there is none.
func childOf(parent int, argv0 string) int {
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) || f[0] == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if first, _, _ := bytes.Cut(cmdline, []byte{0}); string(first) == argv0 {
			return pid
		}
	}
	return 0
}
