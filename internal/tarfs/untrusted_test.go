package tarfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entry is one header of a crafted tar stream, with its file data.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	data       string
	size       int64 // declared size; len(data) when zero
}

func craft(t testing.TB, entries ...entry) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
			if e.size > 0 {
				h.Size = e.size
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.data != "" {
			tw.Write([]byte(e.data))
		}
	}
	tw.Flush() // no Close: a short file body is part of some attacks
	return &buf
}

// hostTree makes a destination holding files the user cares about, as a
// repository does.
func hostTree(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	for name, data := range map[string]string{".bashrc": "mine", ".git/hooks/README": "hooks"} {
		p := filepath.Join(dst, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// assertHostUntouched fails when anything beside the copied entry changed.
func assertHostUntouched(t *testing.T, dst string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(dst, ".bashrc")); err != nil || string(b) != "mine" {
		t.Errorf(".bashrc changed: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, ".git/hooks/pre-commit")); err == nil {
		t.Error("a git hook was planted")
	}
	ents, _ := os.ReadDir(dst)
	for _, e := range ents {
		if n := e.Name(); n != ".bashrc" && n != ".git" && n != "out" {
			t.Errorf("unexpected %s in the destination", n)
		}
	}
}

// TestExtractUntrusted_hostileGuest plays a guest answering
// `vm cp VM:/x/out DST` with a stream other than the one asked for.
func TestExtractUntrusted_hostileGuest(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		wantErr string // empty: the copy succeeds (hostile parts skipped)
	}{
		{"sibling file", []entry{{name: ".bashrc", typ: tar.TypeReg, data: "pwned"}}, "outside the requested"},
		{"git hook beside the entry", []entry{{name: ".git/hooks/pre-commit", typ: tar.TypeReg, mode: 0o755, data: "#!/bin/sh\n"}}, "outside the requested"},
		{"entry then sibling", []entry{{name: "out/a", typ: tar.TypeReg, data: "ok"}, {name: ".bashrc", typ: tar.TypeReg, data: "pwned"}}, "outside the requested"},
		{"prefix look-alike", []entry{{name: "outx/a", typ: tar.TypeReg, data: "x"}}, "outside the requested"},
		{"dotdot", []entry{{name: "out/../.bashrc", typ: tar.TypeReg, data: "pwned"}}, `".." is not allowed`},
		{"absolute", []entry{{name: "/.bashrc", typ: tar.TypeReg, data: "pwned"}}, "outside the requested"},
		{"write through own symlink", []entry{
			{name: "out/", typ: tar.TypeDir, mode: 0o755},
			{name: "out/l", typ: tar.TypeSymlink, link: "."}, // lexically inside
			{name: "out/l/../.bashrc", typ: tar.TypeReg, data: "pwned"},
		}, `".." is not allowed`},
		{"symlink chain then write", []entry{
			{name: "out/", typ: tar.TypeDir, mode: 0o755},
			{name: "out/d", typ: tar.TypeSymlink, link: "."},
			{name: "out/e", typ: tar.TypeSymlink, link: "d/.."}, // lexically "out", really dst
			{name: "out/e/.git/hooks/pre-commit", typ: tar.TypeReg, data: "pwned"},
		}, "symlink; refusing to write through it"},
		{"out is a symlink to itself, then written through", []entry{
			{name: "out", typ: tar.TypeSymlink, link: "out"}, // lexically inside: kept
			{name: "out/hooks/pre-commit", typ: tar.TypeReg, data: "pwned"},
		}, "symlink; refusing"},
		{"hard link to a host file", []entry{
			{name: "out/", typ: tar.TypeDir, mode: 0o755},
			{name: "out/h", typ: tar.TypeLink, link: ".bashrc"},
		}, "did not write"},
		{"hard link to a pre-existing file under the entry", []entry{
			{name: "out/h", typ: tar.TypeLink, link: "out/old"},
		}, "did not write"},
		{"escaping symlinks and devices are skipped", []entry{
			{name: "out/", typ: tar.TypeDir, mode: 0o755},
			{name: "out/abs", typ: tar.TypeSymlink, link: "/etc/passwd"},
			{name: "out/up", typ: tar.TypeSymlink, link: "../.bashrc"},
			{name: "out/dev", typ: tar.TypeChar},
			{name: "out/fifo", typ: tar.TypeFifo},
			{name: "out/ok", typ: tar.TypeSymlink, link: "f"},
			{name: "out/f", typ: tar.TypeReg, mode: 0o6755, data: "x"},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := hostTree(t)
			var warnings []string
			err := ExtractUntrusted(dst, craft(t, tt.entries...), Limits{Entry: "out", Warn: func(m string) { warnings = append(warnings, m) }})
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			assertHostUntouched(t, dst)
			if tt.wantErr != "" {
				return
			}
			for _, n := range []string{"abs", "up", "dev", "fifo"} {
				if _, err := os.Lstat(filepath.Join(dst, "out", n)); err == nil {
					t.Errorf("out/%s was created", n)
				}
			}
			if len(warnings) != 4 {
				t.Errorf("warnings %q, want one per skipped entry", warnings)
			}
			fi, err := os.Stat(filepath.Join(dst, "out", "f"))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 || fi.Mode().Perm() != 0o755 {
				t.Errorf("out/f mode %v: set-id bits kept", fi.Mode())
			}
			if l, err := os.Readlink(filepath.Join(dst, "out", "ok")); err != nil || l != "f" {
				t.Errorf("in-tree symlink: %q %v", l, err)
			}
		})
	}
}

// TestExtractUntrusted_escapingEntrySymlink: the entry itself as a symlink
// out of the tree is skipped, and what follows lands in a real directory.
func TestExtractUntrusted_escapingEntrySymlink(t *testing.T) {
	dst := hostTree(t)
	var warned int
	err := ExtractUntrusted(dst, craft(t,
		entry{name: "out", typ: tar.TypeSymlink, link: ".git"},
		entry{name: "out/hooks/pre-commit", typ: tar.TypeReg, data: "x"},
	), Limits{Entry: "out", Warn: func(string) { warned++ }})
	if err != nil {
		t.Fatal(err)
	}
	assertHostUntouched(t, dst)
	if fi, err := os.Lstat(filepath.Join(dst, "out")); err != nil || !fi.IsDir() || warned != 1 {
		t.Errorf("out: %v %v, %d warnings; want a real directory and one warning", fi, err, warned)
	}
}

// TestExtractUntrusted_preexistingSymlink: a symlink the user already had
// where the guest's tree goes is never written through.
func TestExtractUntrusted_preexistingSymlink(t *testing.T) {
	dst := hostTree(t)
	if err := os.Symlink(".git", filepath.Join(dst, "out")); err != nil {
		t.Fatal(err)
	}
	err := ExtractUntrusted(dst, craft(t, entry{name: "out/hooks/pre-commit", typ: tar.TypeReg, data: "pwned"}), Limits{Entry: "out"})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("err = %v, want a refusal to write through out", err)
	}
	assertHostUntouched(t, dst)
}

// TestExtractUntrusted_sizeLimit: more file data than the limit fails the
// copy with ErrTooLarge and leaves no partial file of the overflow.
func TestExtractUntrusted_sizeLimit(t *testing.T) {
	dst := t.TempDir()
	big := strings.Repeat("x", 600)
	s := craft(t,
		entry{name: "out/a", typ: tar.TypeReg, data: big},
		entry{name: "out/b", typ: tar.TypeReg, data: big},
	)
	err := ExtractUntrusted(dst, s, Limits{Entry: "out", MaxBytes: 1000})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "out", "b")); err == nil {
		t.Error("the file past the limit was left behind")
	}
	// Exactly the limit is fine.
	dst = t.TempDir()
	if err := ExtractUntrusted(dst, craft(t, entry{name: "out", typ: tar.TypeReg, data: big}), Limits{Entry: "out", MaxBytes: 600}); err != nil {
		t.Fatalf("a copy of exactly the limit: %v", err)
	}
	// A header may declare any size: the bound counts what is written.
	dst = t.TempDir()
	err = ExtractUntrusted(dst, craft(t, entry{name: "out", typ: tar.TypeReg, data: big, size: 1 << 40}), Limits{Entry: "out", MaxBytes: 100})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared 1 TiB: err = %v, want ErrTooLarge", err)
	}
}

