package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ext4 superblock layout (also ext2/ext3): the superblock starts 1024
// bytes into the device; the magic and the volume label sit at fixed
// offsets inside it.
const (
	superblockOffset = 1024
	magicOffset      = 0x38
	labelOffset      = 0x78
	labelSize        = 16
	ext4Magic        = 0xEF53
)

// ErrNotExt is returned by ReadExtLabel for a device without an ext2/3/4
// superblock.
var ErrNotExt = errors.New("no ext2/3/4 superblock")

// ReadExtLabel returns the volume label of the ext2/3/4 filesystem on r.
func ReadExtLabel(r io.ReaderAt) (string, error) {
	buf := make([]byte, labelOffset+labelSize)
	if _, err := r.ReadAt(buf, superblockOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return "", ErrNotExt
		}
		return "", fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(buf[magicOffset:]) != ext4Magic {
		return "", ErrNotExt
	}
	label := buf[labelOffset : labelOffset+labelSize]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	return string(label), nil
}

// FindByLabel returns the device node of the ext filesystem labelled
// label, or "" when there is none (yet). It looks in byLabelDir
// (/dev/disk/by-label, maintained by udev) first, then reads the
// superblock of every block device listed in sysBlockDir
// (/sys/class/block) through its node in devDir (/dev), so it works
// without udev and without blkid.
func FindByLabel(label, byLabelDir, sysBlockDir, devDir string) (string, error) {
	if byLabelDir != "" {
		p := filepath.Join(byLabelDir, label)
		if _, err := os.Stat(p); err == nil {
			if resolved, err := filepath.EvalSymlinks(p); err == nil {
				return resolved, nil
			}
			return p, nil
		}
	}
	entries, err := os.ReadDir(sysBlockDir)
	if err != nil {
		return "", fmt.Errorf("list block devices: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "sr") {
			continue
		}
		dev := filepath.Join(devDir, name)
		got, err := deviceLabel(dev)
		if err != nil {
			continue // unreadable, not ext, or gone: not ours
		}
		if got == label {
			return dev, nil
		}
	}
	return "", nil
}

func deviceLabel(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ReadExtLabel(f)
}
