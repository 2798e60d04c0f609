package vmm

import (
	"strings"
	"testing"
)

// TestSelectStandIn checks that a stand-in firecracker is chosen without
// KVM when asked for by name, and never by auto.
func TestSelectStandIn(t *testing.T) {
	tests := []struct {
		want                   string
		fc, standIn, kvm, qemu bool
		out, errHas            string
	}{
		{want: Firecracker, fc: true, standIn: true, kvm: false, out: Firecracker},
		{want: Firecracker, fc: true, standIn: false, kvm: false, errHas: "KVM is not usable"},
		{want: Firecracker, fc: false, standIn: true, kvm: false, errHas: "no firecracker binary"},
		{want: Auto, fc: true, standIn: true, kvm: true, qemu: true, out: QEMU},
		{want: Auto, fc: true, standIn: true, kvm: false, qemu: true, out: QEMU},
		{want: Auto, fc: true, standIn: true, kvm: true, qemu: false, errHas: "qemu-system-x86_64 not found"},
		{want: Auto, fc: true, standIn: false, kvm: true, qemu: true, out: Firecracker},
		{want: QEMU, fc: true, standIn: true, qemu: true, out: QEMU},
	}
	for _, tt := range tests {
		got, err := SelectStandIn(tt.want, tt.fc, tt.standIn, tt.kvm, tt.qemu)
		if tt.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("%+v: got %q, %v; want error containing %q", tt, got, err, tt.errHas)
			}
			continue
		}
		if err != nil || got != tt.out {
			t.Errorf("%+v: got %q, %v; want %q", tt, got, err, tt.out)
		}
	}
}
