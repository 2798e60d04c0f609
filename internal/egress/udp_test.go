package egress

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"banger/internal/hostnet"
)

// recordingFirewall keeps what the engine asked of it.
type recordingFirewall struct {
	policed *hostnet.Policed
	passes  []hostnet.Pass
}

func (f *recordingFirewall) Police(_ context.Context, _ netip.Addr, p *hostnet.Policed) error {
	f.policed = p
	return nil
}

func (f *recordingFirewall) AddPasses(_ context.Context, _ netip.Addr, ps []hostnet.Pass) error {
	f.passes = append(f.passes, ps...)
	return nil
}

// TestRule_udp: /udp rules open UDP (grants and learned passes) and never
// let a name through the proxy, which judges TCP only.
func TestRule_udp(t *testing.T) {
	for in, want := range map[string]string{
		"good.test:443/udp": "good.test:443/udp", "GOOD.test:443/TCP": "good.test:443",
		"203.0.113.0/24:53/udp": "203.0.113.0/24:53/udp", "203.0.113.7/udp": "203.0.113.7/udp",
	} {
		r, err := ParseRule(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRule(%q) = %q, %v; want %q", in, r.String(), err, want)
		}
	}
	p, err := Parse(ModeAllow, []string{"quic.test:443/udp", "203.0.113.0/24:123/udp", "web.test:443"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	fw := &recordingFirewall{}
	e := New(fw, func(netip.Addr) bool { return false }, nil)
	ip := netip.MustParseAddr("10.77.0.2")
	if err := e.Bind(context.Background(), "vm1", ip, p); err != nil {
		t.Fatal(err)
	}
	if g := fw.policed.Grants; len(g) != 1 || !g[0].UDP || g[0].Lo != 123 {
		t.Errorf("grants %+v, want one UDP grant of port 123", g)
	}
	if err := e.Learn(context.Background(), ip, "quic.test.", []netip.Addr{netip.MustParseAddr("198.51.100.9")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(fw.passes) != 1 || !fw.passes[0].UDP || fw.passes[0].Lo != 443 {
		t.Errorf("passes %+v, want one UDP pass of port 443", fw.passes)
	}
	// The proxy sees TCP: a name with only a UDP rule is not allowed there.
	if _, reason, _ := e.judge(ip, "quic.test", netip.MustParseAddrPort("198.51.100.9:443")); reason != "name not allowed" {
		t.Errorf("judge of a UDP-only name over TCP: %q", reason)
	}
}
