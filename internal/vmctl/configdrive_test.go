package vmctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/config"
)

// TestStageFileSync_symlinksAndDirModes: an entry that is a symlink syncs
// its target (a symlinked directory used to stage nothing), directories
// keep their own modes (read-only ones included) and the staging tree can
// still be removed.
func TestStageFileSync_symlinksAndDirModes(t *testing.T) {
	home := t.TempDir()
	real := filepath.Join(home, "real-aws")
	os.MkdirAll(filepath.Join(real, "ro"), 0o755)
	os.WriteFile(filepath.Join(real, "ro", "key"), []byte("k"), 0o400)
	os.Chmod(filepath.Join(real, "ro"), 0o500)
	t.Cleanup(func() { os.Chmod(filepath.Join(real, "ro"), 0o755) })
	os.Symlink(real, filepath.Join(home, ".aws"))
	os.Symlink(filepath.Join(home, "nowhere"), filepath.Join(home, "dangling"))
	entries := []config.FileSync{
		{Host: "~/.aws", Guest: "~/.aws"},
		{Host: "~/dangling", Guest: "~/dangling"},
	}
	staging := filepath.Join(t.TempDir(), "stage")
	files, warnings, n, err := stageFileSync(entries, home, filepath.Join(staging, "files"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || !files[0].Dir || n != 1 {
		t.Fatalf("files = %+v, bytes %d", files, n)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "file_sync[1]") {
		t.Errorf("dangling symlink: warnings = %v", warnings)
	}
	for p, want := range map[string]os.FileMode{"0/ro": 0o500, "0/ro/key": 0o400, "0": 0o755} {
		st, err := os.Stat(filepath.Join(staging, "files", p))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", p, st, err, want)
		}
	}
	removeStaging(staging)
	if _, err := os.Stat(staging); !os.IsNotExist(err) {
		t.Errorf("staging tree left behind: %v", err)
	}
}
