package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vmm.log")
	if got := LogTail(p); got != "" {
		t.Errorf("missing file: %q", got)
	}
	long := strings.Repeat("early line\n", 100) + "qemu: could not open /dev/net/tun: Permission denied\x1b[31m\n"
	if err := os.WriteFile(p, []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	got := LogTail(p)
	if !strings.HasSuffix(got, "could not open /dev/net/tun: Permission denied[31m") || len(got) > logTailBytes {
		t.Errorf("tail = %q", got)
	}
	if !strings.HasPrefix(got, "early line") {
		t.Errorf("tail does not start at a whole line: %q", got)
	}
}
