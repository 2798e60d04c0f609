package egress

import (
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"banger/internal/api"
	"banger/internal/hostnet"
)

// TestEngine_Refused: the firewall's dropped packets become flows of the
// guest that sent them, a burst of identical ones one flow.
func TestEngine_Refused(t *testing.T) {
	e := New(nil, func(netip.Addr) bool { return false }, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	ip := netip.MustParseAddr("10.77.0.2")
	e.mu.Lock()
	e.guests[ip] = &guest{vmID: "vm1", pol: Policy{Mode: ModeNone}, learned: map[netip.Addr]time.Time{}}
	e.mu.Unlock()
	r := hostnet.Refused{Src: ip, Dst: netip.MustParseAddr("203.0.113.9"), Proto: "udp", Port: 53}
	for range 100 {
		e.Refused(r)
	}
	e.Refused(hostnet.Refused{Src: netip.MustParseAddr("10.77.0.99"), Dst: r.Dst, Proto: "udp", Port: 53}) // nobody's
	lg := e.Log("vm1", 0)
	if len(lg.Flows) != 1 {
		t.Fatalf("%d flows for a burst, want 1: %+v", len(lg.Flows), lg.Flows)
	}
	f := lg.Flows[0]
	if f.Kind != api.FlowIP || f.Verdict != api.FlowDeny || f.Addr != "203.0.113.9" || f.Port != 53 || f.Reason != "udp dropped by the firewall" {
		t.Errorf("flow %+v", f)
	}
	// Later, or to another port: new flows.
	now = now.Add(refusedRepeat + time.Second)
	e.Refused(r)
	r.Port = 54
	e.Refused(r)
	if n := len(e.Log("vm1", 0).Flows); n != 3 {
		t.Errorf("%d flows, want 3", n)
	}
	if _, denied := e.Counts("vm1"); denied != 3 {
		t.Errorf("denied = %d, want 3", denied)
	}
}

// TestEngine_recordBoundsGuestText: a guest's giant Host or invalid
// UTF-8 is stored cut to MaxFlowText bytes of valid text.
func TestEngine_recordBoundsGuestText(t *testing.T) {
	e := New(nil, func(netip.Addr) bool { return false }, nil)
	e.record("vm1", api.Flow{Kind: api.FlowHTTP, Verdict: api.FlowDeny, Name: strings.Repeat("é", MaxHello/2) + "\xff", Reason: "x"})
	f := e.Log("vm1", 0).Flows[0]
	if len(f.Name) > MaxFlowText || !utf8.ValidString(f.Name) || !strings.HasSuffix(f.Name, "…") || f.Reason != "x" {
		t.Errorf("stored name of %d bytes (valid %v): %q…", len(f.Name), utf8.ValidString(f.Name), f.Name[:16])
	}
}
