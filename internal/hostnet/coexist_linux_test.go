package hostnet

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"banger/internal/dns"
	"banger/internal/testenv"
)

// nftList returns `nft list table FAMILY NAME` in ns, "" when the table
// is absent.
func nftList(t *testing.T, ns *testenv.Netns, family, name string) string {
	t.Helper()
	out, err := ns.Run(context.Background(), "nft", "list", "table", family, name)
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return ""
		}
		t.Fatal(err)
	}
	return string(out)
}

// tables returns the daemon's two tables (inet, bridge) as nft lists them.
func tables(t *testing.T, ns *testenv.Netns, bridge string) string {
	t.Helper()
	return nftList(t, ns, TableFamily, TableName(bridge)) + nftList(t, ns, BridgeTableFamily, TableName(bridge))
}

// fakeGuest stands in for a VM on bridge: a namespace behind a veth whose
// host end carries the VM's tap name (so the firewall binds it as it
// binds a tap) and whose guest end has the lease's MAC and address.
func fakeGuest(t *testing.T, host *testenv.Netns, bridge, tap string, subnet netip.Prefix, ip netip.Addr) *testenv.Netns {
	t.Helper()
	g := testenv.NewNetns(t)
	ctx := context.Background()
	for _, step := range []struct {
		ns   *testenv.Netns
		argv string
	}{
		{host, "ip link add " + tap + " type veth peer name eth0 netns " + g.Name},
		{host, "ip link set " + tap + " master " + bridge + " up"},
		{g, "ip link set eth0 address " + MACForIP(ip).String()},
		{g, "ip addr add " + netip.PrefixFrom(ip, subnet.Bits()).String() + " dev eth0"},
		{g, "ip link set eth0 up"},
	} {
		if _, err := step.ns.Run(ctx, strings.Fields(step.argv)...); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// serveDNS runs banger's DNS server in host on the gateway of subnet at a
// port the kernel picks, answering name with ip, and returns the port.
func serveDNS(t *testing.T, host *testenv.Netns, subnet netip.Prefix, name string, ip netip.Addr) uint16 {
	t.Helper()
	srv := dns.New(nil, testLogger(t))
	t.Cleanup(func() { srv.Close() })
	srv.AllowSources(subnet)
	srv.Set(name, ip)
	gw := GatewayPrefix(subnet).Addr()
	err := host.Do(func() error {
		return srv.Listen(context.Background(), net.JoinHostPort(gw.String(), "0"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.Addrs()[0])
	p, _ := strconv.Atoi(port)
	if p == 53 || p == 0 {
		t.Fatalf("dns bound port %d, want an unprivileged one", p)
	}
	return uint16(p)
}

// resolve asks server (host:port) for name's A record from inside ns,
// over udp or tcp.
func resolve(ns *testenv.Netns, server, proto, name string) (netip.Addr, error) {
	var got netip.Addr
	err := ns.Do(func() error {
		c := &mdns.Client{Net: proto, Timeout: 2 * time.Second}
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		r, _, err := c.Exchange(m, server)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			if a, ok := rr.(*mdns.A); ok {
				got, _ = netip.AddrFromSlice(a.A.To4())
			}
		}
		return nil
	})
	return got, err
}

// TestGuestDNSRedirect_Netns: a guest asks the gateway's port 53 and is
// answered by the DNS server on an unprivileged port, through the
// firewall's redirect, over udp and tcp; nothing listens on port 53.
func TestGuestDNSRedirect_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := testenv.NewNetns(t)
	subnet := netip.MustParsePrefix("192.0.2.0/24")
	m := New(Config{Bridge: "bgdns0", Instance: "0123abcd", Subnet: subnet}, Direct{NetNS: host.Path}, testLogger(t))
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	guestIP := netip.MustParseAddr("192.0.2.7")
	guest := fakeGuest(t, host, "bgdns0", "bgt00000000d0a1", subnet, guestIP)
	if err := m.Adopt(ctx, map[string]netip.Addr{"bgt00000000d0a1": guestIP}); err != nil {
		t.Fatal(err)
	}
	port := serveDNS(t, host, subnet, "box.vm", netip.MustParseAddr("192.0.2.7"))

	// Before the firewall knows the port, port 53 has nobody behind it.
	if _, err := resolve(guest, "192.0.2.1:53", "udp", "box.vm"); err == nil {
		t.Fatalf("control: a query to port 53 was answered with no redirect in place")
	}
	if err := m.SetDNSPort(ctx, port); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"udp", "tcp"} {
		got, err := resolve(guest, "192.0.2.1:53", proto, "box.vm")
		if err != nil || got != guestIP {
			t.Errorf("guest -> gateway:53/%s: %v, %v; want box.vm = %s from the server on port %d", proto, got, err, guestIP, port)
		}
	}
}

// TestCoexist_Netns runs two daemons' host networks (two bridges, two
// subnets, two instances) in one namespace: neither's Ensure, taps,
// firewall applies or Teardown removes or rewrites the other's tables,
// bridge or taps, and each one's guest keeps its DNS. With one table
// name for every daemon, the second Ensure replaced the first's table
// and its bridge table dropped the other's guests' frames.
func TestCoexist_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host := testenv.NewNetns(t)
	type side struct {
		m      *Manager
		bridge string
		subnet netip.Prefix
		guest  *testenv.Netns
		gIP    netip.Addr
		veth   string
		tap    string
	}
	a := &side{bridge: "bgcoa0", subnet: netip.MustParsePrefix("192.0.2.0/24"), gIP: netip.MustParseAddr("192.0.2.2"), veth: "bgt00000000aaa1"}
	b := &side{bridge: "bgcob0", subnet: netip.MustParsePrefix("198.51.100.0/24"), gIP: netip.MustParseAddr("198.51.100.2"), veth: "bgt00000000bbb1"}
	a.m = New(Config{Bridge: a.bridge, Instance: "aaaaaaaa", Subnet: a.subnet}, Direct{NetNS: host.Path}, testLogger(t))
	b.m = New(Config{Bridge: b.bridge, Instance: "bbbbbbbb", Subnet: b.subnet}, Direct{NetNS: host.Path}, testLogger(t))

	if err := a.m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	aTables := tables(t, host, a.bridge)
	if err := b.m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tables(t, host, a.bridge); got != aTables {
		t.Fatalf("b's Ensure rewrote a's tables:\nbefore:\n%s\nafter:\n%s", aTables, got)
	}
	out, err := host.Run(ctx, "nft", "list", "tables")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table inet banger_bgcoa0", "table bridge banger_bgcoa0", "table inet banger_bgcob0", "table bridge banger_bgcob0"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("nft list tables lacks %q:\n%s", want, out)
		}
	}

	for i, s := range []*side{a, b} {
		s.guest = fakeGuest(t, host, s.bridge, s.veth, s.subnet, s.gIP)
		if err := s.m.Adopt(ctx, map[string]netip.Addr{s.veth: s.gIP}); err != nil {
			t.Fatal(err)
		}
		tap, err := s.m.AcquireTap(ctx, strings.Repeat(string(rune('a'+i)), 32), s.subnet.Addr().Next().Next().Next())
		if err != nil {
			t.Fatal(err)
		}
		s.tap = tap
		port := serveDNS(t, host, s.subnet, "own.vm", s.gIP)
		if err := s.m.SetDNSPort(ctx, port); err != nil {
			t.Fatal(err)
		}
	}
	ls := links(t, host)
	for _, s := range []*side{a, b} {
		if l := ls[s.tap]; l.Master != s.bridge {
			t.Errorf("tap %s on %q, want %s", s.tap, l.Master, s.bridge)
		}
		if !strings.Contains(nftList(t, host, BridgeTableFamily, TableName(s.bridge)), s.tap) {
			t.Errorf("%s's bridge table does not bind its tap %s", s.bridge, s.tap)
		}
	}
	// Each guest reaches its own gateway's DNS: neither bridge table
	// drops the other daemon's guests.
	check := func(when string, sides ...*side) {
		t.Helper()
		for _, s := range sides {
			gw := GatewayPrefix(s.subnet).Addr().String()
			if got, err := resolve(s.guest, gw+":53", "udp", "own.vm"); err != nil || got != s.gIP {
				t.Errorf("%s: guest of %s -> %s:53: %v, %v; want own.vm = %s", when, s.bridge, gw, got, err, s.gIP)
			}
		}
	}
	check("both up", a, b)

	aTables = tables(t, host, a.bridge)
	if err := b.m.ReleaseTap(ctx, b.tap); err != nil {
		t.Fatal(err)
	}
	if err := b.m.ReleaseTap(ctx, b.veth); err != nil {
		t.Fatal(err)
	}
	if err := b.m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tables(t, host, a.bridge); got != aTables {
		t.Errorf("b's teardown rewrote a's tables:\nbefore:\n%s\nafter:\n%s", aTables, got)
	}
	if got := tables(t, host, b.bridge); got != "" {
		t.Errorf("b's tables left after its teardown:\n%s", got)
	}
	ls = links(t, host)
	for _, n := range []string{a.bridge, a.tap, a.veth} {
		if _, ok := ls[n]; !ok {
			t.Errorf("b's teardown removed a's %s", n)
		}
	}
	for _, n := range []string{b.bridge, b.tap, b.veth} {
		if _, ok := ls[n]; ok {
			t.Errorf("b's %s left after its teardown", n)
		}
	}
	check("after b's teardown", a)
	linkOut, _ := host.Run(ctx, "ip", "link")
	t.Logf("ip link after b's teardown:\n%s", linkOut)
}

