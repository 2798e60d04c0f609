package vmm

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestVersionCache: an unchanged binary is probed once; replacing it (a
// new inode and mtime) probes again; a failed probe is not cached.
func TestVersionCache(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "vmm")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	var c VersionCache
	probes := 0
	answer := "1.0"
	probe := func() (string, error) { probes++; return answer, nil }
	for i := 0; i < 3; i++ {
		if v, err := c.Get(bin, probe); err != nil || v != "1.0" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	}
	if probes != 1 {
		t.Fatalf("unchanged binary probed %d times, want 1", probes)
	}
	// A new build installed in place: new file renamed over the old one.
	next := bin + ".new"
	if err := os.WriteFile(next, []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(next, later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, bin); err != nil {
		t.Fatal(err)
	}
	answer = "2.0"
	if v, err := c.Get(bin, probe); err != nil || v != "2.0" || probes != 2 {
		t.Fatalf("after replacing the binary: Get = %q, %v, %d probes", v, err, probes)
	}
	if _, err := c.Get(filepath.Join(t.TempDir(), "missing"), probe); err == nil {
		t.Fatal("a missing binary gave a version")
	}
}
