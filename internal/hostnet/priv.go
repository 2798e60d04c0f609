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
	// as its only IPv4 address, be up and carry mark (Config.Mark) as
	// its alias. A bridge marked by another instance is an error and is
	// left as it is.
	EnsureBridge(ctx context.Context, name string, subnet netip.Prefix, mark string) error
	// EnsureTap makes tap name exist as a persistent tap owned by uid:gid,
	// attached to bridge as an isolated port (or not, when shared: guests
	// may then reach each other) and up. An existing link of that name
	// that is not a tap, or is owned by someone else, is an error.
	EnsureTap(ctx context.Context, name, bridge string, uid, gid int, shared bool) error
	// DeleteLink deletes interface name; a missing one is not an error.
	DeleteLink(ctx context.Context, name string) error
	// ApplyFirewall replaces the tables of f.Bridge's daemon with
	// Ruleset(f).
	ApplyFirewall(ctx context.Context, f Firewall) error
	// RemoveFirewall deletes the tables of the daemon whose bridge is
	// bridge (TableName); missing ones are not an error.
	RemoveFirewall(ctx context.Context, bridge string) error
	// EnableForwarding sets net.ipv4.ip_forward to 1.
	EnableForwarding(ctx context.Context) error
	// Inspect reads the interfaces, the main routing table and the
	// forwarding switch. It needs no privilege.
	Inspect(ctx context.Context) (State, error)
}

// State is what Inspect reads back from the host.
type State struct {
	Links []Link
	// Routes are the IPv4 routes of the main table.
	Routes     []Route
	Forwarding bool // net.ipv4.ip_forward
}

// Route is one IPv4 route: its destination and the interface it leaves by.
type Route struct {
	Dst netip.Prefix
	Dev string
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
	// Alias is the link's IFLA_IFALIAS; banger marks its bridge with
	// Config.Mark.
	Alias string
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
