package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/wait"
)

// procDir is where process information is read; tests point it elsewhere
// to make /proc unreadable.
var procDir = "/proc"

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// procStat is the part of /proc/<pid>/stat banger reads.
type procStat struct {
	State     byte
	PPID      int
	StartTime uint64
}

// readProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(procDir + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state), so field N is f[N-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	st := procStat{State: f[0][0]}
	if st.PPID, err = strconv.Atoi(f[4-3]); err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat ppid: %w", pid, err)
	}
	if st.StartTime, err = strconv.ParseUint(f[22-3], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return st, nil
}

// ProcStartTime returns field 22 of /proc/<pid>/stat, the process start
// time in clock ticks since boot, recorded in Handles.StartTime.
func ProcStartTime(pid int) (uint64, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, fmt.Errorf("start time of pid %d: %w", pid, err)
	}
	return st.StartTime, nil
}

// ProcCmdline returns the argv of pid from /proc/<pid>/cmdline.
func ProcCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile(procDir + "/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("cmdline of pid %d: %w", pid, err)
	}
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// Check is the one liveness check: the PID runs (and is not a zombie), its
// start time matches the recorded one (so a reused PID is not mistaken for
// our VMM), and its command line names this VM's control socket (so it is
// our VMM for this VM). It returns an error when it cannot tell, for
// example when /proc cannot be read because the daemon is out of file
// descriptors: a VMM is gone only when /proc says so, never because a read
// failed.
func Check(h Handles) (bool, error) {
	if h.PID <= 0 || h.StartTime == 0 {
		return false, nil
	}
	sock := h.ControlSocket()
	if sock == "" {
		return false, nil
	}
	st, err := readProcStat(h.PID)
	if gone(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check %s pid %d: %w", h.VMM, h.PID, err)
	}
	if st.State == 'Z' || st.State == 'X' || st.StartTime != h.StartTime {
		return false, nil
	}
	argv, err := ProcCmdline(h.PID)
	if gone(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check %s pid %d: %w", h.VMM, h.PID, err)
	}
	if len(argv) == 0 {
		// Mid-execve the kernel shows an empty command line (the parent's
		// fork returns as soon as the child calls execve). The start time
		// matches, so this is the process we spawned.
		return true, nil
	}
	named, id := false, h.JailID() == ""
	for i, a := range argv {
		if strings.Contains(a, sock) {
			named = true
		}
		// A jailed VMM's socket is a path inside its jail, the same in
		// every jail: its --id must match too.
		if !id && i > 0 && argv[i-1] == "--id" && a == h.JailID() {
			id = true
		}
	}
	return named && id, nil
}

// gone reports whether a /proc read failed because the process is gone.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// Alive reports whether the VMM of h may still run: true when Check says
// so and also when Check cannot tell. Use it where believing a live VMM
// dead would leak it (reaping, reconcile, the boot wait); use Check where
// the answer decides whether to signal the PID.
func Alive(h Handles) bool {
	ok, err := Check(h)
	return ok || err != nil
}

// WaitExit polls until the VMM of h is no longer Alive or ctx ends. The VMM
// is usually not a child of the caller (the daemon may have restarted), so
// it cannot be waited for with wait(2).
func WaitExit(ctx context.Context, h Handles) error {
	err := wait.Until(ctx, exitPoll, func() (bool, error) { return !Alive(h), nil })
	if err == nil || !Alive(h) {
		return nil
	}
	if _, cerr := Check(h); cerr != nil {
		return fmt.Errorf("wait for %s pid %d to exit: %w (%w)", h.VMM, h.PID, err, cerr)
	}
	return fmt.Errorf("wait for %s pid %d to exit: %w", h.VMM, h.PID, err)
}

// exitPoll is how often a VMM process is checked while waiting for it to
// exit.
const exitPoll = 20 * time.Millisecond

// KillProcess sends SIGKILL to the VMM of h when it is still running and
// waits until /proc shows it gone. It is idempotent. When liveness cannot
// be checked it fails without signalling: the PID might no longer be ours.
func KillProcess(ctx context.Context, h Handles) error {
	ok, err := Check(h)
	if err != nil {
		return fmt.Errorf("kill %s pid %d: %w", h.VMM, h.PID, err)
	}
	if !ok {
		return nil
	}
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s pid %d: %w", h.VMM, h.PID, err)
	}
	return WaitExit(ctx, h)
}

