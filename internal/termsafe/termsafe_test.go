package termsafe

import (
	"bytes"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"\x1b]0;pwned\x07sshd", "sshd"},         // window title
		{"a\x1b[2J\x1b[Hb", "ab"},                // clear screen, home
		{"x\x1b]52;c;ZXZpbA==\x1b\\y", "xy"},     // clipboard write, ST-terminated
		{"\x1bP+q544e\x1b\\ok", "ok"},            // DCS query (terminal answers on input)
		{"evil\rgood", "evilgood"},               // carriage return overwrite
		{"line1\nline2\ttab", "line1 line2 tab"}, // one cell: no newline
		{"\u009b31mred", "red"},                  // C1 CSI
		{"bad\xffutf8", "bad\uFFFDutf8"},         // invalid UTF-8
		{"wide 日本", "wide 日本"},                   // printable non-ASCII kept
		{"bidi\u202etxt.exe", "biditxt.exe"},     // right-to-left override
		{"del\x7fx\x00y\bz", "delxyz"},           // DEL, NUL, backspace
		{"ls\u2028x", "lsx"},                     // line separator
		{"\x1b[", ""},                            // unfinished CSI
		{"\xe6\x97", "\uFFFD"},                   // truncated rune at the end
	} {
		if got := Line(tc.in); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWriter_sequencesSplitAcrossWrites(t *testing.T) {
	in := "boot ok\r\n\x1b]0;title\x07\x1b[1;31mred\x1b[0m 日本\n"
	want := "boot ok\nred 日本\n"
	for cut := 0; cut <= len(in); cut++ {
		var b bytes.Buffer
		w := Writer(&b)
		w.Write([]byte(in[:cut]))
		w.Write([]byte(in[cut:]))
		if b.String() != want {
			t.Fatalf("cut at %d: %q, want %q", cut, b.String(), want)
		}
	}
}

func FuzzWriter(f *testing.F) {
	f.Add([]byte("\x1b]0;x\x07a\x1b[31mb\n"), 3)
	f.Add([]byte("\u009b1m\xff\xe6\x97\xa5"), 1)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		var b bytes.Buffer
		w := Writer(&b)
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		w.Write(in[:cut])
		w.Write(in[cut:])
		out := b.String()
		if strings.ContainsRune(out, 0x1b) {
			t.Fatalf("ESC survived: %q -> %q", in, out)
		}
		for _, r := range out {
			if r != '\n' && r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029') {
				t.Fatalf("control %U survived: %q -> %q", r, in, out)
			}
		}
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out: %q -> %q", in, out)
		}
	})
}
