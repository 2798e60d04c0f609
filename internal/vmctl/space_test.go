package vmctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/layout"
)

func TestPromised_countsWhatSparseDisksAndLogsMayStillTake(t *testing.T) {
	root := t.TempDir()
	const gib = int64(1) << 30
	const logMax = int64(1) << 20
	vm := filepath.Join(root, "vm1")
	os.MkdirAll(vm, 0o700)
	sparse := func(name string, size int64, write int) {
		f, err := os.Create(filepath.Join(vm, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if write > 0 {
			if _, err := f.Write(make([]byte, write)); err != nil {
				t.Fatal(err)
			}
			f.Sync()
		}
		if size > 0 {
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
		}
	}
	sparse(layout.OverlayFile, gib, 1<<20)
	sparse(layout.WorkFile, 2*gib, 0)
	sparse(layout.ConsoleLogFile, 0, 4096)
	// A directory without disks (a create that failed early) promises
	// nothing.
	os.MkdirAll(filepath.Join(root, "empty"), 0o700)

	got, vms, err := promised(root, logMax)
	if err != nil {
		t.Fatal(err)
	}
	want := (gib - 1<<20) + 2*gib + (2*logMax - 4096)
	// The filesystem may allocate a block or two of metadata more or less
	// than what was written.
	if vms != 1 || got > want+64<<10 || got < want-64<<10 {
		t.Fatalf("promised = %d over %d vms, want about %d over 1", got, vms, want)
	}

	if err := checkSpace(root, 10*gib, got, vms, 4*gib); err != nil {
		t.Errorf("10 GiB free, ~3 GiB promised, 4 GiB needed: %v", err)
	}
	err = checkSpace(root, 6*gib, got, vms, 4*gib)
	if err == nil || !strings.Contains(err.Error(), "may still be written by 1 existing vm") {
		t.Errorf("6 GiB free, ~3 GiB promised, 4 GiB needed: %v", err)
	}
	if _, n, err := promised(filepath.Join(root, "missing"), logMax); err != nil || n != 0 {
		t.Errorf("missing vms dir: %d, %v", n, err)
	}
}
