package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/testenv"
)

// benchPrivileged returns the executor a benchmark measures, acting inside
// a namespace of its own: Direct (netlink as root) or Sudo through a
// stand-in sudo that runs this test binary as `bangerd priv` in the
// namespace, the same process boundary the real sudo path crosses.
func benchPrivileged(b *testing.B, ns *testenv.Netns, path string) Privileged {
	b.Helper()
	if path == "direct" {
		return Direct{NetNS: ns.Path}
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	sudo := filepath.Join(b.TempDir(), "sudo")
	script := "#!/bin/sh\nshift\nexec ip netns exec " + ns.Name + " env " + privEnv + "=1 \"$@\"\n"
	if err := os.WriteFile(sudo, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	return nsSudo{Sudo{Bangerd: self, SudoPath: sudo}, ns.Path}
}

// nsSudo is Sudo whose unprivileged Inspect reads the benchmark's
// namespace, where the privileged side acts, rather than the test's own.
type nsSudo struct {
	Sudo
	netns string
}

func (s nsSudo) Inspect(ctx context.Context) (State, error) {
	return Direct{NetNS: s.netns}.Inspect(ctx)
}

// BenchmarkNetworkStage measures the tap half of a create's network
// stage, AcquireTap (the VM's tap made while the firewall binding it is
// applied), against the same two privileged calls made one after the
// other ("serial": what a create without a tap pool cost before), on the
// root (netlink) and the sudo path. Releasing is not timed: it happens
// off a create's critical path.
func BenchmarkNetworkStage(b *testing.B) {
	requireNetTools(b)
	for _, path := range []string{"direct", "sudo"} {
		for _, mode := range []string{"acquire", "serial"} {
			b.Run(path+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				ns := testenv.NewNetns(b)
				cfg := Config{Bridge: "bgbench0", Instance: "0123abcd", Subnet: netip.MustParsePrefix("192.0.2.0/24"), UID: 1000, GID: 1000}
				m := New(cfg, benchPrivileged(b, ns, path), nil)
				if err := m.Ensure(ctx); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := range b.N {
					id := fmt.Sprintf("%032x", i+1)
					var tap string
					var err error
					if mode == "acquire" {
						tap, err = m.AcquireTap(ctx, id, nextGuestIP())
					} else {
						tap, err = serialAcquire(ctx, m, id, nextGuestIP())
					}
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := m.ReleaseTap(ctx, tap); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}

// serialAcquire is AcquireTap with its two privileged calls in sequence.
func serialAcquire(ctx context.Context, m *Manager, vmID string, ip netip.Addr) (string, error) {
	name, err := TapName(vmID)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	m.inUse[name], m.guests[name] = true, ip
	m.mu.Unlock()
	if err := m.p.EnsureTap(ctx, name, m.cfg.Bridge, m.cfg.UID, m.cfg.GID, m.cfg.GuestToGuest); err != nil {
		return "", err
	}
	return name, m.applyFirewall(ctx)
}
