package debian

import (
	"os"
	"path/filepath"
	"testing"

	"banger/internal/guestcontract"
)

// TestConfigure_masksAndEnables: the agent unit enabled, the units a guest
// never needs masked, the apt timers gone.
func TestConfigure_masksAndEnables(t *testing.T) {
	tree := t.TempDir()
	for _, d := range []string{"etc/ssh", "etc/systemd/system/timers.target.wants"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	os.WriteFile(filepath.Join(tree, "etc/shadow"), []byte("root:x:1:0:99999:7:::\n"), 0o600)
	os.Symlink("/lib/systemd/system/apt-daily.timer", filepath.Join(tree, "etc/systemd/system/timers.target.wants/apt-daily.timer"))
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("#!/bin/true\n"), 0o755)
	if err := Configure(tree, agent, nil); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"systemd-firstboot.service", "e2scrub_reap.service", "e2scrub_all.timer"} {
		if dst, err := os.Readlink(filepath.Join(tree, "etc/systemd/system", u)); err != nil || dst != "/dev/null" {
			t.Errorf("%s: %q, %v; want masked", u, dst, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(tree, "etc/systemd/system/timers.target.wants/apt-daily.timer")); !os.IsNotExist(err) {
		t.Errorf("apt-daily.timer still enabled: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(tree, guestcontract.UnitDir, "multi-user.target.wants", guestcontract.AgentUnitName)); err != nil {
		t.Errorf("agent unit not enabled: %v", err)
	}
}
