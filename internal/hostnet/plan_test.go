package hostnet

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestValidIfName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		valid   bool
		managed bool
	}{
		{"banger0", true, true},
		{"bgtap0", true, true},
		{"bg0", true, true},
		{"bgtap1234567890", true, true},    // 15 bytes
		{"bgtap12345678901", false, false}, // 16 bytes
		{"eth0", true, false},
		{"br-1.2_x", true, false},
		{"", false, false},
		{".", false, false},
		{"..", false, false},
		{"-x", false, false},
		{"--help", false, false},
		{"bg/../x", false, false},
		{"../bgtap0", false, false},
		{"bgtap0; rm -rf /", false, false},
		{"bg$(id)", false, false},
		{"bg`id`", false, false},
		{"bg tap", false, false},
		{"bgtap0\n", false, false},
		{"bgtäp", false, false},
		{"BANGER0", true, false},
	} {
		if got := ValidIfName(tc.name); got != tc.valid {
			t.Errorf("ValidIfName(%q) = %v, want %v", tc.name, got, tc.valid)
		}
		if got := ManagedName(tc.name); got != tc.managed {
			t.Errorf("ManagedName(%q) = %v, want %v", tc.name, got, tc.managed)
		}
	}
}

func TestTapName(t *testing.T) {
	for _, id := range []string{"0123456789abcdef0123456789abcdef", "ffffffffffff", "000000000000aaaa"} {
		n, err := TapName(id)
		if err != nil {
			t.Fatalf("TapName(%q): %v", id, err)
		}
		if n != "bgt"+id[:12] || len(n) > MaxIfNameLen || !ManagedName(n) || !ValidTapName(n) {
			t.Errorf("TapName(%q) = %q: not bgt+12 hex, a managed and valid tap name within %d bytes", id, n, MaxIfNameLen)
		}
		if got, ok := TapVMID(n); !ok || got != id[:12] {
			t.Errorf("TapVMID(%q) = %q, %v; want %q", n, got, ok, id[:12])
		}
	}
	for _, bad := range []string{"", "0123456789a", "0123456789AB", "g123456789ab", "-123456789ab", "../456789abcd"} {
		if n, err := TapName(bad); err == nil {
			t.Errorf("TapName(%q) = %q, want an error", bad, n)
		}
	}
	// Numbered pool taps of earlier daemons stay valid, so a VM running
	// across an upgrade keeps its tap; they carry no VM id.
	for _, legacy := range []string{"bgtap0", "bgtap7", "bgtap1234567890"} {
		if !ValidTapName(legacy) {
			t.Errorf("ValidTapName(%q) = false, want true (legacy)", legacy)
		}
		if _, ok := TapVMID(legacy); ok {
			t.Errorf("TapVMID(%q) ok, want not a VM-named tap", legacy)
		}
	}
	for _, bad := range []string{"bgtap", "bgtap01", "bgtap-1", "bgtap+1", "bgtapx", "tap0", "bgtap0 ", "bgtap99999999999", "banger0",
		"bgt0123456789a", "bgt0123456789abc", "bgt0123456789AB", "bgt0123456789a ", "bgtest0"} {
		if ValidTapName(bad) {
			t.Errorf("ValidTapName(%q) = true, want not a tap name", bad)
		}
	}
}

func TestMACForIP(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want string
	}{
		{"10.77.0.2", "06:b6:0a:4d:00:02"},
		{"192.0.2.254", "06:b6:c0:00:02:fe"},
		{"0.0.0.0", "06:b6:00:00:00:00"},
		{"::ffff:10.0.0.1", "06:b6:0a:00:00:01"},
	} {
		got := MACForIP(netip.MustParseAddr(tc.ip))
		if got.String() != tc.want {
			t.Errorf("MACForIP(%s) = %s, want %s", tc.ip, got, tc.want)
		}
		if got[0]&0x02 == 0 || got[0]&0x01 != 0 {
			t.Errorf("MACForIP(%s) = %s: not locally administered unicast", tc.ip, got)
		}
	}
	if got := MACForIP(netip.MustParseAddr("2001:db8::1")); got != nil {
		t.Errorf("MACForIP(IPv6) = %s, want nil", got)
	}
	// Distinct addresses give distinct MACs.
	seen := map[string]string{}
	for i := 0; i < 256; i++ {
		ip := netip.AddrFrom4([4]byte{10, 77, byte(i / 16), byte(i)})
		m := MACForIP(ip).String()
		if prev, dup := seen[m]; dup {
			t.Fatalf("MACForIP(%s) = MACForIP(%s) = %s", ip, prev, m)
		}
		seen[m] = ip.String()
	}
	var _ net.HardwareAddr = MACForIP(netip.MustParseAddr("10.0.0.1"))
}

func TestGatewayPrefix(t *testing.T) {
	for _, tc := range []struct{ subnet, pfx string }{
		{"10.77.0.0/24", "10.77.0.1/24"},
		{"192.0.2.0/29", "192.0.2.1/29"},
		{"172.16.0.0/16", "172.16.0.1/16"},
	} {
		s := netip.MustParsePrefix(tc.subnet)
		if got := GatewayPrefix(s).String(); got != tc.pfx {
			t.Errorf("GatewayPrefix(%s) = %s, want %s", tc.subnet, got, tc.pfx)
		}
	}
}

