package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/disk/disktest"

	"github.com/klauspost/compress/gzip"
)

// committedImage makes a store with one small image: a sparse 64 MiB
// rootfs with data at both ends, and small boot files.
func committedImage(t *testing.T) (*Store, *Manifest) {
	t.Helper()
	s := &Store{Dir: filepath.Join(t.TempDir(), "images")}
	tmp := stageFiles(t, s, map[string]string{FileVmlinux: "ELF", FileVmlinuz: "bz", FileInitrd: "initrd", FileWorkSeed: "seed"})
	f, err := os.Create(filepath.Join(tmp, FileRootfs))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.WriteAt([]byte("start"), 0)
	f.WriteAt([]byte("end"), 64<<20-3)
	f.Close()
	m := &Manifest{Name: "debian-12", Init: InitSystemd, Source: Source{Kind: SourceRecipe, Ref: "debian-12", RecipeHash: "h1"}}
	if _, err := s.Commit(context.Background(), tmp, m); err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestExportImportArchive(t *testing.T) {
	ctx := context.Background()
	s, m := committedImage(t)
	var buf bytes.Buffer
	if err := Export(ctx, s.Path(m.ID), &buf); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(archive)
	zw.Close()

	tests := []struct {
		name string
		data []byte
	}{
		{"plain tar", archive},
		{"gzip", gz.Bytes()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "img.tar")
			os.WriteFile(p, tt.data, 0o644)
			if k, err := DetectImport(p); err != nil || k != ImportBanger {
				t.Fatalf("DetectImport = %q, %v", k, err)
			}
			dst := &Store{Dir: filepath.Join(t.TempDir(), "images")}
			out, _ := dst.Stage(ctx)
			got, err := ImportArchive(ctx, bytes.NewReader(tt.data), out)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != "" || got.Name != m.Name || got.Source.Kind != SourceImport || got.Source.RecipeHash != "h1" {
				t.Errorf("imported manifest = %+v", got)
			}
			if _, err := dst.Commit(ctx, out, got); err != nil {
				t.Fatal(err)
			}
			if err := dst.Verify(got.ID); err != nil {
				t.Fatal(err)
			}
			for name, fi := range m.Files {
				if got.Files[name] != fi {
					t.Errorf("file %s = %+v, want %+v", name, got.Files[name], fi)
				}
			}
			// The rootfs stays sparse across export and import.
			if alloc, _, _ := disktest.Usage(filepath.Join(dst.Path(got.ID), FileRootfs)); alloc > 1<<20 {
				t.Errorf("imported rootfs allocates %d bytes; want sparse", alloc)
			}
		})
	}
}

func TestImportArchive_Bad(t *testing.T) {
	ctx := context.Background()
	s, m := committedImage(t)
	var buf bytes.Buffer
	if err := Export(ctx, s.Path(m.ID), &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// Flip one byte inside initrd.img's content ("initrd").
	corrupt := bytes.Clone(good)
	i := bytes.Index(corrupt, []byte("initrd\x00"))
	if i < 0 {
		t.Fatal("initrd content not found in the archive")
	}
	corrupt[i] = 'X'

	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"corrupt file", corrupt, "file initrd.img: sha256"},
		{"truncated mid-file", good[:len(good)/2], "truncated"},
		{"file left out", dropLast(t, good), "file work-seed.ext4: missing"},
		{"cut inside the manifest", good[:1100], "truncated"},
		{"not an archive", []byte("hello"), "manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := &Store{Dir: filepath.Join(t.TempDir(), "images")}
			out, _ := dst.Stage(ctx)
			_, err := ImportArchive(ctx, bytes.NewReader(tt.data), out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ImportArchive error = %v, want %q", err, tt.wantErr)
			}
			os.RemoveAll(out)
			if l, _ := dst.List(); len(l) != 0 {
				t.Errorf("failed import registered %v", l)
			}
		})
	}

	// Export refuses an image whose files no longer match its manifest.
	os.WriteFile(filepath.Join(s.Path(m.ID), FileInitrd), []byte("INITRD"), 0o644)
	if err := Export(ctx, s.Path(m.ID), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "file initrd.img") {
		t.Errorf("Export of a corrupt image: %v", err)
	}
}

// dropLast rewrites a tar without its last entry (a well-formed archive
// that lacks a file).
func dropLast(t *testing.T, data []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	type entry struct {
		h    *tar.Header
		body []byte
	}
	var entries []entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		entries = append(entries, entry{h, body})
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range entries[:len(entries)-1] {
		tw.WriteHeader(e.h)
		tw.Write(e.body)
	}
	tw.Close()
	return out.Bytes()
}
