package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// untar writes a (flattened) filesystem tar into root, keeping modes,
// ownership, symlinks, hard links, device nodes and xattrs. Every path is
// resolved inside root (openat2 RESOLVE_IN_ROOT), so neither "../" nor a
// symlink in the image can make it write outside root. Entries may come
// in any order (mutate.Extract emits the top layer first): missing
// parents are created and hard links are made last.
//
// Ownership and device nodes need root; as another user files end up
// owned by that user and device nodes are skipped.
func untar(ctx context.Context, r io.Reader, root string) error {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	x := &extractor{root: rootFd, privileged: os.Geteuid() == 0}
	tr := tar.NewReader(r)
	type link struct{ name, target string }
	var links []link
	var dirs []*tar.Header
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name, ok := cleanName(h.Name)
		if !ok {
			continue // the root itself
		}
		switch h.Typeflag {
		case tar.TypeLink:
			target, ok := cleanName(h.Linkname)
			if !ok {
				return fmt.Errorf("hard link %s: bad target %q", h.Name, h.Linkname)
			}
			links = append(links, link{name, target})
			continue
		case tar.TypeDir:
			dirs = append(dirs, h)
		}
		if err := x.entry(name, h, tr); err != nil {
			return fmt.Errorf("extract %s: %w", h.Name, err)
		}
	}
	for _, l := range links {
		if err := x.hardlink(l.name, l.target); err != nil {
			return fmt.Errorf("extract hard link %s: %w", l.name, err)
		}
	}
	// Directory modes last: a read-only directory must not stop its
	// entries from being written first.
	for _, h := range dirs {
		name, _ := cleanName(h.Name)
		if err := x.attrs(name, h, true); err != nil {
			return fmt.Errorf("extract %s: %w", h.Name, err)
		}
	}
	return nil
}

// cleanName turns a tar name into a clean relative path; false for the
// root directory itself.
func cleanName(name string) (string, bool) {
	p := path.Clean("/" + name)
	if p == "/" {
		return "", false
	}
	return strings.TrimPrefix(p, "/"), true
}

type extractor struct {
	root       int
	privileged bool
}

// parent opens the parent directory of name inside root, creating
// missing directories (0755, root-owned) on the way.
func (x *extractor) parent(name string) (int, string, error) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		fd, err := unix.Openat(x.root, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fd, base, err
	}
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(x.root, dir, how)
	if errors.Is(err, unix.ENOENT) {
		if err := x.mkdirAll(dir); err != nil {
			return -1, "", err
		}
		fd, err = unix.Openat2(x.root, dir, how)
	}
	if err != nil {
		return -1, "", fmt.Errorf("open parent %s: %w", dir, err)
	}
	return fd, base, nil
}

// mkdirAll creates dir (relative to root) and its missing parents.
func (x *extractor) mkdirAll(dir string) error {
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		pfd, base, err := x.parent(p)
		if err != nil {
			return err
		}
		err = unix.Mkdirat(pfd, base, 0o755)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s: %w", p, err)
		}
	}
	return nil
}

// entry creates one non-hard-link entry.
func (x *extractor) entry(name string, h *tar.Header, r io.Reader) error {
	pfd, base, err := x.parent(name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if h.Typeflag != tar.TypeDir {
		// Replace whatever is there (a later entry wins; also lets a file
		// replace a symlink without following it).
		if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			if errors.Is(err, unix.EISDIR) {
				if err := os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)); err != nil {
					return err
				}
			} else {
				return err
			}
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil // attributes after all entries
	case tar.TypeReg: // the reader reports old TypeRegA entries as TypeReg
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), name)
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch h.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		if h.Typeflag != tar.TypeFifo && !x.privileged {
			return nil // device nodes need root; images rarely ship them
		}
		dev := unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))
		if err := unix.Mknodat(pfd, base, mode|uint32(h.Mode&0o7777), int(dev)); err != nil {
			return err
		}
	default:
		return nil // pax/gnu metadata entries are consumed by archive/tar
	}
	return x.attrsAt(pfd, base, h)
}

// attrs applies ownership, mode, xattrs and times to an existing entry.
func (x *extractor) attrs(name string, h *tar.Header, _ bool) error {
	pfd, base, err := x.parent(name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	return x.attrsAt(pfd, base, h)
}

func (x *extractor) attrsAt(pfd int, base string, h *tar.Header) error {
	isLink := h.Typeflag == tar.TypeSymlink
	if x.privileged {
		if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// chmod after chown: chown clears setuid/setgid bits.
	if !isLink {
		if err := unix.Fchmodat(pfd, base, uint32(h.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range h.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || isLink {
			continue
		}
		p := fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) && (x.privileged || !errors.Is(err, unix.EPERM)) {
			return fmt.Errorf("set xattr %s: %w", attr, err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(h.ModTime.UnixNano()), unix.NsecToTimespec(h.ModTime.UnixNano())}
	if h.ModTime.IsZero() {
		return nil
	}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// hardlink links name to target, both inside root.
func (x *extractor) hardlink(name, target string) error {
	tfd, tbase, err := x.parent(target)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	pfd, base, err := x.parent(name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return unix.Linkat(tfd, tbase, pfd, base, 0)
}
