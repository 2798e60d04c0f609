package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	"banger/internal/cmdrun"
)

// The operations of `bangerd priv`, shared by Sudo (which builds the argv)
// and PrivMain (which parses it).
const (
	OpEnsureBridge     = "ensure-bridge"     // NAME SUBNET MARK
	OpEnsureTap        = "ensure-tap"        // NAME BRIDGE UID GID PORTMODE
	OpDeleteLink       = "delete-link"       // NAME
	OpApplyFirewall    = "apply-firewall"    // BRIDGE SUBNET ALLOW GUESTS PROXYPORT POLICED DNSPORT
	OpRemoveFirewall   = "remove-firewall"   // BRIDGE
	OpEnableForwarding = "enable-forwarding" // (none)
)

// Sudo runs the privileged operations as `sudo -n BANGERD priv OP
// ARGS...`: one argv, never a shell string, and never a password prompt
// (-n fails instead). The sudoers rule grants exactly that command; the
// receiving side, PrivMain, validates every argument again. Inspect needs
// no privilege and reads the host directly.
type Sudo struct {
	// Bangerd is the absolute path of the bangerd binary, the one the
	// sudoers rule names.
	Bangerd string
	// SudoPath is the sudo binary; empty means "sudo" from PATH.
	SudoPath string
}

var _ Privileged = Sudo{}

// Argv returns the command Sudo runs for op and args.
func (s Sudo) Argv(op string, args ...string) []string {
	sudo := s.SudoPath
	if sudo == "" {
		sudo = "sudo"
	}
	return append([]string{sudo, "-n", s.Bangerd, "priv", op}, args...)
}

// run runs op through sudo; a failure is a *cmdrun.Error with the argv
// and what sudo or PrivMain printed.
func (s Sudo) run(ctx context.Context, op string, args ...string) error {
	return cmdrun.Run(ctx, s.Argv(op, args...)...)
}

// EnsureBridge implements Privileged.
func (s Sudo) EnsureBridge(ctx context.Context, name string, subnet netip.Prefix, mark string) error {
	if err := s.run(ctx, OpEnsureBridge, name, subnet.String(), mark); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	return nil
}

// EnsureTap implements Privileged.
func (s Sudo) EnsureTap(ctx context.Context, name, bridge string, uid, gid int, shared bool) error {
	if err := s.run(ctx, OpEnsureTap, name, bridge, strconv.Itoa(uid), strconv.Itoa(gid), PortMode(shared)); err != nil {
		return fmt.Errorf("ensure tap %s: %w", name, err)
	}
	return nil
}

// DeleteLink implements Privileged.
func (s Sudo) DeleteLink(ctx context.Context, name string) error {
	if err := s.run(ctx, OpDeleteLink, name); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// ApplyFirewall implements Privileged.
func (s Sudo) ApplyFirewall(ctx context.Context, f Firewall) error {
	if err := s.run(ctx, OpApplyFirewall, f.Bridge, f.Subnet.String(), FormatAllow(f.Allow), FormatGuests(f.Guests),
		strconv.Itoa(int(f.ProxyPort)), FormatPoliced(f.Policed), strconv.Itoa(int(f.DNSPort))); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	return nil
}

// RemoveFirewall implements Privileged.
func (s Sudo) RemoveFirewall(ctx context.Context, bridge string) error {
	if err := s.run(ctx, OpRemoveFirewall, bridge); err != nil {
		return fmt.Errorf("remove firewall: %w", err)
	}
	return nil
}

// EnableForwarding implements Privileged.
func (s Sudo) EnableForwarding(ctx context.Context) error {
	if err := s.run(ctx, OpEnableForwarding); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

// Inspect implements Privileged; it reads the host without sudo.
func (s Sudo) Inspect(ctx context.Context) (State, error) {
	return Direct{}.Inspect(ctx)
}
