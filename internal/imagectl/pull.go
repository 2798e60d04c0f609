package imagectl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"syscall"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/image"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
)

// Stage names of a pull.
const (
	StageDownload = "download"
	StageKernel   = "kernel"
	StageRegister = "register"
)

// downloadAttempts is how many times one artifact is tried; each retry
// resumes from the bytes already on disk.
const downloadAttempts = 4

// Pull makes the catalog image name local: an artifact set is
// downloaded (with resume and checksum verification), a recipe is built.
// An image already registered under name is a conflict.
func (m *Manager) Pull(ctx context.Context, op *operation.Op, name string) (store.Image, error) {
	e, err := m.LookupCatalog(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	if e == nil {
		return store.Image{}, m.notFound(ctx, name)
	}
	unlock, err := m.lockName(ctx, e.Name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	return m.makeEntry(ctx, op, e, e.Name, nil)
}

// pull downloads an artifact set into a staged image called name.
func (m *Manager) pull(ctx context.Context, op *operation.Op, e *CatalogEntry, name string) (store.Image, error) {
	if op != nil {
		op.Plan(StageDownload, StageKernel, StageRegister)
	}
	return m.produce(ctx, op, name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		names := make([]string, 0, len(e.Files))
		var total int64
		for f, a := range e.Files {
			names = append(names, f)
			total += a.Size
		}
		sort.Strings(names)
		s := stage(op, StageDownload)
		var done int64
		for _, f := range names {
			a := e.Files[f]
			src, err := e.artifactURL(a)
			if err != nil {
				return nil, s.fail(err)
			}
			s.detail("%s (%s)", f, units.Bytes(a.Size))
			fmt.Fprintf(log, "download %s from %s (%d bytes, sha256 %s)\n", f, src, a.Size, a.SHA256)
			base := done
			err = m.download(ctx, src, a, filepath.Join(dir, f), func(n int64) { s.progressIn(api.UnitBytes, base+n, total) })
			if err != nil {
				return nil, s.fail(fmt.Errorf("download %s of %s: %w", f, e.Name, err))
			}
			done += a.Size
			s.progressIn(api.UnitBytes, done, total)
		}
		s.done()
		ks := stage(op, StageKernel)
		if _, ok := e.Files[image.FileVmlinux]; !ok {
			fmt.Fprintf(log, "extract %s from %s\n", image.FileVmlinux, image.FileVmlinuz)
			if err := image.ExtractVmlinux(filepath.Join(dir, image.FileVmlinuz), filepath.Join(dir, image.FileVmlinux)); err != nil {
				return nil, ks.fail(err)
			}
		}
		kv := e.KernelVersion
		if kv == "" {
			kv, _ = image.KernelVersion(filepath.Join(dir, image.FileVmlinuz))
		}
		ks.done()
		init := e.Init
		if init == "" {
			init = image.InitSystemd
		}
		return &image.Manifest{
			Source:        image.Source{Kind: image.SourcePull, Ref: e.Catalog + "#" + e.Name},
			KernelVersion: kv,
			AgentVersion:  e.AgentVersion,
			Init:          init,
		}, nil
	})
}

// download fetches one artifact to dst. Bytes go first to a partial file
// in the cache named by the artifact's sha256, so an interrupted pull
// resumes where it stopped (HTTP Range), then are verified (size and
// sha256) and moved to dst. A mismatch deletes the partial file and is an
// error; nothing else is kept.
func (m *Manager) download(ctx context.Context, src string, a Artifact, dst string, progress func(int64)) error {
	dir := filepath.Join(m.BuildCacheDir(), "downloads")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	part := filepath.Join(dir, a.SHA256+".part")
	var lastErr error
	for attempt := 1; attempt <= downloadAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := m.fetchInto(ctx, src, a.Size, part, progress)
		if err == nil {
			break
		}
		lastErr = err
		if errors.Is(err, errTooLong) || ctx.Err() != nil {
			os.Remove(part)
			return err
		}
		if attempt == downloadAttempts {
			return fmt.Errorf("after %d attempts: %w", attempt, lastErr)
		}
	}
	got, err := sha256File(ctx, part)
	if err != nil {
		return err
	}
	if got.size != a.Size || got.sum != a.SHA256 {
		os.Remove(part)
		return api.Errorf(api.CodeInvalid, "corrupt download %s: got %d bytes with sha256 %s, catalog says %d bytes with sha256 %s; nothing was registered", src, got.size, got.sum, a.Size, a.SHA256)
	}
	return moveFile(part, dst)
}

var errTooLong = errors.New("more bytes than the catalog's size")

// fetchInto appends to part from where it ends (restarting when the
// source ignores the range), up to size bytes.
func (m *Manager) fetchInto(ctx context.Context, src string, size int64, part string, progress func(int64)) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if have >= size {
		if have > size {
			return errTooLong
		}
		return nil
	}
	rc, err := m.open(ctx, src, have)
	if err != nil {
		return err
	}
	defer rc.Close()
	if rb, ok := rc.(*rangeBody); ok && !rb.resumed && have > 0 {
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		have = 0
	}
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := rc.Read(buf)
		if n > 0 {
			if have+int64(n) > size {
				return errTooLong
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			have += int64(n)
			progress(have)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if have < size {
		return fmt.Errorf("truncated: got %d of %d bytes", have, size)
	}
	return f.Sync()
}

type fileSum struct {
	size int64
	sum  string
}

// sha256File hashes a file, checking ctx between chunks.
func sha256File(ctx context.Context, path string) (fileSum, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileSum{}, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return fileSum{}, err
		}
		k, rerr := f.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fileSum{}, rerr
		}
	}
	return fileSum{size: n, sum: hex.EncodeToString(h.Sum(nil))}, nil
}

// moveFile renames src to dst, copying across filesystems, and syncs
// dst's directory so the move survives a crash.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil {
		return atomicfile.SyncDir(filepath.Dir(dst))
	}
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := writeSparse(in, dst); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return os.Remove(src)
}

// sparseBlock is the granularity at which zero runs become holes.
const sparseBlock = 64 << 10

// writeSparse copies r into a new file dst, leaving holes for runs of
// zeros (ext4 images are mostly empty).
func writeSparse(r io.Reader, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, sparseBlock)
	zero := make([]byte, sparseBlock)
	var size int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if slices.Equal(buf[:n], zero[:n]) {
				if _, err := f.Seek(int64(n), io.SeekCurrent); err != nil {
					f.Close()
					return err
				}
			} else if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				return err
			}
			size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			f.Close()
			return rerr
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
