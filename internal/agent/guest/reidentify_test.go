package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent"
)

// TestReidentify: a guest restored from a template takes the new name,
// MAC, address and resolver, and its ssh host keys are replaced, every old
// key type included (a template's rsa key left behind would be shared by
// every clone). A bad request changes nothing.
func TestReidentify(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc", "hostname"), "template\n", 0o644)
	write(t, filepath.Join(root, "etc", "machine-id"), "ffffffffffffffffffffffffffffffff\n", 0o644)
	write(t, filepath.Join(root, "run", "log", "journal", "ffffffffffffffffffffffffffffffff", "system.journal"), "j", 0o640)
	// Not flushed to /var yet: only the persistent root exists.
	if err := os.MkdirAll(filepath.Join(root, "var", "log", "journal"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "etc", "hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n", 0o644)
	for _, typ := range []string{"ed25519", "rsa", "ecdsa"} {
		write(t, filepath.Join(root, "etc", "ssh", "ssh_host_"+typ+"_key"), "template "+typ, 0o600)
		write(t, filepath.Join(root, "etc", "ssh", "ssh_host_"+typ+"_key.pub"), "ssh-"+typ+" TEMPLATE", 0o644)
	}
	req := agent.Reidentify{
		Identity: agent.Identity{VMID: "0123456789abcdef0123456789abcdef", Hostname: "clone1", Address: "10.0.3.9/24", Gateway: "10.0.3.1", DNS: []string{"10.0.3.1"},
			MAC: "02:00:0a:00:03:09", Token: strings.Repeat("t", 40)},
		HostKeys: []agent.HostKey{{Type: "ed25519", Private: "-----PRIVATE clone1-----", Public: "ssh-ed25519 CLONE1"}},
	}
	sys := &fakeSystem{mounted: map[string]bool{}, chowned: map[string]bool{}}

	bad := req
	bad.Identity.Hostname = "no/slash"
	before := snapshot(t, root)
	if err := Reidentify(root, bad, sys); err == nil {
		t.Fatal("a bad hostname was accepted")
	}
	if len(sys.hostnames)+len(sys.nets)+sys.reloads != 0 || !equalTrees(before, snapshot(t, root)) {
		t.Fatal("a refused request changed the guest")
	}

	if err := Reidentify(root, req, sys); err != nil {
		t.Fatal(err)
	}
	if len(sys.hostnames) != 1 || sys.hostnames[0] != "clone1" {
		t.Errorf("hostnames %v", sys.hostnames)
	}
	if len(sys.nets) != 1 || sys.nets[0].MAC != "02:00:0a:00:03:09" || sys.nets[0].Address.String() != "10.0.3.9/24" {
		t.Errorf("network %+v", sys.nets)
	}
	if sys.reloads != 1 {
		t.Errorf("sshd reloaded %d times", sys.reloads)
	}
	// The files are written unsynced and made durable by one sync.
	if sys.syncs != 1 {
		t.Errorf("synced %d times, want once", sys.syncs)
	}
	hosts, _ := os.ReadFile(filepath.Join(root, "etc", "hosts"))
	if strings.Contains(string(hosts), "template") || !strings.Contains(string(hosts), "127.0.1.1\tclone1") {
		t.Errorf("hosts:\n%s", hosts)
	}
	keys, _ := filepath.Glob(filepath.Join(root, "etc", "ssh", "ssh_host_*"))
	if len(keys) != 2 {
		t.Fatalf("host key files %v, want only the new ed25519 pair", keys)
	}
	priv, _ := os.ReadFile(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key"))
	if fi, _ := os.Stat(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key")); string(priv) != "-----PRIVATE clone1-----\n" || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key %q mode %v", priv, fi.Mode())
	}
	// The template's machine-id would be every clone's.
	if mid, _ := os.ReadFile(filepath.Join(root, "etc", "machine-id")); string(mid) != "0123456789abcdef0123456789abcdef\n" {
		t.Errorf("machine-id %q, want the VM id", mid)
	}
	// journalctl reads the directory of the current machine-id: the
	// journal journald still writes (under the old id) must be there, in
	// /run now and in /var once systemd-journal-flush made the old id's
	// directory there.
	for _, dir := range []string{"run", "var"} {
		if got, err := os.Readlink(filepath.Join(root, dir, "log", "journal", "0123456789abcdef0123456789abcdef")); err != nil || got != "ffffffffffffffffffffffffffffffff" {
			t.Errorf("%s journal link %q, %v", dir, got, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "run", "log", "journal", "0123456789abcdef0123456789abcdef", "system.journal")); err != nil || string(b) != "j" {
		t.Errorf("the journal through the link: %q, %v", b, err)
	}
	resolv, _ := os.ReadFile(filepath.Join(root, "etc", "resolv.conf"))
	if !strings.Contains(string(resolv), "nameserver 10.0.3.1") {
		t.Errorf("resolv.conf:\n%s", resolv)
	}
}

func equalTrees(a, b map[string]fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
