package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"banger/internal/layout"
	"banger/internal/vmm"
	"banger/internal/wait"
)

// DefaultStartTimeout bounds how long Start waits for QMP to answer.
const DefaultStartTimeout = 30 * time.Second

// Driver starts QEMU microvm processes. Its zero value works: it runs
// DefaultBinary from PATH and probes the host itself.
type Driver struct {
	// Binary is the QEMU binary (path or name on PATH).
	Binary string
	// StartTimeout bounds the wait for QMP; DefaultStartTimeout when zero.
	StartTimeout time.Duration
	// HostKHz returns the host TSC kHz for TCG guests; nil reads
	// /proc/cpuinfo.
	HostKHz func() (int, error)

	versions vmm.VersionCache // Version's answers, per binary on disk
}

var _ vmm.Driver = (*Driver)(nil)

// Name returns vmm.QEMU.
func (d *Driver) Name() string { return vmm.QEMU }

func (d *Driver) binary() (string, error) {
	bin := d.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("find qemu binary %s: %w (install qemu-system-x86)", bin, err)
	}
	return p, nil
}

// Options resolves the host facts for s: the binary and the host kHz
// under TCG.
func (d *Driver) Options(s vmm.Spec) (Options, error) {
	bin, err := d.binary()
	if err != nil {
		return Options{}, err
	}
	o := Options{Binary: bin, Kernel: bootKernel(s)}
	if s.Accel != vmm.AccelKVM {
		khz := d.HostKHz
		if khz == nil {
			khz = hostKHz
		}
		if o.HostKHz, err = khz(); err != nil {
			return Options{}, fmt.Errorf("host cpu frequency for tsc_early_khz: %w", err)
		}
	}
	return o, nil
}

func hostKHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseCPUInfoKHz(f)
}

// Start boots s as a detached qemu process and returns once QMP answers
// and reports the VM running. On error the process is killed and waited for.
func (d *Driver) Start(ctx context.Context, s vmm.Spec) (vmm.Handles, error) {
	if err := s.Validate(); err != nil {
		return vmm.Handles{}, err
	}
	if s.BzImage == "" {
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s: no kernel (bzImage)", s.VMID)
	}
	if s.Accel != vmm.AccelKVM && s.Accel != vmm.AccelTCG {
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s: accel %q is neither kvm nor tcg", s.VMID, s.Accel)
	}
	o, err := d.Options(s)
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s: %w", s.VMID, err)
	}
	h := vmm.Handles{
		VMM:        vmm.QEMU,
		QMPSocket:  qmpPath(s),
		ConsoleLog: consolePath(s),
		VMMLog:     s.Dir + "/" + layout.VMMLogFile,
		Tap:        s.Tap,
		Accel:      s.Accel,
	}
	// The agent channel is always a virtio-serial port on a unix socket,
	// also where /dev/vhost-vsock exists: it needs no host module, its
	// state migrates with the guest (suspend, warm start, fork), and the
	// host end is a plain socket the daemon owns.
	h.AgentTransport = vmm.TransportSerial
	h.SerialSocket = agentPath(s)
	stale := []string{h.QMPSocket, pidPath(s), h.SerialSocket}
	for _, p := range stale {
		if err := vmm.CheckSocketPath(p); err != nil {
			return vmm.Handles{}, fmt.Errorf("start qemu vm %s: %w", s.VMID, err)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return vmm.Handles{}, fmt.Errorf("start qemu vm %s: remove stale %s: %w", s.VMID, p, err)
		}
	}

	argv := Cmdline(s, o)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.Dir
	if s.RestoreDir != "" {
		// The state reaches QEMU as an inherited descriptor (fd 3): under
		// -sandbox spawn=deny it may not exec a helper to read it. -S keeps
		// the loaded guest paused until waitReady has seen the load finish.
		state, err := os.Open(filepath.Join(s.RestoreDir, StateFile))
		if err != nil {
			return vmm.Handles{}, fmt.Errorf("restore qemu vm %s: %w", s.VMID, err)
		}
		defer state.Close()
		cmd.ExtraFiles = []*os.File{state}
		cmd.Args = append(cmd.Args, "-incoming", "fd:3", "-S")
	}
	logf, err := vmm.Detach(cmd, h.VMMLog)
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s: %w", s.VMID, err)
	}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s: %w", s.VMID, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }() // reap while this process lives
	h.PID = cmd.Process.Pid
	h.StartTime, err = vmm.ProcStartTime(h.PID)
	if err != nil {
		select {
		case <-exited: // reaped already: say why it ended
			err = fmt.Errorf("qemu exited during start: %v", waitErr)
		default:
		}
	}
	if err == nil && s.OnSpawn != nil {
		err = s.OnSpawn(h)
	}
	if err == nil {
		err = d.waitReady(ctx, h, s.RestoreDir != "", exited, &waitErr)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-exited
		if tail := vmm.LogTail(h.VMMLog); tail != "" {
			err = fmt.Errorf("%w; its log ends:\n%s", err, tail)
		}
		return vmm.Handles{}, fmt.Errorf("start qemu vm %s (see %s): %w", s.VMID, h.VMMLog, err)
	}
	return h, nil
}

// waitReady polls the QMP socket until it answers query-status with
// "running", the process exits, or the start timeout passes. A restoring
// QEMU reports "inmigrate" while it loads and "paused" once the state is
// in (it was started with -S); waitReady then lets the guest run.
func (d *Driver) waitReady(ctx context.Context, h vmm.Handles, restoring bool, exited <-chan struct{}, waitErr *error) error {
	timeout := d.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	err := wait.Until(ctx, 10*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("qemu exited during start: %v", *waitErr)
		default:
		}
		if _, err := os.Stat(h.QMPSocket); err != nil {
			last = err
			return false, nil
		}
		q, err := dialQMP(ctx, h.QMPSocket)
		if err != nil {
			last = err
			return false, nil
		}
		defer q.Close()
		st, err := q.status(ctx)
		if err == nil && restoring {
			switch st {
			case "inmigrate":
				last = errors.New("still loading saved state")
				return false, nil
			case "paused":
				if _, err = q.execute(ctx, "cont", nil); err == nil {
					st, err = q.status(ctx)
				}
			}
		}
		if err != nil {
			return false, err
		}
		if st != "running" {
			return false, fmt.Errorf("qemu status %q after start, want running", st)
		}
		return true, nil
	})
	if err != nil && err == ctx.Err() {
		return fmt.Errorf("wait for qmp: %w (last: %v)", err, last)
	}
	return err
}

// Stop sends QMP system_powerdown (an ACPI power button press), waits up to
// timeout for qemu to exit, then kills it. Idempotent.
func (d *Driver) Stop(ctx context.Context, h vmm.Handles, timeout time.Duration) error {
	err := vmm.StopProcess(ctx, h, timeout, func(ctx context.Context) error {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		q, err := dialQMP(qctx, h.QMPSocket)
		if err != nil {
			return err
		}
		defer q.Close()
		_, err = q.execute(qctx, "system_powerdown", nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("stop qemu pid %d: %w", h.PID, err)
	}
	return nil
}

// Kill ends qemu at once (SIGKILL) and waits for it to exit. Idempotent.
func (d *Driver) Kill(ctx context.Context, h vmm.Handles) error {
	if err := vmm.KillProcess(ctx, h); err != nil {
		return fmt.Errorf("kill qemu: %w", err)
	}
	return nil
}
