package hostnet

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestConflicts(t *testing.T) {
	cfg := testConfig() // bgtest0, 192.0.2.0/24, instance 0123abcd
	gw := GatewayPrefix(cfg.Subnet)
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		st   State
		want string // in the error; "" for none
	}{
		{"nothing there", State{}, ""},
		{"default route", State{Routes: []Route{{pfx("0.0.0.0/0"), "eth0"}}}, ""},
		{"own bridge's route", State{Routes: []Route{{pfx("192.0.2.0/24"), "bgtest0"}}}, ""},
		{"disjoint route", State{Routes: []Route{{pfx("192.0.3.0/24"), "eth1"}}}, ""},
		{"same subnet elsewhere", State{Routes: []Route{{pfx("192.0.2.0/24"), "bg99"}}},
			"network.subnet 192.0.2.0/24 overlaps 192.0.2.0/24 on bg99; set [network] subnet"},
		{"wider prefix elsewhere", State{Routes: []Route{{pfx("192.0.0.0/16"), "eth1"}}},
			"network.subnet 192.0.2.0/24 overlaps 192.0.0.0/16 on eth1; set [network] subnet"},
		{"narrower prefix elsewhere", State{Routes: []Route{{pfx("192.0.2.128/25"), "wg0"}}},
			"overlaps 192.0.2.128/25 on wg0"},
		{"own marked bridge", State{Links: []Link{{Name: "bgtest0", Kind: "bridge", Alias: "banger:0123abcd"}}}, ""},
		{"another instance's bridge", State{Links: []Link{{Name: "bgtest0", Kind: "bridge", Alias: "banger:feedbeef", Addrs: []netip.Prefix{gw}}}},
			"network.bridge bgtest0 belongs to another banger instance (banger:feedbeef"},
		{"unmarked bridge with the gateway", State{Links: []Link{{Name: "bgtest0", Kind: "bridge", Addrs: []netip.Prefix{gw}}}}, ""},
		{"unmarked bridge without the gateway", State{Links: []Link{{Name: "bgtest0", Kind: "bridge", Addrs: []netip.Prefix{pfx("198.51.100.1/24")}}}},
			"network.bridge bgtest0 exists unmarked and without the gateway address 192.0.2.1/24"},
		{"foreign alias", State{Links: []Link{{Name: "bgtest0", Kind: "bridge", Alias: "lab bridge", Addrs: []netip.Prefix{gw}}}},
			`network.bridge bgtest0 is not banger's (alias "lab bridge"); set [network] bridge`},
		{"not a bridge", State{Links: []Link{{Name: "bgtest0", Kind: "veth"}}},
			"network.bridge bgtest0 exists as a veth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Conflicts(tc.st, cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Conflicts = %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Conflicts = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestManager_EnsureRefusesConflicts(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	h.addLink(Link{Name: "bgtest0", Kind: "bridge", Up: true, Alias: "banger:feedbeef", Addrs: []netip.Prefix{GatewayPrefix(testConfig().Subnet)}})
	m := New(testConfig(), h, nil)
	if err := m.Check(ctx); err == nil || !strings.Contains(err.Error(), "another banger instance") {
		t.Errorf("Check = %v, want the bridge refused", err)
	}
	if err := m.Ensure(ctx); err == nil || !strings.Contains(err.Error(), "set [network] bridge") {
		t.Errorf("Ensure = %v, want the bridge refused", err)
	}
	if calls := h.Calls(); len(calls) != 0 {
		t.Errorf("a refused Ensure acted: %q", calls)
	}

	// An unmarked bridge of an earlier banger with the gateway address
	// is adopted and marked.
	h = newFakeHost()
	h.addLink(Link{Name: "bgtest0", Kind: "bridge", Up: true, Addrs: []netip.Prefix{GatewayPrefix(testConfig().Subnet)}})
	m = New(testConfig(), h, nil)
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Inspect(ctx); st.Links[0].Alias != "banger:0123abcd" {
		t.Errorf("adopted bridge alias %q, want banger:0123abcd", st.Links[0].Alias)
	}
}
