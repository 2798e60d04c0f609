package e2e

import "testing"

func TestScratchBootProfile(t *testing.T) {
	e := newEnv(t)
	e.ensureImage()
	r := e.must(e.banger("", "vm", "create", "--name", "p1"))
	t.Logf("create:\n%s", r.stderr)
	for _, c := range []string{
		"systemd-analyze; systemd-analyze blame | head -40",
		"systemd-analyze critical-chain banger-agent.service",
		"systemd-analyze critical-chain ssh.service",
		"systemd-analyze critical-chain multi-user.target",
		"systemctl list-units --type=service --state=running --no-pager; systemctl list-timers --no-pager",
		"journalctl -b -o short-monotonic --no-pager | head -150",
	} {
		r := e.banger("", "vm", "exec", "p1", "--", "sh", "-c", c)
		t.Logf("$ %s\n%s%s", c, r.stdout, r.stderr)
	}
}