// TestConflicts_Netns: the checks read the real host. A route of the
// subnet on another interface, and a bridge marked by another instance,
// are refused; an unmarked bridge with the gateway address is adopted and
// marked; Direct itself never takes over another instance's bridge.
func TestConflicts_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := testenv.NewNetns(t)
	d := Direct{NetNS: host.Path}
	for _, argv := range []string{
		"ip link add eth1 type veth peer name eth1p",
		"ip addr add 10.77.3.4/16 dev eth1",
		"ip link set eth1 up",
		"ip link set eth1p up",
		"ip link add bgold0 type bridge",
		"ip addr add 192.0.2.1/24 dev bgold0",
	} {
		if _, err := host.Run(ctx, strings.Fields(argv)...); err != nil {
			t.Fatal(err)
		}
	}

	m := New(Config{Bridge: "banger0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("10.77.0.0/24")}, d, testLogger(t))
	err := m.Ensure(ctx)
	if err == nil || !strings.Contains(err.Error(), "network.subnet 10.77.0.0/24 overlaps 10.77.0.0/16 on eth1; set [network] subnet") {
		t.Errorf("Ensure with the subnet routed on eth1 = %v, want the overlap named", err)
	}
	if _, ok := links(t, host)["banger0"]; ok {
		t.Errorf("a refused Ensure made the bridge")
	}

	old := New(Config{Bridge: "bgold0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24")}, d, testLogger(t))
	if err := old.Ensure(ctx); err != nil {
		t.Fatalf("Ensure over an earlier banger's unmarked bridge: %v", err)
	}
	out, err := host.Run(ctx, "ip", "-d", "link", "show", "bgold0")
	if err != nil || !strings.Contains(string(out), "alias banger:0123abcd") {
		t.Errorf("adopted bridge not marked: %s", out)
	}

	other := New(Config{Bridge: "bgold0", Instance: "feedbeef", Subnet: netip.MustParsePrefix("192.0.2.0/24")}, d, testLogger(t))
	if err := other.Check(ctx); err == nil || !strings.Contains(err.Error(), "network.bridge bgold0 belongs to another banger instance (banger:0123abcd") {
		t.Errorf("Check of another instance's bridge = %v, want it refused", err)
	}
	before := tables(t, host, "bgold0")
	if err := other.Ensure(ctx); err == nil {
		t.Errorf("Ensure over another instance's bridge succeeded")
	}
	if got := tables(t, host, "bgold0"); got != before {
		t.Errorf("a refused Ensure rewrote the owner's tables")
	}
	if err := d.EnsureBridge(ctx, "bgold0", netip.MustParsePrefix("192.0.2.0/24"), "banger:feedbeef"); err == nil ||
		!strings.Contains(err.Error(), "another instance's bridge") {
		t.Errorf("Direct.EnsureBridge with another mark = %v, want refusal", err)
	}
}

// TestRuleset_NftAccepts_Netns applies rulesets nft must take, bridge
// names with characters TableName escapes included, and removes them.
func TestRuleset_NftAccepts_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := testenv.NewNetns(t)
	d := Direct{NetNS: ns.Path}
	for _, f := range rulesetCases() {
		if err := d.ApplyFirewall(ctx, f); err != nil {
			t.Errorf("%s: %v", f.Bridge, err)
			continue
		}
		if got := tables(t, ns, f.Bridge); !strings.Contains(got, "table inet "+TableName(f.Bridge)) ||
			!strings.Contains(got, "table bridge "+TableName(f.Bridge)) {
			t.Errorf("%s: tables not applied:\n%s", f.Bridge, got)
		}
		if err := d.RemoveFirewall(ctx, f.Bridge); err != nil {
			t.Errorf("%s: remove: %v", f.Bridge, err)
		}
		if got := tables(t, ns, f.Bridge); got != "" {
			t.Errorf("%s: tables left after remove:\n%s", f.Bridge, got)
		}
	}
}
