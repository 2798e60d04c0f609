package disktest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLabel_NotExt4(t *testing.T) {
	p := filepath.Join(t.TempDir(), "zero")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Label(p); err == nil || !strings.Contains(err.Error(), "no ext4 superblock") {
		t.Fatalf("Label of zeros: %v", err)
	}
	if _, err := Label(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Label of a missing file succeeded")
	}
}
