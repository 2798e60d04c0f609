package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// procStat is the part of /proc/<pid>/stat banger reads.
type procStat struct {
	State     byte
	Session   int
	StartTime uint64
}

// readProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted after its last ')'.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
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
	if st.Session, err = strconv.Atoi(f[6-3]); err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat session: %w", pid, err)
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

// ProcSession returns the session id of pid (a detached VMM leads its own
// session: its session id equals its pid).
func ProcSession(pid int) (int, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, fmt.Errorf("session of pid %d: %w", pid, err)
	}
	return st.Session, nil
}

// ProcCmdline returns the argv of pid from /proc/<pid>/cmdline.
func ProcCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("cmdline of pid %d: %w", pid, err)
	}
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// Alive is the one liveness check: the PID runs (and is not a zombie), its
// start time matches the recorded one (so a reused PID is not mistaken for
// our VMM), and its command line names this VM's control socket (so it is
// our VMM for this VM).
func Alive(h Handles) bool {
	if h.PID <= 0 || h.StartTime == 0 {
		return false
	}
	st, err := readProcStat(h.PID)
	if err != nil || st.State == 'Z' || st.State == 'X' || st.StartTime != h.StartTime {
		return false
	}
	sock := h.ControlSocket()
	if sock == "" {
		return false
	}
	argv, err := ProcCmdline(h.PID)
	if err != nil {
		return false
	}
	for _, a := range argv {
		if strings.Contains(a, sock) {
			return true
		}
	}
	return false
}

// WaitExit polls until the VMM of h is no longer Alive or ctx ends. The VMM
// is usually not a child of the caller (the daemon may have restarted), so
// it cannot be waited for with wait(2).
func WaitExit(ctx context.Context, h Handles) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for Alive(h) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s pid %d to exit: %w", h.VMM, h.PID, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// KillProcess sends SIGKILL to the VMM of h when it is still Alive and waits
// for it to exit. It is idempotent.
func KillProcess(ctx context.Context, h Handles) error {
	if !Alive(h) {
		return nil
	}
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s pid %d: %w", h.VMM, h.PID, err)
	}
	return WaitExit(ctx, h)
}

// StopProcess is the shared body of Driver.Stop: when the VMM of h is Alive,
// call ask (the VMM-specific shutdown request), wait up to timeout for the
// process to exit, then kill it. When ask fails (e.g. the control socket is
// gone) the process is killed at once: the caller wants it stopped either
// way. It is idempotent.
func StopProcess(ctx context.Context, h Handles, timeout time.Duration, ask func(context.Context) error) error {
	if !Alive(h) {
		return nil
	}
	if err := ask(ctx); err == nil {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := WaitExit(wctx, h)
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
