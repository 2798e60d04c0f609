package hostnet

import (
	"context"
	"net/netip"
)

// Privileged is the handful of host operations banger needs that require
// CAP_NET_ADMIN, plus one read that does not. Every mutating method is
// idempotent: it measures the host first and only acts where it differs,
// so callers may repeat it after a crash or a partial failure.
type Privileged interface {
	// EnsureBridge makes bridge name exist, carry GatewayPrefix(subnet)
	// as its only IPv4 address, and be up.
	EnsureBridge(ctx context.Context, name string, subnet netip.Prefix) error
	// EnsureTap makes tap name exist as a persistent tap owned by uid:gid,
	// attached to bridge as an isolated port (or not, when shared: guests
	// may then reach each other) and up. An existing link of that name
	// that is not a tap, or is owned by someone else, is an error.
	EnsureTap(ctx context.Context, name, bridge string, uid, gid int, shared bool) error
	// DeleteLink deletes interface name; a missing one is not an error.
	DeleteLink(ctx context.Context, name string) error
	// ApplyFirewall replaces banger's nftables table with Ruleset(f).
	ApplyFirewall(ctx context.Context, f Firewall) error
	// RemoveFirewall deletes banger's nftables table; a missing one is
	// not an error.
	RemoveFirewall(ctx context.Context) error
	// EnableForwarding sets net.ipv4.ip_forward to 1.
	EnableForwarding(ctx context.Context) error
	// Inspect reads the interfaces and the forwarding switch. It needs no
	// privilege.
	Inspect(ctx context.Context) (State, error)
}

// State is what Inspect reads back from the host.
type State struct {
	Links      []Link
	Forwarding bool // net.ipv4.ip_forward
}

// Link is one network interface as Inspect sees it.
type Link struct {
	Name   string
	Kind   string // netlink type: "bridge", "tuntap", "veth", "device", ...
	Up     bool   // administratively up
	Master string // bridge it is attached to, "" when none
	Addrs  []netip.Prefix
	// Owner and Group are a tap's owner uid and gid (taps only).
	Owner, Group int
}

// Link returns the link called name, and whether it exists.
func (s State) Link(name string) (Link, bool) {
	for _, l := range s.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// HasAddr reports whether the link carries address p.
func (l Link) HasAddr(p netip.Prefix) bool {
	for _, a := range l.Addrs {
		if a == p {
			return true
		}
	}
	return false
}
