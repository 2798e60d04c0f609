package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
)

// Method says how Clone copied a file.
type Method string

// The ways Clone copies a file.
const (
	// MethodReflink shares the source's extents (FICLONE): constant time,
	// no space used until either side is written.
	MethodReflink Method = "reflink"
	// MethodSparseCopy copies only the data extents (SEEK_DATA/SEEK_HOLE)
	// and leaves holes as holes: time and space follow the data, not the
	// apparent size.
	MethodSparseCopy Method = "sparse-copy"
)

// Clone copies src to dst, by reflink when the filesystem supports it and
// by a sparse copy otherwise. dst is written under a temporary name in
// its directory and renamed into place, so it never exists half-written;
// an existing dst is replaced.
func Clone(ctx context.Context, src, dst string) (Method, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	out, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	tmp := out.Name()
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if err := out.Chmod(fi.Mode().Perm()); err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}

	method := MethodReflink
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if !reflinkUnsupported(err) {
			return "", fmt.Errorf("clone %s: reflink: %w", src, err)
		}
		method = MethodSparseCopy
		if err := sparseCopy(ctx, out, in, fi.Size()); err != nil {
			return "", fmt.Errorf("clone %s: %w", src, err)
		}
	}
	if err := out.Sync(); err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	ok = true
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	return method, nil
}

// reflinkUnsupported reports whether a FICLONE error means "this
// filesystem (pair) cannot reflink" rather than a real failure.
func reflinkUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS)
}

// Extent is a byte range [Off, Off+Len) holding data.
type Extent struct{ Off, Len int64 }

// DataExtents lists the data ranges of f (size bytes long) using
// SEEK_DATA/SEEK_HOLE. A filesystem without them reports the whole file
// as data, which is correct, only not sparse.
func DataExtents(f *os.File, size int64) ([]Extent, error) {
	var exts []Extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return []Extent{{off, size - off}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("seek data at %d: %w", off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole at %d: %w", data, err)
		}
		if hole > size {
			hole = size
		}
		if hole > data {
			exts = append(exts, Extent{data, hole - data})
		}
		off = hole
	}
	return exts, nil
}

// copyChunk bounds one copy step so cancellation is noticed promptly.
const copyChunk = 64 << 20

// sparseCopy copies the data extents of in to out at the same offsets and
// sets out's size, leaving holes unallocated. It prefers copy_file_range
// (in-kernel, and shared extents on filesystems that can) and falls back
// to read/write.
func sparseCopy(ctx context.Context, out, in *os.File, size int64) error {
	exts, err := DataExtents(in, size)
	if err != nil {
		return err
	}
	if err := out.Truncate(size); err != nil {
		return err
	}
	useCFR := true
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		for done := int64(0); done < e.Len; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(e.Len-done, copyChunk)
			off := e.Off + done
			if useCFR {
				roff, woff := off, off
				c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(n), 0)
				if err == nil && c > 0 {
					done += int64(c)
					continue
				}
				if err != nil && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOSYS) &&
					!errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("copy range at %d: %w", off, err)
				}
				useCFR = false
			}
			m, err := copyAt(out, in, off, n, buf)
			if err != nil {
				return err
			}
			done += m
		}
	}
	return nil
}

// copyAt copies n bytes at off from in to out with pread/pwrite.
func copyAt(out, in *os.File, off, n int64, buf []byte) (int64, error) {
	r := io.NewSectionReader(in, off, n)
	var done int64
	for done < n {
		m, err := r.Read(buf[:min(int64(len(buf)), n-done)])
		if m > 0 {
			if _, werr := out.WriteAt(buf[:m], off+done); werr != nil {
				return done, fmt.Errorf("write at %d: %w", off+done, werr)
			}
			done += int64(m)
		}
		if err == io.EOF {
			return done, fmt.Errorf("read at %d: source shorter than expected", off+done)
		}
		if err != nil {
			return done, fmt.Errorf("read at %d: %w", off+done, err)
		}
	}
	return done, nil
}
