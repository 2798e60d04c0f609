package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/wait"
)

// earlyMount is one filesystem PID 1 mounts before anything else.
type earlyMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// earlyMounts are the API filesystems an init must provide.
var earlyMounts = []earlyMount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// shutdownGrace is how long PID 1 waits for processes to exit after
// SIGTERM before SIGKILL.
const shutdownGrace = 5 * time.Second

// RunInit is banger-agent as PID 1 (images without an init system). It
// mounts the API filesystems, makes Ctrl-Alt-Del deliver SIGINT, starts
// the agent itself as a child (argv), restarts it if it dies, reaps every
// orphan, and on SIGTERM, SIGINT (Ctrl-Alt-Del) or SIGPWR stops
// everything, syncs and powers off. It does not return on success.
func RunInit(argv []string, log *slog.Logger) error {
	for _, m := range earlyMounts {
		_ = os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			log.Warn("early mount failed", "target", m.target, "err", err)
		}
	}
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		log.Warn("cannot route Ctrl-Alt-Del to SIGINT", "err", err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)

	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	start := func() int {
		p, err := os.StartProcess(exe, argv, &os.ProcAttr{
			Env:   append(os.Environ(), "BANGER_AGENT_CHILD=1"),
			Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		})
		if err != nil {
			log.Error("start agent", "err", err)
			return 0
		}
		return p.Pid
	}
	child := start()
	restart := time.NewTimer(time.Hour)
	restart.Stop()
	for {
		select {
		case <-restart.C:
			child = start()
		case sig := <-sigs:
			if sig == unix.SIGCHLD {
				for {
					pid, err := reapOne()
					if pid <= 0 || err != nil {
						break
					}
					if pid == child {
						log.Warn("agent exited; restarting")
						child = 0
						restart.Reset(time.Second)
					}
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			shutdown(log)
			return nil
		}
	}
}

// reapOne reaps one exited child without blocking.
func reapOne() (int, error) {
	var ws unix.WaitStatus
	pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	if errors.Is(err, unix.EINTR) {
		return 1, nil
	}
	return pid, err
}

// shutdown stops every process, syncs and powers off.
func shutdown(log *slog.Logger) {
	// reapAll reaps every exited child; done when no child is left.
	reapAll := func() (bool, error) {
		for {
			pid, err := reapOne()
			if errors.Is(err, unix.ECHILD) {
				return true, nil
			}
			if pid <= 0 {
				return false, nil
			}
		}
	}
	_ = unix.Kill(-1, unix.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	_ = wait.Until(ctx, 50*time.Millisecond, reapAll) // past the grace, SIGKILL
	cancel()
	_ = unix.Kill(-1, unix.SIGKILL)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	_ = wait.Until(ctx, 10*time.Millisecond, reapAll) // past this, power off anyway
	cancel()
	unix.Sync()
	// Remount filesystems read-only is best effort; sync already flushed.
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(os.Stderr, "banger-agent: power off: %v\n", err)
		log.Error("power off failed", "err", err)
	}
}
