package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/hostnet"

	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/termsafe"
	"banger/internal/vmm"
	"banger/internal/wait"
)

func macForIP(ip netip.Addr) string { return hostnet.MACForIP(ip).String() }

// boot starts a recorded VM whose disks exist: tap, config drive, VMM,
// agent, DNS. It is shared by create and start; its undo steps are
// registered on op. With restore set, the VMM loads the VM's saved state
// (checked first) instead of booting, the config drive is left as the
// guest last saw it, and the guest's clock and random pool are renewed.
// sshWait makes "agent ready" also wait for sshd (images that boot
// systemd).
func (m *Manager) boot(ctx context.Context, op *operation.Op, vm store.VM, img store.Image, restore *savedMeta, sshWait bool) (store.VM, error) {
	bootStage := StageBoot
	switch {
	case restore == nil:
		op.Plan(StageNetwork, StageConfig, StageBoot, StageAgent)
	case restore.template != nil:
		bootStage = StageRestore
		op.Plan(StageNetwork, StageConfig, StageRestore, StageAgent)
	default:
		bootStage = StageRestore
		op.Plan(StageNetwork, StageRestore, StageAgent)
	}
	man, err := manifestOf(img)
	if err != nil {
		return vm, err
	}
	dir := m.vmDir(vm.ID)
	driver := m.opt.Drivers[vm.VMM]
	if driver == nil {
		return vm, fmt.Errorf("vm %s: no %s driver in this daemon", vm.Name, vm.VMM)
	}

	var tap string
	if err := op.Do(StageNetwork, func(s *operation.Stage) error {
		if err := m.opt.Network.Ensure(ctx); err != nil {
			return fmt.Errorf("host network: %w", err)
		}
		ip, err := netip.ParseAddr(vm.IP)
		if err != nil {
			return fmt.Errorf("vm %s has no leased address: %w", vm.Name, err)
		}
		// The policy is in the firewall before the tap can send.
		if err := m.bindNet(ctx, vm, ip); err != nil {
			return err
		}
		op.OnRollback(func(ctx context.Context) error { return m.egress().Unbind(ctx, vm.ID) })
		tap, err = m.opt.Network.AcquireTap(ctx, vm.ID, ip)
		if err != nil {
			return fmt.Errorf("acquire tap: %w", err)
		}
		op.OnRollback(func(ctx context.Context) error { return m.opt.Network.ReleaseTap(ctx, tap) })
		s.Detail("%s on %s, tap %s", vm.IP, m.opt.Config.Network.Bridge, tap)
		return nil
	}); err != nil {
		return vm, err
	}

	// A restored guest already applied (and unmounted) its config drive:
	// it stays as the guest last saw it. A guest restored from an image's
	// warm template gets its own, for its next cold boot.
	if restore == nil || restore.template != nil {
		if err := op.Do(StageConfig, func(s *operation.Stage) error {
			warnings, err := m.writeConfigDrive(ctx, vm, filepath.Join(dir, layout.ConfigDriveFile))
			for _, w := range warnings {
				op.Logf("warning: %s", w)
			}
			if err != nil {
				return err
			}
			if len(warnings) > 0 {
				s.Detail("%d file_sync warning(s): %s", len(warnings), strings.Join(warnings, "; "))
			}
			return nil
		}); err != nil {
			return vm, err
		}
	}

	var h vmm.Handles
	if err := op.Do(bootStage, func(s *operation.Stage) error {
		spec, accelNote, err := m.spec(vm, img, man, tap)
		if err != nil {
			return err
		}
		if restore != nil {
			if !restore.checked {
				if err := m.checkSaved(ctx, vm, *restore, spec.Accel); err != nil {
					return err
				}
			}
			spec.RestoreDir = restore.dir
			spec.RestoreKernel = restore.Kernel
			if t := restore.template; t != nil && t.Name != "" {
				accelNote += fmt.Sprintf(", restored from snapshot %s@%s taken %s", t.From, t.Name, restore.SavedAt.Format(time.DateTime))
			} else if t != nil {
				accelNote += ", restored from the warm template made " + restore.SavedAt.Format(time.DateTime)
			} else {
				accelNote += ", restored from state saved " + restore.SavedAt.Format(time.DateTime)
			}
		}
		// Record the handles as soon as the process exists, not after it
		// answers: a daemon killed while the VMM starts (QMP may take many
		// seconds under TCG) must find and end it at its next start.
		spec.OnSpawn = func(sh vmm.Handles) error {
			sh.Tap = tap
			return m.opt.Handles.Set(vm.ID, sh)
		}
		h, err = driver.Start(ctx, spec)
		if err != nil {
			_ = m.opt.Handles.Delete(vm.ID) // the driver ended what it spawned
			return fmt.Errorf("start %s: %w (log: %s)", vm.VMM, err, filepath.Join(dir, layout.VMMLogFile))
		}
		h.Tap = tap
		op.OnRollback(func(ctx context.Context) error {
			m.dropAgent(vm.ID)
			kerr := driver.Kill(ctx, h)
			return errors.Join(kerr, m.opt.Handles.Delete(vm.ID))
		})
		if err := m.opt.Handles.Set(vm.ID, h); err != nil {
			return err
		}
		s.Detail("%s pid %d%s", vm.VMM, h.PID, accelNote)
		return nil
	}); err != nil {
		return vm, err
	}

	if err := op.Do(StageAgent, func(s *operation.Stage) error {
		var took []string // how long each part of a warm start took
		mark := time.Now()
		lap := func(what string) {
			took = append(took, fmt.Sprintf("%s %s", what, time.Since(mark).Round(10*time.Millisecond)))
			mark = time.Now()
		}
		if restore != nil && restore.template != nil {
			if err := m.reidentify(ctx, vm, h, restore.template); err != nil {
				return err
			}
			lap("identity")
		}
		warm := restore != nil && restore.template != nil
		var health agent.Health
		if !warm {
			// A warm guest has just answered (with its new identity) and
			// its host key is pinned: no health round is needed.
			var err error
			if health, err = m.waitAgent(ctx, vm, h); err != nil {
				return err
			}
			lap("agent")
		}
		// After the identity, not with it: the guest's first request
		// waits until it is listening again, and a time sent then would
		// be set that late. A cold boot is thawed too: its clock came
		// from the RTC, which counts whole seconds, so it starts up to a
		// second behind the host's (make then warns of clock skew on
		// files from the host).
		thawed := m.thaw(ctx, op, vm, m.agentClient(vm, h), restore == nil)
		lap("thaw")
		ssh := "no sshd"
		switch {
		case man.Init != image.InitSystemd:
		case !sshWait:
			ssh = "sshd not waited for"
		case m.waitSSH(ctx, vm, h):
			ssh = "sshd listening"
		}
		if sshWait {
			lap("sshd")
		}
		switch {
		case warm:
			s.Detail("new identity, %s, %s (%s)", thawed, ssh, strings.Join(took, ", "))
			return nil
		case restore != nil:
			s.Detail("agent %s, restored, %s", health.Version, thawed)
			return nil
		}
		s.Detail("agent %s, systemd %s, %s, %s (%s)", health.Version, orDash(health.SystemState), thawed, ssh, strings.Join(took, ", "))
		return nil
	}); err != nil {
		return vm, err
	}

	if ip, err := netip.ParseAddr(vm.IP); err == nil {
		m.opt.DNS.Set(vm.Name, ip)
	}
	vm, err = m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
		v.State = store.StateRunning
		v.DesiredState = store.StateRunning
		v.StartedAt = time.Now()
		v.LastError = ""
		return nil
	})
	if err != nil {
		return vm, err
	}
	return vm, nil
}

