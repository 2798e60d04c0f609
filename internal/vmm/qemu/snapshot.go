package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/vmm"
	"banger/internal/wait"
)

// StateFile is the name, inside a state directory, of QEMU's migration
// stream: RAM (zero pages skipped) and device state.
const StateFile = "vmstate"

var (
	_ vmm.Snapshotter = (*Driver)(nil)
	_ vmm.Relocator   = (*Driver)(nil)
)

// Pause stops the guest's vCPUs (QMP stop).
func (d *Driver) Pause(ctx context.Context, h vmm.Handles) error {
	return d.qmp(ctx, h, "pause", func(q *qmpConn) error {
		_, err := q.execute(ctx, "stop", nil)
		return err
	})
}

// Resume lets a paused guest run again (QMP cont).
func (d *Driver) Resume(ctx context.Context, h vmm.Handles) error {
	return d.qmp(ctx, h, "resume", func(q *qmpConn) error {
		_, err := q.execute(ctx, "cont", nil)
		return err
	})
}

// Save pauses the guest and migrates its state into dir/StateFile. QEMU
// runs under -sandbox spawn=deny, so the `exec:` migration URI is not
// available (and QEMU 7.2 has no `file:`): banger opens the file itself
// and hands QEMU the descriptor over QMP (getfd), then migrates to
// `fd:NAME`. The guest stays paused; QEMU is left in "postmigrate" for the
// caller to end or resume.
func (d *Driver) Save(ctx context.Context, h vmm.Handles, dir string) (vmm.SavedState, error) {
	path := filepath.Join(dir, StateFile)
	var st vmm.SavedState
	err := d.qmp(ctx, h, "save", func(q *qmpConn) error {
		if _, err := q.execute(ctx, "stop", nil); err != nil {
			return err
		}
		version, err := runningVersion(ctx, q)
		if err != nil {
			return err
		}
		kernel, err := runningKernel(ctx, q)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := q.executeWithFile(ctx, "getfd", map[string]string{"fdname": "banger-save"}, f); err != nil {
			return err
		}
		if _, err := q.execute(ctx, "migrate", map[string]string{"uri": "fd:banger-save"}); err != nil {
			_, _ = q.execute(ctx, "closefd", map[string]string{"fdname": "banger-save"})
			return err
		}
		if err := waitMigration(ctx, q); err != nil {
			_, _ = q.execute(ctx, "migrate_cancel", nil)
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", path, err)
		}
		files, err := vmm.DescribeState(dir, StateFile)
		if err != nil {
			return err
		}
		st = vmm.SavedState{VMM: vmm.QEMU, Version: version, Files: files, Kernel: kernel}
		return nil
	})
	if err != nil {
		_ = os.Remove(path)
		return vmm.SavedState{}, err
	}
	return st, nil
}

// waitMigration polls query-migrate until the migration completes or
// fails, or ctx ends.
func waitMigration(ctx context.Context, q *qmpConn) error {
	var status string
	err := wait.Until(ctx, 20*time.Millisecond, func() (bool, error) {
		raw, err := q.execute(ctx, "query-migrate", nil)
		if err != nil {
			return false, err
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return false, fmt.Errorf("qmp query-migrate: %w", err)
		}
		status = m.Status
		switch m.Status {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return false, fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		return false, nil
	})
	if err != nil && err == ctx.Err() && status != "" {
		return fmt.Errorf("migration still %q: %w", status, err)
	}
	return err
}

// qmp runs fn on a fresh QMP connection to h's VMM, wrapping errors with
// what and the PID.
func (d *Driver) qmp(ctx context.Context, h vmm.Handles, what string, fn func(*qmpConn) error) error {
	if h.QMPSocket == "" {
		return fmt.Errorf("%s qemu pid %d: no qmp socket in its handles", what, h.PID)
	}
	q, err := dialQMP(ctx, h.QMPSocket)
	if err != nil {
		return fmt.Errorf("%s qemu pid %d: %w", what, h.PID, err)
	}
	defer q.Close()
	if err := fn(q); err != nil {
		return fmt.Errorf("%s qemu pid %d: %w", what, h.PID, err)
	}
	return nil
}

// runningVersion is the version of the QEMU behind q, in the form
// `qemu-system-x86_64 --version` prints it ("7.2.13 (Debian ...)").
func runningVersion(ctx context.Context, q *qmpConn) (string, error) {
	raw, err := q.execute(ctx, "query-version", nil)
	if err != nil {
		return "", err
	}
	var v struct {
		QEMU    struct{ Major, Minor, Micro int } `json:"qemu"`
		Package string                            `json:"package"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("qmp query-version: %w", err)
	}
	out := fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
	if pkg := strings.Trim(strings.TrimSpace(v.Package), "()"); pkg != "" {
		out += " (" + pkg + ")"
	}
	return out, nil
}

// Relocatable is always nil: QEMU's saved state names no host path (the
// state comes on a descriptor, and the restoring QEMU's command line gives
// the new VM's disks, tap and sockets).
func (d *Driver) Relocatable(context.Context, vmm.Handles) error { return nil }

// Version is the version of the QEMU binary Start would run, in the form
// SavedState.Version records: state saved by one build loads only into
// the same build (microvm does not support migration across versions).
func (d *Driver) Version(ctx context.Context) (string, error) {
	bin, err := d.binary()
	if err != nil {
		return "", err
	}
	return d.versions.Get(bin, func() (string, error) {
		out, err := exec.CommandContext(ctx, bin, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("%s --version: %w", bin, err)
		}
		return ParseVersion(string(out))
	})
}

// ParseVersion reads the first line of `qemu-system-x86_64 --version`.
func ParseVersion(out string) (string, error) {
	line, _, _ := strings.Cut(out, "\n")
	const prefix = "QEMU emulator version "
	if !strings.HasPrefix(line, prefix) {
		return "", errors.New("unrecognised qemu --version output: " + line)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, prefix)), nil
}

// QuiesceAgent hangs up the host's end of the agent's virtio-serial
// channel (hangUp, which reports whether a live connection was closed)
// and waits, bounded by timeout, until the guest has closed its end,
// which it does when the session of that connection ends (QEMU reports
// it as VSERPORT_CHANGE, open false). From then on the guest only opens
// fresh sessions, so a pause or save cannot freeze it inside the old one,
// and the host that connects after it runs again is the only peer it
// knows. Only the close is awaited: with no host connected the guest
// reopens and closes its port every few hundred milliseconds, and QEMU
// throttles these events to one a second per port, so an "open" event
// may never be seen. A guest that does not close in time (an older agent,
// or a hostile one) only costs the wait: the error says so and the
// caller goes on.
func (d *Driver) QuiesceAgent(ctx context.Context, h vmm.Handles, hangUp func() bool, timeout time.Duration) error {
	if h.AgentTransport != vmm.TransportSerial {
		hangUp()
		return nil
	}
	return d.qmp(ctx, h, "quiesce agent channel", func(q *qmpConn) error {
		if !hangUp() {
			// No host was connected: the guest's last session already
			// ended when its host went away.
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := q.waitEvent(wctx, "VSERPORT_CHANGE", func(data json.RawMessage) bool {
			var ev struct {
				ID   string `json:"id"`
				Open bool   `json:"open"`
			}
			return json.Unmarshal(data, &ev) == nil && ev.ID == agentPortID && !ev.Open
		})
		if err != nil {
			return fmt.Errorf("the guest did not close its agent port within %s: %w", timeout, err)
		}
		return nil
	})
}
