package guest

import (
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/agent"
	"banger/internal/guestcontract"
)

// fakeSystem records what Apply asked of the kernel; Chown is real when
// running as root.
type fakeSystem struct {
	hostnames []string
	nets      []NetConfig
	mounted   map[string]bool
	labels    map[string]string
	mounts    []string
	unmounts  []string
	chowned   map[string]bool
	keygens   int
	keygenErr error
	reloads   int
	syncs     int
}

var _ System = (*fakeSystem)(nil)

func (f *fakeSystem) SetHostname(n string) error { f.hostnames = append(f.hostnames, n); return nil }
func (f *fakeSystem) Sync() error                { f.syncs++; return nil }
func (f *fakeSystem) ConfigureNetwork(c NetConfig) error {
	f.nets = append(f.nets, c)
	return nil
}
func (f *fakeSystem) IsMounted(p string) (bool, error)   { return f.mounted[p], nil }
func (f *fakeSystem) FindLabel(l string) (string, error) { return f.labels[l], nil }
func (f *fakeSystem) Mount(dev, target string, ro bool) error {
	f.mounts = append(f.mounts, dev+" "+target)
	f.mounted[target] = true
	return nil
}
func (f *fakeSystem) Unmount(target string) error {
	f.unmounts = append(f.unmounts, target)
	f.mounted[target] = false
	return nil
}
func (f *fakeSystem) Chown(p string, uid, gid int) error {
	f.chowned[p] = true
	if os.Geteuid() == 0 {
		return os.Lchown(p, uid, gid)
	}
	return nil
}
func (f *fakeSystem) ReloadSSHD() error { f.reloads++; return nil }
func (f *fakeSystem) GenerateHostKeys(root string) error {
	f.keygens++
	if f.keygenErr != nil {
		return f.keygenErr
	}
	for _, t := range []string{"ed25519", "rsa"} {
		p := filepath.Join(root, "etc", "ssh", "ssh_host_"+t+"_key")
		if err := os.WriteFile(p, []byte("private"), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(p+".pub", []byte("ssh-"+t+" AAAA root@x\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

type fileState struct {
	Mode    fs.FileMode
	Content string
	Link    string
	UID     uint32
}

func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fileState{Mode: fi.Mode(), UID: fi.Sys().(*syscall.Stat_t).Uid}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			st.Content = string(b)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			st.Link, _ = os.Readlink(p)
		}
		out[rel] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func write(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func TestApply_TwiceIsHarmless(t *testing.T) {
	root := t.TempDir()
	cfg := t.TempDir()
	// A Debian-like root: /etc/ssh without host keys, resolv.conf as a
	// symlink, an existing hosts file and a user-added key.
	write(t, filepath.Join(root, "etc", "hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\told-name\n", 0o644)
	if err := os.MkdirAll(filepath.Join(root, "etc", "ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc", "resolv.conf")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(root, "root", ".ssh", "authorized_keys"), "ssh-ed25519 USERKEY me@laptop\n", 0o644)
	// file_sync payload on the config drive.
	write(t, filepath.Join(cfg, "files", "0", "token.json"), `{"t":1}`, 0o644)
	write(t, filepath.Join(cfg, "files", "1", "conf", "a.toml"), "a", 0o640)
	write(t, filepath.Join(cfg, "files", "1", "conf", "bin", "run"), "#!/bin/sh\n", 0o755)
	if err := os.Symlink("a.toml", filepath.Join(cfg, "files", "1", "conf", "link")); err != nil {
		t.Fatal(err)
	}

	id := agent.Identity{
		VMID:           "vm-1",
		Hostname:       "calm-otter",
		Address:        "192.0.2.7/24",
		Gateway:        "192.0.2.1",
		DNS:            []string{"192.0.2.1", "2001:db8::53"},
		MAC:            "02:00:c0:00:02:07",
		AuthorizedKeys: []string{"ssh-ed25519 BANGERKEY banger", "ssh-ed25519 USERKEY me@laptop"},
		Token:          "tok",
		Files: []agent.SyncFile{
			{Source: "0/token.json", Guest: "/root/.config/tool/token.json"},
			{Source: "1/conf", Guest: "/root/.tool", Dir: true},
			{Source: "files/0/token.json", Guest: "/etc/tool/exec.json", Mode: 0o755},
		},
	}
	sys := &fakeSystem{mounted: map[string]bool{}, labels: map[string]string{guestcontract.LabelWork: "/dev/vdb"}, chowned: map[string]bool{}}
	if err := Apply(root, cfg, id, sys); err != nil {
		t.Fatal(err)
	}
	first := snapshot(t, root)

	check := func(rel string, mode fs.FileMode, content string) {
		t.Helper()
		st, ok := first[rel]
		if !ok {
			t.Fatalf("%s missing", rel)
		}
		if st.Mode != mode || (content != "" && st.Content != content) {
			t.Fatalf("%s: mode %v content %q; want %v %q", rel, st.Mode, st.Content, mode, content)
		}
		if os.Geteuid() == 0 && st.UID != 0 {
			t.Fatalf("%s owned by %d", rel, st.UID)
		}
	}
	check("etc/hostname", 0o644, "calm-otter\n")
	check("etc/hosts", 0o644, "127.0.0.1\tlocalhost\n127.0.1.1\tcalm-otter\n")
	check("etc/resolv.conf", 0o644, "# written by banger-agent\nnameserver 192.0.2.1\nnameserver 2001:db8::53\n")
	check("root/.ssh", fs.ModeDir|0o700, "")
	check("root/.ssh/authorized_keys", 0o600, "ssh-ed25519 USERKEY me@laptop\nssh-ed25519 BANGERKEY banger\n")
	check("root/.config/tool/token.json", 0o600, `{"t":1}`)
	check("root/.config", fs.ModeDir|0o755, "")
	check("etc/tool/exec.json", 0o755, `{"t":1}`)
	check("root/.tool/a.toml", 0o640, "a")
	check("root/.tool/bin/run", 0o755, "#!/bin/sh\n")
	check("etc/ssh/ssh_host_ed25519_key", 0o600, "private")
	if first["root/.tool/link"].Link != "a.toml" {
		t.Fatalf("symlink in synced dir: %+v", first["root/.tool/link"])
	}
	if !sys.chowned[filepath.Join(root, "root/.tool/bin/run")] {
		t.Fatal("synced file not chowned")
	}

	wantNet := NetConfig{MAC: "02:00:c0:00:02:07", Address: netip.MustParsePrefix("192.0.2.7/24"), Gateway: netip.MustParseAddr("192.0.2.1")}
	if diff := cmp.Diff([]NetConfig{wantNet}, sys.nets, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("network (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/dev/vdb " + filepath.Join(root, "root")}, sys.mounts); diff != "" {
		t.Fatalf("mounts (-want +got):\n%s", diff)
	}

	// A reboot: the same identity again changes nothing on disk, mounts
	// nothing twice and does not regenerate host keys.
	if err := Apply(root, cfg, id, sys); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, snapshot(t, root)); diff != "" {
		t.Fatalf("second apply changed the tree (-first +second):\n%s", diff)
	}
	// Each apply ends with one sync of everything it wrote.
	if sys.keygens != 1 || len(sys.mounts) != 1 || len(sys.hostnames) != 2 || sys.syncs != 2 {
		t.Fatalf("keygens %d mounts %d hostnames %v syncs %d", sys.keygens, len(sys.mounts), sys.hostnames, sys.syncs)
	}
}

func TestApply_Errors(t *testing.T) {
	tests := []struct {
		name    string
		id      agent.Identity
		sys     *fakeSystem
		wantErr []string
	}{
		{
			name:    "bad values fail their step only",
			id:      agent.Identity{Hostname: "bad_name!", Address: "not-an-ip", DNS: []string{"x"}, AuthorizedKeys: []string{"ssh-ed25519 K"}},
			wantErr: []string{"hostname: invalid hostname", "network: address", `dns: dns server "x"`},
		},
		{
			name:    "missing work disk",
			id:      agent.Identity{},
			sys:     &fakeSystem{mounted: map[string]bool{}, labels: map[string]string{}, chowned: map[string]bool{}},
			wantErr: []string{"mount work disk: no filesystem labelled banger-work"},
		},
		{
			name: "file_sync names the entry",
			id: agent.Identity{Files: []agent.SyncFile{
				{Source: "missing", Guest: "/root/x"},
				{Source: "../etc/shadow", Guest: "/root/y"},
				{Source: "ok", Guest: "/root/../../etc/z"},
			}},
			wantErr: []string{"file_sync /root/x: read", `file_sync /root/y: source "../etc/shadow"`, `file_sync /root/../../etc/z: guest path`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			sys := tt.sys
			if sys == nil {
				sys = &fakeSystem{mounted: map[string]bool{filepath.Join(root, "root"): true}, chowned: map[string]bool{}}
			}
			err := Apply(root, t.TempDir(), tt.id, sys)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			// Independent steps still ran.
			if len(tt.id.AuthorizedKeys) > 0 {
				if _, err := os.Stat(filepath.Join(root, "root", ".ssh", "authorized_keys")); err != nil {
					t.Errorf("authorized_keys not written after other steps failed: %v", err)
				}
			}
		})
	}
}

// TestApply_HostMadeKeys: host keys in the identity replace any the image
// has, and the guest runs no ssh-keygen; applying again changes nothing.
// An unusable key is refused without touching the old ones.
func TestApply_HostMadeKeys(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "etc", "ssh", "ssh_host_rsa_key"), "old private", 0o600)
	write(t, filepath.Join(root, "etc", "ssh", "ssh_host_rsa_key.pub"), "ssh-rsa OLD root@image\n", 0o644)
	id := agent.Identity{Token: "tok", HostKeys: []agent.HostKey{{Type: "ed25519", Private: "PRIVATE\n", Public: "ssh-ed25519 HOSTMADE root@banger"}}}
	sys := &fakeSystem{mounted: map[string]bool{}, labels: map[string]string{guestcontract.LabelWork: "/dev/vdb"}, chowned: map[string]bool{}}
	for range 2 {
		if err := Apply(root, t.TempDir(), id, sys); err != nil {
			t.Fatal(err)
		}
	}
	if sys.keygens != 0 {
		t.Errorf("ssh-keygen ran %d times in the guest", sys.keygens)
	}
	keys, _ := filepath.Glob(filepath.Join(root, "etc", "ssh", "ssh_host_*"))
	if len(keys) != 2 {
		t.Errorf("host key files %v, want only the ed25519 pair", keys)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key.pub")); string(b) != "ssh-ed25519 HOSTMADE root@banger\n" {
		t.Errorf("public key %q", b)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v %v", fi, err)
	}
	bad := agent.Identity{Token: "tok", HostKeys: []agent.HostKey{{Type: "dsa", Private: "x", Public: "y"}}}
	if err := Apply(root, t.TempDir(), bad, sys); err == nil || !strings.Contains(err.Error(), "ssh host keys") {
		t.Errorf("a dsa key = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key")); err != nil {
		t.Errorf("a refused key removed the installed one: %v", err)
	}
}

// TestWriteFileAtomic_SkipsUnchanged: a file that already holds the data
// with the mode keeps its inode; other content or another mode replaces
// it, and a symlink in its place is replaced, not written through.
func TestWriteFileAtomic_SkipsUnchanged(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "etc", "resolv.conf")
	ino := func() uint64 {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if err := writeFileAtomic(p, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := ino()
	if err := writeFileAtomic(p, []byte("nameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ino() != first {
		t.Fatal("unchanged content was written again")
	}
	if err := writeFileAtomic(p, []byte("nameserver 192.0.2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); ino() == first || fi.Mode().Perm() != 0o600 {
		t.Fatal("a new mode did not replace the file")
	}
	second := ino()
	if err := writeFileAtomic(p, []byte("nameserver 192.0.2.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); ino() == second || string(b) != "nameserver 192.0.2.9\n" {
		t.Fatalf("new content not written: %q", b)
	}
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte("nameserver 192.0.2.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(p, []byte("nameserver 192.0.2.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the symlink was kept: %v %v", fi.Mode(), err)
	}
}
