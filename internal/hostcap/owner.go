package hostcap

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// PathOwner is what decides who may replace a file: its owner, its mode
// and whether the calling user may write it (access(2), so ACLs and
// read-only mounts count). Probes.Owner reports it without following a
// final symbolic link.
type PathOwner struct {
	UID      uint32
	GID      uint32
	Mode     fs.FileMode
	Writable bool
}

// lstatOwner is the real Probes.Owner.
func lstatOwner(path string) (PathOwner, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return PathOwner{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return PathOwner{}, fmt.Errorf("stat %s: no owner information", path)
	}
	o := PathOwner{UID: st.Uid, GID: st.Gid, Mode: fi.Mode()}
	if fi.Mode()&fs.ModeSymlink == 0 {
		o.Writable = unix.Access(path, unix.W_OK) == nil
	}
	return o, nil
}

// RootOnlyChain lists why a user other than root could replace the
// executable at path: path and every directory above it up to / must be
// owned by root, writable by neither group nor others (no exception for
// sticky directories such as /tmp) and not writable by the calling user;
// path must be a regular file and no component a symbolic link. A
// program sudo runs as root from such a path is only as safe as that
// chain. nil means the chain holds. Root passes every access check, so
// the answer means something only for a user other than root.
func RootOnlyChain(p Probes, path string) []string {
	if !filepath.IsAbs(path) {
		return []string{path + " is not an absolute path"}
	}
	var problems []string
	for cur := filepath.Clean(path); ; cur = filepath.Dir(cur) {
		problems = append(problems, ownerProblems(p, cur, cur == filepath.Clean(path))...)
		if cur == "/" {
			return problems
		}
	}
}

// ownerProblems checks one component of RootOnlyChain's path.
func ownerProblems(p Probes, path string, leaf bool) []string {
	o, err := p.Owner(path)
	if err != nil {
		return []string{fmt.Sprintf("cannot inspect %s: %v", path, err)}
	}
	var out []string
	switch {
	case o.Mode&fs.ModeSymlink != 0:
		return []string{path + " is a symbolic link"}
	case leaf && !o.Mode.IsRegular():
		out = append(out, path+" is not a regular file")
	case !leaf && !o.Mode.IsDir():
		out = append(out, path+" is not a directory")
	}
	if o.UID != 0 {
		out = append(out, fmt.Sprintf("%s is owned by uid %d, not root", path, o.UID))
	}
	if perm := o.Mode.Perm(); perm&0o022 != 0 {
		out = append(out, fmt.Sprintf("%s is writable by group or others (mode %04o)", path, modeBits(o.Mode)))
	}
	if o.Writable && o.UID == 0 && o.Mode.Perm()&0o022 == 0 {
		out = append(out, path+" is writable by this user (an ACL or capability grants it)")
	}
	return out
}

// modeBits returns the permission bits with setuid, setgid and sticky
// in their chmod positions, for messages.
func modeBits(m fs.FileMode) uint32 {
	b := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}
