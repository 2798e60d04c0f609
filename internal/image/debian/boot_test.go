package debian_test

import (
	"bufio"
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

	"banger/internal/disk"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/testenv"
)

// hostKHz is the host TSC frequency in kHz from /proc/cpuinfo ("cpu MHz"),
// for tsc_early_khz= (the kernel may hang calibrating the TSC under TCG).
func hostKHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("cpu MHz %q: %w", v, err)
			}
			return int(mhz * 1000), nil
		}
	}
	return 0, fmt.Errorf("no cpu MHz in /proc/cpuinfo")
}

// qemuArgs is the QEMU microvm command line of the boot test: the guest
// contract's kernel command line and drives, no network device.
func qemuArgs(img, vm string, khz int) []string {
	cmdline := "console=ttyS0 reboot=k panic=-1 root=LABEL=banger-root ro rootwait " +
		"banger.overlay=LABEL=banger-overlay banger.work=LABEL=banger-work " +
		fmt.Sprintf("tsc_early_khz=%d ", khz) +
		// PID1 stops printing status once a getty owns the console;
		// journald's copy shows the whole boot.
		"systemd.journald.forward_to_console=1"
	drive := func(id, file string, ro bool) []string {
		spec := fmt.Sprintf("id=%s,file=%s,format=raw,if=none", id, file)
		if ro {
			spec += ",readonly=on"
		}
		return []string{"-drive", spec, "-device", "virtio-blk-device,drive=" + id}
	}
	args := []string{"qemu-system-x86_64",
		"-M", "microvm,acpi=on,pit=on,pic=on,rtc=on",
		"-accel", "tcg,thread=multi", "-cpu", "max", "-m", "1024", "-smp", "2",
		"-nodefaults", "-no-user-config", "-nographic", "-display", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(vm, "console.log"),
		"-kernel", filepath.Join(img, image.FileVmlinuz),
		"-initrd", filepath.Join(img, image.FileInitrd),
		"-append", cmdline,
	}
	args = append(args, drive("root", filepath.Join(img, image.FileRootfs), true)...)
	args = append(args, drive("overlay", filepath.Join(vm, "overlay.ext4"), false)...)
	args = append(args, drive("work", filepath.Join(vm, "work.ext4"), false)...)
	return args
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// TestBootDefault boots the built image under QEMU TCG with the guest
// contract's drives and command line and checks on the serial console
// that systemd reached multi-user.target on an overlayfs root whose upper
// layer is the overlay drive, with the work drive at /root.
func TestBootDefault(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64", "e2fsck")
	img, _ := buildDefault(t)
	vm := t.TempDir()
	ctx := context.Background()
	if err := disk.MakeExt4(ctx, filepath.Join(vm, "overlay.ext4"), 1<<30, guestcontract.LabelOverlay, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := disk.Clone(ctx, filepath.Join(img, image.FileWorkSeed), filepath.Join(vm, "work.ext4")); err != nil {
		t.Fatal(err)
	}
	khz, err := hostKHz()
	if err != nil {
		t.Fatal(err)
	}
	args := qemuArgs(img, vm, khz)
	qemu := exec.Command(args[0], args[1:]...)
	qlog, err := os.Create(filepath.Join(vm, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer qlog.Close()
	qemu.Stdout, qemu.Stderr = qlog, qlog
	// QEMU dies with the test process even when the test is killed.
	qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = qemu.Process.Kill() // by PID: the QEMU this test started
		<-exited
	}
	defer stop()

	want := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"initramfs overlay on the overlay drive", regexp.MustCompile(`banger-init: root is overlayfs \(upper on /dev/vd[a-z]\)`)},
		{"work drive at /root", regexp.MustCompile(`banger-init: /root is /dev/vd[a-z]`)},
		{"multi-user.target", regexp.MustCompile(`Reached target .*multi-user\.target`)},
	}
	var console string
	deadline := time.Now().Add(4 * time.Minute)
	for {
		b, _ := os.ReadFile(filepath.Join(vm, "console.log"))
		console = ansi.ReplaceAllString(string(b), "")
		missing := 0
		for _, w := range want {
			if !w.re.MatchString(console) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("qemu exited (%v) before the guest was up; console:\n%s", err, tailOf(console, 60))
		default:
		}
		if time.Now().After(deadline) {
			for _, w := range want {
				if !w.re.MatchString(console) {
					t.Errorf("console never showed: %s", w.what)
				}
			}
			t.Fatalf("console after %s:\n%s", time.Since(start).Round(time.Second), tailOf(console, 80))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("guest up in %s", time.Since(start).Round(100*time.Millisecond))
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "banger-agent") || strings.Contains(l, "Startup finished") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if strings.Contains(console, "Kernel panic") {
		t.Errorf("kernel panic on the console")
	}
	stop()

	// The upper layer lives on the overlay drive: replay its journal and
	// look for upper/ and work/, and for what the booted system wrote
	// (systemd writes /etc/machine-id on the first boot).
	ov := filepath.Join(vm, "overlay.ext4")
	if err := disk.Check(ctx, ov); err != nil {
		t.Fatalf("overlay drive after the boot: %v", err)
	}
	out, err := exec.Command("debugfs", "-R", "ls /", ov).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	for _, d := range []string{"upper", "work"} {
		if !strings.Contains(string(out), d) {
			t.Errorf("overlay drive has no %s/:\n%s", d, out)
		}
	}
	out, err = exec.Command("debugfs", "-R", "ls /upper", ov).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "etc") || !strings.Contains(string(out), "var") {
		t.Errorf("the booted system wrote nothing to the overlay drive's upper/:\n%s", out)
	}
}

// tailOf returns the last n lines of s.
func tailOf(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
