// Package atomicfile writes a file so that a crash or a kill -9 at any
// point leaves either the old content or the new one, never a mix: the
// data goes to a temporary file beside the target, is fsynced, renamed
// over the target, and the directory is fsynced so the rename itself is
// durable. Every file banger writes in place (manifests, handles, keys,
// known_hosts, metadata) goes through here. Standard library only.
package atomicfile

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, created with mode perm (the umask does
// not apply). The directory must exist.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteFrom(path, bytes.NewReader(data), perm)
}

// WriteFrom replaces path with everything r yields, created with mode
// perm. When r fails, path is left as it was and no temporary file
// remains.
func WriteFrom(path string, r io.Reader, perm fs.FileMode) error {
	return writeFrom(path, r, perm, true)
}

// WriteUnsynced replaces path with data like Write, without the two
// fsyncs: readers still see the old content or the new, never a mix, but
// the new content is durable only once the caller syncs the filesystem.
// It is for a batch of files made durable together by one sync(2) at the
// end: one flush instead of two per file, which matters where flushes are
// slow (a guest's disk under emulation).
func WriteUnsynced(path string, data []byte, perm fs.FileMode) error {
	return writeFrom(path, bytes.NewReader(data), perm, false)
}

func writeFrom(path string, r io.Reader, perm fs.FileMode, sync bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if sync {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", path, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	if !sync {
		return nil
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that renames and creations in it survive
// a crash. Filesystems that cannot fsync a directory (EINVAL) count as
// synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !isEINVAL(err) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
