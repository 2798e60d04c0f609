package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// checkWarm makes the default image's warm template, then creates two VMs
// from it: both must restore rather than boot, be much faster than the
// template's own cold boot, and differ in everything a clone must not
// share (hostname, MAC, address, ssh host keys, random output,
// machine-id), with the
// old address gone, the journal still readable, the guest clock right and ssh working against the
// host-pinned key.
func (e *env) checkWarm(t *testing.T) {
	start := time.Now()
	r := e.must(e.banger("", "image", "warm"))
	cold := time.Since(start)
	t.Logf("image warm took %s:\n%s", cold.Round(time.Millisecond), r.stderr)

	type guest struct{ hostname, mac, addrs, hostKey, random, machineID string }
	seen := map[string]guest{}
	for _, name := range []string{"w1", "w2"} {
		start := time.Now()
		r := e.must(e.banger("", "vm", "create", "--name", name))
		took := time.Since(start)
		t.Logf("warm create %s took %s:\n%s", name, took.Round(time.Millisecond), r.stderr)
		if !strings.Contains(r.stderr, "warm template") || strings.Contains(r.stderr, "✓ boot") {
			t.Fatalf("create %s did not restore from the warm template:\n%s", name, r.stderr)
		}
		if took > cold/2 {
			t.Errorf("warm create %s took %s, the cold boot of the template %s", name, took, cold)
		}
		v := e.vm(name)
		out := e.must(e.banger("", "vm", "exec", name, "--", "sh", "-c",
			"hostname; cat /sys/class/net/e*/address; ip -4 -o addr show scope global | awk '{print $4}' | tr '\\n' ' '; echo; cat /etc/ssh/ssh_host_*_key.pub | awk '{print $2}' | tr '\\n' ' '; echo; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /etc/machine-id; journalctl -b -q --no-pager -u banger-agent | wc -l"))
		lines := strings.Split(strings.TrimSpace(out.stdout), "\n")
		if len(lines) != 7 {
			t.Fatalf("%s: identity probe printed %q", name, out.stdout)
		}
		g := guest{lines[0], lines[1], strings.TrimSpace(lines[2]), strings.TrimSpace(lines[3]), lines[4], lines[5]}
		if g.hostname != name {
			t.Errorf("%s: hostname %q", name, g.hostname)
		}
		if g.mac != v["mac"] {
			t.Errorf("%s: guest mac %q, vm mac %v", name, g.mac, v["mac"])
		}
		if want := fmt.Sprintf("%v/", v["ip"]); !strings.HasPrefix(g.addrs, want) || strings.Contains(g.addrs, " ") {
			t.Errorf("%s: guest addresses %q, want only %s", name, g.addrs, v["ip"])
		}
		if g.machineID != v["id"] {
			t.Errorf("%s: machine-id %q, want the vm id %v", name, g.machineID, v["id"])
		}
		// journalctl reads the directory named by the new machine-id;
		// journald writes on under the old one.
		if n := strings.TrimSpace(lines[6]); n == "0" {
			t.Errorf("%s: journalctl shows no banger-agent lines after the machine-id changed", name)
		}
		if strings.Contains(g.hostKey, " ") || g.hostKey == "" {
			t.Errorf("%s: host keys %q, want exactly one (the host-made ed25519)", name, g.hostKey)
		}
		for other, o := range seen {
			for what, pair := range map[string][2]string{"hostname": {g.hostname, o.hostname}, "mac": {g.mac, o.mac},
				"address": {g.addrs, o.addrs}, "host key": {g.hostKey, o.hostKey}, "random output": {g.random, o.random},
				"machine-id": {g.machineID, o.machineID}} {
				if pair[0] == pair[1] {
					t.Errorf("%s and %s share their %s: %s", name, other, what, pair[0])
				}
			}
		}
		seen[name] = g
		e.checkClock(t, name)
		if r := e.must(e.banger("", "vm", "ssh", name, "--", "hostname")); strings.TrimSpace(r.stdout) != name {
			t.Errorf("ssh %s: %q\n%s", name, r.stdout, r.stderr)
		}
		if got := e.lookupVM(name); len(got) != 1 || got[0] != v["ip"] {
			t.Errorf("%s.vm resolves to %v", name, got)
		}
	}
	e.must(e.banger("", "vm", "delete", "w1", "w2"))
}
