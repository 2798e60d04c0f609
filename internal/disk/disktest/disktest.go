// Package disktest inspects ext4 disk images in tests: the volume label
// from the superblock, allocated and apparent sizes, and free space. The
// daemon never needs these answers (it makes, clones and grows disks
// without looking back), so they live beside the tests that check them.
package disktest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// ext4 superblock layout (fs/ext4/ext4.h): it starts 1024 bytes into the
// device; the magic is at 0x38 and the 16-byte volume name at 0x78.
const (
	superblockOffset = 1024
	magicOffset      = 0x38
	labelOffset      = 0x78
	labelLen         = 16
	ext4Magic        = 0xEF53
)

// Label reads the volume label from the ext2/3/4 superblock of the file
// at path.
func Label(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read label %s: %w", path, err)
	}
	defer f.Close()
	sb := make([]byte, labelOffset+labelLen)
	if _, err := f.ReadAt(sb, superblockOffset); err != nil {
		return "", fmt.Errorf("read label %s: superblock: %w", path, err)
	}
	if m := binary.LittleEndian.Uint16(sb[magicOffset:]); m != ext4Magic {
		return "", fmt.Errorf("read label %s: no ext4 superblock (magic %#x)", path, m)
	}
	name := sb[labelOffset : labelOffset+labelLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name), nil
}

// Usage reports the bytes allocated on disk for the file at path and its
// apparent size. For a sparse disk image the first is much smaller.
func Usage(path string) (allocated, apparent int64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("usage %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("usage %s: no stat data", path)
	}
	return st.Blocks * 512, fi.Size(), nil
}

// FreeBytes reports the free space of the ext4 filesystem in the file at
// path, from its superblock (dumpe2fs -h); tests use it to check a resize
// took.
func FreeBytes(ctx context.Context, path string) (int64, error) {
	cmd := exec.CommandContext(ctx, "dumpe2fs", "-h", path)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("free bytes %s: dumpe2fs: %w: %s", path, err, out)
	}
	var free, bs int64
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Free blocks":
			free, _ = strconv.ParseInt(v, 10, 64)
		case "Block size":
			bs, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if bs == 0 {
		return 0, fmt.Errorf("free bytes %s: no block size in dumpe2fs output", path)
	}
	return free * bs, nil
}
