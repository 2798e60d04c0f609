package disk

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/cmdrun"
	"banger/internal/disk/disktest"
	"banger/internal/testenv"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// requireE2fsprogs fails in CI and skips elsewhere when e2fsprogs is
// missing.
func requireE2fsprogs(tb testing.TB) {
	tb.Helper()
	for _, bin := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "dumpe2fs"} {
		testenv.RequireCommand(tb, bin) // e2fsprogs
	}
}

// debugfsCat reads a file out of an ext4 image without mounting it.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func TestMakeExt4(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("box\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "x"), []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		size    int64
		label   string
		fromDir string
		files   map[string]string
		wantErr string
	}{
		{name: "from dir", size: 64 * mib, label: "banger-root", fromDir: src,
			files: map[string]string{"/x": "payload", "/etc/hostname": "box\n"}},
		{name: "empty", size: 32 * mib, label: "banger-overlay"},
		{name: "large sparse", size: 8 * gib, label: "banger-work"},
		{name: "label too long", size: 32 * mib, label: "a-label-of-17-chr", wantErr: "longer than"},
		{name: "zero size", size: 0, label: "x", wantErr: "must be positive"},
		{name: "missing dir", size: 32 * mib, label: "x", fromDir: filepath.Join(src, "nope"), wantErr: "mkfs.ext4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.ext4")
			err := MakeExt4(ctx, img, tt.size, tt.label, tt.fromDir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("MakeExt4 error = %v, want containing %q", err, tt.wantErr)
				}
				if _, serr := os.Stat(img); serr == nil {
					t.Fatalf("failed MakeExt4 left %s behind", img)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			label, err := disktest.Label(img)
			if err != nil {
				t.Fatal(err)
			}
			if label != tt.label {
				t.Errorf("label = %q, want %q", label, tt.label)
			}
			alloc, apparent, err := disktest.Usage(img)
			if err != nil {
				t.Fatal(err)
			}
			if apparent != tt.size {
				t.Errorf("apparent size = %d, want %d", apparent, tt.size)
			}
			if alloc > 16*mib {
				t.Errorf("allocated %d bytes for an almost empty filesystem; want a sparse file", alloc)
			}
			for path, want := range tt.files {
				if got := debugfsCat(t, img, path); got != want {
					t.Errorf("%s = %q, want %q", path, got, want)
				}
			}
			if err := Check(ctx, img); err != nil {
				t.Errorf("fresh filesystem not clean: %v", err)
			}
		})
	}
}

func TestMakeExt4_ErrorKeepsArgvAndOutput(t *testing.T) {
	requireE2fsprogs(t)
	img := filepath.Join(t.TempDir(), "d.ext4")
	err := MakeExt4(context.Background(), img, 32*mib, "x", "/nonexistent-dir-for-test")
	var re *cmdrun.Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v is not a *cmdrun.Error", err)
	}
	if re.Argv[0] != "mkfs.ext4" || !strings.Contains(strings.Join(re.Argv, " "), "-d /nonexistent-dir-for-test") {
		t.Errorf("argv = %q", re.Argv)
	}
	if !strings.Contains(string(re.Output), "nonexistent") {
		t.Errorf("output = %q, want the mkfs complaint", re.Output)
	}
}