// spec builds the VMM spec of vm. accelNote says which accelerator QEMU
// uses and why, for the boot stage.
func (m *Manager) spec(vm store.VM, img store.Image, man *image.Manifest, tap string) (vmm.Spec, string, error) {
	dir := m.vmDir(vm.ID)
	s := vmm.Spec{
		VMID:      vm.ID,
		Name:      vm.Name,
		VCPU:      vm.VCPU,
		MemoryMiB: vm.MemoryMiB,
		Vmlinux:   filepath.Join(img.Dir, image.FileVmlinux),
		BzImage:   filepath.Join(img.Dir, image.FileVmlinuz),
		Initrd:    filepath.Join(img.Dir, image.FileInitrd),
		Cmdline:   guestcontract.KernelCmdline(man.Init == image.InitAgent),
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: filepath.Join(img.Dir, image.FileRootfs), ReadOnly: true},
			{ID: "overlay", Path: filepath.Join(dir, layout.OverlayFile)},
			{ID: "work", Path: filepath.Join(dir, layout.WorkFile)},
			{ID: "config", Path: filepath.Join(dir, layout.ConfigDriveFile), ReadOnly: true},
		},
		Tap: tap,
		MAC: vm.MAC,
		CID: vm.CID,
		Dir: dir,
	}
	accel, note, err := m.accel(vm.VMM)
	if err != nil {
		return s, "", err
	}
	s.Accel = accel
	return s, note, nil
}

