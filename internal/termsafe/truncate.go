package termsafe

import (
	"strings"
	"unicode/utf8"
)

// Truncate bounds guest-controlled text to max bytes: invalid UTF-8 is
// replaced, and a longer string is cut on a character boundary with "…"
// marking the cut (the result is then at most max bytes).
func Truncate(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut < 0 {
		return ""
	}
	return s[:cut] + mark
}
