package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testConfig() Config {
	return Config{Bridge: "bgtest0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24"), UID: 1000, GID: 1000}
}

var vmIDs atomic.Uint32

// nextVMID returns a fresh VM id shaped like the store's (32 hex digits).
func nextVMID() string {
	return fmt.Sprintf("%08x%024x", vmIDs.Add(1), 0)
}

var guestIPs atomic.Uint32

// nextGuestIP returns a fresh guest address of 192.0.2.0/24 (the subnet
// of every manager test), .2 to .254 and around again.
func nextGuestIP() netip.Addr {
	n := guestIPs.Add(1)
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + n%253)})
}

func TestManager_EnsureMeasuresThenActs(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	m := New(testConfig(), h, nil)
	defer m.Close()

	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"EnsureBridge bgtest0 192.0.2.0/24 banger:0123abcd", "ApplyFirewall bgtest0 192.0.2.0/24", "EnableForwarding"}
	if diff := cmp.Diff(want, h.Calls()); diff != "" {
		t.Errorf("first Ensure (-want +got):\n%s", diff)
	}
	// Nothing differs: only the (atomic, idempotent) table replacement.
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"ApplyFirewall bgtest0 192.0.2.0/24"}, h.Calls()); diff != "" {
		t.Errorf("second Ensure (-want +got):\n%s", diff)
	}
	// A bridge that went down (or lost its address) is repaired.
	h.mu.Lock()
	h.links["bgtest0"].Up = false
	h.mu.Unlock()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if calls := h.Calls(); !slices.Contains(calls, "EnsureBridge bgtest0 192.0.2.0/24 banger:0123abcd") {
		t.Errorf("Ensure after the bridge went down: calls %q lack EnsureBridge", calls)
	}
}

func TestManager_EnsureRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Bridge: "eth0", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.1/24")},
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"), UID: -1},
	} {
		h := newFakeHost()
		m := New(cfg, h, nil)
		if err := m.Ensure(context.Background()); err == nil {
			t.Errorf("Ensure(%+v) = nil, want error", cfg)
		}
		if calls := h.Calls(); len(calls) > 0 {
			t.Errorf("Ensure(%+v) acted on an invalid config: %q", cfg, calls)
		}
		m.Close()
	}
}

func TestManager_TapNamedAfterVM(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	m := New(testConfig(), h, nil)
	defer m.Close()

	id := "3f2a9c01d4e7b8a90000000000000000"
	if _, err := m.AcquireTap(ctx, id, nextGuestIP()); err == nil {
		t.Fatal("AcquireTap before Ensure = nil error, want error")
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	ip := nextGuestIP()
	h.Calls()
	tap, err := m.AcquireTap(ctx, id, ip)
	if err != nil {
		t.Fatal(err)
	}
	if tap != "bgt3f2a9c01d4e7" {
		t.Errorf("AcquireTap = %q, want bgt3f2a9c01d4e7", tap)
	}
	calls := h.Calls()
	if !slices.Contains(calls, "EnsureTap bgt3f2a9c01d4e7 bgtest0 1000 1000") || !slices.Contains(calls, "ApplyFirewall bgtest0 192.0.2.0/24") {
		t.Errorf("acquire calls %q, want the tap made and the firewall applied", calls)
	}
	if g := h.firewall.Guests; len(g) != 1 || g[0].Tap != tap || g[0].IP != ip {
		t.Errorf("firewall guests = %+v, want %s bound to %s", g, tap, ip)
	}
	if got := m.InUse(); !slices.Equal(got, []string{tap}) {
		t.Errorf("InUse = %q", got)
	}
	// A second VM whose id shares the first 12 digits cannot take it.
	if _, err := m.AcquireTap(ctx, id[:12]+"ffffffffffffffffffff", nextGuestIP()); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("AcquireTap of a colliding id = %v, want refusal", err)
	}
	if got := h.tapNames(); !slices.Equal(got, []string{tap}) {
		t.Errorf("taps after a refused acquire = %q, want only %s", got, tap)
	}
	// An id that cannot name a tap is refused before anything is made.
	for _, bad := range []string{"", "xyz", "3F2A9C01D4E7B8A9", "3f2a9c01"} {
		if _, err := m.AcquireTap(ctx, bad, nextGuestIP()); err == nil {
			t.Errorf("AcquireTap(%q) = nil error", bad)
		}
	}

	// Release unbinds, then deletes; releasing again is a no-op.
	if err := m.ReleaseTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	if got := h.tapNames(); len(got) != 0 {
		t.Errorf("taps after release = %q, want none", got)
	}
	if g := h.firewall.Guests; len(g) != 0 {
		t.Errorf("firewall guests after release = %+v, want none", g)
	}
	if got := m.InUse(); len(got) != 0 {
		t.Errorf("InUse after release = %q", got)
	}
	if err := m.ReleaseTap(ctx, "eth0"); err == nil {
		t.Errorf("ReleaseTap(eth0) = nil, want error")
	}
}

