package hostnet

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParsePriv_Valid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want PrivRequest
		call string
	}{
		{[]string{"ensure-bridge", "banger0", "10.77.0.0/24", "banger:0123abcd"},
			PrivRequest{Op: OpEnsureBridge, Name: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24"), Mark: "banger:0123abcd"},
			"EnsureBridge banger0 10.77.0.0/24 banger:0123abcd"},
		{[]string{"ensure-tap", "bgtap3", "banger0", "1000", "1000", "isolated"},
			PrivRequest{Op: OpEnsureTap, Name: "bgtap3", Bridge: "banger0", UID: 1000, GID: 1000},
			"EnsureTap bgtap3 banger0 1000 1000"},
		{[]string{"ensure-tap", "bgtap5", "banger0", "1000", "1000", "shared"},
			PrivRequest{Op: OpEnsureTap, Name: "bgtap5", Bridge: "banger0", UID: 1000, GID: 1000, Shared: true},
			"EnsureTap bgtap5 banger0 1000 1000"},
		{[]string{"ensure-tap", "bgtap0", "bg0", "0", "4294967294", "isolated"},
			PrivRequest{Op: OpEnsureTap, Name: "bgtap0", Bridge: "bg0", UID: 0, GID: 4294967294},
			"EnsureTap bgtap0 bg0 0 4294967294"},
		{[]string{"delete-link", "bgtap12"}, PrivRequest{Op: OpDeleteLink, Name: "bgtap12"}, "DeleteLink bgtap12"},
		{[]string{"delete-link", "banger0"}, PrivRequest{Op: OpDeleteLink, Name: "banger0"}, "DeleteLink banger0"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "-", "0", "-", "0"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "10.1.0.0/16,192.168.1.10/32", "-", "0", "-", "0"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.1.10/32")}},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "bgtap0=192.0.2.2,bgtap7=192.0.2.9", "0", "-", "0"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Guests: []Guest{{"bgtap0", netip.MustParseAddr("192.0.2.2")}, {"bgtap7", netip.MustParseAddr("192.0.2.9")}}},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "bgtap0=192.0.2.2", "3129",
			"192.0.2.2=g203.0.113.0/24:443-443+g203.0.113.0/24:53-53/udp+p198.51.100.10:1-65535:300+p198.51.100.10:443-443:60/udp,192.0.2.3=,192.0.2.4=o", "5353"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Guests: []Guest{{"bgtap0", netip.MustParseAddr("192.0.2.2")}}, Port: 3129, DNSPort: 5353,
				Policed: []Policed{
					{IP: netip.MustParseAddr("192.0.2.2"),
						Grants: []Grant{{netip.MustParsePrefix("203.0.113.0/24"), 443, 443, false}, {netip.MustParsePrefix("203.0.113.0/24"), 53, 53, true}},
						Passes: []Pass{{netip.MustParseAddr("198.51.100.10"), 1, 65535, false, 300 * time.Second}, {netip.MustParseAddr("198.51.100.10"), 443, 443, true, 60 * time.Second}}},
					{IP: netip.MustParseAddr("192.0.2.3")},
					{IP: netip.MustParseAddr("192.0.2.4"), Open: true},
				}},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"remove-firewall", "banger0"}, PrivRequest{Op: OpRemoveFirewall, Bridge: "banger0"}, "RemoveFirewall banger0"},
		{[]string{"remove-firewall", "bg0123abcd"}, PrivRequest{Op: OpRemoveFirewall, Bridge: "bg0123abcd"}, "RemoveFirewall bg0123abcd"},
		{[]string{"enable-forwarding"}, PrivRequest{Op: OpEnableForwarding}, "EnableForwarding"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := ParsePriv(tc.args)
			if err != nil {
				t.Fatalf("ParsePriv: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParsePriv (-want +got):\n%s", diff)
			}
			// The request reaches the executor unchanged.
			h := newFakeHost()
			h.addLink(Link{Name: "banger0", Kind: "bridge"})
			h.addLink(Link{Name: "bg0", Kind: "bridge"})
			var stderr bytes.Buffer
			if code := privMain(context.Background(), tc.args, &stderr, h); code != privOK {
				t.Fatalf("privMain = %d, stderr %q", code, stderr.String())
			}
			if diff := cmp.Diff([]string{tc.call}, h.Calls()); diff != "" {
				t.Errorf("executor calls (-want +got):\n%s", diff)
			}
		})
	}
}

