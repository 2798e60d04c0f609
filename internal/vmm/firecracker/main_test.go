package firecracker

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the fake firecracker built by buildFake.
func TestMain(m *testing.M) {
	code := m.Run()
	if fakeBin != "" {
		os.RemoveAll(filepath.Dir(fakeBin))
	}
	os.Exit(code)
}