func TestExtractUntrusted_badEntry(t *testing.T) {
	for _, e := range []string{"", ".", "/", "a/b", ".."} {
		if err := ExtractUntrusted(t.TempDir(), craft(t), Limits{Entry: e}); err == nil {
			t.Errorf("entry %q accepted", e)
		}
	}
}

// FuzzExtractUntrusted feeds arbitrary streams: whatever they hold,
// nothing may appear in the destination but the entry "out".
func FuzzExtractUntrusted(f *testing.F) {
	f.Add(craft(f, entry{name: "out/a", typ: tar.TypeReg, data: "x"}).Bytes())
	f.Add(craft(f, entry{name: "out", typ: tar.TypeSymlink, link: ".."}, entry{name: "out/x", typ: tar.TypeReg, data: "x"}).Bytes())
	f.Add(craft(f, entry{name: "out/d", typ: tar.TypeSymlink, link: "."}, entry{name: "out/e", typ: tar.TypeSymlink, link: "d/.."}, entry{name: "out/e/x", typ: tar.TypeReg, data: "x"}).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "dst")
		_ = ExtractUntrusted(dst, bytes.NewReader(data), Limits{Entry: "out", MaxBytes: 1 << 16})
		ents, _ := os.ReadDir(dst)
		for _, e := range ents {
			if e.Name() != "out" {
				t.Fatalf("%s appeared beside the entry", e.Name())
			}
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("the parent holds %d entries", len(ents))
		}
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky|fs.ModeDevice|fs.ModeNamedPipe) != 0 {
				t.Fatalf("%s has mode %v", p, fi.Mode())
			}
			return nil
		})
	})
}