// accel is the QEMU accelerator a VM under vmmName gets on this host
// with this config ("" for Firecracker), and a note saying why.
func (m *Manager) accel(vmmName string) (string, string, error) {
	if vmmName != vmm.QEMU {
		return "", "", nil
	}
	kvm, why := m.opt.Host.KVMUsable()
	switch m.opt.Config.Accel {
	case "kvm":
		if !kvm {
			return "", "", fmt.Errorf("accel = \"kvm\" in config but KVM is not usable: %s", why)
		}
		return vmm.AccelKVM, "", nil
	case "tcg":
		return vmm.AccelTCG, ", tcg (accel = \"tcg\" in config)", nil
	default:
		if kvm {
			return vmm.AccelKVM, ", kvm", nil
		}
		return vmm.AccelTCG, ", tcg software emulation (" + why + ")", nil
	}
}

// pollInterval is how often waitAgent and waitSSH ask again. A question
// costs the guest next to nothing, and on a warm start (about two seconds
// in all under TCG) a coarse interval shows up whole in the total.
const pollInterval = 50 * time.Millisecond

// waitAgent polls the guest agent until it answers, the VMM dies or the
// agent timeout passes. On success it pins the guest's ssh host keys.
func (m *Manager) waitAgent(ctx context.Context, vm store.VM, h vmm.Handles) (agent.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opt.AgentTimeout)
	defer cancel()
	client := m.agentClient(vm, h)
	var health agent.Health
	var last error
	err := wait.Until(ctx, pollInterval, func() (bool, error) {
		if !vmm.Alive(h) {
			return false, fmt.Errorf("%s exited during boot (console: %s, log: %s)", vm.VMM, h.ConsoleLog, h.VMMLog)
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		hl, err := client.Health(actx)
		acancel()
		if err != nil {
			last = err
			return false, nil
		}
		health = hl
		if health.IdentityError != "" {
			// The guest is up but did not take its identity (address,
			// keys, a file_sync entry): a VM that looks fine but is not.
			return false, fmt.Errorf("guest could not apply its identity: %s", health.IdentityError)
		}
		keys, kerr := client.HostKeys(ctx)
		if kerr == nil && len(keys) > 0 && m.opt.KnownHosts != nil {
			kerr = m.opt.KnownHosts.Set(vm.Name+".vm", keys)
		}
		if kerr != nil {
			return false, fmt.Errorf("learn ssh host keys: %w", kerr)
		}
		return true, nil
	})
	if err != nil && err == ctx.Err() {
		if ctx.Err() == context.DeadlineExceeded && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			// The rollback removes the console with the VM dir: its end
			// goes in the error.
			tail := ""
			if t := vmm.LogTail(h.ConsoleLog); t != "" {
				// Guest text: made safe for the user's terminal.
				var b strings.Builder
				_, _ = termsafe.Writer(&b).Write([]byte(t))
				tail = "; the console ends:\n" + b.String()
			}
			return agent.Health{}, fmt.Errorf("guest agent did not answer within %s (last error: %v; console: %s)%s", m.opt.AgentTimeout, last, h.ConsoleLog, tail)
		}
		return agent.Health{}, err
	}
	return health, err
}

// WaitSSH waits (bounded by Options.SSHWait) until the running VM's sshd
// listens, so `vm ssh` right after a create that did not wait for it
// (NoSSHWait) connects rather than being refused. It returns at once
// for a VM that is not running or is paused (its agent cannot answer)
// and for images without sshd; it reports whether sshd listens.
func (m *Manager) WaitSSH(ctx context.Context, vm store.VM) bool {
	h, ok := m.alive(vm.ID)
	if !ok || h.Paused {
		return false
	}
	img, err := m.opt.Store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return false
	}
	if man, err := manifestOf(img); err != nil || man.Init != image.InitSystemd {
		return false
	}
	return m.waitSSH(ctx, vm, h)
}

// waitSSH waits (bounded) until the guest lists a TCP listener on port 22,
// so a VM reported ready accepts `banger vm ssh` at once. Images without
// sshd just take the bound; it is not an error.
func (m *Manager) waitSSH(ctx context.Context, vm store.VM, h vmm.Handles) bool {
	ctx, cancel := context.WithTimeout(ctx, m.opt.SSHWait)
	defer cancel()
	client := m.agentClient(vm, h)
	err := wait.Until(ctx, pollInterval, func() (bool, error) {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		ports, err := client.Ports(pctx)
		pcancel()
		if err == nil {
			for _, p := range ports {
				if p.Proto == "tcp" && p.Port == 22 {
					return true, nil
				}
			}
		}
		return false, nil
	})
	return err == nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// removeVMDir deletes the VM directory; a missing one is fine.
func removeVMDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove vm dir: %w", err)
	}
	return nil
}
