package workspace

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// manifestOf lists dir the way ManifestScript does in the guest.
func manifestOf(t *testing.T, dir string) []byte {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		typ, link := "f", ""
		switch {
		case fi.IsDir():
			typ = "d"
		case fi.Mode()&os.ModeSymlink != 0:
			typ = "l"
			link, _ = os.Readlink(p)
		}
		mt := fi.ModTime()
		fmt.Fprintf(&b, "%s\x00%d\x00%d.%09d0\x00%o\x00%s\x00%s\x00", typ, fi.Size(), mt.Unix(), mt.Nanosecond(), fi.Mode().Perm(), link, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return []byte(b.String())
}

func TestParseManifest_refusesBadInput(t *testing.T) {
	for _, bad := range []string{
		"f\x001\x001.0\x00644\x00\x00../x\x00",
		"f\x001\x001.0\x00644\x00\x00/etc/passwd\x00",
		"f\x001\x001.0\x00644\x00\x00a/../../x\x00",
		"x\x001\x001.0\x00644\x00\x00a\x00",
		"f\x00-1\x001.0\x00644\x00\x00a\x00",
		"f\x001\x00soon\x00644\x00\x00a\x00",
		"f\x001\x001.0\x0099999\x00\x00a\x00",
		"f\x001\x001.0\x00644\x00\x00",
		"f\x001\x001.0\x00644\x00\x00\x00",
	} {
		if _, err := ParseManifest([]byte(bad)); err == nil {
			t.Errorf("ParseManifest(%q) = nil error", bad)
		}
	}
}

// TestDiff: the host tree and a guest copy that differs in every way a
// prepare must notice; applying the delta to the copy gives the host tree.
func TestDiff(t *testing.T) {
	host, guest := t.TempDir(), t.TempDir()
	mt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	write := func(root, p, content string, mode os.FileMode) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{host, guest} {
		write(root, "same.txt", "same", 0o644)
		write(root, "dir/same.txt", "same", 0o644)
	}
	write(host, "changed.txt", "new content", 0o644)
	write(guest, "changed.txt", "old", 0o644)
	write(host, "mode.sh", "x", 0o755)
	write(guest, "mode.sh", "x", 0o644)
	write(host, "new/file.txt", "n", 0o644)
	write(guest, "gone/deep/file.txt", "g", 0o644)
	write(guest, "stale.txt", "s", 0o644)
	write(host, "kind", "now a file", 0o644)
	write(guest, "kind/inside.txt", "was a dir", 0o644)
	if err := os.Symlink("same.txt", filepath.Join(host, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("changed.txt", filepath.Join(guest, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("same.txt", filepath.Join(host, "samelink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("same.txt", filepath.Join(guest, "samelink")); err != nil {
		t.Fatal(err)
	}
	sel, err := selectAll(host)
	if err != nil {
		t.Fatal(err)
	}
	man, err := ParseManifest(manifestOf(t, guest))
	if err != nil {
		t.Fatal(err)
	}
	d := Diff(sel, man)
	var sent []string
	for _, e := range d.Send.Entries {
		sent = append(sent, e.Path)
	}
	if want := []string{"changed.txt", "kind", "link", "mode.sh", "new", "new/file.txt"}; !slices.Equal(sent, want) {
		t.Errorf("sent %q, want %q", sent, want)
	}
	slices.Sort(d.Delete)
	if want := []string{"gone", "kind", "stale.txt"}; !slices.Equal(d.Delete, want) {
		t.Errorf("delete %q, want %q", d.Delete, want)
	}
	if d.Send.Files != 4 || d.Send.Bytes != int64(len("new content")+1+1+len("now a file")) {
		t.Errorf("send counts %d files, %d bytes", d.Send.Files, d.Send.Bytes)
	}
}

// selectAll selects every entry below root, as ModeFullCopy would.
func selectAll(root string) (Selection, error) {
	sel := Selection{Root: root}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		sel.Entries = append(sel.Entries, Entry{Path: filepath.ToSlash(rel), Info: fi})
		return nil
	})
	return sel, err
}
