package daemon

import (
	"strings"
	"testing"

	"banger/internal/api"
)

// TestDaemon_Doctor checks that the daemon answers every host check over
// the socket, with the OK flag consistent with the checks and the
// default image and VM defaults judged from the daemon's own config.
func TestDaemon_Doctor(t *testing.T) {
	p := testPaths(t)
	_, c := startDaemon(t, p)
	rep, err := c.Doctor(testCtx(t))
	if err != nil {
		t.Fatalf("Doctor: %v", err)
	}
	got := map[string]api.DoctorCheck{}
	anyFail := false
	for _, ch := range rep.Checks {
		got[ch.Name] = ch
		anyFail = anyFail || ch.Status == api.CheckFail
	}
	for _, name := range []string{"kvm", "firecracker", "qemu", "mmdebstrap", "e2fsprogs", "ip/nft", "podman/docker", "privilege", "disk", "default image", "vm defaults"} {
		if _, ok := got[name]; !ok {
			t.Errorf("report lacks check %q", name)
		}
	}
	if rep.OK == anyFail {
		t.Errorf("OK = %v with a failed check = %v", rep.OK, anyFail)
	}
	if d := got["vm defaults"].Detail; !strings.Contains(d, p.ConfigFile) {
		t.Errorf("vm defaults check does not name the daemon's config %s: %q", p.ConfigFile, d)
	}
	if d := got["disk"].Detail; !strings.Contains(d, p.StateDir) {
		t.Errorf("disk check does not measure the daemon's state dir %s: %q", p.StateDir, d)
	}
	if st := got["default image"].Status; st == "" || strings.Contains(got["default image"].Detail, "state unknown") {
		t.Errorf("default image check was not answered by the image manager: %+v", got["default image"])
	}
}
