package vmctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
	"banger/internal/vmm"
)

// Start boots a stopped VM again: same disks, address and identity; the
// config drive is rebuilt so file_sync applies on every start. A
// suspended VM is restored from its saved state instead, unless cold,
// which discards that state and boots from the disks. Starting a running
// VM is a no-op.
func (m *Manager) Start(ctx context.Context, op *operation.Op, ref string, cold bool) (store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if m.Alive(vm.ID) {
		op.Logf("vm %s is already running", vm.Name)
		return vm, nil
	}
	if vm.State == store.StateCreating {
		return vm, api.Errorf(api.CodeConflict, "vm %s is still being created", vm.Name)
	}
	img, err := m.opt.Store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return vm, fmt.Errorf("vm %s: image %s: %w", vm.Name, units.ShortID(vm.ImageID), err)
	}
	if _, err := os.Stat(filepath.Join(m.vmDir(vm.ID), layout.WorkFile)); err != nil {
		return vm, fmt.Errorf("vm %s: work disk missing: %w", vm.Name, err)
	}
	meta, suspended, err := m.saved(vm.ID)
	if err != nil && !cold {
		return vm, fmt.Errorf("vm %s: %w (banger vm start --cold %s boots from the disks instead)", vm.Name, err, vm.Name)
	}
	var restore *savedMeta
	if suspended && !cold {
		restore = &meta
	} else if err := m.discardSaved(op, vm); err != nil {
		return vm, err
	}
	vm, err = m.boot(ctx, op, vm, img, restore, true)
	if err != nil {
		m.markFailed(vm.ID, err)
		return vm, err
	}
	if restore != nil {
		// The guest runs on from here; its saved memory is spent.
		if err := m.discardSaved(nil, vm); err != nil {
			m.log.Warn("remove restored state", "vm", vm.Name, "err", err)
		}
	}
	return vm, nil
}

// Stop shuts the VM down (guest first, then the VMM after the stop
// timeout), returns its tap and drops its DNS record. Stopping a stopped
// VM is a no-op.
func (m *Manager) Stop(ctx context.Context, ref string) (store.VM, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	if err := m.halt(ctx, vm, false); err != nil {
		return vm, err
	}
	// A suspended VM that is stopped loses its saved memory: stopped
	// means the next start boots from the disks.
	if err := m.discardSaved(nil, vm); err != nil {
		return vm, err
	}
	return m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
		v.State = store.StateStopped
		v.DesiredState = store.StateStopped
		return nil
	})
}

// Restart stops and starts the VM.
func (m *Manager) Restart(ctx context.Context, op *operation.Op, ref string) (store.VM, error) {
	if _, err := m.Stop(ctx, ref); err != nil {
		return store.VM{}, err
	}
	return m.Start(ctx, op, ref, false)
}

// Delete removes the VM completely: VMM, tap, DNS record, known_hosts
// entry, files, lease and row. A running VM is killed (its disks are going
// away). With force, teardown errors are reported but the record is
// removed anyway. Deleting is idempotent per VM.
func (m *Manager) Delete(ctx context.Context, ref string, force bool) error {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	herr := m.halt(ctx, vm, true)
	if herr != nil && !force {
		return fmt.Errorf("delete vm %s: %w (use --force to remove the record anyway)", vm.Name, herr)
	}
	var errs []error
	if herr != nil {
		errs = append(errs, herr)
	}
	if m.opt.KnownHosts != nil {
		if err := m.opt.KnownHosts.Remove(vm.Name + ".vm"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeVMDir(m.vmDir(vm.ID)); err != nil {
		errs = append(errs, err)
		if !force {
			return errors.Join(errs...)
		}
	}
	// The lease and sessions go with the row (ON DELETE CASCADE).
	if err := m.opt.Store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		errs = append(errs, err)
	}
	m.egress().Forget(vm.ID)
	return errors.Join(errs...)
}

// halt ends the VM's VMM (gracefully unless kill) and releases what its
// handles name. It succeeds when there is nothing to halt.
func (m *Manager) halt(ctx context.Context, vm store.VM, kill bool) error {
	m.dropAgent(vm.ID)
	m.opt.DNS.Remove(vm.Name)
	h, ok := m.opt.Handles.Get(vm.ID)
	if !ok {
		var err error
		h, err = m.opt.Handles.Load(vm.ID)
		if errors.Is(err, vmm.ErrNoHandles) {
			return nil
		}
		if err != nil {
			m.log.Warn("unreadable handles, nothing to tear down", "vm", vm.Name, "err", err)
			return nil
		}
	}
	var errs []error
	// Check, not Alive: a check that cannot read /proc must fail the halt,
	// never let delete go on as if the VMM were gone.
	running, err := vmm.Check(h)
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	if running {
		driver := m.opt.Drivers[h.VMM]
		if driver == nil {
			return fmt.Errorf("vm %s runs under %s, which this daemon cannot drive", vm.Name, h.VMM)
		}
		if snap, ok := driver.(vmm.Snapshotter); ok && h.Paused && !kill {
			// A paused guest cannot answer the power button.
			if err := snap.Resume(ctx, h); err != nil {
				m.log.Warn("resume before stop", "vm", vm.Name, "err", err)
			}
		}
		var err error
		if kill {
			err = driver.Kill(ctx, h)
		} else {
			err = driver.Stop(ctx, h, m.opt.StopTimeout)
		}
		if err != nil {
			return fmt.Errorf("stop %s of vm %s: %w", h.VMM, vm.Name, err)
		}
		// Believe /proc, not the driver: the VMM must be gone before its
		// tap, sockets and disks are.
		if still, err := vmm.Check(h); err != nil {
			return fmt.Errorf("stop %s of vm %s: %w", h.VMM, vm.Name, err)
		} else if still {
			return fmt.Errorf("stop %s of vm %s: pid %d still runs", h.VMM, vm.Name, h.PID)
		}
	}
	errs = append(errs, m.teardown(ctx, vm.ID, h))
	return errors.Join(errs...)
}

// teardown releases the host resources named by the handles of a VM whose
// VMM is gone: the tap, stale sockets and the handles themselves.
func (m *Manager) teardown(ctx context.Context, id string, h vmm.Handles) error {
	var errs []error
	if err := m.egress().Unbind(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if h.Tap != "" {
		if err := m.opt.Network.ReleaseTap(ctx, h.Tap); err != nil {
			errs = append(errs, fmt.Errorf("release tap %s: %w", h.Tap, err))
		}
	}
	for _, s := range []string{h.APISocket, h.VsockSocket, h.SerialSocket, h.QMPSocket} {
		if s != "" {
			if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if c, ok := m.opt.Drivers[h.VMM].(vmm.Cleaner); ok {
		if err := c.Cleanup(h); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.opt.Handles.Delete(id); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) markFailed(id string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = m.opt.Store.UpdateVM(ctx, id, func(v *store.VM) error {
		v.State = store.StateStopped
		v.LastError = cause.Error()
		return nil
	})
}
