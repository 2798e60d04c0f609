package guest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guestcontract"
)

// Where the initramfs puts things; /run moves into the new root, so the
// booted system sees the lower and upper layers where the initramfs-tools
// script put them.
const (
	newRoot   = "/newroot"
	lowerDir  = "/run/banger/lower"
	upperDir  = "/run/banger/overlay"
	rootWait  = 30 * time.Second
	driveWait = 5 * time.Second
)

// RunInitramfs is banger-agent as the initramfs's /init (see package
// initramfs). It mounts the kernel's filesystems, loads the listed
// modules, mounts the root drive (root=) read-only as the lower layer and
// the overlay drive (banger.overlay=; a tmpfs when it is absent) as the
// upper layer of an overlayfs root, mounts the work drive (banger.work=)
// at /root, moves /dev, /proc, /sys and /run into the new root and
// executes init= there (/sbin/init by default). It returns only on
// failure, after which the kernel panics (and, with panic=-1, the VM
// ends): a guest without its root has nothing to run.
func RunInitramfs() error {
	for _, m := range []earlyMount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	p := parseBootParams(string(cmdline))
	loadModules(guestcontract.InitramfsModuleOrder, p)

	rootSpec, ok := p.values["root"]
	if !ok {
		rootSpec = "LABEL=" + guestcontract.LabelRoot
	}
	root, err := waitDrive(rootSpec, rootWait)
	if err != nil {
		return fmt.Errorf("root drive: %w", err)
	}
	for _, d := range []string{lowerDir, upperDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(root, lowerDir, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the root drive %s: %w", root, err)
	}
	upper := "tmpfs"
	if spec := p.values[guestcontract.ParamOverlay]; spec != "" {
		dev, err := waitDrive(spec, driveWait)
		if err == nil {
			err = unix.Mount(dev, upperDir, "ext4", unix.MS_NOATIME, "")
		}
		if err != nil {
			say("overlay drive %s: %v; the upper layer is a tmpfs", spec, err)
		} else {
			upper = dev
		}
	}
	if upper == "tmpfs" {
		if err := unix.Mount("tmpfs", upperDir, "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount a tmpfs upper layer: %w", err)
		}
	}
	for _, d := range []string{upperDir + "/upper", upperDir + "/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=" + lowerDir + ",upperdir=" + upperDir + "/upper,workdir=" + upperDir + "/work"
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		// Boot on the plain read-only root rather than not at all.
		say("overlayfs mount failed (%v); the root stays read-only", err)
		if err := unix.Mount(lowerDir, newRoot, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind the root drive: %w", err)
		}
	} else {
		say("root is overlayfs (upper on %s)", upper)
	}
	if spec := p.values[guestcontract.ParamWork]; spec != "" {
		dev, err := waitDrive(spec, driveWait)
		if err == nil {
			_ = os.MkdirAll(newRoot+"/root", 0o700)
			err = unix.Mount(dev, newRoot+"/root", "ext4", unix.MS_NOATIME, "")
		}
		if err != nil {
			say("work drive %s: %v", spec, err)
		} else {
			say("/root is %s", dev)
		}
	}
	return switchRoot(p.values["init"])
}

// loadModules loads each module listed in file, in order, with its
// parameters from the command line. A module that fails is reported and
// skipped: the mount that needs it fails with a clearer error.
func loadModules(file string, p bootParams) {
	b, err := os.ReadFile(file)
	if err != nil {
		say("no module list: %v", err)
		return
	}
	for _, path := range strings.Fields(string(b)) {
		if err := loadModule(path, strings.Join(p.moduleParams[moduleName(path)], " ")); err != nil {
			say("load %s: %v", path, err)
		}
	}
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// waitDrive resolves a LABEL=... or /dev/... drive spec, waiting up to
// wait for the device to appear (module probes register disks as they
// load, but nothing guarantees the node is there the moment after).
func waitDrive(spec string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		var dev string
		switch {
		case strings.HasPrefix(spec, "LABEL="):
			dev, _ = FindByLabel(strings.TrimPrefix(spec, "LABEL="), "", "/sys/class/block", "/dev")
		case strings.HasPrefix(spec, "/dev/"):
			if _, err := os.Stat(spec); err == nil {
				dev = spec
			}
		default:
			return "", fmt.Errorf("%s: only LABEL= and /dev/ paths are understood", spec)
		}
		if dev != "" {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s: not found after %s", spec, wait)
		}
		time.Sleep(20 * time.Millisecond) // polling: nothing signals a new disk without udev
	}
}

// switchRoot moves the kernel filesystems and /run into newRoot, frees
// the initramfs's files, makes newRoot the root and executes init there.
func switchRoot(init string) error {
	if init == "" {
		init = "/sbin/init"
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := os.MkdirAll(newRoot+d, 0o755); err == nil {
			if err := unix.Mount(d, newRoot+d, "", unix.MS_MOVE, ""); err != nil {
				say("move %s into the new root: %v", d, err)
			}
		}
	}
	// The initramfs is a ramfs the kernel cannot free while files are in
	// it: the agent binary and the modules are most of its bytes.
	_ = os.Remove("/init")
	_ = os.RemoveAll("/lib")
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the new root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if _, err := os.Stat(init); err != nil {
		return fmt.Errorf("init %s: %w", init, err)
	}
	if init != guestcontract.AgentPath {
		// Not the agent as init (which applies and serves itself): apply
		// the identity and start serving now, while systemd loads.
		startEarlyAgent()
	}
	return unix.Exec(init, []string{init}, os.Environ())
}

// say writes a line to the kernel log (the console, and later the
// journal), as the initramfs-tools script it replaces did.
func say(format string, args ...any) {
	msg := "banger-init: " + fmt.Sprintf(format, args...) + "\n"
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteString(msg)
		f.Close()
		return
	}
	fmt.Fprint(os.Stderr, msg)
}