// fw6 is an apply-firewall argv for subnet 192.0.2.0/24 with the given
// guests, proxy port and policed arguments and no DNS port.
func fw6(guests, port, policed string) []string {
	return []string{"apply-firewall", "banger0", "192.0.2.0/24", "-", guests, port, policed, "0"}
}

func TestParsePriv_Rejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no op", nil, "missing operation"},
		{"unknown op", []string{"rm", "-rf", "/"}, `unknown operation "rm"`},
		{"op as flag", []string{"--help"}, "unknown operation"},
		{"too few", []string{"ensure-tap", "bgtap0", "banger0", "1000"}, "takes 5 arguments, got 3"},
		{"policed outside the subnet", fw6("-", "0", "10.0.0.2="), "not a guest address"},
		{"policed gateway", fw6("-", "0", "192.0.2.1="), "not a guest address"},
		{"policed twice", fw6("-", "0", "192.0.2.2=,192.0.2.2="), "listed twice"},
		{"policed injection", fw6("-", "0", "192.0.2.2=g0.0.0.0/0:1-65535 accept"), "policed element"},
		{"grant not canonical", fw6("-", "0", "192.0.2.2=g203.0.113.7/24:1-2"), "policed element"},
		{"grant port zero", fw6("-", "0", "192.0.2.2=g203.0.113.0/24:0-2"), "policed element"},
		{"grant reversed ports", fw6("-", "0", "192.0.2.2=g203.0.113.0/24:9-2"), "policed element"},
		{"pass ipv6", fw6("-", "0", "192.0.2.2=p2001:db8::1:1-2:30"), "policed element"},
		{"pass forever", fw6("-", "0", "192.0.2.2=p198.51.100.1:1-2:999999999"), "policed element"},
		{"pass no ttl", fw6("-", "0", "192.0.2.2=p198.51.100.1:1-2:0"), "policed element"},
		{"unknown element", fw6("-", "0", "192.0.2.2=x1"), "policed element"},
		{"open twice", fw6("-", "0", "192.0.2.2=o+o"), "policed element"},
		{"open after a grant", fw6("-", "0", "192.0.2.2=g203.0.113.0/24:1-2+o"), "policed element"},
		{"proxy port word", fw6("-", "http", "-"), "proxy port"},
		{"proxy port too big", fw6("-", "65536", "-"), "proxy port"},
		{"port mode missing", []string{"ensure-tap", "bgtap0", "banger0", "1000", "1000"}, "takes 5 arguments, got 4"},
		{"port mode unknown", []string{"ensure-tap", "bgtap0", "banger0", "1000", "1000", "open"}, `port mode "open"`},
		{"port mode case", []string{"ensure-tap", "bgtap0", "banger0", "1000", "1000", "Shared"}, `port mode "Shared"`},
		{"too many", []string{"delete-link", "bgtap0", "bgtap1"}, "takes 1 arguments, got 2"},
		{"extra on no-arg op", []string{"enable-forwarding", "x"}, "takes 0 arguments"},
		{"remove-firewall without bridge", []string{"remove-firewall"}, "takes 1 arguments, got 0"},
		{"remove-firewall foreign bridge", []string{"remove-firewall", "docker0"}, "not a banger interface"},
		{"remove-firewall table name", []string{"remove-firewall", "banger; flush ruleset"}, "not an interface name"},
		{"dns port word", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "-", "0", "-", "dns"}, "dns port"},
		{"dns port too big", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "-", "0", "-", "70000"}, "dns port"},
		{"dns port leading zero", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "-", "0", "-", "053"}, "dns port"},
		{"mark missing", []string{"ensure-bridge", "banger0", "10.77.0.0/24"}, "takes 3 arguments, got 2"},
		{"mark foreign", []string{"ensure-bridge", "banger0", "10.77.0.0/24", "docker:0123abcd"}, `mark "docker:0123abcd"`},
		{"mark short", []string{"ensure-bridge", "banger0", "10.77.0.0/24", "banger:0123"}, "mark"},
		{"mark upper", []string{"ensure-bridge", "banger0", "10.77.0.0/24", "banger:0123ABCD"}, "mark"},
		{"mark injection", []string{"ensure-bridge", "banger0", "10.77.0.0/24", "banger:0123abcd\nx"}, "mark"},
		{"shell separator", []string{"delete-link", "bgtap0; rm -rf /"}, "not an interface name"},
		{"command substitution", []string{"delete-link", "bg$(id)"}, "not an interface name"},
		{"backticks", []string{"delete-link", "bg`id`"}, "not an interface name"},
		{"path traversal", []string{"delete-link", "../bgtap0"}, "not an interface name"},
		{"dot", []string{"delete-link", "."}, "not an interface name"},
		{"dotdot", []string{"delete-link", ".."}, "not an interface name"},
		{"too long", []string{"delete-link", "bgtap1234567890x"}, "not an interface name"},
		{"empty", []string{"delete-link", ""}, "not an interface name"},
		{"newline", []string{"delete-link", "bgtap0\nbgtap1"}, "not an interface name"},
		{"flag as name", []string{"delete-link", "-x"}, "not an interface name"},
		{"long flag as name", []string{"ensure-bridge", "--force", "10.77.0.0/24", "banger:0123abcd"}, "not an interface name"},
		{"no banger prefix", []string{"delete-link", "eth0"}, "not a banger interface"},
		{"foreign bridge", []string{"ensure-bridge", "docker0", "10.77.0.0/24", "banger:0123abcd"}, "not a banger interface"},
		{"tap not bgtapN", []string{"ensure-tap", "banger1", "banger0", "1000", "1000", "isolated"}, "must be bgt followed by 12 hex digits"},
		{"tap leading zero", []string{"ensure-tap", "bgtap01", "banger0", "1000", "1000", "isolated"}, "must be bgt"},
		{"tap bridge foreign", []string{"ensure-tap", "bgtap0", "eth0", "1000", "1000", "isolated"}, "not a banger interface"},
		{"uid name", []string{"ensure-tap", "bgtap0", "banger0", "root", "0", "isolated"}, `uid "root": not a numeric id`},
		{"uid negative", []string{"ensure-tap", "bgtap0", "banger0", "-1", "0", "isolated"}, "not a numeric id"},
		{"uid plus", []string{"ensure-tap", "bgtap0", "banger0", "+1000", "0", "isolated"}, "not a numeric id"},
		{"uid leading zero", []string{"ensure-tap", "bgtap0", "banger0", "01000", "0", "isolated"}, "not a numeric id"},
		{"uid -1 as u32", []string{"ensure-tap", "bgtap0", "banger0", "4294967295", "0", "isolated"}, "not a numeric id"},
		{"uid too big", []string{"ensure-tap", "bgtap0", "banger0", "4294967296", "0", "isolated"}, "not a numeric id"},
		{"gid injection", []string{"ensure-tap", "bgtap0", "banger0", "0", "0;id", "isolated"}, `gid "0;id": not a numeric id`},
		{"subnet garbage", []string{"ensure-bridge", "banger0", "$(id)", "banger:0123abcd"}, "not a canonical prefix"},
		{"subnet no length", []string{"ensure-bridge", "banger0", "10.77.0.0", "banger:0123abcd"}, "not a canonical prefix"},
		{"subnet host bits", []string{"apply-firewall", "banger0", "10.77.0.1/24", "-", "-", "0", "-", "0"}, "host bits are set"},
		{"subnet too wide", []string{"apply-firewall", "banger0", "0.0.0.0/0", "-", "-", "0", "-", "0"}, "length must be between"},
		{"subnet ipv6", []string{"apply-firewall", "banger0", "fd00::/64", "-", "-", "0", "-", "0"}, "must be an IPv4 prefix"},
		{"subnet spaces", []string{"apply-firewall", "banger0", " 10.77.0.0/24", "-", "-", "0", "-", "0"}, "not a canonical prefix"},
		{"nft injection in bridge", []string{"apply-firewall", `banger0" accept`, "10.77.0.0/24", "-", "-", "0", "-", "0"}, "not an interface name"},
		{"allow injection", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.0/8 } accept; {", "-", "0", "-", "0"}, "canonical IPv4 network prefix"},
		{"allow host bits", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.1/8", "-", "0", "-", "0"}, "canonical IPv4 network prefix"},
		{"allow ipv6", []string{"apply-firewall", "banger0", "10.77.0.0/24", "fd00::/8", "-", "0", "-", "0"}, "canonical IPv4 network prefix"},
		{"allow empty element", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.0/8,", "-", "0", "-", "0"}, "canonical IPv4 network prefix"},
		{"allow missing", []string{"apply-firewall", "banger0", "10.77.0.0/24"}, "takes 7 arguments"},
		{"guests missing", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-"}, "takes 7 arguments"},
		{"guest nft injection", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", `bgtap0=10.77.0.2 } ; flush ruleset ; {`, "0", "-", "0"}, "want TAP=IPV4"},
		{"guest quote in tap", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", `bgtap0" . 00:00=10.77.0.2`, "0", "-", "0"}, "want TAP=IPV4"},
		{"guest other interface", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "eth0=10.77.0.2", "0", "-", "0"}, "want TAP=IPV4"},
		{"guest ipv6", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=fd00::2", "0", "-", "0"}, "want TAP=IPV4"},
		{"guest address leading zero", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.02", "0", "-", "0"}, "want TAP=IPV4"},
		{"guest outside the subnet", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.78.0.2", "0", "-", "0"}, "not a guest address"},
		{"guest claims the gateway", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.1", "0", "-", "0"}, "not a guest address"},
		{"guest tap twice", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.2,bgtap0=10.77.0.3", "0", "-", "0"}, "bound twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePriv(tc.args)
			if err == nil || !errors.Is(err, ErrPrivUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParsePriv(%q) = %v, want a rejection containing %q", tc.args, err, tc.want)
			}
			h := newFakeHost()
			var stderr bytes.Buffer
			if code := privMain(context.Background(), tc.args, &stderr, h); code != privUsage {
				t.Errorf("privMain = %d, want %d", code, privUsage)
			}
			if calls := h.Calls(); len(calls) > 0 {
				t.Errorf("rejected request reached the executor: %q", calls)
			}
			if !strings.HasPrefix(stderr.String(), "bangerd priv: rejected: ") {
				t.Errorf("stderr = %q, want a clear rejection", stderr.String())
			}
		})
	}
}

func TestPrivMain_OperationFailure(t *testing.T) {
	h := newFakeHost() // no bridge: EnsureTap fails
	var stderr bytes.Buffer
	code := privMain(context.Background(), []string{"ensure-tap", "bgtap0", "banger0", "0", "0", "isolated"}, &stderr, h)
	if code != privFailed {
		t.Errorf("privMain = %d, want %d", code, privFailed)
	}
	if !strings.Contains(stderr.String(), "bridge banger0 missing") {
		t.Errorf("stderr = %q, want the cause", stderr.String())
	}
}
