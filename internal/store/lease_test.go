package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPrefix(t testing.TB, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAddr(t testing.TB, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAllocateLease_parallel creates 8 VMs' worth of leases from parallel
// goroutines, each for its own VM row, as concurrent `vm create`s do.
func TestAllocateLease_parallel(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	subnet := mustPrefix(t, "10.77.0.0/24")
	gateway := mustAddr(t, "10.77.0.1")
	const n = 8
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("vm%04d", i)
			if errs[i] = s.CreateVM(ctx, testVM(id, fmt.Sprintf("t%d", i))); errs[i] != nil {
				return
			}
			ips[i], errs[i] = s.AllocateLease(ctx, id, subnet, gateway)
		})
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if ip == gateway || ip == subnet.Addr() || ip == mustAddr(t, "10.77.0.255") || !subnet.Contains(ip) {
			t.Errorf("goroutine %d got %s: gateway, network, broadcast or outside %s", i, ip, subnet)
		}
		if j, dup := seen[ip]; dup {
			t.Errorf("goroutines %d and %d both got %s", j, i, ip)
		}
		seen[ip] = i
	}
	// Lowest-first: the 8 leases are exactly .2 through .9.
	for k := 2; k < 2+n; k++ {
		if _, ok := seen[netip.AddrFrom4([4]byte{10, 77, 0, byte(k)})]; !ok {
			t.Errorf("10.77.0.%d not leased; got %v", k, ips)
		}
	}
	leases, err := s.ListLeases(ctx)
	if err != nil || len(leases) != n {
		t.Fatalf("ListLeases = %d leases, %v; want %d", len(leases), err, n)
	}
}

func TestAllocateLease_sequence(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	// A /29 has six host addresses, .1-.6; .1 is the gateway.
	subnet := mustPrefix(t, "192.0.2.0/29")
	gw := mustAddr(t, "192.0.2.1")
	var got []string
	for i := range 5 {
		id := fmt.Sprintf("vm%d", i)
		mustCreateVM(t, s, testVM(id, id))
		ip, err := s.AllocateLease(ctx, id, subnet, gw)
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		got = append(got, ip.String())
	}
	if want := []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"}; !cmp.Equal(got, want) {
		t.Errorf("leases = %v, want %v", got, want)
	}

	// Idempotent: asking again for the same VM returns its lease.
	if ip, err := s.AllocateLease(ctx, "vm2", subnet, gw); err != nil || ip.String() != "192.0.2.4" {
		t.Errorf("re-allocate for vm2 = %v, %v; want its lease 192.0.2.4", ip, err)
	}

	// Full: .7 is the broadcast address and must not be handed out.
	mustCreateVM(t, s, testVM("vm5", "vm5"))
	_, err := s.AllocateLease(ctx, "vm5", subnet, gw)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("allocate in a full subnet: %v, want ErrConflict", err)
	}

	// Release then re-allocate: the freed address is the lowest free one.
	if err := s.ReleaseLease(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, "vm1"); err != nil {
		t.Errorf("second ReleaseLease: %v, want nil (idempotent)", err)
	}
	if ip, err := s.AllocateLease(ctx, "vm5", subnet, gw); err != nil || ip.String() != "192.0.2.3" {
		t.Errorf("allocate after release = %v, %v; want 192.0.2.3", ip, err)
	}
}

func TestAllocateLease_errors(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mustCreateVM(t, s, testVM("vm1", "t1"))
	tests := []struct {
		name   string
		vmID   string
		subnet netip.Prefix
		want   error
	}{
		{"missing vm", "nope", mustPrefix(t, "10.0.0.0/24"), ErrNotFound},
		{"ipv6", "vm1", mustPrefix(t, "fd00::/64"), ErrInvalid},
		{"invalid prefix", "vm1", netip.Prefix{}, ErrInvalid},
		{"/31 has no hosts", "vm1", mustPrefix(t, "10.0.0.0/31"), ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.AllocateLease(ctx, tt.vmID, tt.subnet); !errors.Is(err, tt.want) {
				t.Errorf("AllocateLease = %v, want %v", err, tt.want)
			}
		})
	}
	// A VM holding a lease in another subnet is a conflict, not a second lease.
	if _, err := s.AllocateLease(ctx, "vm1", mustPrefix(t, "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AllocateLease(ctx, "vm1", mustPrefix(t, "10.1.0.0/24")); !errors.Is(err, ErrConflict) {
		t.Errorf("lease in a second subnet: %v, want ErrConflict", err)
	}
}

