// Package tarfs moves file trees as tar streams: the CLI's vm cp and the
// guest agent's file endpoints both use it. Extraction is confined to its
// target directory (os.Root), so a hostile stream cannot write elsewhere.
package tarfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Extract extracts a tar stream into dir (created when missing). Entry
// names are relative to dir and cannot escape it, not even through
// symlinks in the stream or already on disk. Regular files, directories,
// symlinks and hard links are supported; modes and modification times are
// kept, and owners too when chown is set. Directory modes are applied
// last, so read-only directories can still be filled.
func Extract(dir string, r io.Reader, chown bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	type dirMeta struct {
		name  string
		mode  fs.FileMode
		mtime time.Time
	}
	var dirs []dirMeta
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name, err := cleanEntryName(h.Name)
		if err != nil {
			return err
		}
		if name == "." && h.Typeflag != tar.TypeDir {
			return fmt.Errorf("tar entry %q: not a directory", h.Name)
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("create parent of %s: %w", name, err)
			}
		}
		mode := tarMode(h.Mode)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("create directory %s: %w", name, err)
			}
			dirs = append(dirs, dirMeta{name, mode, h.ModTime})
		case tar.TypeReg: // the reader reports old TypeRegA entries as TypeReg
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("create %s: %w", name, err)
			}
			_, cerr := io.Copy(f, tr)
			if err := errors.Join(cerr, f.Close()); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("chmod %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("symlink %s: %w", name, err)
			}
		case tar.TypeLink:
			target, err := cleanEntryName(h.Linkname)
			if err != nil {
				return err
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("link %s: %w", name, err)
			}
		default:
			// Devices, fifos and the like are not transferred.
			continue
		}
		if chown {
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("chown %s: %w", name, err)
			}
			if h.Typeflag == tar.TypeReg && mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				// chown clears set-id bits; put them back.
				if err := root.Chmod(name, mode); err != nil {
					return fmt.Errorf("chmod %s: %w", name, err)
				}
			}
		}
		if h.Typeflag == tar.TypeReg {
			_ = root.Chtimes(name, h.ModTime, h.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := root.Chmod(d.name, d.mode); err != nil {
			return fmt.Errorf("chmod %s: %w", d.name, err)
		}
		_ = root.Chtimes(d.name, d.mtime, d.mtime)
	}
	return nil
}

// tarMode converts a tar header mode to an fs.FileMode's permission and
// special bits.
func tarMode(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// cleanEntryName makes a tar entry name relative and clean, refusing ".."
// components.
func cleanEntryName(name string) (string, error) {
	n := path.Clean("/" + strings.TrimLeft(name, "/"))
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." {
			return "", fmt.Errorf("tar entry %q: \"..\" is not allowed", name)
		}
	}
	n = strings.TrimPrefix(n, "/")
	if n == "" {
		n = "."
	}
	return n, nil
}

// removeNonDir removes an existing file or symlink at name so it can be
// replaced; a directory there is an error.
func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: is a directory", name)
	}
	if err := root.Remove(name); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return nil
}

// Write writes a tar stream of p (a file, symlink or directory tree) to w,
// naming entries relative to p's parent directory. Symlinks are stored as
// links, never followed. With rootOwned every entry is owned by uid and
// gid 0 (files sent from a host user to a guest's root); otherwise the
// owners on disk are kept.
func Write(w io.Writer, p string, rootOwned bool) error {
	tw := tar.NewWriter(w)
	parent := filepath.Dir(p)
	err := filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(fp); err != nil {
				return err
			}
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0 {
			return nil // sockets, devices, fifos
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(parent, fp)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if rootOwned {
			h.Uid, h.Gid = 0, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(fp)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, h.Size); err != nil {
			return fmt.Errorf("copy %s: %w", fp, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", p, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("tar %s: %w", p, err)
	}
	return nil
}
