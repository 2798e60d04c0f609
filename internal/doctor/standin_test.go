package doctor

import (
	"context"
	"strings"
	"testing"

	"banger/internal/config"
)

// TestRun_firecrackerStandIn checks that a firecracker stand-in on a host
// without KVM is reported as such, and that vmm = "firecracker" then does
// not fail the kvm check.
func TestRun_firecrackerStandIn(t *testing.T) {
	vers := merge(qemu72, map[string]string{"/usr/local/bin/firecracker": "Firecracker v1.16.1\nstand-in: boots under QEMU TCG, needs no KVM\n"})
	host := fakeHost{cpuinfo: cpuPVM, bins: baseBins(bothBins), versions: vers, free: 100 * gib}
	c := config.Default()
	c.VMM = "firecracker"
	rep := Run(context.Background(), host.probes(), Input{Config: c, Paths: config.Paths{StateDir: "/state"}})
	got := map[string]Check{}
	for _, ch := range rep.Checks {
		got[ch.Name] = ch
	}
	if fc := got["firecracker"]; fc.Status != StatusOK || !strings.Contains(fc.Detail, "firecracker stand-in (no KVM needed)") {
		t.Errorf("firecracker check = %+v, want ok naming the stand-in", fc)
	}
	if kvm := got["kvm"]; kvm.Status != StatusWarn || !strings.Contains(kvm.Detail, "stand-in") {
		t.Errorf("kvm check = %+v, want a warning naming the stand-in", kvm)
	}
}