// writeSparse makes a file of size bytes holding data at each offset.
func writeSparse(t testing.TB, path string, size int64, data map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range data {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

func TestClone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	chunk := make([]byte, mib)
	if _, err := rand.Read(chunk); err != nil {
		t.Fatal(err)
	}
	tail := []byte("the end")

	tests := []struct {
		name string
		size int64
		data map[int64][]byte
	}{
		{name: "sparse 1GiB with 1MiB data", size: gib, data: map[int64][]byte{0: chunk[:512*kib], 512 * mib: chunk[512*kib:]}},
		{name: "data at the very end", size: 256 * mib, data: map[int64][]byte{256*mib - int64(len(tail)): tail}},
		{name: "all hole", size: 64 * mib},
		{name: "dense small", size: mib, data: map[int64][]byte{0: chunk}},
		{name: "empty", size: 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := filepath.Join(dir, "src"+string(rune('a'+i)))
			dst := filepath.Join(dir, "dst"+string(rune('a'+i)))
			writeSparse(t, src, tt.size, tt.data)
			method, err := Clone(ctx, src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if method != MethodReflink && method != MethodSparseCopy {
				t.Fatalf("method = %q", method)
			}
			srcAlloc, _, _ := disktest.Usage(src)
			alloc, apparent, err := disktest.Usage(dst)
			if err != nil {
				t.Fatal(err)
			}
			if apparent != tt.size {
				t.Errorf("size = %d, want %d", apparent, tt.size)
			}
			// Holes stay holes: the clone allocates about what the source
			// does (block rounding aside), not its apparent size.
			if method == MethodSparseCopy && alloc > srcAlloc+mib {
				t.Errorf("clone allocates %d bytes, source %d: holes were filled", alloc, srcAlloc)
			}
			f, err := os.Open(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for off, want := range tt.data {
				got := make([]byte, len(want))
				if _, err := f.ReadAt(got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("data at %d differs after clone", off)
				}
			}
			// A byte inside a hole reads as zero.
			if tt.size > 300*mib {
				b := make([]byte, 1)
				if _, err := f.ReadAt(b, 300*mib); err != nil || b[0] != 0 {
					t.Errorf("hole byte = %v, %v", b, err)
				}
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

func TestClone_Errors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Clone(ctx, filepath.Join(dir, "missing"), filepath.Join(dir, "dst")); err == nil {
		t.Fatal("clone of a missing file succeeded")
	}
	src := filepath.Join(dir, "src")
	writeSparse(t, src, 128*mib, map[int64][]byte{64 * mib: []byte("x")})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := Clone(cctx, src, filepath.Join(dir, "dst"))
	if err == nil {
		t.Skip("filesystem reflinks: cancellation not observable")
	}
	if _, serr := os.Stat(filepath.Join(dir, "dst")); serr == nil {
		t.Error("cancelled clone left dst behind")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestResize(t *testing.T) {
	requireE2fsprogs(t)
	ctx := context.Background()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "keep"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		from    int64
		to      int64
		wantErr string
	}{
		{name: "grow 64M to 8G", from: 64 * mib, to: 8 * gib},
		{name: "grow 32M to 100M", from: 32 * mib, to: 100 * mib},
		{name: "same size", from: 64 * mib, to: 64 * mib},
		{name: "shrink refused", from: 128 * mib, to: 64 * mib, wantErr: "shrinking"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "work.ext4")
			if err := MakeExt4(ctx, img, tt.from, "banger-work", src); err != nil {
				t.Fatal(err)
			}
			before, err := disktest.FreeBytes(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			err = Resize(ctx, img, tt.to)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resize error = %v, want %q", err, tt.wantErr)
				}
				if _, size, _ := disktest.Usage(img); size != tt.from {
					t.Errorf("refused resize changed the size to %d", size)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(ctx, img); err != nil {
				t.Fatalf("e2fsck after resize: %v", err)
			}
			after, err := disktest.FreeBytes(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			if grown := after - before; grown < (tt.to-tt.from)*9/10 {
				t.Errorf("free space grew by %d, want about %d", grown, tt.to-tt.from)
			}
			if got := debugfsCat(t, img, "/keep"); got != "kept" {
				t.Errorf("/keep = %q after resize", got)
			}
			if l, _ := disktest.Label(img); l != "banger-work" {
				t.Errorf("label = %q after resize", l)
			}
		})
	}
}

func TestResize_Missing(t *testing.T) {
	if err := Resize(context.Background(), filepath.Join(t.TempDir(), "nope"), gib); err == nil {
		t.Fatal("resize of a missing file succeeded")
	}
}

func TestMkfsArgs(t *testing.T) {
	got := strings.Join(MkfsArgs("/d/r.ext4", "banger-root", "/src"), " ")
	want := "mkfs.ext4 -F -q -t ext4 -b 4096 -m 0 -L banger-root -E root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1 -d /src /d/r.ext4"
	if got != want {
		t.Errorf("argv\n got %s\nwant %s", got, want)
	}
	if got := MkfsArgs("/d/o.ext4", "banger-overlay", ""); strings.Contains(strings.Join(got, " "), " -d ") {
		t.Errorf("argv without a source dir has -d: %q", got)
	}
}

// BenchmarkClone shows that cloning a sparse seed costs the same whether
// its apparent size is 1 GiB or 8 GiB (both hold 1 MiB of data).
func BenchmarkClone(b *testing.B) {
	for _, size := range []int64{gib, 8 * gib} {
		b.Run(fmt.Sprintf("%dGiB", size/gib), func(b *testing.B) {
			dir := b.TempDir()
			src := filepath.Join(dir, "seed")
			chunk := make([]byte, mib)
			if _, err := rand.Read(chunk); err != nil {
				b.Fatal(err)
			}
			writeSparse(b, src, size, map[int64][]byte{0: chunk[:mib/2], size / 2: chunk[mib/2:]})
			dst := filepath.Join(dir, "clone")
			var method Method
			for b.Loop() {
				m, err := Clone(context.Background(), src, dst)
				if err != nil {
					b.Fatal(err)
				}
				method = m
			}
			b.Logf("method=%s", method)
		})
	}
}

// TestChownRoot: files staged by a user keep that user's uid in an image
// made with mke2fs -d; after ChownRoot every inode is 0:0, so no guest user
// shares an owner with them.
func TestChownRoot(t *testing.T) {
	testenv.RequireRoot(t) // to stage files owned by another uid
	requireE2fsprogs(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for _, p := range []string{"identity.json", "files/0", "files/1/inner"} {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o700)
		if err := os.WriteFile(full, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error { return os.Lchown(p, 1000, 1000) })
	img := filepath.Join(dir, "config.ext4")
	if err := MakeExt4(ctx, img, 8<<20, "banger-config", src); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) string {
		out, err := exec.Command("debugfs", "-R", "stat "+p, img).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs stat %s: %v\n%s", p, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "User:") {
				return strings.Join(strings.Fields(l)[:4], " ")
			}
		}
		t.Fatalf("no owner for %s in\n%s", p, out)
		return ""
	}
	if got := owner("/identity.json"); !strings.Contains(got, "User: 1000") {
		t.Fatalf("precondition: staged owner %q, want uid 1000 copied by mke2fs", got)
	}
	if err := ChownRoot(ctx, img, src); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/identity.json", "/files", "/files/0", "/files/1", "/files/1/inner"} {
		if got := owner(p); got != "User: 0 Group: 0" {
			t.Errorf("%s: %q, want root", p, got)
		}
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck after ChownRoot: %v\n%s", err, out)
	}
}
