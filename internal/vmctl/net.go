package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/egress"
	"banger/internal/guestcontract"
	"banger/internal/store"
)

// Egress applies VMs' egress policies to the host (egress.Engine): bound
// while a VM runs, from before its tap sends anything.
type Egress interface {
	Bind(ctx context.Context, vmID string, ip netip.Addr, p egress.Policy) error
	Unbind(ctx context.Context, vmID string) error
	Update(ctx context.Context, vmID string, p egress.Policy) error
	Forget(vmID string)
}

// noEgress is the Egress of a Manager given none: every VM is open.
type noEgress struct{}

func (noEgress) Bind(context.Context, string, netip.Addr, egress.Policy) error { return nil }
func (noEgress) Unbind(context.Context, string) error                          { return nil }
func (noEgress) Update(context.Context, string, egress.Policy) error           { return nil }
func (noEgress) Forget(string)                                                 {}

func (m *Manager) egress() Egress {
	if m.opt.Egress == nil {
		return noEgress{}
	}
	return m.opt.Egress
}

// presets are the user's [network] presets (the engine adds the built-in
// ones).
func (m *Manager) presets() egress.Presets {
	return egress.Presets(m.opt.Config.Network.Presets)
}

// netPolicy resolves the egress policy of a new VM: the request's, else
// the snapshot's it is made from, else the config's default; and its
// secrets: the request's, else the snapshot's, else the [[secret]]s
// marked default.
func (m *Manager) netPolicy(req api.CreateVMRequest, from *templateMeta) (egress.Policy, error) {
	if req.Net == "" && len(req.Allow) == 0 && len(req.Secrets) == 0 && from != nil && from.NetPolicy != "" {
		return egress.Decode(from.NetPolicy)
	}
	p, err := m.netRules(req)
	if err != nil {
		return egress.Policy{}, err
	}
	switch {
	case len(req.Secrets) > 0:
		p.Secrets = nil
		for _, name := range req.Secrets {
			if _, ok := m.opt.Config.SecretNamed(name); !ok {
				return egress.Policy{}, api.Errorf(api.CodeInvalid, "secret %q: no [[secret]] of that name in the config", name)
			}
			if !slices.Contains(p.Secrets, name) {
				p.Secrets = append(p.Secrets, name)
			}
		}
	case from != nil && from.NetPolicy != "":
		fp, err := egress.Decode(from.NetPolicy)
		if err != nil {
			return egress.Policy{}, err
		}
		p.Secrets = fp.Secrets
	default:
		for _, s := range m.opt.Config.Secrets {
			if s.Default {
				p.Secrets = append(p.Secrets, s.Name)
			}
		}
	}
	return p, nil
}

// netRules resolves the mode and rules of a new VM's policy.
func (m *Manager) netRules(req api.CreateVMRequest) (egress.Policy, error) {
	def := m.opt.Config.Network.Net
	if def == "" {
		def = egress.ModeOpen
	}
	entries := req.Allow
	if len(entries) == 0 && (req.Net == egress.ModeAllow || req.Net == "" && def == egress.ModeAllow) {
		entries = m.opt.Config.Network.NetAllow
	}
	p, err := egress.Parse(req.Net, entries, def, m.presets())
	if err != nil {
		return egress.Policy{}, api.Errorf(api.CodeInvalid, "egress policy: %v", err)
	}
	return p, nil
}

// bindNet applies vm's stored policy to its address; the caller undoes it
// with unbindNet when the boot fails.
func (m *Manager) bindNet(ctx context.Context, vm store.VM, ip netip.Addr) error {
	p, err := egress.Decode(vm.NetPolicy)
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	return m.egress().Bind(ctx, vm.ID, ip, p)
}

// secretIdentity adds to id what vm's secrets give its guest: each
// secret's placeholder in its variable (and file), and trust in the VM's
// egress CA (made here on first use) with the variables that point
// clients at it. A secret no longer in the config is left out, with a
// warning in the log: the proxy could not use it anyway.
func (m *Manager) secretIdentity(vm store.VM, id *agent.Identity) error {
	p, err := egress.Decode(vm.NetPolicy)
	if err != nil || len(p.Secrets) == 0 {
		return err
	}
	ca, err := egress.EnsureCA(m.vmDir(vm.ID), vm.Name)
	if err != nil {
		return fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	id.TrustCAs = []string{string(ca.PEM)}
	id.Env = guestcontract.CAEnv()
	for _, name := range p.Secrets {
		def, ok := m.opt.Config.SecretNamed(name)
		if !ok {
			m.log.Warn("vm secret no longer configured", "vm", vm.Name, "secret", name)
			continue
		}
		id.Env = append(id.Env, def.EnvName()+"="+egress.Placeholder(name))
		if f := def.GuestFile(); f != "" {
			id.InlineFiles = append(id.InlineFiles, agent.InlineFile{Guest: f, Content: egress.Placeholder(name) + "\n", Mode: 0o600})
		}
	}
	return nil
}

// NetStatus returns the egress policy of the VM ref.
func (m *Manager) NetStatus(ctx context.Context, ref string) (store.VM, egress.Policy, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, egress.Policy{}, err
	}
	p, err := egress.Decode(vm.NetPolicy)
	if err != nil {
		return store.VM{}, egress.Policy{}, err
	}
	return vm, p, nil
}

// ChangeNet edits the egress policy of the VM ref, stores it and, when
// the VM runs, applies it at once. A bad edit changes nothing.
func (m *Manager) ChangeNet(ctx context.Context, ref string, ch api.NetChange) (store.VM, egress.Policy, error) {
	vm, err := m.opt.Store.GetVM(ctx, ref)
	if err != nil {
		return store.VM{}, egress.Policy{}, err
	}
	unlock := m.lock(vm.ID)
	defer unlock()
	var out egress.Policy
	old := vm.NetPolicy
	vm, err = m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error {
		cur, err := egress.Decode(v.NetPolicy)
		if err != nil {
			return err
		}
		out, err = cur.Change(ch.Mode, ch.Allow, ch.Deny, m.presets())
		if err != nil {
			return api.Errorf(api.CodeInvalid, "%v", err)
		}
		v.NetPolicy = out.Encode()
		return nil
	})
	if err != nil {
		return store.VM{}, egress.Policy{}, err
	}
	if err := m.egress().Update(ctx, vm.ID, out); err != nil {
		// The firewall kept the old policy: so does the store.
		if _, rerr := m.opt.Store.UpdateVM(ctx, vm.ID, func(v *store.VM) error { v.NetPolicy = old; return nil }); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return store.VM{}, egress.Policy{}, fmt.Errorf("apply the new policy of %s: %w", vm.Name, err)
	}
	return vm, out, nil
}