func TestMergePrefixes(t *testing.T) {
	got := mergePrefixes([]netip.Prefix{
		netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/24"), netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.1/32"),
	})
	want := "[10.0.0.0/8 192.0.2.0/24 198.51.100.1/32]"
	if fmt.Sprint(got) != want {
		t.Errorf("mergePrefixes = %v, want %v", got, want)
	}
}

func TestRuleset(t *testing.T) {
	for _, tc := range []struct {
		golden string
		fw     Firewall
	}{
		{"ruleset-default.nft", Firewall{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24")}},
		{"ruleset-doc.nft", Firewall{Bridge: "bgtest0", Subnet: netip.MustParsePrefix("192.0.2.0/28")}},
		{"ruleset-guests.nft", Firewall{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24"), Guests: []Guest{
			{"bgtap3", netip.MustParseAddr("10.77.0.9")}, {"bgtap0", netip.MustParseAddr("10.77.0.2")},
		}}},
		{"ruleset-allow.nft", Firewall{
			Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24"),
			Allow:    []netip.Prefix{netip.MustParsePrefix("192.168.1.10/32"), netip.MustParsePrefix("10.1.0.0/16")},
			HostNets: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.20.0.0/16")},
		}},
		{"ruleset-policed.nft", Firewall{
			Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24"), ProxyPort: 3129, DNSPort: 42069,
			Guests: []Guest{{"bgtap0", netip.MustParseAddr("10.77.0.2")}, {"bgtap1", netip.MustParseAddr("10.77.0.3")}},
			Policed: []Policed{
				{IP: netip.MustParseAddr("10.77.0.2"),
					Grants: []Grant{{netip.MustParsePrefix("203.0.113.0/24"), 5432, 5432, false}, {netip.MustParsePrefix("203.0.113.0/24"), 123, 123, true}},
					Passes: []Pass{{netip.MustParseAddr("198.51.100.10"), 1, 65535, false, 300 * time.Second}, {netip.MustParseAddr("198.51.100.10"), 443, 443, true, 60 * time.Second}}},
				{IP: netip.MustParseAddr("10.77.0.3")},
				{IP: netip.MustParseAddr("10.77.0.4"), Open: true},
			},
		}},
		// A second instance: its own tables, log group and DNS redirect.
		{"ruleset-instance.nft", Firewall{Bridge: "bg0123abcd", Subnet: netip.MustParsePrefix("10.200.7.0/24"), DNSPort: 42583,
			Guests:  []Guest{{"bgt0123456789ab", netip.MustParseAddr("10.200.7.2")}},
			Policed: []Policed{{IP: netip.MustParseAddr("10.200.7.2")}}}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			if err := tc.fw.Validate(); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, Ruleset(tc.fw))
		})
	}
	golden(t, "remove.nft", RemoveRuleset("banger0"))
	golden(t, "remove-instance.nft", RemoveRuleset("bg0123abcd"))
}

// rulesetCases are firewalls whose scripts nft must accept (see
// TestRuleset_NftAccepts_Netns).
func rulesetCases() []Firewall {
	return []Firewall{
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24")},
		{Bridge: "bg-a.b_c", Subnet: netip.MustParsePrefix("10.200.7.0/24"), DNSPort: 42583, ProxyPort: 3129,
			Guests:  []Guest{{"bgt0123456789ab", netip.MustParseAddr("10.200.7.2")}},
			Policed: []Policed{{IP: netip.MustParseAddr("10.200.7.2")}}},
	}
}

func TestTableName(t *testing.T) {
	for bridge, want := range map[string]string{
		"banger0":    "banger",
		"bg0123abcd": "banger_bg0123abcd",
		"banger1":    "banger_banger1",
		"bg-a":       "banger_bg_da",
		"bg_da":      "banger_bg__da",
		"bg.a":       "banger_bg_pa",
	} {
		if got := TableName(bridge); got != want {
			t.Errorf("TableName(%q) = %q, want %q", bridge, got, want)
		}
	}
	if RefusedLogGroupFor("banger0") != RefusedLogGroup {
		t.Errorf("the default bridge's log group moved: %d", RefusedLogGroupFor("banger0"))
	}
	if g := RefusedLogGroupFor("bg0123abcd"); g == RefusedLogGroup || g < RefusedLogGroup {
		t.Errorf("another bridge logs to group %d, want one after %d", g, RefusedLogGroup)
	}
}

func TestFirewall_Validate(t *testing.T) {
	for _, fw := range []Firewall{
		{Bridge: "eth0", Subnet: netip.MustParsePrefix("10.77.0.0/24")},
		{Bridge: `banger0" accept; #`, Subnet: netip.MustParsePrefix("10.77.0.0/24")},
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.77.0.1/24")},
		{Bridge: "banger0"},
	} {
		if err := fw.Validate(); err == nil {
			t.Errorf("%+v: Validate() = nil, want error", fw)
		}
	}
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}
