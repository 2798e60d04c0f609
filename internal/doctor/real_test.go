package doctor

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/hostcap"
)

// TestRun_realHost runs every check against this machine. The build
// machines have a paravirtual /dev/kvm without vmx/svm and QEMU installed,
// so the KVM check must say "TCG only" there.
func TestRun_realHost(t *testing.T) {
	p := hostcap.Real()
	// Work out independently what the KVM check must say.
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	hasVirt := strings.Contains(string(cpuinfo), " vmx") || strings.Contains(string(cpuinfo), " svm")
	_, kvmErr := os.Stat("/dev/kvm")
	pvm := kvmErr == nil && !hasVirt
	paths, err := config.DefaultPaths()
	if err != nil {
		t.Fatal(err)
	}
	host, err := config.ProbeHost()
	if err != nil {
		t.Fatal(err)
	}
	rep := Run(context.Background(), p, Input{Config: config.Default(), Paths: paths, Host: host})
	t.Logf("doctor report: %+v", rep.Checks)

	got := map[string]Check{}
	for _, c := range rep.Checks {
		got[c.Name] = c
	}
	kvm := got["kvm"]
	if !hasVirt && kvm.Status == StatusOK {
		t.Fatalf("kvm check is ok on a host without vmx/svm: %+v", kvm)
	}
	if pvm && !strings.Contains(kvm.Detail, "neither vmx nor svm") {
		t.Errorf("kvm check on a PVM host = %+v, want the missing vmx/svm named", kvm)
	}
	if _, err := p.LookPath("qemu-system-x86_64"); err == nil && !hasVirt {
		if kvm.Status != StatusWarn || !strings.Contains(kvm.Detail, "TCG only") {
			t.Errorf("kvm check = %+v, want warn TCG only", kvm)
		}
		if got["qemu"].Status != StatusOK {
			t.Errorf("qemu check = %+v", got["qemu"])
		}
	}
	for _, name := range []string{"kvm", "firecracker", "qemu", "mmdebstrap", "e2fsprogs", "ip/nft", "podman/docker", "privilege", "disk", "default image", "vm defaults"} {
		if _, ok := got[name]; !ok {
			t.Errorf("report lacks check %q", name)
		}
	}
	if !strings.Contains(got["vm defaults"].Detail, paths.ConfigFile) {
		t.Errorf("vm defaults check does not name the config file: %+v", got["vm defaults"])
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
}
