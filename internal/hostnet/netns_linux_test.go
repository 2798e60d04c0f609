package hostnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/cmdrun"
	"banger/internal/testenv"
)

// requireNetTools stops a privileged test unless it can run: root, ip and
// nft (fatal in CI, skip elsewhere).
func requireNetTools(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ip", "nft")
}

// ipLink is the part of `ip -j -d link show` the tests read.
type ipLink struct {
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	Master   string   `json:"master"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
		Data struct {
			Type  string `json:"type"`
			User  any    `json:"user"` // a number, or a name iproute2 resolved
			Group any    `json:"group"`
		} `json:"info_data"`
		// Port holds a bridge port's attributes.
		Port struct {
			Isolated bool `json:"isolated"`
		} `json:"info_slave_data"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
		Len    int    `json:"prefixlen"`
	} `json:"addr_info"`
}

// links reads the namespace's links back with iproute2, independently of
// the netlink code under test.
func links(t *testing.T, ns *testenv.Netns) map[string]ipLink {
	t.Helper()
	out, err := ns.Run(context.Background(), "ip", "-j", "-d", "addr", "show")
	if err != nil {
		t.Fatal(err)
	}
	var ls []ipLink
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatalf("parse ip -j output: %v\n%s", err, out)
	}
	m := map[string]ipLink{}
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

