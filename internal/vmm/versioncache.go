package vmm

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// VersionCache remembers the version a VMM binary reported, keyed by the
// binary's identity on disk (device, inode, size, modification time), so
// asking again costs a stat, not an exec: every warm start checks the
// template's VMM version, and `qemu-system-x86_64 --version` takes tens
// of milliseconds. Installing another build changes the key and the next
// Get probes again. The zero value is ready to use.
type VersionCache struct {
	mu      sync.Mutex
	key     versionKey
	version string
}

type versionKey struct {
	path          string
	dev, ino      uint64
	size, mtimeNs int64
}

// Get returns the version of the binary at path: the cached one while the
// file is unchanged, else probe's answer (cached when probe succeeds).
func (c *VersionCache) Get(path string, probe func() (string, error)) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("vmm version: %w", err)
	}
	k := versionKey{path: path, size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.dev, k.ino = uint64(st.Dev), st.Ino
	}
	c.mu.Lock()
	if c.key == k && c.version != "" {
		v := c.version
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	v, err := probe()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.key, c.version = k, v
	c.mu.Unlock()
	return v, nil
}
