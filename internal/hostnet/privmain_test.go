package hostnet

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePriv_Valid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want PrivRequest
		call string
	}{
		{[]string{"ensure-bridge", "banger0", "10.77.0.0/24"},
			PrivRequest{Op: OpEnsureBridge, Name: "banger0", Subnet: netip.MustParsePrefix("10.77.0.0/24")},
			"EnsureBridge banger0 10.77.0.0/24"},
		{[]string{"ensure-tap", "bgtap3", "banger0", "1000", "1000"},
			PrivRequest{Op: OpEnsureTap, Name: "bgtap3", Bridge: "banger0", UID: 1000, GID: 1000},
			"EnsureTap bgtap3 banger0 1000 1000"},
		{[]string{"ensure-tap", "bgtap0", "bg0", "0", "4294967294"},
			PrivRequest{Op: OpEnsureTap, Name: "bgtap0", Bridge: "bg0", UID: 0, GID: 4294967294},
			"EnsureTap bgtap0 bg0 0 4294967294"},
		{[]string{"delete-link", "bgtap12"}, PrivRequest{Op: OpDeleteLink, Name: "bgtap12"}, "DeleteLink bgtap12"},
		{[]string{"delete-link", "banger0"}, PrivRequest{Op: OpDeleteLink, Name: "banger0"}, "DeleteLink banger0"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "-"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "10.1.0.0/16,192.168.1.10/32", "-"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.1.10/32")}},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"apply-firewall", "banger0", "192.0.2.0/24", "-", "bgtap0=192.0.2.2,bgtap7=192.0.2.9"},
			PrivRequest{Op: OpApplyFirewall, Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"),
				Guests: []Guest{{"bgtap0", netip.MustParseAddr("192.0.2.2")}, {"bgtap7", netip.MustParseAddr("192.0.2.9")}}},
			"ApplyFirewall banger0 192.0.2.0/24"},
		{[]string{"remove-firewall"}, PrivRequest{Op: OpRemoveFirewall}, "RemoveFirewall"},
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

func TestParsePriv_Rejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no op", nil, "missing operation"},
		{"unknown op", []string{"rm", "-rf", "/"}, `unknown operation "rm"`},
		{"op as flag", []string{"--help"}, "unknown operation"},
		{"too few", []string{"ensure-tap", "bgtap0", "banger0", "1000"}, "takes 4 arguments, got 3"},
		{"too many", []string{"delete-link", "bgtap0", "bgtap1"}, "takes 1 arguments, got 2"},
		{"extra on no-arg op", []string{"remove-firewall", "x"}, "takes 0 arguments"},
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
		{"long flag as name", []string{"ensure-bridge", "--force", "10.77.0.0/24"}, "not an interface name"},
		{"no banger prefix", []string{"delete-link", "eth0"}, "not a banger interface"},
		{"foreign bridge", []string{"ensure-bridge", "docker0", "10.77.0.0/24"}, "not a banger interface"},
		{"tap not bgtapN", []string{"ensure-tap", "banger1", "banger0", "1000", "1000"}, "must be bgtap followed by a number"},
		{"tap leading zero", []string{"ensure-tap", "bgtap01", "banger0", "1000", "1000"}, "must be bgtap"},
		{"tap bridge foreign", []string{"ensure-tap", "bgtap0", "eth0", "1000", "1000"}, "not a banger interface"},
		{"uid name", []string{"ensure-tap", "bgtap0", "banger0", "root", "0"}, `uid "root": not a numeric id`},
		{"uid negative", []string{"ensure-tap", "bgtap0", "banger0", "-1", "0"}, "not a numeric id"},
		{"uid plus", []string{"ensure-tap", "bgtap0", "banger0", "+1000", "0"}, "not a numeric id"},
		{"uid leading zero", []string{"ensure-tap", "bgtap0", "banger0", "01000", "0"}, "not a numeric id"},
		{"uid -1 as u32", []string{"ensure-tap", "bgtap0", "banger0", "4294967295", "0"}, "not a numeric id"},
		{"uid too big", []string{"ensure-tap", "bgtap0", "banger0", "4294967296", "0"}, "not a numeric id"},
		{"gid injection", []string{"ensure-tap", "bgtap0", "banger0", "0", "0;id"}, `gid "0;id": not a numeric id`},
		{"subnet garbage", []string{"ensure-bridge", "banger0", "$(id)"}, "not a canonical prefix"},
		{"subnet no length", []string{"ensure-bridge", "banger0", "10.77.0.0"}, "not a canonical prefix"},
		{"subnet host bits", []string{"apply-firewall", "banger0", "10.77.0.1/24", "-", "-"}, "host bits are set"},
		{"subnet too wide", []string{"apply-firewall", "banger0", "0.0.0.0/0", "-", "-"}, "length must be between"},
		{"subnet ipv6", []string{"apply-firewall", "banger0", "fd00::/64", "-", "-"}, "must be an IPv4 prefix"},
		{"subnet spaces", []string{"apply-firewall", "banger0", " 10.77.0.0/24", "-", "-"}, "not a canonical prefix"},
		{"nft injection in bridge", []string{"apply-firewall", `banger0" accept`, "10.77.0.0/24", "-", "-"}, "not an interface name"},
		{"allow injection", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.0/8 } accept; {", "-"}, "canonical IPv4 network prefix"},
		{"allow host bits", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.1/8", "-"}, "canonical IPv4 network prefix"},
		{"allow ipv6", []string{"apply-firewall", "banger0", "10.77.0.0/24", "fd00::/8", "-"}, "canonical IPv4 network prefix"},
		{"allow empty element", []string{"apply-firewall", "banger0", "10.77.0.0/24", "10.0.0.0/8,", "-"}, "canonical IPv4 network prefix"},
		{"allow missing", []string{"apply-firewall", "banger0", "10.77.0.0/24"}, "takes 4 arguments"},
		{"guests missing", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-"}, "takes 4 arguments"},
		{"guest nft injection", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", `bgtap0=10.77.0.2 } ; flush ruleset ; {`}, "want TAP=IPV4"},
		{"guest quote in tap", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", `bgtap0" . 00:00=10.77.0.2`}, "want TAP=IPV4"},
		{"guest other interface", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "eth0=10.77.0.2"}, "want TAP=IPV4"},
		{"guest ipv6", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=fd00::2"}, "want TAP=IPV4"},
		{"guest address leading zero", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.02"}, "want TAP=IPV4"},
		{"guest outside the subnet", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.78.0.2"}, "not a guest address"},
		{"guest claims the gateway", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.1"}, "not a guest address"},
		{"guest tap twice", []string{"apply-firewall", "banger0", "10.77.0.0/24", "-", "bgtap0=10.77.0.2,bgtap0=10.77.0.3"}, "bound twice"},
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
	code := privMain(context.Background(), []string{"ensure-tap", "bgtap0", "banger0", "0", "0"}, &stderr, h)
	if code != privFailed {
		t.Errorf("privMain = %d, want %d", code, privFailed)
	}
	if !strings.Contains(stderr.String(), "bridge banger0 missing") {
		t.Errorf("stderr = %q, want the cause", stderr.String())
	}
}
