package firecracker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/vmm"
)

// Jailer runs each Firecracker under Firecracker's jailer (docs/jailer.md):
// the jailer makes a chroot per VM, enters a new mount namespace,
// pivot_roots into the chroot, makes /dev/kvm and /dev/net/tun there,
// drops to UID:GID and execs Firecracker in place (the PID stays that of
// the process banger spawned). It needs root. Everything Firecracker
// opens is hard-linked into the jail, so BaseDir must be on the same
// filesystem as the VM and image directories: the VM's own files are
// given to UID:GID, shared ones (kernel, initrd, image rootfs) must be
// world-readable.
type Jailer struct {
	// Binary is the jailer binary (absolute path).
	Binary string
	// UID and GID are what Firecracker runs as inside the jail; the VM's
	// tap must be owned by them (or by nobody) for it to open it.
	UID, GID int
	// BaseDir is the jailer's --chroot-base-dir: jails are made at
	// BaseDir/<firecracker binary name>/<jail id>/root.
	BaseDir string
}

// Names of what Firecracker is given inside a jail, relative to its root.
const (
	jailAPISocket   = "api.sock"
	jailVsockSocket = "vsock.sock"
	jailKernel      = "vmlinux"
	jailInitrd      = "initrd"
	jailLog         = "vmm.log"
	jailMetrics     = "metrics"
	jailSeccomp     = "seccomp.bpf"
	jailSnapshotDir = "snapshot"
)

var jailIDRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

// jailID is the jailer --id of the VM: the first 12 characters of its id
// (as its tap's name), which keeps socket paths short.
func jailID(vmID string) (string, error) {
	id := vmID
	if len(id) > 12 {
		id = id[:12]
	}
	if !jailIDRE.MatchString(id) {
		return "", fmt.Errorf("vm id %q cannot name a jail (alphanumerics and hyphens only)", vmID)
	}
	return id, nil
}

// jailRoot is the chroot the jailer makes for a VM whose Firecracker
// binary is bin.
func (j *Jailer) jailRoot(bin, id string) string {
	return filepath.Join(j.BaseDir, filepath.Base(bin), id, "root")
}

// args is the jailer's command line (argv[0] excluded) for a VM jailed as
// id: Firecracker's own arguments come after "--", with its API socket
// (and seccomp filter) named inside the jail. The jailer passes --id on.
// cgroup v2 with no --cgroup: the jailer makes no cgroup.
func (j *Jailer) args(bin, id string, seccomp bool) []string {
	a := []string{
		"--id", id,
		"--exec-file", bin,
		"--uid", strconv.Itoa(j.UID),
		"--gid", strconv.Itoa(j.GID),
		"--chroot-base-dir", j.BaseDir,
		"--cgroup-version", "2",
		"--",
		"--api-sock", "/" + jailAPISocket,
	}
	if seccomp {
		a = append(a, "--seccomp-filter", "/"+jailSeccomp)
	}
	return a
}

