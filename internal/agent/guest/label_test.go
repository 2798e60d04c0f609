package guest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"banger/internal/testenv"
)

// mkfs builds a small real ext4 image with the given label.
func mkfs(t *testing.T, path, label string) {
	t.Helper()
	testenv.RequireCommand(t, "mkfs.ext4")
	args := []string{"-q", "-F"}
	if label != "" {
		args = append(args, "-L", label)
	}
	out, err := exec.Command("mkfs.ext4", append(args, path, "4M")...).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

func TestReadExtLabel(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, label string
		raw         []byte
		want        string
		wantErr     error
	}{
		{name: "config drive", label: "banger-config", want: "banger-config"},
		{name: "16-byte label", label: "abcdefghijklmnop", want: "abcdefghijklmnop"},
		{name: "no label", label: "", want: ""},
		{name: "zeros", raw: make([]byte, 8192), wantErr: ErrNotExt},
		{name: "tiny", raw: []byte("short"), wantErr: ErrNotExt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".img")
			if tt.raw != nil {
				if err := os.WriteFile(p, tt.raw, 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				mkfs(t, p, tt.label)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := ReadExtLabel(f)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("label %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestFindByLabel(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	dev := filepath.Join(dir, "dev")
	byLabel := filepath.Join(dir, "by-label")
	for _, d := range []string{sys, dev, byLabel} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, label := range map[string]string{"vda": "banger-root", "vdb": "banger-work", "vdc": "banger-config"} {
		mkfs(t, filepath.Join(dev, name), label)
		if err := os.Mkdir(filepath.Join(sys, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A block device without a node and a loop device are skipped.
	_ = os.Mkdir(filepath.Join(sys, "vdz"), 0o755)
	_ = os.Mkdir(filepath.Join(sys, "loop0"), 0o755)

	got, err := FindByLabel("banger-config", "", sys, dev)
	if err != nil || got != filepath.Join(dev, "vdc") {
		t.Fatalf("scan: %q, %v", got, err)
	}
	got, err = FindByLabel("missing", byLabel, sys, dev)
	if err != nil || got != "" {
		t.Fatalf("missing label: %q, %v", got, err)
	}
	// udev's by-label symlink wins when present.
	if err := os.Symlink("../dev/vdb", filepath.Join(byLabel, "banger-work")); err != nil {
		t.Fatal(err)
	}
	got, err = FindByLabel("banger-work", byLabel, sys, dev)
	if err != nil || got != filepath.Join(dev, "vdb") {
		t.Fatalf("by-label: %q, %v", got, err)
	}
}
