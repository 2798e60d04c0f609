package hostnet

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testConfig(pool int) Config {
	return Config{Bridge: "bgtest0", Subnet: netip.MustParsePrefix("192.0.2.0/24"), PoolSize: pool, UID: 1000, GID: 1000}
}

var guestIPs atomic.Uint32

// nextGuestIP returns a fresh guest address of 192.0.2.0/24 (the subnet
// of every manager test), .2 to .254 and around again.
func nextGuestIP() netip.Addr {
	n := guestIPs.Add(1)
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + n%253)})
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestManager_EnsureMeasuresThenActs(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	m := New(testConfig(0), h, nil)
	defer m.Close()

	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"EnsureBridge bgtest0 192.0.2.0/24", "ApplyFirewall bgtest0 192.0.2.0/24", "EnableForwarding"}
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
	if calls := h.Calls(); !slices.Contains(calls, "EnsureBridge bgtest0 192.0.2.0/24") {
		t.Errorf("Ensure after the bridge went down: calls %q lack EnsureBridge", calls)
	}
}

func TestManager_EnsureRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Bridge: "eth0", Subnet: netip.MustParsePrefix("192.0.2.0/24")},
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.1/24")},
		{Bridge: "banger0", Subnet: netip.MustParsePrefix("192.0.2.0/24"), PoolSize: -1},
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

func TestManager_Pool(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	m := New(testConfig(2), h, nil)
	defer m.Close()

	if _, err := m.AcquireTap(ctx, nextGuestIP()); err == nil {
		t.Fatal("AcquireTap before Ensure = nil error, want error")
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pool of 2", func() bool { return len(m.Pool()) == 2 })
	if diff := cmp.Diff([]string{"bgtap0", "bgtap1"}, m.Pool()); diff != "" {
		t.Errorf("pool (-want +got):\n%s", diff)
	}

	a, err := m.AcquireTap(ctx, nextGuestIP())
	if err != nil {
		t.Fatal(err)
	}
	if a != "bgtap0" || m.IsPoolTap(a) {
		t.Errorf("AcquireTap = %q (pooled %v), want bgtap0 out of the pool", a, m.IsPoolTap(a))
	}
	// The refill loop tops the pool up with the next free name.
	waitFor(t, "refill", func() bool { return slices.Equal(m.Pool(), []string{"bgtap1", "bgtap2"}) })

	// Pool full: a released tap is deleted, and releasing again is a no-op.
	if err := m.ReleaseTap(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseTap(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got := h.linkNames(TapPrefix); !slices.Equal(got, []string{"bgtap1", "bgtap2"}) {
		t.Errorf("taps after release with a full pool = %q", got)
	}

	// Drain the pool and one more (created on demand).
	var taken []string
	for range 3 {
		n, err := m.AcquireTap(ctx, nextGuestIP())
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, n)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(taken)))) != 3 {
		t.Errorf("AcquireTap handed out duplicates: %q", taken)
	}
	waitFor(t, "refill after drain", func() bool { return len(m.Pool()) == 2 })
	if got := m.InUse(); len(got) != 3 {
		t.Errorf("InUse = %q, want 3 taps", got)
	}
	// Room in the pool? No (refilled): release deletes.
	for _, n := range taken {
		if err := m.ReleaseTap(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(h.linkNames(TapPrefix)); got != 2 {
		t.Errorf("%d taps on the host, want the 2 pooled", got)
	}
	if err := m.ReleaseTap(ctx, "eth0"); err == nil {
		t.Errorf("ReleaseTap(eth0) = nil, want error")
	}
}

func TestManager_ReleaseReturnsToPool(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	// A tap left by an earlier daemon, and a host where new taps cannot be
	// created: the pool has room, and only a release can fill it.
	h.addLink(Link{Name: "bgtap5", Kind: "tuntap", Owner: 1000, Group: 1000})
	h.failNew = true
	m := New(testConfig(1), h, nil)
	defer m.Close()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	orphans, err := m.Orphans(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"bgtap5"}, orphans); diff != "" {
		t.Fatalf("Orphans (-want +got):\n%s", diff)
	}
	h.Calls()
	if err := m.ReleaseTap(ctx, "bgtap5"); err != nil {
		t.Fatal(err)
	}
	if !m.IsPoolTap("bgtap5") {
		t.Errorf("released bgtap5 not in the pool %q", m.Pool())
	}
	// Reset in place (re-attached, up), not deleted.
	if calls := h.Calls(); !slices.Contains(calls, "EnsureTap bgtap5 bgtest0 1000 1000") || slices.Contains(calls, "DeleteLink bgtap5") {
		t.Errorf("release calls %q, want a reset of bgtap5 and no delete", calls)
	}
	if orphans, _ := m.Orphans(ctx, nil); len(orphans) != 0 {
		t.Errorf("pooled tap reported as orphan: %q", orphans)
	}
	// Releasing a pooled tap again changes nothing.
	if err := m.ReleaseTap(ctx, "bgtap5"); err != nil {
		t.Fatal(err)
	}
	if calls := h.Calls(); slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "bgtap5") }) {
		t.Errorf("second release acted: %q", calls)
	}
	// The pooled tap is handed out.
	n, err := m.AcquireTap(ctx, nextGuestIP())
	if err != nil || n != "bgtap5" {
		t.Errorf("AcquireTap = %q, %v; want bgtap5", n, err)
	}
	// A tap that cannot be reset (someone else's now) is deleted, not
	// pooled or leaked.
	h.addLink(Link{Name: "bgtap6", Kind: "tuntap", Owner: 0, Group: 0})
	if err := m.ReleaseTap(ctx, "bgtap6"); err == nil || !strings.Contains(err.Error(), "owned by 0:0") {
		t.Errorf("ReleaseTap(foreign bgtap6) = %v, want the reset failure", err)
	}
	if m.IsPoolTap("bgtap6") || slices.Contains(h.linkNames(TapPrefix), "bgtap6") {
		t.Errorf("unresettable bgtap6 kept (pool %q, host %q)", m.Pool(), h.linkNames(TapPrefix))
	}
}

