package termsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefg…"},
		{strings.Repeat("é", 10), 10, "ééé…"}, // the cut never splits a character
		{"bad\xffbyte", 20, "bad\uFFFDbyte"},
		{"abcdef", 2, ""},
	} {
		got := Truncate(tc.in, tc.max)
		if got != tc.want || len(got) > max(tc.max, len(tc.want)) || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
