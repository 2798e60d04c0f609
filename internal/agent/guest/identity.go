package guest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/agent"
	"banger/internal/atomicfile"
	"banger/internal/guestcontract"
)

// NetConfig is the network part of an identity, handed to System.
type NetConfig struct {
	// MAC selects the NIC; empty (or no match) means the first
	// non-loopback NIC.
	MAC string
	// Address is the IPv4 address in CIDR form.
	Address netip.Prefix
	// Gateway is the default route's next hop; invalid means no route.
	Gateway netip.Addr
}

// System is what Apply needs from the running kernel. Every method is
// idempotent: calling it again with the same arguments changes nothing.
type System interface {
	// SetHostname sets the kernel hostname.
	SetHostname(name string) error
	// ConfigureNetwork brings the NIC up with the address and the default
	// route (replacing what is there).
	ConfigureNetwork(cfg NetConfig) error
	// IsMounted reports whether something is mounted at path.
	IsMounted(path string) (bool, error)
	// FindLabel returns the device holding the ext filesystem labelled
	// label, or "" when there is none.
	FindLabel(label string) (string, error)
	// Mount mounts an ext4 device at target (created when missing).
	Mount(dev, target string, readOnly bool) error
	// Unmount detaches the filesystem mounted at target; nothing mounted
	// there is not an error.
	Unmount(target string) error
	// Chown sets the owner of path without following symlinks.
	Chown(path string, uid, gid int) error
	// GenerateHostKeys creates the missing ssh host keys under root
	// (ssh-keygen -A -f root).
	GenerateHostKeys(root string) error
	// ReloadSSHD makes a running sshd load its host keys again.
	ReloadSSHD() error
	// Sync makes every file written so far durable (sync(2)): identity
	// files are written unsynced and made durable together by one call.
	Sync() error
}

