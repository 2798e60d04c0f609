// Command fakejailer is a stand-in for Firecracker's jailer in tests (no
// jailer binary exists where banger's suite runs). It follows the jailer
// of Firecracker v1.16 (docs/jailer.md and src/jailer) step by step where
// the host allows:
//
//   - the same arguments, parsed and validated as the jailer does (--id of
//     at most 64 alphanumerics and hyphens, --exec-file a regular file,
//     --uid and --gid required, --chroot-base-dir an existing directory,
//     --resource-limit fsize=N / no-file=N, --netns joined, everything after
//     "--" passed on);
//   - file descriptors above 2 closed and the environment cleared;
//   - the chroot <chroot-base-dir>/<exec-file name>/<id>/root made, the exec
//     file copied into it, the no-file limit set (2048 unless given);
//   - a new mount namespace, the jail bound over itself, pivot_root into it
//     and the old root detached, as the jailer's chroot.rs does;
//   - /dev/net/tun, /dev/kvm and /dev/urandom made with mknod and, with the
//     jail's root, owned by --uid:--gid (made through the jail's host path
//     before the pivot rather than after it, so no failure can make them
//     in the host's /dev);
//   - groups dropped, gid and uid set, and the copied binary executed in
//     place (same PID) with --id, --start-time-us, --start-time-cpu-us,
//     --parent-cpu-time-us and the extra arguments.
//
// Where it departs from the jailer, because the Firecracker stand-in it
// jails boots its guest with QEMU, which needs its binary, libraries and
// firmware: the host's /usr is bound read-only into the jail (with the
// /bin, /lib, /lib64 and /sbin links of a merged-/usr system). Environment
// variables named FAKEFC_* survive (the stand-in's settings); one that names
// a host file (FAKEFC_SWAGGER) has the file copied into the jail and the
// variable rewritten to the jailed path, and FAKEFC_RECORD and FAKEFC_CONNS
// are rewritten to files at the jail's root. FAKEFC_HOST_KHZ is set from
// the host's /proc/cpuinfo, which the jail does not have, so the stand-in
// can still give its TCG guest a clock frequency. --cgroup, --parent-cgroup and
// --cgroup-version are validated but not applied; --daemonize and
// --new-pid-ns, which change the PID banger records, are refused. What this proves: the driver's jailer
// command line, the files it places in the jail and their owners, the
// jail-relative paths it gives the API, and that the jailed process (as
// --uid) can open everything it needs. It does not prove the real jailer's
// cgroup handling or that a real Firecracker runs in it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm/qemu"
)

func init() {
	// Every namespace and root change below belongs to this thread, and
	// the final execve must come from it.
	runtime.LockOSThread()
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// options are the jailer's arguments.
type options struct {
	id, execFile, chrootBase, netns, cgroupVersion, parentCgroup string
	uid, gid                                                     int
	cgroups, limits                                              multi
	daemonize, newPIDNS                                          bool
	extra                                                        []string
}

var idRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("jailer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.id, "id", "", "")
	fs.StringVar(&o.execFile, "exec-file", "", "")
	fs.IntVar(&o.uid, "uid", -1, "")
	fs.IntVar(&o.gid, "gid", -1, "")
	fs.StringVar(&o.chrootBase, "chroot-base-dir", "/srv/jailer", "")
	fs.StringVar(&o.netns, "netns", "", "")
	fs.StringVar(&o.cgroupVersion, "cgroup-version", "1", "")
	fs.StringVar(&o.parentCgroup, "parent-cgroup", "", "")
	fs.Var(&o.cgroups, "cgroup", "")
	fs.Var(&o.limits, "resource-limit", "")
	fs.BoolVar(&o.daemonize, "daemonize", false, "")
	fs.BoolVar(&o.newPIDNS, "new-pid-ns", false, "")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("arguments: %w", err)
	}
	o.extra = fs.Args()
	switch {
	case !idRE.MatchString(o.id):
		return o, fmt.Errorf("invalid --id %q: at most 64 alphanumerics and hyphens", o.id)
	case o.execFile == "":
		return o, errors.New("missing --exec-file")
	case o.uid < 0 || o.gid < 0:
		return o, errors.New("missing --uid or --gid")
	case o.cgroupVersion != "1" && o.cgroupVersion != "2":
		return o, fmt.Errorf("invalid --cgroup-version %q", o.cgroupVersion)
	case o.newPIDNS || o.daemonize:
		return o, errors.New("--new-pid-ns and --daemonize are not supported by this stand-in")
	}
	for _, c := range o.cgroups {
		if k, v, ok := strings.Cut(c, "="); !ok || k == "" || v == "" {
			return o, fmt.Errorf("invalid --cgroup %q", c)
		}
	}
	return o, nil
}

// limits returns the rlimits to set: no-file 2048 unless given.
func limits(specs []string) (map[int]uint64, error) {
	out := map[int]uint64{unix.RLIMIT_NOFILE: 2048}
	for _, s := range specs {
		name, val, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("invalid --resource-limit %q", s)
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid --resource-limit value %q: %w", val, err)
		}
		switch name {
		case "fsize":
			out[unix.RLIMIT_FSIZE] = n
		case "no-file":
			out[unix.RLIMIT_NOFILE] = n
		default:
			return nil, fmt.Errorf("invalid --resource-limit %q", name)
		}
	}
	return out, nil
}

func main() {
	// run returns only on failure: on success it has become the jailed
	// program.
	err := run(os.Args[1:], time.Now())
	fmt.Fprintln(os.Stderr, "jailer:", err)
	os.Exit(1)
}