// TestManager_AcquireIdempotent: a tap a crash left behind (same VM, same
// name) is repaired and reused, not an error.
func TestManager_AcquireIdempotent(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	id := nextVMID()
	name, _ := TapName(id)
	h.addLink(Link{Name: name, Kind: "tuntap", Owner: 1000, Group: 1000})
	m := New(testConfig(), h, nil)
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	tap, err := m.AcquireTap(ctx, id, nextGuestIP())
	if err != nil || tap != name {
		t.Fatalf("AcquireTap over a leftover tap = %q, %v; want %s", tap, err, name)
	}
	if l, _ := h.Inspect(ctx); !tapReady(l, testConfig(), name) {
		t.Errorf("leftover tap not repaired: %+v", l)
	}
}

// tapReady reports whether tap name exists, owned as configured, attached
// to the bridge and up.
func tapReady(st State, cfg Config, name string) bool {
	l, ok := st.Link(name)
	return ok && l.Kind == "tuntap" && l.Up && l.Master == cfg.Bridge && l.Owner == cfg.UID && l.Group == cfg.GID
}

// TestManager_AcquireFailureLeavesNothing: whichever half fails (the tap
// or the firewall), no tap, binding or in-use mark stays behind.
func TestManager_AcquireFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		break_ func(h *fakeHost, tap string)
		want   string
	}{
		{"tap", func(h *fakeHost, tap string) { h.failTap = tap }, "injected failure"},
		{"firewall", func(h *fakeHost, _ string) { h.failFirewall = true }, "apply firewall: injected failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost()
			m := New(testConfig(), h, nil)
			if err := m.Ensure(ctx); err != nil {
				t.Fatal(err)
			}
			id := nextVMID()
			name, _ := TapName(id)
			h.mu.Lock()
			tc.break_(h, name)
			h.mu.Unlock()
			if _, err := m.AcquireTap(ctx, id, nextGuestIP()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AcquireTap = %v, want %q", err, tc.want)
			}
			if got := h.tapNames(); len(got) != 0 {
				t.Errorf("taps left = %q", got)
			}
			if got := m.InUse(); len(got) != 0 {
				t.Errorf("InUse = %q", got)
			}
			h.mu.Lock()
			h.failTap, h.failFirewall = "", false
			h.mu.Unlock()
			// The same VM can try again.
			if _, err := m.AcquireTap(ctx, id, nextGuestIP()); err != nil {
				t.Errorf("AcquireTap after the failure cleared = %v", err)
			}
		})
	}
}

func TestManager_AdoptAndOrphans(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	// Left by earlier daemons: a running VM's tap, a numbered pool tap, a
	// tap of a VM this daemon knows, one of a VM it does not (another
	// daemon's, on its bridge), and links that are not banger taps.
	h.addLink(Link{Name: "bgt000000000001", Kind: "tuntap", Owner: 1000, Group: 1000, Master: "bgtest0"})
	h.addLink(Link{Name: "bgtap1", Kind: "tuntap", Owner: 1000, Group: 1000, Master: "bgtest0"})
	h.addLink(Link{Name: "bgt0000000000aa", Kind: "tuntap", Master: "bgtest0"})
	h.addLink(Link{Name: "bgt0000000000bb", Kind: "tuntap", Master: "bgother0"})
	h.addLink(Link{Name: "bgtapx", Kind: "tuntap"})
	h.addLink(Link{Name: "eth0", Kind: "device"})
	h.addLink(Link{Name: "bgtapveth", Kind: "veth"})
	m := New(testConfig(), h, nil)
	defer m.Close()
	if err := m.Adopt(ctx, map[string]netip.Addr{"bgt000000000001": nextGuestIP(), "not a tap": nextGuestIP()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	mine := func(tap string) bool {
		id, ok := TapVMID(tap)
		return !ok || id == "0000000000aa"
	}
	got, err := m.Orphans(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"bgt0000000000aa", "bgtap1"}, got); diff != "" {
		t.Errorf("Orphans (-want +got):\n%s", diff)
	}
	// Teardown refuses while a tap is in use, then removes everything on
	// its bridge; another daemon's tap stays.
	if err := m.Teardown(ctx); err == nil || !strings.Contains(err.Error(), "bgt000000000001") {
		t.Errorf("Teardown with bgt000000000001 in use = %v, want refusal naming it", err)
	}
	if err := m.ReleaseTap(ctx, "bgt000000000001"); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.linkNames("bg"); !slices.Equal(got, []string{"bgt0000000000bb", "bgtapveth", "bgtapx"}) {
		t.Errorf("links left after Teardown: %q, want only another bridge's tap, the veth and the non-banger name", got)
	}
	if h.firewall != nil {
		t.Errorf("firewall left after Teardown: %+v", h.firewall)
	}
	// A later Ensure builds it all again.
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
}