// LoadIdentity reads and validates identity.json.
func LoadIdentity(path string) (agent.Identity, error) {
	var id agent.Identity
	b, err := os.ReadFile(path)
	if err != nil {
		return id, fmt.Errorf("read identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("parse identity %s: %w", path, err)
	}
	return id, nil
}

var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// Apply makes the guest whose filesystem is at root match id; configDir
// is the mounted config drive (file_sync sources are under its files/).
// Steps are independent: a failing step does not stop the others, and the
// errors of all failed steps are returned together. Applying the same
// identity again (a reboot) changes nothing.
func Apply(root, configDir string, id agent.Identity, sys System) error {
	var errs []error
	step := func(name string, fn func() error) {
		if err := fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	// The work disk first: authorized_keys and file_sync live under /root.
	step("mount work disk", func() error { return mountWork(root, sys) })
	if id.Hostname != "" {
		step("hostname", func() error { return applyHostname(root, id.Hostname, sys) })
	}
	if id.Address != "" {
		step("network", func() error { return applyNetwork(id, sys) })
	}
	if len(id.DNS) > 0 {
		step("dns", func() error { return applyDNS(root, id.DNS) })
	}
	if len(id.AuthorizedKeys) > 0 {
		step("authorized keys", func() error { return applyAuthorizedKeys(root, id.AuthorizedKeys, sys) })
	}
	if len(id.HostKeys) > 0 {
		step("ssh host keys", func() error { return installHostKeys(root, id.HostKeys) })
	} else {
		step("ssh host keys", func() error { return ensureHostKeys(root, sys) })
	}
	for _, f := range id.Files {
		step("file_sync "+f.Guest, func() error { return applySyncFile(root, configDir, f, sys) })
	}
	// Always, so an identity without them undoes an earlier one's.
	step("egress trust", func() error { return applyTrust(root, id.TrustCAs) })
	step("environment", func() error { return applyEnv(root, id.Env) })
	for _, f := range id.InlineFiles {
		step("file "+f.Guest, func() error { return applyInlineFile(root, f, sys) })
	}
	step("sync", sys.Sync)
	return errors.Join(errs...)
}

func mountWork(root string, sys System) error {
	target := filepath.Join(root, guestcontract.WorkMountPoint)
	mounted, err := sys.IsMounted(target)
	if err != nil || mounted {
		return err
	}
	dev, err := sys.FindLabel(guestcontract.LabelWork)
	if err != nil {
		return err
	}
	if dev == "" {
		return fmt.Errorf("no filesystem labelled %s", guestcontract.LabelWork)
	}
	return sys.Mount(dev, target, false)
}

func applyHostname(root, name string, sys System) error {
	if !hostnameRE.MatchString(name) {
		return fmt.Errorf("invalid hostname %q", name)
	}
	if err := sys.SetHostname(name); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(root, "etc", "hostname"), []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	// 127.0.1.1 maps the hostname locally (Debian's convention), so tools
	// resolving their own name do not wait on DNS.
	hostsPath := filepath.Join(root, "etc", "hosts")
	old, err := os.ReadFile(hostsPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read hosts: %w", err)
	}
	var lines []string
	if len(old) == 0 {
		lines = append(lines, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback")
	}
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if l == "" && len(old) == 0 {
			continue
		}
		if f := strings.Fields(l); len(f) > 0 && f[0] == "127.0.1.1" {
			continue
		}
		lines = append(lines, l)
	}
	lines = append(lines, "127.0.1.1\t"+name)
	return writeFileAtomic(hostsPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func applyNetwork(id agent.Identity, sys System) error {
	pfx, err := netip.ParsePrefix(id.Address)
	if err != nil {
		return fmt.Errorf("address %q: %w", id.Address, err)
	}
	cfg := NetConfig{MAC: id.MAC, Address: pfx}
	if id.Gateway != "" {
		gw, err := netip.ParseAddr(id.Gateway)
		if err != nil {
			return fmt.Errorf("gateway %q: %w", id.Gateway, err)
		}
		cfg.Gateway = gw
	}
	return sys.ConfigureNetwork(cfg)
}

func applyDNS(root string, servers []string) error {
	var b strings.Builder
	b.WriteString("# written by banger-agent\n")
	for _, s := range servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("dns server %q: %w", s, err)
		}
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	p := filepath.Join(root, "etc", "resolv.conf")
	// Replace a symlink (systemd-resolved's stub) instead of writing
	// through it.
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("replace resolv.conf link: %w", err)
		}
	}
	return writeFileAtomic(p, []byte(b.String()), 0o644)
}

func applyAuthorizedKeys(root string, keys []string, sys System) error {
	dir := filepath.Join(root, "root", ".ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := sys.Chown(dir, 0, 0); err != nil {
		return err
	}
	p := filepath.Join(dir, "authorized_keys")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read authorized_keys: %w", err)
	}
	// Keep keys the user added; add ours when missing.
	var lines []string
	have := map[string]bool{}
	for _, l := range strings.Split(string(old), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		lines = append(lines, l)
		have[strings.TrimSpace(l)] = true
	}
	for _, k := range keys {
		k = strings.TrimSpace(k)
		if k != "" && !have[k] {
			lines = append(lines, k)
			have[k] = true
		}
	}
	if err := writeFileAtomic(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return sys.Chown(p, 0, 0)
}

// installHostKeys puts the host-made keys in place of the guest's, in an
// image with an ssh server.
func installHostKeys(root string, keys []agent.HostKey) error {
	if _, err := os.Stat(filepath.Join(root, "etc", "ssh")); errors.Is(err, fs.ErrNotExist) {
		return nil // no ssh server in this image
	}
	for _, k := range keys {
		if !givenKeyTypes[k.Type] || k.Private == "" || k.Public == "" {
			return fmt.Errorf("bad host key of type %q", k.Type)
		}
	}
	return replaceHostKeys(root, keys)
}

func ensureHostKeys(root string, sys System) error {
	sshDir := filepath.Join(root, "etc", "ssh")
	if _, err := os.Stat(sshDir); errors.Is(err, fs.ErrNotExist) {
		return nil // no ssh server in this image
	}
	keys, err := filepath.Glob(filepath.Join(sshDir, "ssh_host_*_key"))
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return nil
	}
	return sys.GenerateHostKeys(root)
}

