package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLIDoesNotLinkHostPackages keeps the banger binary a thin client:
// everything that touches host state (SQLite, images, disks, network,
// VMMs, the guest agent, host capability probes and doctor's checks)
// belongs to bangerd.
func TestCLIDoesNotLinkHostPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "banger/cmd/banger").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"banger/internal/daemon", "banger/internal/store", "banger/internal/vmctl",
		"banger/internal/imagectl", "banger/internal/image", "banger/internal/disk",
		"banger/internal/hostnet", "banger/internal/vmm", "banger/internal/agent",
		"banger/internal/dns", "banger/internal/doctor", "banger/internal/hostcap",
		"modernc.org/sqlite",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("cmd/banger links %s", dep)
			}
		}
	}
}
