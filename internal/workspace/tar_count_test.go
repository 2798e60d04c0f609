package workspace

import (
	"context"
	"io"
	"testing"
)

func TestWriteTarCounted(t *testing.T) {
	sel, err := Select(context.Background(), testRepo(t), ModeWorktree)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Files == 0 || sel.Bytes == 0 {
		t.Fatalf("selection of %d files, %d bytes: want some", sel.Files, sel.Bytes)
	}
	var sent Sent
	if err := WriteTarCounted(context.Background(), io.Discard, sel, &sent); err != nil {
		t.Fatal(err)
	}
	if f, b := sent.Files.Load(), sent.Bytes.Load(); f != int64(sel.Files) || b != sel.Bytes {
		t.Errorf("sent %d files, %d bytes; selection has %d files, %d bytes", f, b, sel.Files, sel.Bytes)
	}
}
