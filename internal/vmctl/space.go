package vmctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/units"
)

// promised returns what the VMs under vmsDir may still write to the host's
// disk without asking: for each sparse disk (overlay and work), its
// apparent size less the blocks it already holds, and for each console
// log the bound of it and its rotated copy less what they hold. A guest
// decides when to write it, so a create must not count it as free.
func promised(vmsDir string, consoleMax int64) (total int64, vms int, err error) {
	ents, err := os.ReadDir(vmsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", vmsDir, err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(vmsDir, e.Name())
		found := false
		for _, name := range []string{layout.OverlayFile, layout.WorkFile} {
			size, used, ok := usage(filepath.Join(dir, name))
			if ok {
				found = true
				total += max(0, size-used)
			}
		}
		if !found {
			continue
		}
		vms++
		logs := 2 * consoleMax
		for _, name := range []string{layout.ConsoleLogFile, layout.ConsoleLogFile + ".1"} {
			if size, _, ok := usage(filepath.Join(dir, name)); ok {
				logs -= size
			}
		}
		total += max(0, logs)
	}
	return total, vms, nil
}

// usage returns the apparent size of path and the bytes its blocks hold.
func usage(path string) (size, used int64, ok bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, false
	}
	used = fi.Size()
	if st, isSys := fi.Sys().(*syscall.Stat_t); isSys {
		used = st.Blocks * 512
	}
	return fi.Size(), used, true
}

// checkSpace refuses a VM that may write need bytes when the free space of
// the VM directory, less what existing VMs may still write, cannot hold
// it.
func checkSpace(dir string, free, promisedBytes int64, vms int, need int64) error {
	if free-promisedBytes >= need {
		return nil
	}
	return api.Errorf(api.CodeInvalid,
		"not enough disk space in %s: this vm may write up to %s (overlay and work disk, console log); %s is free, of which %s may still be written by %d existing vm(s) (their sparse disks and logs); delete vms, free space or choose a smaller disk size",
		dir, units.FormatSize(need), units.FormatSize(free), units.FormatSize(promisedBytes), vms)
}
