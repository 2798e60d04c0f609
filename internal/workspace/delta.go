package workspace

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ManifestScript lists the guest's /root/repo for an incremental prepare:
// per entry (files, directories, symlinks) six NUL-terminated fields,
// type, size, mtime (seconds with a fraction), permission bits, symlink
// target and path relative to the repo. It exits 3 when there is no repo.
const ManifestScript = `cd ` + GuestDir + ` 2>/dev/null || exit 3
find . -mindepth 1 \( -type f -o -type d -o -type l \) -printf '%y\0%s\0%T@\0%m\0%l\0%P\0'`

// MaxManifestEntries bounds the entries ParseManifest accepts: the guest
// writes the manifest, and a repo larger than this is sent whole.
const MaxManifestEntries = 1 << 20

// GuestEntry is one entry of the guest's repo as ManifestScript lists it.
// The guest made it: it only decides what the host sends back to the
// guest, so a lie costs the guest its own copy, never the host.
type GuestEntry struct {
	Path  string
	Type  byte // 'f' file, 'd' directory, 'l' symlink
	Size  int64
	Mtime time.Time
	Perm  fs.FileMode
	Link  string
}

// ParseManifest parses ManifestScript's output. Paths must be clean,
// relative and inside the repo; anything else fails the whole manifest.
func ParseManifest(b []byte) ([]GuestEntry, error) {
	fields := bytes.Split(b, []byte{0})
	if n := len(fields); n > 0 && len(fields[n-1]) == 0 {
		fields = fields[:n-1]
	}
	if len(fields)%6 != 0 {
		return nil, fmt.Errorf("guest manifest: %d fields, not whole entries of 6", len(fields))
	}
	if len(fields)/6 > MaxManifestEntries {
		return nil, fmt.Errorf("guest manifest: more than %d entries", MaxManifestEntries)
	}
	out := make([]GuestEntry, 0, len(fields)/6)
	for i := 0; i < len(fields); i += 6 {
		typ, size, mtime, perm, link, p := string(fields[i]), string(fields[i+1]), string(fields[i+2]), string(fields[i+3]), string(fields[i+4]), string(fields[i+5])
		e := GuestEntry{Path: p, Link: link}
		if len(typ) != 1 || !strings.Contains("fdl", typ) {
			return nil, fmt.Errorf("guest manifest: entry %q: type %q", p, typ)
		}
		e.Type = typ[0]
		if p == "" || p != path.Clean(p) || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("guest manifest: bad path %q", p)
		}
		var err error
		if e.Size, err = strconv.ParseInt(size, 10, 64); err != nil || e.Size < 0 {
			return nil, fmt.Errorf("guest manifest: entry %q: size %q", p, size)
		}
		if e.Mtime, err = parseFindTime(mtime); err != nil {
			return nil, fmt.Errorf("guest manifest: entry %q: %w", p, err)
		}
		m, err := strconv.ParseUint(perm, 8, 32)
		if err != nil || m > 0o7777 {
			return nil, fmt.Errorf("guest manifest: entry %q: mode %q", p, perm)
		}
		e.Perm = fs.FileMode(m) & fs.ModePerm
		out = append(out, e)
	}
	return out, nil
}

// parseFindTime parses find's %T@ ("1700000000.1234567890").
func parseFindTime(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("mtime %q", s)
	}
	frac = (frac + "000000000")[:9]
	ns, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("mtime %q", s)
	}
	return time.Unix(n, ns), nil
}

// Delta is what an incremental prepare sends: the entries of the
// selection the guest does not already hold as they are, and the guest
// paths to delete first (gone from the selection, or of another type).
type Delta struct {
	Send   Selection
	Delete []string
}

// Diff compares the selection with the guest's manifest by type, size,
// mtime (to the microsecond, what the transfer keeps), permission bits
// and symlink target, the quick check rsync makes by default: a file the
// guest changed without changing those is not sent again.
func Diff(sel Selection, guest []GuestEntry) Delta {
	have := make(map[string]GuestEntry, len(guest))
	for _, g := range guest {
		have[g.Path] = g
	}
	d := Delta{Send: Selection{Root: sel.Root, SkippedSubmodules: sel.SkippedSubmodules}}
	want := make(map[string]bool, len(sel.Entries))
	gone := map[string]bool{}
	for _, e := range sel.Entries {
		want[e.Path] = true
		g, ok := have[e.Path]
		if ok && sameEntry(sel.Root, e, g) {
			continue
		}
		if ok && entryType(e.Info) != g.Type {
			d.Delete = append(d.Delete, e.Path)
			gone[e.Path] = true
		}
		d.Send.Entries = append(d.Send.Entries, e)
		if e.Info.Mode().IsRegular() {
			d.Send.Files++
			d.Send.Bytes += e.Info.Size()
		}
	}
	// The manifest lists parents before children, so a directory deleted
	// whole is seen before what it holds.
	for _, g := range guest {
		if want[g.Path] && !gone[g.Path] || under(g.Path, gone) {
			continue
		}
		if !want[g.Path] {
			d.Delete = append(d.Delete, g.Path)
			gone[g.Path] = true
		}
	}
	return d
}

// under reports whether p lies below a path in gone.
func under(p string, gone map[string]bool) bool {
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if gone[dir] {
			return true
		}
	}
	return false
}

func entryType(fi fs.FileInfo) byte {
	switch {
	case fi.IsDir():
		return 'd'
	case fi.Mode()&os.ModeSymlink != 0:
		return 'l'
	default:
		return 'f'
	}
}

// sameEntry reports whether the guest holds e as it is on the host.
func sameEntry(root string, e Entry, g GuestEntry) bool {
	fi := e.Info
	switch t := entryType(fi); {
	case t != g.Type:
		return false
	case t == 'd':
		return fi.Mode().Perm() == g.Perm
	case t == 'l':
		link, err := os.Readlink(filepath.Join(root, filepath.FromSlash(e.Path)))
		return err == nil && link == g.Link
	}
	return fi.Size() == g.Size && fi.Mode().Perm() == g.Perm &&
		fi.ModTime().Truncate(time.Microsecond).Equal(g.Mtime.Truncate(time.Microsecond))
}
