package guest

import (
	"slices"
	"testing"
)

func TestParseBootParams(t *testing.T) {
	p := parseBootParams("console=ttyS0 root=LABEL=banger-root ro rootwait banger.overlay=LABEL=banger-overlay " +
		"virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 init=/usr/local/bin/banger-agent root=/dev/vda\n")
	for k, want := range map[string]string{
		"root":           "/dev/vda", // the last one wins, as in the kernel
		"banger.overlay": "LABEL=banger-overlay",
		"init":           "/usr/local/bin/banger-agent",
		"ro":             "",
	} {
		if got, ok := p.values[k]; !ok || got != want {
			t.Errorf("%s = %q (%v), want %q", k, got, ok, want)
		}
	}
	// Module parameters reach the module whichever spelling names it.
	if got := p.moduleParams["virtio_mmio"]; !slices.Equal(got, []string{"device=4K@0xd0000000:5", "device=4K@0xd0001000:6"}) {
		t.Errorf("virtio_mmio params %q", got)
	}
	if got := p.moduleParams["banger"]; !slices.Equal(got, []string{"overlay=LABEL=banger-overlay"}) {
		t.Errorf("banger params %q", got)
	}
	for path, want := range map[string]string{
		"/lib/modules/6.1/kernel/drivers/virtio/virtio_mmio.ko": "virtio_mmio",
		"/lib/modules/6.1/kernel/net/vmw-vsock.ko":              "vmw_vsock",
	} {
		if got := moduleName(path); got != want {
			t.Errorf("moduleName(%s) = %s, want %s", path, got, want)
		}
	}
}