// prepare makes a fresh jail for s at root and links into it what
// Firecracker opens, returning the spec with every path as Firecracker
// sees it inside the jail. Files inside s.Dir (the VM's own disks, logs,
// saved state) are given to the jail's UID:GID; files outside it must be
// readable by everyone.
func (j *Jailer) prepare(root string, s vmm.Spec, p paths, seccompFilter string) (vmm.Spec, error) {
	if err := os.RemoveAll(filepath.Dir(root)); err != nil {
		return s, fmt.Errorf("remove stale jail: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return s, fmt.Errorf("make jail: %w", err)
	}
	in := s
	link := func(src, name string) (string, error) {
		if err := j.link(src, filepath.Join(root, name), s.Dir); err != nil {
			return "", err
		}
		return "/" + name, nil
	}
	var err error
	if in.Vmlinux, err = link(s.Vmlinux, jailKernel); err != nil {
		return s, err
	}
	if s.Initrd != "" {
		if in.Initrd, err = link(s.Initrd, jailInitrd); err != nil {
			return s, err
		}
	}
	in.Drives = make([]vmm.Drive, len(s.Drives))
	for i, d := range s.Drives {
		if !jailIDRE.MatchString(d.ID) {
			return s, fmt.Errorf("drive id %q cannot name a file in the jail", d.ID)
		}
		in.Drives[i] = d
		if in.Drives[i].Path, err = link(d.Path, "drive-"+d.ID); err != nil {
			return s, err
		}
	}
	if _, err := link(p.log, jailLog); err != nil {
		return s, err
	}
	if _, err := link(p.metrics, jailMetrics); err != nil {
		return s, err
	}
	if seccompFilter != "" {
		if _, err := link(seccompFilter, jailSeccomp); err != nil {
			return s, err
		}
	}
	if s.RestoreDir != "" {
		dir := filepath.Join(root, jailSnapshotDir)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return s, fmt.Errorf("make jail snapshot dir: %w", err)
		}
		for _, f := range []string{StateFile, MemoryFile} {
			if _, err := link(filepath.Join(s.RestoreDir, f), filepath.Join(jailSnapshotDir, f)); err != nil {
				return s, err
			}
		}
		if err := os.Chown(dir, j.UID, j.GID); err != nil {
			return s, fmt.Errorf("give jail snapshot dir to %d:%d: %w", j.UID, j.GID, err)
		}
		in.RestoreDir = "/" + jailSnapshotDir
	}
	return in, nil
}

// sealState makes saved state files, just moved out of a jail, root's
// and read-only to the jail's group (0440): a later jail restoring them
// (a warm template, a snapshot another VM forks from) can read them, but
// no jailed Firecracker can change what the next restore loads.
func (j *Jailer) sealState(files ...string) error {
	for _, f := range files {
		if err := os.Chown(f, 0, j.GID); err != nil {
			return fmt.Errorf("seal saved state %s: %w", f, err)
		}
		if err := os.Chmod(f, 0o440); err != nil {
			return fmt.Errorf("seal saved state %s: %w", f, err)
		}
	}
	return nil
}

// link hard-links src to dst. A file inside own (the VM directory) is
// given to the jail's UID:GID; any other must be readable by everyone, or
// be saved state sealed by sealState (root's, read-only to the jail's
// group).
func (j *Jailer) link(src, dst, own string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("jail %s: %w", src, err)
	}
	if err := os.Link(src, dst); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("jail %s: it is on another filesystem than the jail base %s (jails hold hard links; put jailer_base_dir on the filesystem of banger's state dir)", src, j.BaseDir)
		}
		return fmt.Errorf("jail %s: %w", src, err)
	}
	// Sealed state stays sealed even in the VM's own directory: the link
	// shares its inode, which a later restore elsewhere may need intact.
	if within(src, own) && !j.sealed(st) {
		if err := os.Chown(dst, j.UID, j.GID); err != nil {
			return fmt.Errorf("give %s to %d:%d: %w", src, j.UID, j.GID, err)
		}
		return nil
	}
	if st.Mode().Perm()&0o004 != 0 || j.sealed(st) {
		return nil
	}
	return fmt.Errorf("jail %s: jailed firecracker (uid %d) cannot read it (mode %04o)", src, j.UID, st.Mode().Perm())
}

// sealed reports whether st is a file sealState made: owned by root,
// group the jail's, readable by that group and writable by nobody else.
func (j *Jailer) sealed(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	perm := st.Mode().Perm()
	return ok && sys.Uid == 0 && int(sys.Gid) == j.GID && perm&0o040 != 0 && perm&0o022 == 0
}

func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// removeJail deletes the jail directory (BaseDir/<binary>/<id>) of h,
// whose VMM must be gone. It removes nothing outside BaseDir, whatever h
// says.
func (j *Jailer) removeJail(h vmm.Handles) error {
	if h.Jail == "" {
		return nil
	}
	dir := filepath.Dir(h.Jail)
	rel, err := filepath.Rel(j.BaseDir, dir)
	if err != nil || strings.Count(rel, "/") != 1 || strings.HasPrefix(rel, "..") || filepath.Base(h.Jail) != "root" {
		return fmt.Errorf("jail %s is not a jail under %s", h.Jail, j.BaseDir)
	}
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove jail %s: %w", dir, err)
	}
	return nil
}