// tableChains reads the inet table of bridge's daemon back with `nft -j`,
// returning its chain names, or nil when the table is absent.
func tableChains(t *testing.T, ns *testenv.Netns, bridge string) []string {
	t.Helper()
	out, err := ns.Run(context.Background(), "nft", "-j", "list", "table", TableFamily, TableName(bridge))
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return nil
		}
		t.Fatal(err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("parse nft -j output: %v\n%s", err, out)
	}
	var chains []string
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			chains = append(chains, c.Name)
		}
	}
	slices.Sort(chains)
	return chains
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestManager_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hostFwd, _ := os.ReadFile(ipForwardPath)

	ns := testenv.NewNetns(t)
	cfg := Config{Bridge: "bgtest0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24"), UID: 1234, GID: 2345}
	m := New(cfg, Direct{NetNS: ns.Path}, testLogger(t))
	defer m.Close()

	t.Run("Ensure is idempotent", func(t *testing.T) {
		for i := range 2 {
			if err := m.Ensure(ctx); err != nil {
				t.Fatalf("Ensure #%d: %v", i+1, err)
			}
			br, ok := links(t, ns)["bgtest0"]
			if !ok || br.LinkInfo.Kind != "bridge" {
				t.Fatalf("Ensure #%d: no bridge bgtest0: %+v", i+1, br)
			}
			if !slices.Contains(br.Flags, "UP") {
				t.Errorf("Ensure #%d: bridge not up: %v", i+1, br.Flags)
			}
			var v4 []string
			for _, a := range br.AddrInfo {
				if a.Family == "inet" {
					v4 = append(v4, a.Local+"/"+strconv.Itoa(a.Len))
				}
			}
			if !slices.Equal(v4, []string{"192.0.2.1/24"}) {
				t.Errorf("Ensure #%d: bridge addresses %q, want [192.0.2.1/24]", i+1, v4)
			}
			if got := tableChains(t, ns, "bgtest0"); !slices.Equal(got, []string{"forward", "input", "postrouting"}) {
				t.Errorf("Ensure #%d: table inet banger chains %q", i+1, got)
			}
			out, err := ns.Run(ctx, "cat", ipForwardPath)
			if err != nil || strings.TrimSpace(string(out)) != "1" {
				t.Errorf("Ensure #%d: ip_forward in the namespace = %q, %v", i+1, out, err)
			}
		}
		if now, _ := os.ReadFile(ipForwardPath); string(now) != string(hostFwd) {
			t.Errorf("the test's own ip_forward changed from %q to %q", hostFwd, now)
		}
	})

	checkTap := func(t *testing.T, name string) {
		t.Helper()
		l, ok := links(t, ns)[name]
		switch {
		case !ok:
			t.Errorf("tap %s missing", name)
		case l.LinkInfo.Kind != "tun" || l.LinkInfo.Data.Type != "tap":
			t.Errorf("%s is %s/%s, want a tap", name, l.LinkInfo.Kind, l.LinkInfo.Data.Type)
		case l.Master != "bgtest0":
			t.Errorf("%s attached to %q, want bgtest0", name, l.Master)
		case fmt.Sprint(l.LinkInfo.Data.User) != "1234" || fmt.Sprint(l.LinkInfo.Data.Group) != "2345":
			t.Errorf("%s owned by %s:%s, want 1234:2345", name, l.LinkInfo.Data.User, l.LinkInfo.Data.Group)
		case !slices.Contains(l.Flags, "UP"):
			t.Errorf("%s not up: %v", name, l.Flags)
		case !l.LinkInfo.Port.Isolated:
			t.Errorf("%s is not an isolated bridge port: guests could reach each other", name)
		}
	}

	var acquired string
	t.Run("AcquireTap makes the VM's tap, bound", func(t *testing.T) {
		var err error
		acquired, err = m.AcquireTap(ctx, "0123456789abcdef0123456789abcdef", nextGuestIP())
		if err != nil {
			t.Fatal(err)
		}
		if acquired != "bgt0123456789ab" {
			t.Errorf("AcquireTap = %q, want bgt0123456789ab", acquired)
		}
		checkTap(t, acquired)
	})

	t.Run("Orphans lists a stray tap, not taps in use", func(t *testing.T) {
		if _, err := ns.Run(ctx, "ip", "tuntap", "add", "bgtap9", "mode", "tap"); err != nil {
			t.Fatal(err)
		}
		got, err := m.Orphans(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []string{"bgtap9"}) {
			t.Errorf("Orphans = %q, want [bgtap9] (in use %s)", got, acquired)
		}
		// An existing tap owned by someone else is not silently taken.
		err = Direct{NetNS: ns.Path}.EnsureTap(ctx, "bgtap9", "bgtest0", 1234, 2345, false)
		if err == nil || !strings.Contains(err.Error(), "owned by 0:0") {
			t.Errorf("EnsureTap over a foreign-owned tap = %v, want an ownership error", err)
		}
	})

	t.Run("guest_to_guest makes a shared port, and back", func(t *testing.T) {
		d := Direct{NetNS: ns.Path}
		if err := d.EnsureTap(ctx, "bgtap20", "bgtest0", 1234, 2345, true); err != nil {
			t.Fatal(err)
		}
		if links(t, ns)["bgtap20"].LinkInfo.Port.Isolated {
			t.Error("a shared tap is an isolated port")
		}
		if err := d.EnsureTap(ctx, "bgtap20", "bgtest0", 1234, 2345, false); err != nil {
			t.Fatal(err)
		}
		if !links(t, ns)["bgtap20"].LinkInfo.Port.Isolated {
			t.Error("EnsureTap did not isolate a shared tap")
		}
		if err := d.DeleteLink(ctx, "bgtap20"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ReleaseTap deletes", func(t *testing.T) {
		if err := m.ReleaseTap(ctx, acquired); err != nil {
			t.Fatal(err)
		}
		if _, ok := links(t, ns)[acquired]; ok {
			t.Errorf("released %s still present", acquired)
		}
		if err := m.ReleaseTap(ctx, acquired); err != nil {
			t.Errorf("second release: %v", err)
		}
		// Reclaiming the orphan deletes it.
		if err := m.ReleaseTap(ctx, "bgtap9"); err != nil {
			t.Fatal(err)
		}
		if _, ok := links(t, ns)["bgtap9"]; ok {
			t.Errorf("bgtap9 still present")
		}
	})

	t.Run("Teardown leaves nothing", func(t *testing.T) {
		n, err := m.AcquireTap(ctx, "fedcba9876543210fedcba9876543210", nextGuestIP())
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Teardown(ctx); err == nil {
			t.Errorf("Teardown with %s in use = nil, want refusal", n)
		}
		if err := m.ReleaseTap(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := m.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		for name := range links(t, ns) {
			if ManagedName(name) {
				t.Errorf("link %s left after Teardown", name)
			}
		}
		if got := tableChains(t, ns, "bgtest0"); got != nil {
			t.Errorf("table inet banger_bgtest0 left after Teardown: chains %q", got)
		}
		if err := m.Teardown(ctx); err != nil {
			t.Errorf("second Teardown: %v", err)
		}
	})
}

// TestNAT_Netns builds, inside throwaway namespaces, a host (bridge, NAT
// and the guest firewall from Ensure), a guest on the bridge (a veth end
// in its own namespace standing in for a VM's tap) and an outside world
// behind a second veth, and checks what a guest can and cannot reach.
func TestNAT_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host, guest, world := testenv.NewNetns(t), testenv.NewNetns(t), testenv.NewNetns(t)

	m := New(Config{Bridge: "bgnat0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24")}, Direct{NetNS: host.Path}, testLogger(t))
	defer m.Close()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		ns   *testenv.Netns
		argv string
	}{
		{host, "ip link add bgveth0 type veth peer name eth0 netns " + guest.Name},
		{host, "ip link set bgveth0 master bgnat0 up"},
		{guest, "ip addr add 192.0.2.2/24 dev eth0"},
		{guest, "ip link set eth0 up"},
		{guest, "ip route add default via 192.0.2.1"},
		{host, "ip link add bgup0 type veth peer name eth0 netns " + world.Name},
		{host, "ip addr add 203.0.113.1/24 dev bgup0"},
		{host, "ip link set bgup0 up"},
		// The world has no route back to the guests: only masquerading
		// lets replies find their way.
		{world, "ip addr add 203.0.113.2/24 dev eth0"},
		{world, "ip link set eth0 up"},
	} {
		if _, err := step.ns.Run(ctx, strings.Fields(step.argv)...); err != nil {
			t.Fatal(err)
		}
	}

	// Listeners that answer with the peer address they see.
	listen := func(ns *testenv.Netns, addr string) {
		t.Helper()
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(c.RemoteAddr().(*net.TCPAddr).IP.String()))
				c.Close()
			}
		}()
	}
	listen(world, "203.0.113.2:8000")
	listen(host, "192.0.2.1:53")
	listen(host, "192.0.2.1:8080")
	listen(host, "203.0.113.1:8080")
	var udp net.PacketConn
	if err := host.Do(func() (err error) { udp, err = net.ListenPacket("udp", "192.0.2.1:53"); return err }); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udp.WriteTo(buf[:n], from)
		}
	}()

	// dial connects from ns to addr and returns what the listener said.
	dial := func(ns *testenv.Netns, addr string) (string, error) {
		var got []byte
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			got = buf[:n]
			if errors.Is(err, net.ErrClosed) {
				err = nil
			}
			return err
		})
		return string(got), err
	}

	t.Run("guest reaches the world masqueraded", func(t *testing.T) {
		got, err := dial(guest, "203.0.113.2:8000")
		if err != nil {
			t.Fatalf("guest -> world: %v", err)
		}
		if got != "203.0.113.1" {
			t.Errorf("world saw the guest as %q, want the host's address 203.0.113.1", got)
		}
	})
	t.Run("guest reaches the gateway's DNS over tcp and udp", func(t *testing.T) {
		got, err := dial(guest, "192.0.2.1:53")
		if err != nil {
			t.Fatalf("guest -> gateway tcp/53: %v", err)
		}
		if got != "192.0.2.2" {
			t.Errorf("gateway saw the guest as %q, want 192.0.2.2 (no NAT on the bridge)", got)
		}
		err = guest.Do(func() error {
			c, err := net.Dial("udp", "192.0.2.1:53")
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			if err == nil && string(buf[:n]) != "ping" {
				t.Errorf("udp/53 echoed %q", buf[:n])
			}
			return err
		})
		if err != nil {
			t.Errorf("guest -> gateway udp/53: %v", err)
		}
	})
	t.Run("guest reaches no other host service", func(t *testing.T) {
		for _, addr := range []string{"192.0.2.1:8080", "203.0.113.1:8080"} {
			if got, err := dial(guest, addr); err == nil {
				t.Errorf("guest reached host service %s (answered %q)", addr, got)
			}
		}
		// The same service is up: the world (not a guest) reaches it.
		if _, err := dial(world, "203.0.113.1:8080"); err != nil {
			t.Errorf("control: world -> host 203.0.113.1:8080: %v", err)
		}
	})
	// Wall 2: a guest reaches the internet through the default route, and
	// nothing private: not RFC 1918 space even when it lies behind the
	// default route, not the metadata service, not a network the host
	// routes through another interface (a LAN, a VPN, a container bridge).
	t.Run("guest reaches only public destinations", func(t *testing.T) {
		lan := testenv.NewNetns(t)
		for _, step := range []struct {
			ns   *testenv.Netns
			argv string
		}{
			{host, "ip route add default via 203.0.113.2 dev bgup0"},
			{world, "ip addr add 198.51.100.2/24 dev eth0"},
			{world, "ip addr add 169.254.169.254/32 dev eth0"},
			{world, "ip addr add 172.16.5.2/24 dev eth0"},
			{world, "ip route add 198.18.0.0/15 via 203.0.113.1"}, // keep replies local
			{host, "ip link add bglan0 type veth peer name eth0 netns " + lan.Name},
			{host, "ip addr add 100.100.0.1/24 dev bglan0"}, // a VPN-like CGNAT address
			{host, "ip addr add 198.51.200.1/24 dev bglan0"},
			{host, "ip link set bglan0 up"},
			{lan, "ip addr add 198.51.200.2/24 dev eth0"},
			{lan, "ip addr add 100.100.0.2/24 dev eth0"},
			{lan, "ip link set eth0 up"},
		} {
			if _, err := step.ns.Run(ctx, strings.Fields(step.argv)...); err != nil {
				t.Fatal(err)
			}
		}
		listen(world, "198.51.100.2:8000")
		listen(world, "169.254.169.254:8000")
		listen(world, "172.16.5.2:8000")
		listen(lan, "198.51.200.2:8000") // public-looking, but not via the default route
		listen(lan, "100.100.0.2:8000")
		// The firewall follows the host's networks as they are when a VM
		// starts (Ensure runs then).
		if err := m.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := dial(guest, "198.51.100.2:8000"); err != nil || got != "203.0.113.1" {
			t.Errorf("guest -> public 198.51.100.2: %q, %v; want it reached, masqueraded", got, err)
		}
		for _, addr := range []string{"169.254.169.254:8000", "172.16.5.2:8000", "198.51.200.2:8000", "100.100.0.2:8000"} {
			if got, err := dial(guest, addr); err == nil {
				t.Errorf("guest reached %s (answered %q)", addr, got)
			}
			// The listener is up: the host itself reaches it.
			if _, err := dial(host, addr); err != nil {
				t.Errorf("control: host -> %s: %v", addr, err)
			}
		}

		// The user's exception opens exactly what it names.
		m2 := New(Config{Bridge: "bgnat0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
			Allow: []netip.Prefix{netip.MustParsePrefix("172.16.5.2/32")}}, Direct{NetNS: host.Path}, testLogger(t))
		defer m2.Close()
		if err := m2.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := dial(guest, "172.16.5.2:8000"); err != nil {
			t.Errorf("guest -> allowed 172.16.5.2: %v", err)
		}
		if got, err := dial(guest, "169.254.169.254:8000"); err == nil {
			t.Errorf("an allow of 172.16.5.2 opened the metadata service (answered %q)", got)
		}
	})
	t.Run("the world cannot open connections to the guest", func(t *testing.T) {
		listen(guest, "192.0.2.2:9000")
		if _, err := world.Run(ctx, "ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.1"); err != nil {
			t.Fatal(err)
		}
		if got, err := dial(world, "192.0.2.2:9000"); err == nil {
			t.Errorf("world reached the guest's port 9000 (answered %q)", got)
		}
		// The host itself may (ssh, the agent): replies are allowed back.
		if _, err := dial(host, "192.0.2.2:9000"); err != nil {
			t.Errorf("host -> guest: %v", err)
		}
	})
}