func TestLowestFree(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		prefix string
		taken  []string
		want   string // "" = none
	}{
		{"10.0.0.0/24", nil, "10.0.0.1"},
		{"10.0.0.0/24", []string{"10.0.0.1", "10.0.0.2"}, "10.0.0.3"},
		{"10.0.0.0/30", []string{"10.0.0.1"}, "10.0.0.2"},
		{"10.0.0.0/30", []string{"10.0.0.1", "10.0.0.2"}, ""},
		{"10.0.0.0/31", nil, ""},
		{"10.0.0.0/32", nil, ""},
		{"10.0.0.5/24", nil, "10.0.0.1"}, // callers mask; lowestFree takes the prefix as given
	}
	for _, tt := range tests {
		taken := map[netip.Addr]bool{}
		for _, s := range tt.taken {
			taken[a(s)] = true
		}
		p := netip.MustParsePrefix(tt.prefix).Masked()
		got, ok := lowestFree(p, taken)
		if tt.want == "" {
			if ok {
				t.Errorf("lowestFree(%s, %v) = %s, want none", tt.prefix, tt.taken, got)
			}
			continue
		}
		if !ok || got != a(tt.want) {
			t.Errorf("lowestFree(%s, %v) = %s, %v; want %s", tt.prefix, tt.taken, got, ok, tt.want)
		}
	}
}

// TestDeleteVM_cascades checks that a VM's lease and sessions disappear with
// it (foreign keys with ON DELETE CASCADE, which need foreign_keys=ON).
func TestDeleteVM_cascades(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mustCreateVM(t, s, testVM("vm1", "t1"))
	mustCreateVM(t, s, testVM("vm2", "t2"))
	subnet := mustPrefix(t, "10.77.0.0/24")
	for _, id := range []string{"vm1", "vm2"} {
		if _, err := s.AllocateLease(ctx, id, subnet); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSession(ctx, Session{VMID: id, Name: "s", Command: []string{"true"}, State: SessionRunning}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, "vm1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteVM = %v, want ErrNotFound", err)
	}
	leases, err := s.ListLeases(ctx)
	if err != nil || len(leases) != 1 || leases[0].VMID != "vm2" {
		t.Errorf("leases after DeleteVM = %+v, %v; want only vm2's", leases, err)
	}
	if ss, err := s.ListSessions(ctx, "vm1"); err != nil || len(ss) != 0 {
		t.Errorf("sessions of deleted vm = %+v, %v", ss, err)
	}
	if ss, err := s.ListSessions(ctx, "vm2"); err != nil || len(ss) != 1 {
		t.Errorf("sessions of vm2 = %+v, %v; want 1", ss, err)
	}
}

func BenchmarkAllocateLease(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	subnet := mustPrefix(b, "10.77.0.0/16")
	gw := mustAddr(b, "10.77.0.1")
	// Half-fill a /24's worth so each allocation scans existing leases.
	for i := range 128 {
		id := fmt.Sprintf("seed%04d", i)
		mustCreateVM(b, s, testVM(id, id))
		if _, err := s.AllocateLease(ctx, id, subnet, gw); err != nil {
			b.Fatal(err)
		}
	}
	mustCreateVM(b, s, testVM("bench", "bench"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.AllocateLease(ctx, "bench", subnet, gw); err != nil {
			b.Fatal(err)
		}
		if err := s.ReleaseLease(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
