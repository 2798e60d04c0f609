package hostnet

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

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
// stage, AcquireTap, with a warm pool and without one, on the root
// (netlink) and the sudo path. Releasing and refilling are not timed: they
// happen off a create's critical path.
func BenchmarkNetworkStage(b *testing.B) {
	requireNetTools(b)
	for _, path := range []string{"direct", "sudo"} {
		for _, pool := range []int{0, 2} {
			name := path + "/nopool"
			if pool > 0 {
				name = path + "/pool"
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				ns := testenv.NewNetns(b)
				cfg := Config{Bridge: "bgbench0", Subnet: netip.MustParsePrefix("192.0.2.0/24"), PoolSize: pool, UID: 1000, GID: 1000}
				m := New(cfg, benchPrivileged(b, ns, path), nil)
				defer m.Close()
				if err := m.Ensure(ctx); err != nil {
					b.Fatal(err)
				}
				full := func() {
					for deadline := time.Now().Add(time.Minute); len(m.Pool()) < pool; time.Sleep(time.Millisecond) {
						if time.Now().After(deadline) {
							b.Fatal("pool not refilled")
						}
					}
				}
				full()
				b.ResetTimer()
				for range b.N {
					tap, err := m.AcquireTap(ctx, nextGuestIP())
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := m.ReleaseTap(ctx, tap); err != nil {
						b.Fatal(err)
					}
					full()
					b.StartTimer()
				}
			})
		}
	}
}