// StopProcess is the shared body of Driver.Stop: when the VMM of h is Alive,
// call ask (the VMM-specific shutdown request), wait up to timeout for the
// process to exit, then kill it. ask is repeated every AskEvery while it
// waits: a guest still starting (before anything listens for the power
// button) drops the press, and only a later one is heard. When the first
// ask fails (e.g. the control socket is gone) the process is killed at
// once: the caller wants it stopped either way. It is idempotent.
func StopProcess(ctx context.Context, h Handles, timeout time.Duration, ask func(context.Context) error) error {
	ok, err := Check(h)
	if err != nil {
		return fmt.Errorf("stop %s pid %d: %w", h.VMM, h.PID, err)
	}
	if !ok {
		return nil
	}
	if err := ask(ctx); err == nil {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := waitAsking(wctx, h, ask)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return KillProcess(ctx, h)
}

// AskEvery is how often StopProcess repeats its shutdown request while
// it waits for the VMM to exit. A variable so tests can shorten it.
var AskEvery = 5 * time.Second

// waitAsking waits for the VMM of h to exit, calling ask again each
// AskEvery. A repeated ask that fails is not an error: the VMM may be
// on its way out and its socket already gone.
func waitAsking(ctx context.Context, h Handles, ask func(context.Context) error) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, AskEvery)
		err := WaitExit(pctx, h)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		_ = ask(ctx)
	}
}

// Stray is a VMM process found by its command line rather than by handles.
type Stray struct {
	PID       int
	StartTime uint64
	VMID      string // the VM directory name its arguments point into
}

// FindStrays lists running VMM processes (firecracker or qemu-system-*)
// whose arguments point into a directory below vmsDir, leaving out the PIDs
// in known and their children. It finds what handles cannot: a VMM spawned by a daemon killed
// before it recorded the handles, or whose handles file was lost.
func FindStrays(vmsDir string, known map[int]bool) ([]Stray, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("find stray vmms: %w", err)
	}
	prefix := strings.TrimSuffix(vmsDir, "/") + "/"
	var out []Stray
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || known[pid] {
			continue
		}
		argv, err := ProcCmdline(pid)
		if err != nil || len(argv) == 0 || !isVMMBinary(argv[0]) {
			continue
		}
		id := ""
		for _, a := range argv[1:] {
			if i := strings.Index(a, prefix); i >= 0 {
				rest := a[i+len(prefix):]
				if j := strings.IndexByte(rest, '/'); j > 0 {
					id = rest[:j]
					break
				}
			}
		}
		if id == "" {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.State == 'Z' || st.State == 'X' {
			continue
		}
		// A descendant of a known VMM is part of it: a process between
		// fork and exec still shows its parent's arguments, and a VMM may
		// run helpers of its own (the Firecracker stand-in runs QEMU).
		if descends(st.PPID, known) {
			continue
		}
		out = append(out, Stray{PID: pid, StartTime: st.StartTime, VMID: id})
	}
	return out, nil
}

// descends reports whether pid is in known or has an ancestor there
// (at most 32 generations up).
func descends(pid int, known map[int]bool) bool {
	for range 32 {
		if pid <= 1 {
			return false
		}
		if known[pid] {
			return true
		}
		st, err := readProcStat(pid)
		if err != nil {
			return false
		}
		pid = st.PPID
	}
	return false
}

func isVMMBinary(argv0 string) bool {
	base := argv0[strings.LastIndexByte(argv0, '/')+1:]
	return base == "firecracker" || strings.HasPrefix(base, "qemu-system-")
}

// KillStray ends a stray VMM, checking first that the PID still has the
// start time it was found with.
func KillStray(ctx context.Context, s Stray) error {
	st, err := readProcStat(s.PID)
	if gone(err) || err == nil && st.StartTime != s.StartTime {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill stray vmm pid %d: %w", s.PID, err)
	}
	if err := syscall.Kill(s.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill stray vmm pid %d: %w", s.PID, err)
	}
	exited := func() bool {
		st, err := readProcStat(s.PID)
		return gone(err) || err == nil && (st.StartTime != s.StartTime || st.State == 'Z')
	}
	if err := wait.Until(ctx, exitPoll, func() (bool, error) { return exited(), nil }); err != nil && !exited() {
		return fmt.Errorf("kill stray vmm pid %d: %w", s.PID, err)
	}
	return nil
}
