package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new" {
		t.Fatalf("content = %q, %v; want new", got, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	assertOnly(t, dir, "f")
}

// TestWriteUnsynced: the unsynced write replaces the file and its mode
// the same way, leaving no temporary behind.
func TestWriteUnsynced(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteUnsynced(p, []byte("new"), 0o600); err != nil {
		t.Fatalf("WriteUnsynced: %v", err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "new" {
		t.Fatalf("content = %q, %v; want new", got, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	assertOnly(t, dir, "f")
}

// failingReader yields some bytes, then an error: the write must leave
// the old file and no temporary behind.
type failingReader struct{ sent bool }

func (r *failingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("source broke")
}

func TestWriteFromFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := WriteFrom(p, &failingReader{}, 0o644)
	if err == nil || !strings.Contains(err.Error(), "source broke") {
		t.Fatalf("WriteFrom = %v, want the reader's error", err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "old" {
		t.Errorf("content = %q, want old", got)
	}
	assertOnly(t, dir, "f")
}

func TestWriteMissingDir(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "nope", "f"), nil, 0o644)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Write into a missing dir = %v, want an error naming it", err)
	}
}

func TestWriteFromEmpty(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFrom(p, io.LimitReader(nil, 0), 0o640); err != nil {
		t.Fatalf("WriteFrom: %v", err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 0 || st.Mode().Perm() != 0o640 {
		t.Fatalf("stat = %v, %v; want empty 0640 file", st, err)
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("dir holds %v, want %v", got, names)
	}
}
