package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// appliedPoliced returns the policed guests of the last applied firewall.
func (f *fakeHost) appliedPoliced() []Policed {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.firewall == nil {
		return nil
	}
	return f.firewall.Policed
}

func (f *fakeHost) applies() int {
	n := 0
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, "ApplyFirewall") {
			n++
		}
	}
	return n
}

func TestManager_PoliceAndPasses(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	m := New(testConfig(), h, nil)
	defer m.Close()
	ip := netip.MustParseAddr("192.0.2.9")

	// Before Ensure nothing is applied; Ensure applies what was set.
	if err := m.Police(ctx, ip, &Policed{Grants: []Grant{{netip.MustParsePrefix("203.0.113.0/24"), 22, 22, false}}}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddPasses(ctx, ip, []Pass{{Dst: netip.MustParseAddr("198.51.100.1"), Lo: 1, Hi: 65535, TTL: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if h.applies() != 0 {
		t.Fatal("applied before Ensure")
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	got := h.appliedPoliced()
	if len(got) != 1 || got[0].IP != ip || len(got[0].Grants) != 1 || len(got[0].Passes) != 1 || got[0].Passes[0].TTL > time.Minute {
		t.Fatalf("applied %+v", got)
	}
	// A pass already open for most of its time costs no apply.
	h.Calls()
	if err := m.AddPasses(ctx, ip, []Pass{{Dst: netip.MustParseAddr("198.51.100.1"), Lo: 1, Hi: 65535, TTL: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if n := h.applies(); n != 0 {
		t.Errorf("%d applies for a pass already open", n)
	}
	// Passes only for policed guests; and a bounded number of them.
	if err := m.AddPasses(ctx, netip.MustParseAddr("192.0.2.10"), []Pass{{Dst: netip.MustParseAddr("198.51.100.1"), Lo: 1, Hi: 2, TTL: time.Minute}}); err == nil {
		t.Error("passes for a guest that is not policed")
	}
	var many []Pass
	for i := range MaxPassesPerGuest {
		many = append(many, Pass{Dst: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), Lo: 443, Hi: 443, TTL: time.Hour})
	}
	if err := m.AddPasses(ctx, ip, many); err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxPassesPerGuest)) {
		t.Errorf("passes beyond the bound: %v", err)
	}
	// A refused batch opens none of its addresses.
	if err := m.Police(ctx, netip.MustParseAddr("192.0.2.12"), &Policed{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range h.appliedPoliced() {
		if p.IP == ip && len(p.Passes) != 1 {
			t.Errorf("after a refused batch the guest holds %d passes, want 1", len(p.Passes))
		}
	}
	// Lifting the policing removes the guest, passes and all.
	if err := m.Police(ctx, ip, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range h.appliedPoliced() {
		if p.IP == ip {
			t.Errorf("still policed: %+v", p)
		}
	}
	// Lifting it again (a guest that was never policed) applies nothing.
	h.Calls()
	if err := m.Police(ctx, netip.MustParseAddr("192.0.2.11"), nil); err != nil || h.applies() != 0 {
		t.Errorf("lifting nothing: %v, %d applies", err, h.applies())
	}
}