// TestSudo_PrivMain_Netns runs the whole privileged path: Sudo builds the
// argv, a stand-in sudo runs it inside a test namespace, the test binary
// acting as bangerd parses it with PrivMain and applies it with Direct.
func TestSudo_PrivMain_Netns(t *testing.T) {
	requireNetTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := testenv.NewNetns(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sudo := filepath.Join(t.TempDir(), "sudo")
	script := "#!/bin/sh\n" +
		"[ \"$1\" = -n ] || { echo 'expected -n' >&2; exit 99; }\nshift\n" +
		"exec ip netns exec " + ns.Name + " env " + privEnv + "=1 \"$@\"\n"
	if err := os.WriteFile(sudo, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := Sudo{Bangerd: self, SudoPath: sudo}
	subnet := netip.MustParsePrefix("198.51.100.0/24")

	if err := s.EnsureBridge(ctx, "bgsudo0", subnet, "banger:0123abcd"); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureTap(ctx, "bgtap0", "bgsudo0", 4321, 4322, false); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyFirewall(ctx, Firewall{Bridge: "bgsudo0", Subnet: subnet, DNSPort: 40000}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableForwarding(ctx); err != nil {
		t.Fatal(err)
	}
	ls := links(t, ns)
	if br := ls["bgsudo0"]; br.LinkInfo.Kind != "bridge" || len(br.AddrInfo) == 0 || br.AddrInfo[0].Local != "198.51.100.1" {
		t.Errorf("bridge through sudo: %+v", br)
	}
	if tap := ls["bgtap0"]; tap.Master != "bgsudo0" || fmt.Sprint(tap.LinkInfo.Data.User) != "4321" {
		t.Errorf("tap through sudo: master %q owner %v", tap.Master, tap.LinkInfo.Data.User)
	}
	if got := tableChains(t, ns, "bgsudo0"); !slices.Equal(got, []string{"forward", "input", "postrouting", "prerouting"}) {
		t.Errorf("table through sudo: chains %q", got)
	}

	// Hostile or foreign names are rejected by PrivMain with exit code 2
	// and touch nothing.
	for _, name := range []string{"lo", "-x", "bgtap0; ip link del bgsudo0", "$(id)"} {
		err := s.DeleteLink(ctx, name)
		var ce *cmdrun.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "exit status 2") || !strings.Contains(err.Error(), "rejected") {
			t.Errorf("DeleteLink(%q) = %v, want a rejection (exit status 2)", name, err)
		}
	}
	if _, ok := links(t, ns)["lo"]; !ok {
		t.Errorf("lo deleted")
	}

	if err := s.DeleteLink(ctx, "bgtap0"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLink(ctx, "bgsudo0"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveFirewall(ctx, "bgsudo0"); err != nil {
		t.Fatal(err)
	}
	for name := range links(t, ns) {
		if ManagedName(name) {
			t.Errorf("link %s left", name)
		}
	}
	if got := tableChains(t, ns, "bgsudo0"); got != nil {
		t.Errorf("table left: %q", got)
	}
}
