package vmctl

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
	"banger/internal/vmm"
)

// Stages of suspend and of a start that restores saved state.
const (
	StageSave    = "save"
	StageRestore = "restore"
)

// Derived VM states, reported by View but never stored: a paused VM is a
// running one whose vCPUs are stopped (its handles say so), a suspended VM
// a stopped one whose memory and device state wait in its SuspendDir.
const (
	StatePaused    = "paused"
	StateSuspended = "suspended"
)

// savedMeta is SavedStateFile: what the VMM wrote and the machine it
// wrote it for. Restore refuses state whose VMM, version or shape differ
// from what would load it.
type savedMeta struct {
	vmm.SavedState
	VCPU      int       `json:"vcpu"`
	MemoryMiB int       `json:"memory_mib"`
	Accel     string    `json:"accel,omitempty"`
	SavedAt   time.Time `json:"saved_at"`

	// dir holds the state files; template is set when they are an
	// image's warm template rather than this VM's own suspend, and
	// checked once checkSaved passed.
	dir      string
	template *templateMeta
	checked  bool
}

func (m *Manager) suspendDir(id string) string { return filepath.Join(m.vmDir(id), layout.SuspendDir) }

// saved reads the VM's saved state description; ok is false when the VM
// has none.
func (m *Manager) saved(id string) (savedMeta, bool, error) {
	b, err := os.ReadFile(filepath.Join(m.suspendDir(id), layout.SavedStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return savedMeta{}, false, nil
	}
	if err != nil {
		return savedMeta{}, false, err
	}
	var meta savedMeta
	if err := json.Unmarshal(b, &meta); err != nil {
		return savedMeta{}, true, fmt.Errorf("read %s: %w", layout.SavedStateFile, err)
	}
	meta.dir = m.suspendDir(id)
	return meta, true, nil
}

// discardSaved removes saved state that can no longer be restored: the
// guest ran on from its disks, so the memory image no longer matches them.
func (m *Manager) discardSaved(op *operation.Op, vm store.VM) error {
	dir := m.suspendDir(vm.ID)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("vm %s: discard saved state: %w", vm.Name, err)
	}
	if op != nil {
		op.Logf("discarded the saved memory state of vm %s", vm.Name)
	}
	return nil
}

// View is the state to report for vm: its stored state, or paused or
// suspended, which are derived from the handles and the VM directory.
func (m *Manager) View(vm store.VM) string {
	if h, ok := m.alive(vm.ID); ok {
		if h.Paused {
			return StatePaused
		}
		return vm.State
	}
	if vm.State == store.StateStopped {
		if _, ok, _ := m.saved(vm.ID); ok {
			return StateSuspended
		}
	}
	return vm.State
}

// snapshotter returns the driver of a running VM as a Snapshotter.
func (m *Manager) snapshotter(vm store.VM, h vmm.Handles) (vmm.Snapshotter, error) {
	d := m.opt.Drivers[h.VMM]
	s, ok := d.(vmm.Snapshotter)
	if d == nil || !ok {
		return nil, api.Errorf(api.CodeConflict, "vm %s runs under %s, which this daemon cannot pause or save", vm.Name, h.VMM)
	}
	return s, nil
}

// Pause stops the VM's vCPUs; its memory stays in the VMM. Guest access
// is refused until Resume. Pausing a paused VM is a no-op.
func (m *Manager) Pause(ctx context.Context, ref string) (store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	h, ok := m.alive(vm.ID)
	if !ok {
		return vm, api.Errorf(api.CodeConflict, "vm %s is not running", vm.Name)
	}
	if h.Paused {
		return vm, nil
	}
	snap, err := m.snapshotter(vm, h)
	if err != nil {
		return vm, err
	}
	m.quiesceAgent(ctx, vm, h)
	if err := snap.Pause(ctx, h); err != nil {
		return vm, err
	}
	h.Paused = true
	return vm, m.opt.Handles.Set(vm.ID, h)
}

