package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Export writes the image in imageDir to w as a tar: manifest.json first,
// then every file the manifest lists, in name order. ImportArchive reads
// it back. The files are checked against the manifest as they are
// written, so a corrupt image is not exported.
func Export(ctx context.Context, imageDir string, w io.Writer) error {
	data, err := os.ReadFile(filepath.Join(imageDir, FileManifest))
	if err != nil {
		return fmt.Errorf("export %s: %w", imageDir, err)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return fmt.Errorf("export %s: %w", imageDir, err)
	}
	tw := tar.NewWriter(w)
	mtime := m.Created
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	hdr := &tar.Header{Name: FileManifest, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("export %s: %w", m.ID, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("export %s: %w", m.ID, err)
	}
	for _, name := range sortedFiles(m) {
		if err := exportFile(ctx, tw, imageDir, name, m.Files[name], mtime); err != nil {
			return fmt.Errorf("export %s: file %s: %w", m.ID, name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("export %s: %w", m.ID, err)
	}
	return nil
}

func sortedFiles(m *Manifest) []string {
	names := make([]string, 0, len(m.Files))
	for n := range m.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func exportFile(ctx context.Context, tw *tar.Writer, dir, name string, want FileInfo, mtime time.Time) error {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: want.Size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tw, h), io.LimitReader(ctxReader{ctx, f}, want.Size), make([]byte, 1<<20))
	if err != nil {
		return err
	}
	if n != want.Size {
		return fmt.Errorf("size %d, manifest says %d", n, want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("sha256 %s, manifest says %s", got, want.SHA256)
	}
	return nil
}

// ImportArchive reads an Export archive (plain, gzip or zstd compressed)
// into outDir, a Store staging directory, checking the size and sha256
// of every file against the archive's manifest. A corrupt or truncated
// archive is an error naming the file; the caller then removes outDir,
// so nothing is registered. The returned manifest has no ID (Commit
// assigns one) and records the import as its source.
func ImportArchive(ctx context.Context, r io.Reader, outDir string) (*Manifest, error) {
	zr, err := decompressed(r)
	if err != nil {
		return nil, fmt.Errorf("import archive: %w", err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("import archive: read manifest: %w", truncated(err))
	}
	if h.Name != FileManifest {
		return nil, fmt.Errorf("import archive: first entry is %q, want %s", h.Name, FileManifest)
	}
	data, err := io.ReadAll(io.LimitReader(tr, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("import archive: read manifest: %w", truncated(err))
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("import archive: %w", err)
	}
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("import archive: %w", truncated(err))
		}
		want, ok := m.Files[h.Name]
		if !ok || seen[h.Name] || h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("import archive: unexpected entry %q", h.Name)
		}
		seen[h.Name] = true
		if err := importFile(ctx, tr, filepath.Join(outDir, h.Name), want); err != nil {
			return nil, fmt.Errorf("import archive: file %s: %w", h.Name, err)
		}
	}
	for _, name := range sortedFiles(m) {
		if !seen[name] {
			return nil, fmt.Errorf("import archive: file %s: missing (archive truncated?)", name)
		}
	}
	out := *m
	out.ID = ""
	out.Source = Source{Kind: SourceImport, Ref: m.Source.Kind + ":" + m.Source.Ref, RecipeHash: m.Source.RecipeHash}
	return &out, nil
}

// importFile writes one archive entry to path, sparsely (runs of zero
// blocks become holes, so a sparse rootfs stays sparse), and checks its
// size and sha256.
func importFile(ctx context.Context, r io.Reader, path string, want FileInfo) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copySparse(f, io.TeeReader(ctxReader{ctx, r}, h))
	if err != nil {
		return truncated(err)
	}
	if n != want.Size {
		return fmt.Errorf("size %d, manifest says %d", n, want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("sha256 %s, manifest says %s (corrupt archive)", got, want.SHA256)
	}
	if err := f.Truncate(n); err != nil {
		return err
	}
	return f.Sync()
}

// copySparse copies r to f, seeking over 64 KiB blocks of zeros instead of
// writing them; the caller truncates f to the returned length. Only
// io.EOF ends the copy: a tar reader reports a cut archive as
// io.ErrUnexpectedEOF, which is returned.
func copySparse(f *os.File, r io.Reader) (int64, error) {
	const blk = 64 << 10
	buf := make([]byte, blk)
	zero := make([]byte, blk)
	var off int64
	for {
		n := 0
		var err error
		for n < blk && err == nil {
			var m int
			m, err = r.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return off, werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// truncated turns an unexpected EOF into a message saying so.
func truncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("archive truncated: %w", err)
	}
	return err
}

// decompressed returns r, transparently decompressed when it starts with
// a gzip or zstd magic.
func decompressed(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}
