// Package tarfs moves file trees as tar streams: the CLI's vm cp and the
// guest agent's file endpoints both use it. Extraction is confined to its
// target directory (os.Root), so a hostile stream cannot write elsewhere.
//
// Two directions, two trust levels: Extract unpacks what the host sent (a
// guest applying the user's files keeps modes and owners); ExtractUntrusted
// unpacks what a guest sent to the host and treats every byte as an attack
// (see its doc comment).
package tarfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Extract extracts a tar stream into dir (created when missing). Entry
// names are relative to dir and cannot escape it, not even through
// symlinks in the stream or already on disk. Regular files, directories,
// symlinks and hard links are supported; modes and modification times are
// kept, and owners too when chown is set. Directory modes are applied
// last, so read-only directories can still be filled. Use it only for
// streams the host made; a guest's answer goes through ExtractUntrusted.
func Extract(dir string, r io.Reader, chown bool) error {
	return extract(dir, r, rules{chown: chown, keepSpecial: true})
}

// DefaultMaxBytes is the default bound on the file bytes ExtractUntrusted
// writes: large enough for a build output, small enough that a guest cannot
// fill the host's disk by answering a copy.
const DefaultMaxBytes = 1 << 30

// maxEntries bounds the entries of an untrusted stream (inodes are a
// resource too).
const maxEntries = 1 << 20

// Limits are the bounds of an untrusted extraction.
type Limits struct {
	// Entry is the one top-level name the stream may hold (the base name of
	// the guest path that was asked for): every entry must be Entry or lie
	// below it. Required.
	Entry string
	// MaxBytes bounds the regular-file bytes written; zero means
	// DefaultMaxBytes.
	MaxBytes int64
	// Warn, when set, is told of every entry skipped (devices, fifos,
	// symlinks pointing out of the copied tree).
	Warn func(msg string)
}

// ErrTooLarge is returned (wrapped) when an untrusted stream holds more
// than Limits.MaxBytes of file data.
var ErrTooLarge = errors.New("stream exceeds the size limit")