// Resume lets a paused VM run again, or restores a suspended one (as
// Start does). The guest's clock is stepped to the host's and its random
// pool reseeded.
func (m *Manager) Resume(ctx context.Context, op *operation.Op, ref string) (store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	if m.View(vm) == StateSuspended {
		return m.Start(ctx, op, ref, false)
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	h, ok := m.alive(vm.ID)
	if !ok {
		return vm, api.Errorf(api.CodeConflict, "vm %s is %s, not paused or suspended (start it with: banger vm start %s)", vm.Name, vm.State, vm.Name)
	}
	if !h.Paused {
		op.Logf("vm %s is already running", vm.Name)
		return vm, nil
	}
	snap, err := m.snapshotter(vm, h)
	if err != nil {
		return vm, err
	}
	op.Plan(StageRestore, StageAgent)
	if err := op.Do(StageRestore, func(s *operation.Stage) error {
		// A suspend interrupted after the save leaves state behind; the
		// guest runs on from its disks now, so that state is stale.
		if err := m.discardSaved(op, vm); err != nil {
			return err
		}
		if err := snap.Resume(ctx, h); err != nil {
			return err
		}
		h.Paused = false
		s.Detail("%s pid %d resumed", h.VMM, h.PID)
		return m.opt.Handles.Set(vm.ID, h)
	}); err != nil {
		return vm, err
	}
	if err := op.Do(StageAgent, func(s *operation.Stage) error {
		s.Detail("%s", m.thaw(ctx, op, vm, m.agentClient(vm, h), false))
		return nil
	}); err != nil {
		return vm, err
	}
	return vm, nil
}

// quiesceAgent hangs up on the VM's agent before its guest is frozen and,
// where the channel is one shared byte stream, waits until the guest has
// started a fresh session on it (see vmm.AgentQuiescer).
func (m *Manager) quiesceAgent(ctx context.Context, vm store.VM, h vmm.Handles) {
	hangUp := func() bool { return m.hangUpAgent(vm.ID) }
	q, ok := m.opt.Drivers[h.VMM].(vmm.AgentQuiescer)
	if !ok {
		hangUp()
		return
	}
	if err := q.QuiesceAgent(ctx, h, hangUp, 5*time.Second); err != nil {
		m.log.Warn("agent channel not quiesced before freezing the guest", "vm", vm.Name, "err", err)
	}
}

// thaw steps the guest clock and reseeds its random pool, and says what
// it did. A guest that cannot is warned about, not failed: it runs. cold
// is set for a guest that just booted, whose clock is off by less than a
// second: an agent too old to be thawed is then not worth a warning.
func (m *Manager) thaw(ctx context.Context, op *operation.Op, vm store.VM, c *agentclient.Client, cold bool) string {
	entropy := make([]byte, 64)
	_, _ = rand.Read(entropy)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.Thaw(tctx, agent.Thaw{Time: time.Now(), Entropy: entropy})
	if err != nil {
		var ae *agentclient.APIError
		switch {
		case errors.As(err, &ae) && ae.Status == 404 && cold:
			// An older image: its clock is as the RTC set it, less than
			// a second behind; not worth a warning at every boot.
		case errors.As(err, &ae) && ae.Status == 404:
			op.Logf("warning: vm %s: its agent predates clock correction; the guest clock is behind (rebuild the image)", vm.Name)
		default:
			op.Logf("warning: vm %s: correct the guest clock: %v", vm.Name, err)
		}
		return "clock not corrected"
	}
	return fmt.Sprintf("clock stepped %s, random pool reseeded", res.ClockStep.Round(time.Millisecond))
}

// Suspend saves the VM's memory and device state into its directory and
// ends the VMM: no host memory stays held, and Start (or Resume) restores
// the guest where it was. On failure the VM keeps running as before.
func (m *Manager) Suspend(ctx context.Context, op *operation.Op, ref string) (store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	h, ok := m.alive(vm.ID)
	if !ok {
		if m.View(vm) == StateSuspended {
			op.Logf("vm %s is already suspended", vm.Name)
			return vm, nil
		}
		return vm, api.Errorf(api.CodeConflict, "vm %s is not running", vm.Name)
	}
	snap, err := m.snapshotter(vm, h)
	if err != nil {
		return vm, err
	}
	driver := m.opt.Drivers[h.VMM]
	op.Plan(StageSave, "stop")
	wasPaused := h.Paused
	if err := op.Do(StageSave, func(s *operation.Stage) error {
		// Recorded first: a daemon killed during the save finds the VM
		// paused, and vm resume lets it run on.
		paused := h
		paused.Paused = true
		if err := m.opt.Handles.Set(vm.ID, paused); err != nil {
			return err
		}
		if !wasPaused {
			m.quiesceAgent(ctx, vm, h)
		}
		dir := m.suspendDir(vm.ID)
		tmp := dir + ".tmp"
		_ = os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o700); err != nil {
			return err
		}
		start := time.Now()
		st, err := snap.Save(ctx, h, tmp)
		if err == nil {
			err = writeMeta(tmp, savedMeta{SavedState: st, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, Accel: h.Accel, SavedAt: time.Now()})
		}
		if err == nil {
			_ = os.RemoveAll(dir)
			err = os.Rename(tmp, dir)
		}
		if err == nil {
			if err = atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
				_ = os.RemoveAll(dir) // the VM runs on: no saved state may stay behind
			}
		}
		if err != nil {
			_ = os.RemoveAll(tmp)
			if !wasPaused {
				if rerr := snap.Resume(context.WithoutCancel(ctx), h); rerr != nil {
					return errors.Join(err, fmt.Errorf("resume after failed save: %w", rerr))
				}
			}
			return errors.Join(err, m.opt.Handles.Set(vm.ID, h))
		}
		var size int64
		for _, f := range st.Files {
			size += f.Size
		}
		s.Detail("%s of state in %s", units.Bytes(size), time.Since(start).Round(time.Millisecond))
		return nil
	}); err != nil {
		return vm, err
	}
	if err := op.Do("stop", func(s *operation.Stage) error {
		// The state is on disk: the VMM holds nothing that is not.
		if err := driver.Kill(ctx, h); err != nil {
			return err
		}
		if still, err := vmm.Check(h); err != nil || still {
			return errors.Join(err, fmt.Errorf("pid %d still runs", h.PID))
		}
		m.opt.DNS.Remove(vm.Name)
		return m.teardown(ctx, vm.ID, h)
	}); err != nil {
		return vm, err
	}
	return m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
		v.State = store.StateStopped
		v.DesiredState = store.StateStopped
		v.LastError = ""
		return nil
	})
}

