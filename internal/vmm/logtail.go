package vmm

import (
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// logTailBytes bounds what LogTail reads.
const logTailBytes = 512

// LogTail returns the last lines (at most 512 bytes, valid UTF-8, control
// characters but newlines dropped) of a VMM's log file, for an error
// message: a VM whose start fails is rolled back with its directory, so
// the log the error names is gone by the time the user reads it. It
// returns "" when the file is empty or unreadable.
func LogTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > logTailBytes {
		_, _ = f.Seek(st.Size()-logTailBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, logTailBytes))
	s := strings.ToValidUTF8(string(b), "")
	// Start at a whole line when the read began mid-file.
	if len(b) == logTailBytes {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= ' ' && r != 0x7f && r != utf8.RuneError) {
			return r
		}
		return -1
	}, s)
	return strings.TrimSpace(s)
}
