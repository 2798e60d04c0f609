package hostnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/cmdrun"
	"banger/internal/guestcontract"
)

// ipForwardPath is the IPv4 forwarding switch of the calling thread's
// network namespace.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Direct performs the privileged operations itself, through netlink and
// nft; the process must hold CAP_NET_ADMIN (bangerd running as root, or
// the `bangerd priv` helper under sudo).
type Direct struct {
	// NetNS is the path of a network namespace to act in (for example
	// /run/netns/NAME). Empty means the calling process's own namespace,
	// which is what bangerd uses; tests set it to a namespace of their
	// own.
	NetNS string
	// Nft is the nft binary; empty means "nft" from PATH.
	Nft string
}

var _ Privileged = Direct{}

// in runs fn in d.NetNS: on a locked OS thread switched into it (netlink
// sockets, tap ioctls, /proc/sys and child processes all follow the
// thread), switched back afterwards.
func (d Direct) in(fn func() error) error {
	if d.NetNS == "" {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(d.NetNS)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", d.NetNS, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", d.NetNS, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it with the
		// goroutine instead of reusing a thread in the wrong namespace.
		return errors.Join(fnErr, fmt.Errorf("leave network namespace %s: %w", d.NetNS, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// EnsureBridge implements Privileged.
func (d Direct) EnsureBridge(ctx context.Context, name string, subnet netip.Prefix, mark string) error {
	if !ManagedName(name) {
		return fmt.Errorf("ensure bridge %q: not a banger interface name", name)
	}
	if !ValidMark(mark) {
		return fmt.Errorf("ensure bridge %s: mark %q: want %s and %d hex digits", name, mark, MarkPrefix, InstanceIDLen)
	}
	if err := guestcontract.CheckSubnet(subnet); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	want := GatewayPrefix(subnet)
	err := d.in(func() error {
		link, err := netlink.LinkByName(name)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
				return fmt.Errorf("create: %w", err)
			}
			link, err = netlink.LinkByName(name)
		}
		if err != nil {
			return err
		}
		if _, ok := link.(*netlink.Bridge); !ok {
			return fmt.Errorf("exists as a %s, not a bridge", link.Type())
		}
		// The mark goes first, so a bridge this call made never stands
		// unmarked with an address; another instance's is not touched.
		switch alias := link.Attrs().Alias; alias {
		case mark:
		case "":
			if err := netlink.LinkSetAlias(link, mark); err != nil {
				return fmt.Errorf("mark %s: %w", mark, err)
			}
		default:
			return fmt.Errorf("marked %q, not %q: another instance's bridge", alias, mark)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses: %w", err)
		}
		have := false
		for _, a := range addrs {
			p, ok := prefixOf(a.IPNet)
			if ok && p == want {
				have = true
				continue
			}
			// The bridge is banger's: an address from an earlier subnet
			// would route guests' old range to it.
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove stale address %s: %w", a.IPNet, err)
			}
		}
		if !have {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("add address %s: %w", want, err)
			}
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(link); err != nil {
				return fmt.Errorf("set up: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure bridge %s: %w", name, err)
	}
	return nil
}

// EnsureTap implements Privileged.
func (d Direct) EnsureTap(ctx context.Context, name, bridge string, uid, gid int, shared bool) error {
	if !ValidTapName(name) {
		return fmt.Errorf("ensure tap %q: not a banger tap name", name)
	}
	if !ManagedName(bridge) {
		return fmt.Errorf("ensure tap %s: bridge %q: not a banger interface name", name, bridge)
	}
	if uid < 0 || gid < 0 || uid > maxID || gid > maxID {
		return fmt.Errorf("ensure tap %s: uid %d, gid %d out of range", name, uid, gid)
	}
	err := d.in(func() error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", bridge, err)
		}
		if _, ok := br.(*netlink.Bridge); !ok {
			return fmt.Errorf("%s is a %s, not a bridge", bridge, br.Type())
		}
		link, err := netlink.LinkByName(name)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			tap := &netlink.Tuntap{
				LinkAttrs: netlink.LinkAttrs{Name: name},
				Mode:      netlink.TUNTAP_MODE_TAP,
				// Single queue, no packet information header: what
				// Firecracker and QEMU open. The VMM sets vnet_hdr itself.
				Flags: netlink.TUNTAP_NO_PI,
				Owner: uint32(uid),
				Group: uint32(gid),
			}
			err = netlink.LinkAdd(tap)
			for _, f := range tap.Fds {
				f.Close()
			}
			if err != nil {
				return fmt.Errorf("create: %w", err)
			}
			link, err = netlink.LinkByName(name)
		}
		if err != nil {
			return err
		}
		tap, ok := link.(*netlink.Tuntap)
		if !ok || tap.Mode != netlink.TUNTAP_MODE_TAP {
			return fmt.Errorf("exists as a %s, not a tap", link.Type())
		}
		if int(tap.Owner) != uid || int(tap.Group) != gid {
			return fmt.Errorf("exists owned by %d:%d, not %d:%d", tap.Owner, tap.Group, uid, gid)
		}
		if link.Attrs().MasterIndex != br.Attrs().Index {
			if err := netlink.LinkSetMaster(link, br); err != nil {
				return fmt.Errorf("attach to %s: %w", bridge, err)
			}
		}
		// An isolated bridge port forwards to non-isolated ports only
		// (the host's side of the bridge), never to another guest's tap,
		// whether or not br_netfilter is loaded. Set every time: it is
		// one attribute and a tap re-attached by hand loses it.
		if err := netlink.LinkSetIsolated(link, !shared); err != nil {
			return fmt.Errorf("isolate bridge port: %w", err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(link); err != nil {
				return fmt.Errorf("set up: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure tap %s: %w", name, err)
	}
	return nil
}

// DeleteLink implements Privileged.
func (d Direct) DeleteLink(ctx context.Context, name string) error {
	if !ManagedName(name) {
		return fmt.Errorf("delete link %q: not a banger interface name", name)
	}
	err := d.in(func() error {
		link, err := netlink.LinkByName(name)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		if err != nil {
			return err
		}
		return netlink.LinkDel(link)
	})
	if err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// ApplyFirewall implements Privileged.
func (d Direct) ApplyFirewall(ctx context.Context, f Firewall) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	err := d.in(func() error {
		nets, err := hostNetworks(f.Bridge)
		f.HostNets = append(f.HostNets, nets...)
		return err
	})
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	if err := d.nft(ctx, Ruleset(f)); err != nil {
		return fmt.Errorf("apply firewall for %s %s: %w", f.Bridge, f.Subnet, err)
	}
	return nil
}

// hostNetworks returns what guests must not reach on this host: every
// IPv4 address of its interfaces (as /32) and every network it routes
// through an interface other than the one(s) carrying a default route
// (VPNs, container bridges, a second LAN). The bridge's own network is the
// guests' and is denied by Ruleset already. It runs in the caller's
// network namespace.
func hostNetworks(bridge string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, netip.PrefixFrom(ip.Unmap(), 32))
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	viaDefault := map[int]bool{}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			viaDefault[r.LinkIndex] = true
		}
	}
	var brIndex int
	if l, err := netlink.LinkByName(bridge); err == nil {
		brIndex = l.Attrs().Index
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() || viaDefault[r.LinkIndex] || r.LinkIndex == brIndex && brIndex != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
	}
	return out, nil
}

// RemoveFirewall implements Privileged.
func (d Direct) RemoveFirewall(ctx context.Context, bridge string) error {
	if !ManagedName(bridge) {
		return fmt.Errorf("remove firewall: bridge %q: not a banger interface name", bridge)
	}
	if err := d.nft(ctx, RemoveRuleset(bridge)); err != nil {
		return fmt.Errorf("remove firewall: %w", err)
	}
	return nil
}

// nft feeds script to `nft -f -`, which applies it as one transaction.
func (d Direct) nft(ctx context.Context, script string) error {
	bin := d.Nft
	if bin == "" {
		bin = "nft"
	}
	argv := []string{bin, "-f", "-"}
	return d.in(func() error {
		return cmdrun.Cmd{Argv: argv, Stdin: strings.NewReader(script)}.Run(ctx)
	})
}

// EnableForwarding implements Privileged.
func (d Direct) EnableForwarding(ctx context.Context) error {
	err := d.in(func() error {
		cur, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return err
		}
		if string(bytes.TrimSpace(cur)) == "1" {
			return nil
		}
		return os.WriteFile(ipForwardPath, []byte("1\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

// inspectAttempts bounds the retries of a link dump that the kernel
// interrupted because links changed meanwhile (the tap pool refills in the
// background, so this happens).
const inspectAttempts = 5

// Inspect implements Privileged. A dump interrupted by a concurrent change
// is retried, so the state returned is always a consistent one.
func (d Direct) Inspect(ctx context.Context) (State, error) {
	var (
		st  State
		err error
	)
	for i := 0; i < inspectAttempts; i++ {
		st, err = d.inspect()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		select {
		case <-ctx.Done():
			return State{}, fmt.Errorf("inspect host network: %w", ctx.Err())
		case <-time.After(time.Duration(i+1) * 10 * time.Millisecond):
		}
	}
	if err != nil {
		return State{}, fmt.Errorf("inspect host network: %w", err)
	}
	return st, nil
}

func (d Direct) inspect() (State, error) {
	var st State
	err := d.in(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		names := make(map[int]string, len(links))
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range links {
			a := l.Attrs()
			li := Link{Name: a.Name, Kind: l.Type(), Up: a.Flags&net.FlagUp != 0, Master: names[a.MasterIndex], Alias: a.Alias}
			if t, ok := l.(*netlink.Tuntap); ok {
				li.Owner, li.Group = int(t.Owner), int(t.Group)
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", a.Name, err)
			}
			for _, ad := range addrs {
				if p, ok := prefixOf(ad.IPNet); ok {
					li.Addrs = append(li.Addrs, p)
				}
			}
			st.Links = append(st.Links, li)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if r.Dst != nil {
				p, ok := prefixOf(r.Dst)
				if !ok {
					continue
				}
				dst = p.Masked()
			}
			st.Routes = append(st.Routes, Route{Dst: dst, Dev: names[r.LinkIndex]})
		}
		fwd, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return err
		}
		st.Forwarding = string(bytes.TrimSpace(fwd)) == "1"
		return nil
	})
	return st, err
}

// prefixOf converts a netlink address to a netip.Prefix.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// Denied reports whether the firewall's deny set holds addr: the
// DeniedByDefault ranges, the guests' subnet and the host's own addresses
// and networks (read now, as the next apply would). banger's DNS never
// opens such an address to a policed guest, whatever an upstream answers.
// Reading them needs no privilege.
func Denied(bridge string, subnet netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.Is4() || subnet.Contains(addr) {
		return true
	}
	for _, p := range DeniedByDefault {
		if p.Contains(addr) {
			return true
		}
	}
	nets, err := hostNetworks(bridge)
	if err != nil {
		return true // unknown: fail closed
	}
	for _, p := range nets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
