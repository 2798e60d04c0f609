package buildinfo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestResolveStamp(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(exe, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	found := func() (string, error) { return exe, nil }
	missing := func() (string, error) { return "", errors.New("no exe") }
	for _, tc := range []struct {
		name   string
		ldflag string
		exe    func() (string, error)
		want   time.Time
	}{
		{"ldflag", "1700000000", found, time.Unix(1700000000, 0).UTC()},
		{"garbage ldflag falls back to mtime", "yesterday", found, mtime},
		{"no ldflag uses mtime", "", found, mtime},
		{"nothing known", "", missing, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolveStamp(tc.ldflag, tc.exe); !got.Equal(tc.want) {
				t.Errorf("resolveStamp(%q) = %v, want %v", tc.ldflag, got, tc.want)
			}
		})
	}
}

func TestOlder(t *testing.T) {
	a, b := time.Unix(100, 0), time.Unix(200, 0)
	if !Older(a, b) || Older(b, a) || Older(a, a) {
		t.Errorf("Older: want strict before")
	}
}

func TestVersionNotEmpty(t *testing.T) {
	if Version() == "" {
		t.Fatal("Version() is empty")
	}
}