// ExtractUntrusted extracts a tar stream a guest sent into dir, the way
// `vm cp VM:/path DST` needs it to, holding wall 1 of the security model:
//   - every entry must be lim.Entry or below it; any other name fails the
//     whole copy (the guest was asked for one entry and answered another),
//     so files beside it in dir, such as .git/hooks or .bashrc, are never
//     created or replaced;
//   - no entry is written through a symlink, whether the stream made it or
//     it was already on disk: a parent that is a symlink fails the copy;
//   - set-id and sticky bits are dropped; owners are never applied;
//   - a symlink is kept only when its target is relative and stays inside
//     the copied tree; others are skipped with a warning, as are devices,
//     fifos and sockets; hard links must name a file this stream wrote;
//   - at most lim.MaxBytes of file data and a bounded number of entries.
func ExtractUntrusted(dir string, r io.Reader, lim Limits) error {
	entry, err := cleanEntryName(lim.Entry)
	if err != nil || entry == "." || strings.Contains(entry, "/") {
		return fmt.Errorf("copy entry %q: want one plain name", lim.Entry)
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	warn := lim.Warn
	if warn == nil {
		warn = func(string) {}
	}
	return extract(dir, r, rules{entry: entry, maxBytes: lim.MaxBytes, warn: warn, untrusted: true})
}

// rules say how much of a stream extract trusts.
type rules struct {
	chown       bool // apply the entries' owners
	keepSpecial bool // keep set-id and sticky bits
	// untrusted streams: the named entry, the byte bound, and who hears
	// about skipped entries.
	untrusted bool
	entry     string
	maxBytes  int64
	warn      func(string)
}

func extract(dir string, r io.Reader, ru rules) error {
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
	var written int64
	var fast *parents
	if !ru.untrusted {
		fast = &parents{root: root, open: map[string]*os.Root{}, setgid: map[string]bool{}, queued: map[string]bool{}}
		defer func() { _ = fast.stop(); fast.reset() }()
	}
	wrote := map[string]bool{} // regular files this stream wrote (hard-link targets)
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
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
		if ru.untrusted {
			if n >= maxEntries {
				return fmt.Errorf("tar stream: more than %d entries", maxEntries)
			}
			if !within(name, ru.entry) {
				return fmt.Errorf("tar entry %q: outside the requested %q", h.Name, ru.entry)
			}
			if err := noSymlinkParents(root, name); err != nil {
				return err
			}
		}
		mode := tarMode(h.Mode)
		if !ru.keepSpecial {
			mode &= fs.ModePerm
		}
		if fast != nil && h.Typeflag == tar.TypeReg {
			if err := fast.writeFile(name, h, mode, ru.chown, tr); err != nil {
				return err
			}
			continue
		}
		if fast != nil {
			// A link or directory entry may change what a cached
			// parent name resolves to.
			fast.reset()
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("create parent of %s: %w", name, err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if ru.untrusted {
				if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
					return fmt.Errorf("tar entry %q: %s exists and is not a directory", h.Name, name)
				}
			}
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("create directory %s: %w", name, err)
			}
			dirs = append(dirs, dirMeta{name, mode, h.ModTime})
		case tar.TypeReg: // the reader reports old TypeRegA entries as TypeReg
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("create %s: %w", name, err)
			}
			var src io.Reader = tr
			if ru.untrusted {
				// One byte past the bound tells a full file from an overflow.
				src = io.LimitReader(tr, ru.maxBytes-written+1)
			}
			k, cerr := io.Copy(f, src)
			written += k
			if err := errors.Join(cerr, f.Close()); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			if ru.untrusted && written > ru.maxBytes {
				root.Remove(name)
				return fmt.Errorf("%s: %w of %d bytes", name, ErrTooLarge, ru.maxBytes)
			}
			if err := root.Chmod(name, mode); err != nil {
				return fmt.Errorf("chmod %s: %w", name, err)
			}
			wrote[name] = true
		case tar.TypeSymlink:
			if ru.untrusted && !symlinkInside(name, h.Linkname, ru.entry) {
				ru.warn(fmt.Sprintf("skipped symlink %s -> %s: it points outside the copied tree", name, h.Linkname))
				continue
			}
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
			if ru.untrusted && !wrote[target] {
				return fmt.Errorf("tar entry %q: hard link to %q, which this copy did not write", h.Name, h.Linkname)
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("link %s: %w", name, err)
			}
		default:
			// Devices, fifos and the like are not transferred.
			if ru.untrusted {
				ru.warn(fmt.Sprintf("skipped %s: not a file, directory or symlink", name))
			}
			continue
		}
		if ru.chown {
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
	if fast != nil {
		if err := fast.stop(); err != nil {
			return err
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

// within reports whether the clean relative name is entry or below it.
func within(name, entry string) bool {
	return name == entry || strings.HasPrefix(name, entry+"/")
}

// symlinkInside reports whether a symlink at name with target stays in
// the tree rooted at entry when resolved lexically. Absolute targets never
// do. (No entry is ever written through a symlink, so lexical resolution
// is enough: a chain of links cannot carry a write out of the tree.)
func symlinkInside(name, target, entry string) bool {
	if target == "" || path.IsAbs(target) {
		return false
	}
	resolved := path.Join(path.Dir(name), target)
	return within(resolved, entry)
}

// noSymlinkParents fails when a directory on the way to name exists and is
// a symlink (made by this stream or already on disk), so a write can never
// be carried through one to somewhere else below dir.
func noSymlinkParents(root *os.Root, name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("tar entry %q: %s is a symlink; refusing to write through it", name, p)
		}
		if !fi.IsDir() {
			return fmt.Errorf("tar entry %q: %s is not a directory", name, p)
		}
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

// parents writes the regular files of a trusted stream with as few
// system calls as a plain tar: each parent directory is made and opened
// once (an os.Root of its own, so a name still cannot leave the target),
// a file is created in it by its base name, and owner, mode and times are
// set on the open file. Under software emulation every path walk costs
// tens of microseconds; the general path (a Root operation per step, each
// resolving the whole name) took several milliseconds per file
// (BenchmarkWorkspacePrepare in internal/e2e).
//
// Files up to maxQueued bytes are read from the stream into memory and
// written by a few workers while the stream goes on: the stream is read
// in order, and the file system work (create, write, chown, chmod,
// times) of small files, which dominates under emulation, runs on more
// than one CPU. Any other entry waits for the files in flight first.
type parents struct {
	root *os.Root
	open map[string]*os.Root // parent directory name -> its Root
	// setgid holds the parents whose new files take the directory's
	// group rather than the creator's.
	setgid map[string]bool

	jobs    chan fileJob
	queued  map[string]bool // names handed to workers and not yet written
	pending sync.WaitGroup  // files handed to workers and not yet written
	workers sync.WaitGroup
	mu      sync.Mutex
	err     error // the first worker failure
}

// Bounds of the background writes: files this size or smaller are
// queued, at most queueDepth of them, for writeWorkers workers.
const (
	maxQueued    = 1 << 20
	queueDepth   = 16
	writeWorkers = 2
)

// fileJob is one small file to write in the background.
type fileJob struct {
	dir   *os.Root
	base  string
	name  string
	data  []byte
	h     *tar.Header
	mode  fs.FileMode
	chown bool
}

// dir returns the Root of directory name (relative, clean), made when
// missing.
func (p *parents) dir(name string) (*os.Root, error) {
	if r, ok := p.open[name]; ok {
		return r, nil
	}
	r := p.root
	if name != "." {
		if err := p.root.MkdirAll(name, 0o755); err != nil {
			return nil, fmt.Errorf("create parent of %s: %w", name, err)
		}
		var err error
		if r, err = p.root.OpenRoot(name); err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
	}
	fi, err := r.Stat(".")
	if err != nil {
		if r != p.root {
			r.Close()
		}
		return nil, fmt.Errorf("stat %s: %w", name, err)
	}
	p.open[name] = r
	p.setgid[name] = fi.Mode()&fs.ModeSetgid != 0
	return r, nil
}

// wait blocks until every queued file is written and returns the first
// failure among them.
func (p *parents) wait() error {
	p.pending.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// stop waits for the queued files and ends the workers.
func (p *parents) stop() error {
	err := p.wait()
	if p.jobs != nil {
		close(p.jobs)
		p.workers.Wait()
		p.jobs = nil
	}
	return err
}

// work writes queued files until the queue closes; after a failure it
// only drains.
func (p *parents) work() {
	defer p.workers.Done()
	for j := range p.jobs {
		p.mu.Lock()
		failed := p.err != nil
		p.mu.Unlock()
		if !failed {
			if err := p.write(j.dir, j.base, j.name, j.h, j.mode, j.chown, bytes.NewReader(j.data)); err != nil {
				p.mu.Lock()
				if p.err == nil {
					p.err = err
				}
				p.mu.Unlock()
			}
		}
		p.mu.Lock()
		delete(p.queued, j.name)
		p.mu.Unlock()
		p.pending.Done()
	}
}

// reset waits for the queued files, then closes the cached parents.
func (p *parents) reset() {
	_ = p.wait()
	for k, r := range p.open {
		if r != p.root {
			r.Close()
		}
		delete(p.open, k)
	}
	clear(p.setgid)
}

// writeFile writes the regular file entry h at name from r.
func (p *parents) writeFile(name string, h *tar.Header, mode fs.FileMode, chown bool, r io.Reader) error {
	parent := path.Dir(name)
	dir, err := p.dir(parent)
	if err != nil {
		return err
	}
	// A new file is already the creator's, unless a set-group-id parent
	// gives it the directory's group: skip the chown then.
	chown = chown && (h.Uid != euid || h.Gid != egid || p.setgid[parent])
	base := path.Base(name)
	p.mu.Lock()
	err, again := p.err, p.queued[name]
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if h.Size > maxQueued || again {
		// Written here, streaming, once the queued files are written,
		// so that writes to one name keep the stream's order.
		if err := p.wait(); err != nil {
			return err
		}
		return p.write(dir, base, name, h, mode, chown, r)
	}
	data := make([]byte, h.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if p.jobs == nil {
		p.jobs = make(chan fileJob, queueDepth)
		for range writeWorkers {
			p.workers.Add(1)
			go p.work()
		}
	}
	p.pending.Add(1)
	p.mu.Lock()
	p.queued[name] = true
	p.mu.Unlock()
	p.jobs <- fileJob{dir: dir, base: base, name: name, data: data, h: h, mode: mode, chown: chown}
	return nil
}

// write creates file base in dir from r and sets its owner (when chown),
// mode and times.
func (p *parents) write(dir *os.Root, base, name string, h *tar.Header, mode fs.FileMode, chown bool, r io.Reader) error {
	f, err := dir.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Something is there already: replace it unless it is a
		// directory, as the general path does.
		if err = removeNonDir(dir, base); err == nil {
			f, err = dir.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	_, err = io.Copy(f, r)
	if err == nil && chown {
		err = f.Chown(h.Uid, h.Gid)
	}
	if err == nil {
		// After chown, which clears set-id bits.
		err = f.Chmod(mode)
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	// By base name in the open parent: one step, and no /proc needed
	// (futimes goes through /proc/self/fd).
	if err := dir.Chtimes(base, h.ModTime, h.ModTime); err != nil {
		return fmt.Errorf("set times of %s: %w", name, err)
	}
	return nil
}

// The ids new files get, for parents.writeFile.
var euid, egid = os.Geteuid(), os.Getegid()

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