func run(args []string, start time.Time) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	rl, err := limits(o.limits)
	if err != nil {
		return err
	}
	closeFDs()
	exe, err := filepath.EvalSymlinks(o.execFile)
	if err != nil {
		return fmt.Errorf("canonicalize %s: %w", o.execFile, err)
	}
	if st, err := os.Stat(exe); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file", exe)
	}
	base, err := filepath.EvalSymlinks(o.chrootBase)
	if err != nil {
		return fmt.Errorf("canonicalize %s: %w", o.chrootBase, err)
	}
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a directory", base)
	}
	name := filepath.Base(exe)
	jail := filepath.Join(base, name, o.id, "root")
	if err := os.MkdirAll(jail, 0o755); err != nil {
		return fmt.Errorf("make jail: %w", err)
	}
	if err := copyFile(exe, filepath.Join(jail, name), 0o755); err != nil {
		return err
	}
	env, err := jailEnv(jail, o.uid, o.gid)
	if err != nil {
		return err
	}
	if o.netns != "" {
		if err := joinNetns(o.netns); err != nil {
			return err
		}
	}
	for res, n := range rl {
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("set resource limit %d: %w", res, err)
		}
	}
	// The jailer makes the devices after pivoting; making them through
	// the jail's host path first gives the same jail and can never touch
	// the host's /dev, whatever happens to the pivot.
	if err := devices(jail, o.uid, o.gid); err != nil {
		return err
	}
	if err := pivot(jail); err != nil {
		return err
	}
	cpu := cpuMicros()
	argv := append([]string{"/" + name,
		"--id", o.id,
		"--start-time-us", strconv.FormatInt(start.UnixMicro(), 10),
		"--start-time-cpu-us", strconv.FormatInt(cpu, 10),
		"--parent-cpu-time-us", strconv.FormatInt(cpu, 10),
	}, o.extra...)
	// The standard library's calls change every thread's credentials.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop groups: %w", err)
	}
	if err := syscall.Setgid(o.gid); err != nil {
		return fmt.Errorf("set gid %d: %w", o.gid, err)
	}
	if err := syscall.Setuid(o.uid); err != nil {
		return fmt.Errorf("set uid %d: %w", o.uid, err)
	}
	return fmt.Errorf("exec %s: %w", argv[0], unix.Exec(argv[0], argv, env))
}

// closeFDs makes every descriptor above stderr close on exec, so the
// jailed process inherits none, as the jailer's closing them does (closing
// them now would pull descriptors from under the Go runtime).
func closeFDs() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// jailEnv returns the environment of the jailed process: only FAKEFC_*
// variables, host files they name copied into the jail.
func jailEnv(jail string, uid, gid int) ([]string, error) {
	var env []string
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "FAKEFC_") {
			continue
		}
		switch k {
		case "FAKEFC_SWAGGER":
			if err := copyFile(v, filepath.Join(jail, "firecracker.yaml"), 0o644); err != nil {
				return nil, err
			}
			v = "/firecracker.yaml"
		case "FAKEFC_RECORD", "FAKEFC_CONNS":
			v = "/" + filepath.Base(v)
			if err := touch(filepath.Join(jail, v), uid, gid); err != nil {
				return nil, err
			}
		}
		env = append(env, k+"="+v)
	}
	if os.Getenv("FAKEFC_HOST_KHZ") == "" {
		if khz := hostKHz(); khz > 0 {
			env = append(env, "FAKEFC_HOST_KHZ="+strconv.Itoa(khz))
		}
	}
	return env, nil
}

// hostKHz is the host TSC frequency from /proc/cpuinfo, 0 when unknown.
func hostKHz() int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	khz, _ := qemu.ParseCPUInfoKHz(f)
	return khz
}

func touch(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	return os.Chown(path, uid, gid)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

func joinNetns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join netns %s: %w", path, err)
	}
	return nil
}

// pivot jails this thread in jail the way the jailer's chroot.rs does,
// after binding the host's /usr into it (the stand-in's departure).
func pivot(jail string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts slave: %w", err)
	}
	if err := unix.Mount(jail, jail, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind jail: %w", err)
	}
	usr := filepath.Join(jail, "usr")
	if err := os.MkdirAll(usr, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/usr", usr, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind /usr: %w", err)
	}
	if err := unix.Mount("", usr, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("read-only /usr: %w", err)
	}
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		p := filepath.Join(jail, l)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink("usr/"+l, p); err != nil {
				return err
			}
		}
	}
	if err := unix.Chdir(jail); err != nil {
		return fmt.Errorf("enter jail: %w", err)
	}
	if err := unix.Mkdir("old_root", 0o600); err != nil {
		return fmt.Errorf("make old_root: %w", err)
	}
	if err := unix.PivotRoot(".", "old_root"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("old_root", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Rmdir("old_root"); err != nil {
		return fmt.Errorf("remove old_root: %w", err)
	}
	return nil
}

// devices makes the jail's device nodes and gives them, and the jail's
// root, to uid:gid. Every path is below jail.
func devices(jail string, uid, gid int) error {
	for _, d := range []struct {
		path         string
		major, minor uint32
	}{{"dev/net/tun", 10, 200}, {"dev/kvm", 10, 232}, {"dev/urandom", 1, 9}} {
		p := filepath.Join(jail, d.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(d.major, d.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mknod %s: %w", d.path, err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	for _, dir := range []string{"", "dev", "dev/net"} {
		if err := os.Chown(filepath.Join(jail, dir), uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func cpuMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
