package tarfs

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
)

func TestExtract_refusesSymlinkEscape(t *testing.T) {
	outside := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "link", Linkname: outside, Typeflag: tar.TypeSymlink})
	_ = tw.WriteHeader(&tar.Header{Name: "link/pwned", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	err := Extract(t.TempDir(), &buf, false)
	if err == nil {
		t.Fatal("write through a symlink out of the root succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Fatal("file written outside the root")
	}
}

func TestExtract_chownKeepsOwners(t *testing.T) {
	testenv.RequireRoot(t) // chown
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o640, Size: 2, Uid: 1234, Gid: 4321, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("hi"))
	_ = tw.Close()
	dir := t.TempDir()
	if err := Extract(dir, &buf, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 1234 || st.Gid != 4321 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("owner %d:%d mode %v", st.Uid, st.Gid, fi.Mode())
	}
}

// tarOf builds a tar stream of the given headers; a regular file's
// content is its name repeated to its Size.
func tarOf(t *testing.T, hs ...*tar.Header) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bytes.Repeat([]byte("x"), int(h.Size))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// TestExtract_replacesAndKeepsMetadata: files land with their modes and
// times, replace a file or symlink already at their name, and a symlink
// swapped under a directory name the stream already wrote into is
// followed afresh, never through a stale handle.
func TestExtract_replacesAndKeepsMetadata(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old"), []byte("old content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	buf := tarOf(t,
		&tar.Header{Name: "a/b/f", Mode: 0o751, Size: 3, ModTime: mtime, Typeflag: tar.TypeReg},
		&tar.Header{Name: "old", Mode: 0o644, Size: 1, ModTime: mtime, Typeflag: tar.TypeReg},
		&tar.Header{Name: "link", Mode: 0o644, Size: 2, ModTime: mtime, Typeflag: tar.TypeReg},
		&tar.Header{Name: "x/", Mode: 0o755, Typeflag: tar.TypeDir},
		&tar.Header{Name: "y/", Mode: 0o755, Typeflag: tar.TypeDir},
		&tar.Header{Name: "s", Linkname: "x", Typeflag: tar.TypeSymlink},
		&tar.Header{Name: "s/one", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg},
		&tar.Header{Name: "s", Linkname: "y", Typeflag: tar.TypeSymlink},
		&tar.Header{Name: "s/two", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg},
	)
	if err := Extract(dir, buf, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "a/b/f"))
	if err != nil || fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(mtime) || fi.Size() != 3 {
		t.Errorf("a/b/f = %v, %v; want 0751, %v, 3 bytes", fi, err, mtime)
	}
	for name, size := range map[string]int64{"old": 1, "link": 2} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			t.Errorf("%s = %v, %v; want a regular file of %d bytes", name, fi, err, size)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x", "one")); err != nil {
		t.Errorf("s/one not written through s -> x: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "y", "two")); err != nil {
		t.Errorf("s/two not written through s -> y: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x", "two")); err == nil {
		t.Errorf("s/two went to x through a stale handle of s")
	}
}

func TestExtract_chownKeepsSetID(t *testing.T) {
	testenv.RequireRoot(t) // chown
	dir := t.TempDir()
	buf := tarOf(t, &tar.Header{Name: "suid", Mode: 0o4755, Size: 1, Uid: 1234, Gid: 4321, Typeflag: tar.TypeReg})
	if err := Extract(dir, buf, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "suid"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Sys().(*syscall.Stat_t).Uid != 1234 {
		t.Fatalf("suid = %v, %v; want set-uid kept after chown to 1234", fi, err)
	}
}

// TestExtract_chownUnderSetgidDir: a file whose owner is the extractor's
// own still gets the stream's group inside a set-group-id directory,
// where a new file would otherwise take the directory's.
func TestExtract_chownUnderSetgidDir(t *testing.T) {
	testenv.RequireRoot(t) // chown
	dir := t.TempDir()
	sub := filepath.Join(dir, "shared")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sub, 0, 4321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sub, 0o2775); err != nil {
		t.Fatal(err)
	}
	buf := tarOf(t, &tar.Header{Name: "shared/f", Mode: 0o644, Size: 1, Uid: os.Geteuid(), Gid: os.Getegid(), Typeflag: tar.TypeReg})
	if err := Extract(dir, buf, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(sub, "f"))
	if err != nil || int(fi.Sys().(*syscall.Stat_t).Gid) != os.Getegid() {
		t.Fatalf("shared/f = %v, %v; want group %d from the stream", fi, err, os.Getegid())
	}
}

// TestExtract_queuedWritesKeepStreamOrder: small files are written in the
// background, yet a name written twice ends with the later content, a
// hard link finds its target written, and every file is there.
func TestExtract_queuedWritesKeepStreamOrder(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name, content string) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		file(fmt.Sprintf("d%d/f%d", i%7, i), fmt.Sprint(i))
	}
	file("twice", "first")
	file("twice", "second")
	if err := tw.WriteHeader(&tar.Header{Name: "hard", Linkname: "d0/f0", Typeflag: tar.TypeLink}); err != nil {
		t.Fatal(err)
	}
	file("big", strings.Repeat("b", maxQueued+1))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Extract(dir, &buf, false); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("d%d/f%d", i%7, i)))
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("f%d = %q, %v", i, got, err)
		}
	}
	for name, want := range map[string]string{"twice": "second", "hard": "0"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "big")); err != nil || fi.Size() != maxQueued+1 {
		t.Errorf("big = %v, %v", fi, err)
	}
}
