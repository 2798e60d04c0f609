// Package termsafe makes text a guest controls safe to put on the user's
// terminal. A guest's console, the process names it reports for its ports
// and the strings of its health answer are written by code nobody has
// read: an escape sequence in them could retitle the window, rewrite the
// screen, move the cursor over earlier output or, on some terminals, make
// the terminal answer on its input. Everything here drops escape
// sequences and control characters, keeping newlines and tabs.
//
// Standard library only; the TUI has its own cleaner built on the
// rendering library it already uses.
package termsafe

import (
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line makes s safe for one cell of a table or one field: escape sequences
// removed and every other control character (newlines included) replaced
// by a space, invalid UTF-8 by U+FFFD.
func Line(s string) string {
	var b strings.Builder
	f := filter{out: &b}
	f.Write([]byte(s))
	f.flush()
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		return r
	}, b.String())
}

// Writer returns a writer that passes text to w without escape sequences
// and control characters other than newline and tab. Sequences split
// across writes are handled; a sequence never ended is dropped whole (up
// to a bound, after which its bytes are discarded without being kept).
func Writer(w io.Writer) io.Writer { return &streamWriter{f: filter{out: w}} }

type streamWriter struct{ f filter }

func (s *streamWriter) Write(p []byte) (int, error) {
	if err := s.f.Write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

type state uint8

const (
	sText   state = iota
	sEsc          // after ESC
	sCSI          // ESC [ ... until a final byte
	sString       // OSC, DCS, SOS, PM, APC: until BEL or ST
	sStrEsc       // ESC inside a string: ST if '\\' follows
)

// filter is the state machine shared by Line and Writer.
type filter struct {
	out     io.Writer
	st      state
	partial []byte // an incomplete UTF-8 sequence carried to the next write
}

func (f *filter) Write(p []byte) error {
	if len(f.partial) > 0 {
		p = append(f.partial, p...)
		f.partial = nil
	}
	var out []byte
	for i := 0; i < len(p); {
		c := p[i]
		switch f.st {
		case sEsc:
			i++
			switch c {
			case '[':
				f.st = sCSI
			case ']', 'P', 'X', '^', '_':
				f.st = sString
			default:
				f.st = sText // a two-byte sequence: ESC and one more
			}
			continue
		case sCSI:
			i++
			if c >= 0x40 && c <= 0x7e {
				f.st = sText
			}
			continue
		case sString:
			i++
			if c == 0x07 {
				f.st = sText
			} else if c == 0x1b {
				f.st = sStrEsc
			}
			continue
		case sStrEsc:
			i++
			if c == '\\' {
				f.st = sText
			} else {
				f.st = sString
			}
			continue
		}
		if c == 0x1b {
			f.st = sEsc
			i++
			continue
		}
		if c < utf8.RuneSelf {
			if c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f) {
				out = append(out, c)
			}
			i++
			continue
		}
		if !utf8.FullRune(p[i:]) {
			f.partial = append(f.partial[:0], p[i:]...)
			break
		}
		r, n := utf8.DecodeRune(p[i:])
		i += n
		switch {
		case r == 0x9b: // C1 CSI
			f.st = sCSI
		case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f: // C1 OSC, DCS, SOS, PM, APC
			f.st = sString
		case r == utf8.RuneError && n == 1:
			out = utf8.AppendRune(out, utf8.RuneError)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || bidi(r):
		default:
			out = append(out, p[i-n:i]...)
		}
	}
	if len(out) == 0 {
		return nil
	}
	_, err := f.out.Write(out)
	return err
}

// bidi reports the explicit bidirectional formatting characters, which
// reorder how the rest of a line is displayed.
func bidi(r rune) bool {
	return r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069' || r == '\u200e' || r == '\u200f'
}

// flush ends the input: an incomplete UTF-8 sequence becomes U+FFFD.
func (f *filter) flush() {
	if len(f.partial) > 0 {
		io.WriteString(f.out, "\uFFFD")
		f.partial = nil
	}
}