// guestPath joins an absolute guest path under root, refusing "..".
func guestPath(root, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("guest path %q is not absolute", p)
	}
	if hasDotDot(p) {
		return "", fmt.Errorf("guest path %q contains \"..\"", p)
	}
	return filepath.Join(root, p), nil
}

func hasDotDot(p string) bool {
	for _, seg := range strings.Split(filepath.ToSlash(p), "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

func applySyncFile(root, configDir string, f agent.SyncFile, sys System) error {
	if f.Source == "" || hasDotDot(f.Source) || filepath.IsAbs(f.Source) {
		return fmt.Errorf("source %q: want a relative path without \"..\"", f.Source)
	}
	src := filepath.Join(configDir, guestcontract.FilesDir, f.Source)
	if rest, ok := strings.CutPrefix(filepath.ToSlash(f.Source), guestcontract.FilesDir+"/"); ok {
		// Tolerate a source written relative to the drive root
		// ("files/0") as well as the documented form ("0").
		if _, err := os.Lstat(src); err != nil {
			src = filepath.Join(configDir, guestcontract.FilesDir, rest)
		}
	}
	dst, err := guestPath(root, f.Guest)
	if err != nil {
		return err
	}
	if err := mkdirParents(root, filepath.Dir(dst), sys); err != nil {
		return err
	}
	if f.Dir {
		return copyTree(src, dst, sys)
	}
	mode := fs.FileMode(f.Mode).Perm()
	if mode == 0 {
		mode = 0o600
	}
	return installFile(src, dst, mode, sys)
}

// mkdirParents creates dir and its missing parents (0755, root-owned).
func mkdirParents(root, dir string, sys System) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir && len(parent) >= len(root) {
		if err := mkdirParents(root, parent, sys); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return sys.Chown(dir, 0, 0)
}

func installFile(src, dst string, mode fs.FileMode, sys System) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if err := writeFileAtomic(dst, b, mode); err != nil {
		return err
	}
	return sys.Chown(dst, 0, 0)
}

// copyTree copies the directory src to dst recursively: each file and
// directory keeps its own mode, everything becomes root-owned, symlinks
// are copied as links.
func copyTree(src, dst string, sys System) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", src)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", target, err)
			}
			if err := os.Chmod(target, info.Mode().Perm()); err != nil {
				return fmt.Errorf("chmod %s: %w", target, err)
			}
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_ = os.Remove(target)
			if err := os.Symlink(link, target); err != nil {
				return fmt.Errorf("symlink %s: %w", target, err)
			}
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			if err := writeFileAtomic(target, b, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		return sys.Chown(target, 0, 0)
	})
}

// writeFileAtomic creates path's directory if needed and replaces path
// with data through atomicfile, so a reader never sees half a file. It
// does not sync: Apply and Reidentify end with one System.Sync for all
// their files (two flushes per file cost a restored guest under emulation
// a large part of its re-identification). A regular file that already
// holds data with mode is left alone: most of what a warm clone is given
// (resolver, authorized keys, environment) is what its template had, and
// a rename on the overlay root costs more than the read.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == mode.Perm() && fi.Size() == int64(len(data)) {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			return nil
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return atomicfile.WriteUnsynced(path, data, mode)
}

// givenKeyTypes are the ssh host key types a guest may be given.
var givenKeyTypes = map[string]bool{"ed25519": true, "ecdsa": true, "rsa": true}

