package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"banger/internal/atomicfile"
)

// Prefixes of the store's private directories; they never hold a
// finished image and Load/List ignore them.
const (
	stagingPrefix  = ".staging-"
	removingPrefix = ".removing-"
)

// Store is the image directory, <state>/images. Images are immutable
// once committed.
type Store struct {
	// Dir holds one directory per image, named by its id.
	Dir string
	// Now stamps Created when a manifest has none; time.Now when nil.
	Now func() time.Time
}

// ErrNotFound is returned (wrapped) for an image id the store lacks.
var ErrNotFound = errors.New("image not found")

// Path returns the directory of image id.
func (s *Store) Path(id string) string { return filepath.Join(s.Dir, id) }

// Stage makes an empty staging directory inside Dir (hence on the same
// filesystem, so Commit can rename it) for one build. The caller fills it
// and calls Commit, or removes it.
func (s *Store) Stage(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", fmt.Errorf("stage image: %w", err)
	}
	dir, err := os.MkdirTemp(s.Dir, stagingPrefix)
	if err != nil {
		return "", fmt.Errorf("stage image: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("stage image: %w", err)
	}
	return dir, nil
}

// Commit finishes a staged image: it hashes every regular file of
// tmpDir into m.Files, sets m.SizeBytes (and m.ID and m.Created when
// empty), writes manifest.json atomically and renames tmpDir to
// <Dir>/<id>. Until that rename nothing of the image is visible; on
// error tmpDir is left for the caller to remove.
func (s *Store) Commit(ctx context.Context, tmpDir string, m *Manifest) (string, error) {
	if m.ID == "" {
		m.ID = NewID()
	}
	if m.Created.IsZero() {
		m.Created = s.now()
	}
	files, total, err := hashDir(ctx, tmpDir)
	if err != nil {
		return "", fmt.Errorf("commit image %s: %w", m.ID, err)
	}
	m.Files, m.SizeBytes = files, total
	if err := m.Validate(); err != nil {
		return "", fmt.Errorf("commit image: %w", err)
	}
	if err := writeManifest(tmpDir, m); err != nil {
		return "", fmt.Errorf("commit image %s: %w", m.ID, err)
	}
	dst := s.Path(m.ID)
	if _, err := os.Lstat(dst); err == nil {
		return "", fmt.Errorf("commit image %s: %s already exists", m.ID, dst)
	}
	if err := os.Rename(tmpDir, dst); err != nil {
		return "", fmt.Errorf("commit image %s: %w", m.ID, err)
	}
	if err := atomicfile.SyncDir(s.Dir); err != nil {
		return "", fmt.Errorf("commit image %s: %w", m.ID, err)
	}
	return dst, nil
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Load reads and validates the manifest of image id.
func (s *Store) Load(id string) (*Manifest, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(s.Path(id), FileManifest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load image %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load image %s: %w", id, err)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("load image %s: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("load image %s: manifest says id %q", id, m.ID)
	}
	return m, nil
}

// List loads every committed image, sorted by creation time. Directories
// without a valid manifest are skipped.
func (s *Store) List() ([]*Manifest, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []*Manifest
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := s.Load(e.Name())
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Remove deletes image id. It first renames the directory out of the way
// so a crash mid-removal never leaves a half image under the id.
// Removing a missing image is not an error.
func (s *Store) Remove(id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	gone := filepath.Join(s.Dir, removingPrefix+id)
	if err := os.Rename(s.Path(id), gone); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove image %s: %w", id, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove image %s: %w", id, err)
	}
	return nil
}

// Clean removes staging and half-removed directories left by an
// interrupted build or removal. Call it when nothing is building, e.g.
// at daemon start.
func (s *Store) Clean() error {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean images: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), stagingPrefix) || strings.HasPrefix(e.Name(), removingPrefix) {
			if err := os.RemoveAll(filepath.Join(s.Dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean images: %w", err)
	}
	return nil
}

// Verify recomputes the size and sha256 of every file the manifest of
// image id lists and reports the first file that does not match.
func (s *Store) Verify(id string) error {
	m, err := s.Load(id)
	if err != nil {
		return err
	}
	return VerifyDir(context.Background(), s.Path(id), m)
}

// VerifyDir checks the files of dir against m.Files; the error names the
// file that is missing, has the wrong size or the wrong sha256.
func VerifyDir(ctx context.Context, dir string, m *Manifest) error {
	names := make([]string, 0, len(m.Files))
	for name := range m.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := m.Files[name]
		got, err := hashFile(ctx, filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("verify image %s: file %s: %w", m.ID, name, err)
		}
		if got.Size != want.Size {
			return fmt.Errorf("verify image %s: file %s: size %d, manifest says %d", m.ID, name, got.Size, want.Size)
		}
		if got.SHA256 != want.SHA256 {
			return fmt.Errorf("verify image %s: file %s: sha256 %s, manifest says %s", m.ID, name, got.SHA256, want.SHA256)
		}
	}
	return nil
}

// hashDir hashes the regular files directly in dir (manifest.json
// excluded) and sums their sizes.
func hashDir(ctx context.Context, dir string) (map[string]FileInfo, int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	files := map[string]FileInfo{}
	var total int64
	for _, e := range ents {
		if e.Name() == FileManifest || !e.Type().IsRegular() {
			continue
		}
		fi, err := hashFile(ctx, filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, 0, fmt.Errorf("hash %s: %w", e.Name(), err)
		}
		files[e.Name()] = fi
		total += fi.Size
	}
	return files, total, nil
}

// hashFile returns the size and sha256 of a file, checking ctx between
// chunks.
func hashFile(ctx context.Context, path string) (FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, make([]byte, 1<<20))
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// ctxReader fails reads once ctx is done, so long copies can be cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// writeManifest writes m to dir/manifest.json atomically.
func writeManifest(dir string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, FileManifest), append(data, '\n'), 0o644)
}
