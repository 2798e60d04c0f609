// Package disk makes, clones and grows the ext4 disk images banger gives
// to guests. Everything goes through e2fsprogs on regular files: no mount,
// no loop device, no device-mapper, so it works unprivileged and inside
// containers.
package disk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/cmdrun"
)

// run executes argv and returns its combined output; a failure is a
// *cmdrun.Error.
func run(ctx context.Context, args ...string) (string, error) {
	// Untranslated messages, so errors read the same everywhere.
	out, err := cmdrun.Cmd{Argv: args, Env: []string{"LC_ALL=C"}}.Output(ctx)
	return string(out), err
}

// MkfsArgs returns the mkfs.ext4 argv MakeExt4 runs. The choices:
//
//   - -b 4096: a fixed block size, so a small seed grows to many GiB with
//     resize2fs without the 1 KiB blocks mke2fs picks for small
//     filesystems.
//   - -m 0: no blocks reserved for root; these are single-user VM disks.
//   - -E root_owner=0:0: the root directory belongs to root even when
//     mkfs runs as another user.
//   - -E lazy_itable_init=1,lazy_journal_init=1: MakeExt4 always starts
//     from a fresh sparse file, which already reads as zeros, so mke2fs
//     need not write zeros to the inode tables or the journal. mke2fs
//     still punches the inode tables and marks them zeroed, so the guest
//     kernel does no lazy init either. An 8 GiB disk is made in ~20 ms
//     and allocates ~4 MiB.
//   - the journal is kept: overlay and work disks are written by guests
//     whose VMM may be killed, and a journal replay is far cheaper than a
//     full e2fsck on the next boot.
func MkfsArgs(path, label, fromDir string) []string {
	args := []string{"mkfs.ext4", "-F", "-q", "-t", "ext4", "-b", "4096", "-m", "0",
		"-L", label, "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1"}
	if fromDir != "" {
		args = append(args, "-d", fromDir)
	}
	return append(args, path)
}

// MaxLabelLen is the longest ext4 volume label.
const MaxLabelLen = 16

// MakeExt4 creates a sparse file of size bytes at path (replacing any
// file there) and makes an ext4 filesystem labelled label in it, filled
// from fromDir when that is not empty. Ownership and modes of fromDir's
// entries are kept (mke2fs -d copies them as they are on disk).
func MakeExt4(ctx context.Context, path string, size int64, label string, fromDir string) error {
	if len(label) > MaxLabelLen {
		return fmt.Errorf("make ext4 %s: label %q longer than %d bytes", path, label, MaxLabelLen)
	}
	if size <= 0 {
		return fmt.Errorf("make ext4 %s: size %d must be positive", path, size)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("make ext4 %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("make ext4 %s: %w", path, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = run(ctx, MkfsArgs(path, label, fromDir)...)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("make ext4 %s: %w", path, err)
	}
	return nil
}

// ChownRoot makes every inode of the ext4 image at path that mirrors an
// entry of fromDir (the directory it was made from with MakeExt4) owned by
// uid and gid 0, without mounting it. mke2fs -d copies the owners on disk,
// which for a daemon run by a user are that user's uid: inside the guest
// a process with the same uid could then read the files. It edits the
// image with debugfs; names must not hold a double quote or a newline
// (debugfs's quoting cannot carry them).
func ChownRoot(ctx context.Context, path, fromDir string) error {
	var script strings.Builder
	err := filepath.WalkDir(fromDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(fromDir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil // the root: mke2fs's root_owner=0:0
		}
		if strings.ContainsAny(rel, "\"\n") {
			return fmt.Errorf("%q: a name debugfs cannot quote", rel)
		}
		name := "/" + filepath.ToSlash(rel)
		fmt.Fprintf(&script, "sif \"%s\" uid 0\nsif \"%s\" gid 0\n", name, name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if script.Len() == 0 {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".debugfs-")
	if err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(script.String())
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	out, err := run(ctx, "debugfs", "-w", "-f", f.Name(), path)
	if err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	// debugfs reports a failed command on its output and still exits 0.
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "File not found") || strings.Contains(line, "set_inode_field:") {
			return fmt.Errorf("chown %s: debugfs: %s", path, strings.TrimSpace(line))
		}
	}
	return nil
}

// Resize grows the ext4 filesystem in the file at path to size bytes:
// it extends the file (sparsely), checks the filesystem (resize2fs
// requires a fresh check) and grows it. Shrinking is refused; the same
// size is a no-op.
func Resize(ctx context.Context, path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	switch {
	case size < fi.Size():
		return fmt.Errorf("resize %s: shrinking from %d to %d bytes is not supported", path, fi.Size(), size)
	case size == fi.Size():
		return nil
	}
	if err := os.Truncate(path, size); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	if err := Check(ctx, path); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	if _, err := run(ctx, "resize2fs", path); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	return nil
}

// Check runs a forced, non-interactive e2fsck (-f -p) on the file at
// path. Exit status 1 (errors fixed) is success; anything worse is an
// error. (e2fsck takes only one of -p and -y; -p fixes what is safe to
// fix and fails on the rest, which is what an unattended resize wants.)
func Check(ctx context.Context, path string) error {
	_, err := run(ctx, "e2fsck", "-f", "-p", path)
	var re *cmdrun.Error
	if errors.As(err, &re) && re.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	return nil
}