func TestManager_AdoptAndOrphans(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	// Left by an earlier daemon: two VM taps and a stray one made by hand.
	h.addLink(Link{Name: "bgtap0", Kind: "tuntap", Owner: 1000, Group: 1000})
	h.addLink(Link{Name: "bgtap1", Kind: "tuntap", Owner: 1000, Group: 1000})
	h.addLink(Link{Name: "bgtap7", Kind: "tuntap"})
	h.addLink(Link{Name: "bgtapx", Kind: "tuntap"})
	h.addLink(Link{Name: "eth0", Kind: "device"})
	h.addLink(Link{Name: "bgtapveth", Kind: "veth"})
	m := New(testConfig(2), h, nil)
	defer m.Close()
	if err := m.Adopt(ctx, map[string]netip.Addr{"bgtap0": nextGuestIP(), "not a tap": nextGuestIP()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pool of 2", func() bool { return len(m.Pool()) == 2 })
	// New pool taps skip every existing name.
	if diff := cmp.Diff([]string{"bgtap2", "bgtap3"}, m.Pool()); diff != "" {
		t.Errorf("pool (-want +got):\n%s", diff)
	}
	got, err := m.Orphans(ctx, []string{"bgtap1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"bgtap7", "bgtapx"}, got); diff != "" {
		t.Errorf("Orphans (-want +got):\n%s", diff)
	}
	// Teardown refuses while a tap is in use, then removes everything.
	if err := m.Teardown(ctx); err == nil || !strings.Contains(err.Error(), "bgtap0") {
		t.Errorf("Teardown with bgtap0 in use = %v, want refusal naming it", err)
	}
	if err := m.ReleaseTap(ctx, "bgtap0"); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	// bgtap1 was the caller's (not the manager's): Teardown treats it as
	// an orphan too, since nothing is in use.
	if got := h.linkNames("bg"); len(got) != 1 || got[0] != "bgtapveth" {
		t.Errorf("links left after Teardown: %q, want only the veth", got)
	}
	if h.firewall != nil {
		t.Errorf("firewall left after Teardown: %+v", h.firewall)
	}
	// A later Ensure builds it all again.
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pool rebuilt", func() bool { return len(m.Pool()) == 2 })
}

func TestManager_RefillRetriesAndOnDemand(t *testing.T) {
	ctx := context.Background()
	h := newFakeHost()
	h.failTap = "bgtap0"
	m := New(testConfig(1), h, nil)
	defer m.Close()
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	// The refill fails on bgtap0; AcquireTap creating on demand reports
	// the cause.
	if _, err := m.AcquireTap(ctx, nextGuestIP()); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Errorf("AcquireTap = %v, want the injected failure", err)
	}
	h.mu.Lock()
	h.failTap = ""
	h.mu.Unlock()
	n, err := m.AcquireTap(ctx, nextGuestIP())
	if err != nil {
		t.Fatal(err)
	}
	if !ValidTapName(n) {
		t.Errorf("AcquireTap = %q", n)
	}
}