// Reidentify makes a guest restored from another VM's memory this VM:
// hostname, machine-id, MAC and address (the old ones removed), resolv.conf,
// authorized keys, and ssh host keys replaced by the host's (every old
// key removed, so no two VMs share one), then sshd reloads them. Steps
// run in that order and the first failure stops it: a half-renamed
// guest must not look done.
func Reidentify(root string, req agent.Reidentify, sys System) error {
	id := req.Identity
	if !hostnameRE.MatchString(id.Hostname) {
		return fmt.Errorf("invalid hostname %q", id.Hostname)
	}
	if len(req.HostKeys) == 0 {
		return errors.New("no ssh host keys")
	}
	for _, k := range req.HostKeys {
		if !givenKeyTypes[k.Type] || k.Private == "" || k.Public == "" {
			return fmt.Errorf("bad host key of type %q", k.Type)
		}
	}
	if err := applyHostname(root, id.Hostname, sys); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := applyMachineID(root, id.VMID); err != nil {
		return fmt.Errorf("machine-id: %w", err)
	}
	if id.Address != "" {
		if err := applyNetwork(id, sys); err != nil {
			return fmt.Errorf("network: %w", err)
		}
	}
	if len(id.DNS) > 0 {
		if err := applyDNS(root, id.DNS); err != nil {
			return fmt.Errorf("dns: %w", err)
		}
	}
	if len(id.AuthorizedKeys) > 0 {
		if err := applyAuthorizedKeys(root, id.AuthorizedKeys, sys); err != nil {
			return fmt.Errorf("authorized keys: %w", err)
		}
	}
	if err := replaceHostKeys(root, req.HostKeys); err != nil {
		return fmt.Errorf("ssh host keys: %w", err)
	}
	if err := applyTrust(root, id.TrustCAs); err != nil {
		return fmt.Errorf("egress trust: %w", err)
	}
	if err := applyEnv(root, id.Env); err != nil {
		return fmt.Errorf("environment: %w", err)
	}
	for _, f := range id.InlineFiles {
		if err := applyInlineFile(root, f, sys); err != nil {
			return fmt.Errorf("file %s: %w", f.Guest, err)
		}
	}
	if err := sys.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return sys.ReloadSSHD()
}

// machineIDRE is the form of /etc/machine-id: 32 lowercase hex digits.
var machineIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// applyMachineID makes /etc/machine-id the VM's id. A restored guest
// carries the machine-id systemd wrote into the template's overlay, which
// every clone would otherwise share (and keep across its cold boots); the
// VM id is unique and already known to the guest. The file is rewritten in
// place, not renamed over: systemd may have bind-mounted /run/machine-id
// onto it. Processes that read the id before (systemd, journald) keep the
// old one until the next boot. A VM id not of machine-id form (an older
// host) leaves the file alone.
//
// journald keeps writing under the old id's directory, and journalctl
// shows only the directory named by the current id: each journal root
// (/var/log/journal, /run/log/journal) gets a link from the new id to the
// old id's directory, so the guest's log (this boot's and the template's)
// stays where journalctl looks, now and after later boots. The link is
// made even where the old id's directory does not exist yet: a guest
// restored from a template taken early in its boot has its journal in
// /run until systemd-journal-flush moves it to /var/log/journal/<old id>,
// after this.
func applyMachineID(root, vmID string) error {
	if !machineIDRE.MatchString(vmID) {
		return nil
	}
	path := filepath.Join(root, "etc", "machine-id")
	prev, _ := os.ReadFile(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o444)
	if err != nil {
		return err
	}
	_, err = f.WriteString(vmID + "\n")
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	old := strings.TrimSpace(string(prev))
	if !machineIDRE.MatchString(old) || old == vmID {
		return nil
	}
	for _, dir := range []string{"var/log/journal", "run/log/journal"} {
		d := filepath.Join(root, dir)
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue
		}
		if err := os.Symlink(old, filepath.Join(d, vmID)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link the journal of %s: %w", dir, err)
		}
	}
	return nil
}

func replaceHostKeys(root string, keys []agent.HostKey) error {
	dir := filepath.Join(root, "etc", "ssh")
	old, err := filepath.Glob(filepath.Join(dir, "ssh_host_*_key*"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, k := range keys {
		base := filepath.Join(dir, "ssh_host_"+k.Type+"_key")
		if err := writeFileAtomic(base, []byte(strings.TrimRight(k.Private, "\n")+"\n"), 0o600); err != nil {
			return err
		}
		if err := writeFileAtomic(base+".pub", []byte(strings.TrimSpace(k.Public)+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}
