package hostcap

import (
	"context"
	"testing"
)

// TestFirecrackerStandIn checks that the stand-in's second --version line
// marks it as needing no KVM, and that a real Firecracker's output, a
// failing binary or a missing one does not.
func TestFirecrackerStandIn(t *testing.T) {
	const bin = "/usr/local/bin/firecracker"
	tests := []struct {
		name    string
		version string // "" = no --version output (the binary fails)
		found   bool
		want    bool
	}{
		{"stand-in", "Firecracker v1.16.1\nstand-in: boots under QEMU TCG, needs no KVM\n", true, true},
		{"stand-in, CRLF", "Firecracker v1.16.1\r\nstand-in: boots under QEMU TCG, needs no KVM\r\n", true, true},
		{"real firecracker", "Firecracker v1.10.1\n\nSupported snapshot data format versions: v5.0.0\n", true, false},
		{"marker inside another line", "Firecracker v1.16.1 (not a stand-in: boots under QEMU TCG, needs no KVM)\n", true, false},
		{"binary fails", "", true, false},
		{"no binary", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fake{bins: map[string]string{}, versions: map[string]string{}}
			if tt.found {
				h.bins["firecracker"] = bin
			}
			if tt.version != "" {
				h.versions[bin] = tt.version
			}
			if got := FirecrackerStandIn(context.Background(), h.probes(), ""); got != tt.want {
				t.Errorf("FirecrackerStandIn = %v, want %v", got, tt.want)
			}
			host := &VMHost{Probes: h.probes()}
			if got := host.FirecrackerStandIn(); got != tt.want {
				t.Errorf("VMHost.FirecrackerStandIn = %v, want %v", got, tt.want)
			}
		})
	}
	// The stand-in's version still passes the minimum-version check.
	h := fake{bins: map[string]string{"firecracker": bin}, versions: map[string]string{bin: tests[0].version}}
	if _, v, err := FindFirecracker(context.Background(), h.probes(), ""); err != nil || v != "1.16.1" {
		t.Errorf("FindFirecracker = %q, %v; want 1.16.1", v, err)
	}
}
