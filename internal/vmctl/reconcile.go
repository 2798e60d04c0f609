package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"banger/internal/store"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
)

// Reconcile brings memory in line with reality after daemon start: every
// VM recorded as running whose VMM still runs is re-adopted (handles
// cached, tap marked in use, DNS record restored); the VMM of a create
// the daemon died in is ended; every other VM has what its handles name
// torn down and is marked stopped (or failed, for an interrupted create)
// with the reason in last_error. A VM frozen by an interrupted snapshot
// runs again, and half-made snapshots are removed.
func (m *Manager) Reconcile(ctx context.Context) error {
	vms, err := m.opt.Store.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	records := map[string]netip.Addr{}
	taps := map[string]netip.Addr{}
	var errs []error
	adopted := map[int]bool{}
	for _, vm := range vms {
		h, herr := m.opt.Handles.Load(vm.ID)
		ended := false
		if herr == nil && vm.State == store.StateCreating && vmm.Alive(h) {
			// The daemon died inside create: the guest never answered
			// under it, its host keys were never pinned and the create's
			// rollback never ran. Adopting it would make a VM nobody
			// finished; end the VMM and fail the create instead.
			m.log.Warn("ending the vmm of an interrupted create", "vm", vm.Name, "pid", h.PID)
			if err := vmm.KillProcess(ctx, h); err != nil {
				errs = append(errs, fmt.Errorf("end vmm of interrupted create %s: %w", vm.Name, err))
				continue
			}
			// Never ask /proc again: a process in the middle of exiting
			// shows an empty command line, which Check reads as "alive",
			// and the VM would be adopted as running.
			ended = true
		}
		if herr == nil && !ended && vmm.Alive(h) {
			adopted[h.PID] = true
			if ip, err := netip.ParseAddr(vm.IP); err == nil {
				records[vm.Name] = ip
				if h.Tap != "" {
					taps[h.Tap] = ip
				}
				// Before Adopt applies the firewall, so a policed guest
				// is never open in between.
				errs = append(errs, m.bindNet(ctx, vm, ip))
			}
			if vm.State != store.StateRunning {
				_, err := m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error { v.State = store.StateRunning; return nil })
				errs = append(errs, err)
			}
			m.log.Info("re-adopted running vm", "vm", vm.Name, "pid", h.PID)
			errs = append(errs, m.sweepSnapshots(ctx, vm, h, true))
			continue
		}
		errs = append(errs, m.sweepSnapshots(ctx, vm, h, false))
		if herr != nil && !errors.Is(herr, vmm.ErrNoHandles) {
			m.log.Warn("unreadable handles", "vm", vm.Name, "err", herr)
		}
		if herr == nil {
			errs = append(errs, m.teardown(ctx, vm.ID, h))
		}
		if vm.State == store.StateRunning || vm.State == store.StateCreating {
			reason := "vmm exited while bangerd was not running"
			state := store.StateStopped
			if vm.State == store.StateCreating {
				reason, state = "create interrupted by a daemon restart", store.StateFailed
			}
			_, err := m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
				v.State = state
				v.LastError = reason
				return nil
			})
			errs = append(errs, err)
			m.log.Info("marked vm stopped", "vm", vm.Name, "reason", reason)
		}
	}
	errs = append(errs, m.killStrays(ctx, adopted))
	errs = append(errs, m.opt.Network.Adopt(ctx, taps))
	m.opt.DNS.Replace(records)
	return errors.Join(errs...)
}

// killStrays ends VMMs running from this daemon's VM directories that no
// handles account for (spawned by a daemon killed before it recorded them,
// or whose handles were lost). None of them is adopted: without handles
// banger cannot tell which tap or sockets they hold.
func (m *Manager) killStrays(ctx context.Context, adopted map[int]bool) error {
	strays, err := vmm.FindStrays(m.opt.VMsDir, adopted)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range strays {
		m.log.Warn("killing stray vmm", "vm_id", s.VMID, "pid", s.PID)
		errs = append(errs, vmm.KillStray(ctx, s))
	}
	return errors.Join(errs...)
}

// logBoundInterval is how often console logs are checked against their
// bound: what a guest writes in between is the overshoot.
const logBoundInterval = 500 * time.Millisecond

// Watch notices VMMs that exit behind the daemon's back (guest poweroff,
// crash, kill) and cleans up after them, and keeps every running VM's
// console log under its bound (and Firecracker's log copied into the
// daemon's), until ctx ends.
func (m *Manager) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	logs := time.NewTicker(logBoundInterval)
	defer logs.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.reap(ctx)
		case <-logs.C:
			m.boundLogs(ctx)
		}
	}
}

// boundLogs rotates console logs that outgrew ConsoleLogMax: the guest
// writes them, so nothing else bounds them.
func (m *Manager) boundLogs(ctx context.Context) {
	for id, h := range m.opt.Handles.Snapshot() {
		if h.VMM == vmm.Firecracker {
			firecracker.Follow(ctx, id, h, m.log) // vmm.log into the daemon's log
		}
		if h.ConsoleLog == "" {
			continue
		}
		if _, err := vmm.BoundLog(h.ConsoleLog, m.opt.ConsoleLogMax); err != nil {
			m.log.Warn("bound console log", "vm_id", id, "err", err)
		}
	}
}

// reap tears down every running VM whose VMM is gone.
func (m *Manager) reap(ctx context.Context) {
	for id, h := range m.opt.Handles.Snapshot() {
		if vmm.Alive(h) {
			continue
		}
		m.reapOne(ctx, id)
	}
}

func (m *Manager) reapOne(ctx context.Context, id string) {
	unlock := m.lock(id)
	defer unlock()
	h, ok := m.opt.Handles.Get(id)
	if !ok || vmm.Alive(h) {
		return // stopped or restarted meanwhile
	}
	vm, err := m.opt.Store.GetVM(ctx, id)
	if err != nil {
		_ = m.teardown(ctx, id, h)
		return
	}
	m.dropAgent(id)
	m.opt.DNS.Remove(vm.Name)
	terr := m.teardown(ctx, id, h)
	_, uerr := m.opt.Store.UpdateVM(ctx, id, func(v *store.VM) error {
		if v.State == store.StateRunning {
			v.State = store.StateStopped
			v.LastError = fmt.Sprintf("%s exited unexpectedly (console: %s)", h.VMM, h.ConsoleLog)
		}
		return nil
	})
	m.log.Info("vmm exited, cleaned up", "vm", vm.Name, "pid", h.PID, "teardown_err", terr, "update_err", uerr)
}

// Refresh reaps dead VMMs now, so a listing right after a crash is true.
func (m *Manager) Refresh(ctx context.Context) { m.reap(ctx) }