// writeMeta writes meta as dir's SavedStateFile through atomicfile, which
// also syncs dir before it is renamed into place.
func writeMeta(dir string, meta savedMeta) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, layout.SavedStateFile), append(b, '\n'), 0o600)
}

// checkSaved refuses saved state that the driver about to load it would
// misread: another VMM, another build of it, another machine shape or
// accelerator, or files that are not what was written.
func (m *Manager) checkSaved(ctx context.Context, vm store.VM, meta savedMeta, accel string) error {
	hint := fmt.Sprintf(" (banger vm start --cold %s boots from the disks instead and discards the saved memory)", vm.Name)
	switch {
	case meta.template != nil && meta.template.Name != "":
		hint = fmt.Sprintf(" (snapshot %s@%s cannot be restored here; banger vm snapshot rm removes it)", meta.template.From, meta.template.Name)
	case meta.template != nil:
		hint = " (banger image warm makes it again)"
	}
	if meta.VMM != vm.VMM {
		return fmt.Errorf("saved state was written by %s, vm %s runs under %s%s", meta.VMM, vm.Name, vm.VMM, hint)
	}
	if meta.VCPU != vm.VCPU || meta.MemoryMiB != vm.MemoryMiB {
		return fmt.Errorf("saved state is for %d vcpu · %d MiB, vm %s has %d vcpu · %d MiB%s", meta.VCPU, meta.MemoryMiB, vm.Name, vm.VCPU, vm.MemoryMiB, hint)
	}
	if meta.Accel != accel {
		return fmt.Errorf("saved state was written under %s, this host would restore under %s%s", orDash(meta.Accel), orDash(accel), hint)
	}
	v, ok := m.opt.Drivers[vm.VMM].(vmm.Versioner)
	if !ok {
		return fmt.Errorf("the %s driver cannot tell its version, so saved state cannot be checked%s", vm.VMM, hint)
	}
	have, err := v.Version(ctx)
	if err != nil {
		return fmt.Errorf("%w%s", err, hint)
	}
	if have != meta.Version {
		return fmt.Errorf("saved state was written by %s %s, this host has %s %s%s", meta.VMM, meta.Version, vm.VMM, have, hint)
	}
	if err := m.verifyState(meta.dir, meta.SavedState); err != nil {
		return fmt.Errorf("%w%s", err, hint)
	}
	return nil
}

// stateStamp identifies one version of a state file: a write, truncate,
// rename over it or chmod changes the inode or the change time, which no
// user tool can set back.
type stateStamp struct {
	dev, ino     uint64
	size         int64
	ctime, mtime int64
	sha256       string
}

func stampOf(p, sum string) (stateStamp, bool) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return stateStamp{}, false
	}
	return stateStamp{dev: st.Dev, ino: st.Ino, size: st.Size, ctime: st.Ctim.Nano(), mtime: st.Mtim.Nano(), sha256: sum}, true
}

// verifyState is vmm.VerifyState that skips re-hashing files it already
// verified and that have not changed since (same inode, size, change and
// modification times): a warm template's state is read by every warm
// create, and hashing 200 MB costs a third of a second or more.
func (m *Manager) verifyState(dir string, st vmm.SavedState) error {
	m.mu.Lock()
	known := len(st.Files) > 0
	for _, f := range st.Files {
		p := filepath.Join(dir, f.Name)
		cur, ok := stampOf(p, f.SHA256)
		if !ok || m.verified[p] != cur {
			known = false
			break
		}
	}
	m.mu.Unlock()
	if known {
		return nil
	}
	if err := vmm.VerifyState(dir, st); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range st.Files {
		p := filepath.Join(dir, f.Name)
		if cur, ok := stampOf(p, f.SHA256); ok {
			m.verified[p] = cur
		}
	}
	return nil
}
