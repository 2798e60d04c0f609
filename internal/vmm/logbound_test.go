package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/layout"
)

// TestBoundLog plays a guest that writes its console in a loop: a writer
// holding the log open with O_APPEND (as the VMM does) keeps writing
// across rotations, and the log plus its one rotated copy never exceed
// twice the bound plus what was written since the last check.
func TestBoundLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), layout.ConsoleLogFile)
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const max = 64 << 10
	chunk := bytes.Repeat([]byte("guest spam line\n"), 1024) // 16 KiB
	rotations := 0
	for i := range 200 { // 3.2 MiB in all
		if _, err := w.Write(chunk); err != nil {
			t.Fatalf("write %d after rotation: %v", i, err)
		}
		rotated, err := BoundLog(path, max)
		if err != nil {
			t.Fatal(err)
		}
		if rotated {
			rotations++
		}
		cur, _ := os.Stat(path)
		old, _ := os.Stat(path + RotatedSuffix)
		var total int64
		if cur != nil {
			total += cur.Size()
		}
		if old != nil {
			total += old.Size()
			if old.Size() > max {
				t.Fatalf("rotated copy holds %d bytes, bound %d", old.Size(), max)
			}
		}
		if total > 2*max+int64(len(chunk)) {
			t.Fatalf("after %d writes the logs hold %d bytes, bound %d", i+1, total, 2*max+len(chunk))
		}
	}
	if rotations == 0 {
		t.Fatal("never rotated")
	}
	// The writer still appends at the (new) end after truncation: no hole
	// of zeros where the old content was.
	if _, err := w.Write([]byte("tail\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if bytes.IndexByte(b, 0) >= 0 {
		t.Fatal("log has a hole of zero bytes: the writer did not append")
	}
	if !bytes.HasSuffix(b, []byte("tail\n")) {
		t.Fatal("the last write is not at the end of the log")
	}
	// A missing log is fine.
	if rotated, err := BoundLog(filepath.Join(t.TempDir(), "none"), max); rotated || err != nil {
		t.Fatalf("missing log: %v %v", rotated, err)
	}
}
