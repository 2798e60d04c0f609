package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"

	"banger/internal/atomicfile"
	"banger/internal/layout"
)

// ErrNoHandles is returned by ReadHandles when the VM directory has no
// handles.json (the VM was never started or was cleaned up).
var ErrNoHandles = errors.New("no handles file")

// WriteHandles stores h as dir/handles.json (mode 0600) through
// atomicfile, so a crash leaves the old handles or the new ones.
func WriteHandles(dir string, h Handles) error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("encode handles: %w", err)
	}
	data = append(data, '\n')
	if err := atomicfile.Write(filepath.Join(dir, layout.HandlesFile), data, 0o600); err != nil {
		return fmt.Errorf("write handles: %w", err)
	}
	return nil
}

// ReadHandles loads dir/handles.json. A missing file yields ErrNoHandles; a
// corrupt one an error naming the file.
func ReadHandles(dir string) (Handles, error) {
	path := filepath.Join(dir, layout.HandlesFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Handles{}, fmt.Errorf("read handles %s: %w", path, ErrNoHandles)
	}
	if err != nil {
		return Handles{}, fmt.Errorf("read handles %s: %w", path, err)
	}
	var h Handles
	dec := json.NewDecoder(bytesReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Handles{}, fmt.Errorf("corrupt handles file %s: %w", path, err)
	}
	if h.PID <= 0 || h.VMM == "" {
		return Handles{}, fmt.Errorf("corrupt handles file %s: missing vmm or pid", path)
	}
	return h, nil
}

// RemoveHandles deletes dir/handles.json; a missing file is not an error.
func RemoveHandles(dir string) error {
	path := filepath.Join(dir, layout.HandlesFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove handles %s: %w", path, err)
	}
	return nil
}

// HandleCache is the daemon's in-memory map from VM id to Handles. Every
// Set is written through to <root>/<vmID>/handles.json so the map can be
// rebuilt after a restart. It is safe for concurrent use.
type HandleCache struct {
	root string

	mu sync.Mutex
	m  map[string]Handles
}

// NewHandleCache returns an empty cache whose VM directories live under
// root (the daemon's vms/ directory).
func NewHandleCache(root string) *HandleCache {
	return &HandleCache{root: root, m: make(map[string]Handles)}
}

// Dir returns the VM directory the cache persists vmID's handles in.
func (c *HandleCache) Dir(vmID string) string { return filepath.Join(c.root, vmID) }

// Get returns the cached handles of vmID.
func (c *HandleCache) Get(vmID string) (Handles, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[vmID]
	return h, ok
}

// Set persists h to vmID's handles.json, then caches it. On a write error
// the cache is left unchanged.
func (c *HandleCache) Set(vmID string, h Handles) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := WriteHandles(c.Dir(vmID), h); err != nil {
		return fmt.Errorf("cache handles of vm %s: %w", vmID, err)
	}
	c.m[vmID] = h
	return nil
}

// Load reads vmID's handles.json into the cache (daemon start-up). It
// returns ErrNoHandles (wrapped) when the VM has none.
func (c *HandleCache) Load(vmID string) (Handles, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, err := ReadHandles(c.Dir(vmID))
	if err != nil {
		return Handles{}, fmt.Errorf("load handles of vm %s: %w", vmID, err)
	}
	c.m[vmID] = h
	return h, nil
}

// Delete forgets vmID and removes its handles.json; idempotent.
func (c *HandleCache) Delete(vmID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, vmID)
	return RemoveHandles(c.Dir(vmID))
}

// Snapshot returns a copy of the whole map.
func (c *HandleCache) Snapshot() map[string]Handles {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}
