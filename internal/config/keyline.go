package config

import (
	"strconv"
	"strings"
)

// keyLine is one key (or table header) of a TOML file and its line.
type keyLine struct {
	plain   string // "file_sync.guest": dotted, as the TOML metadata names it
	indexed string // "file_sync[2].guest": with array-of-tables indexes
	line    int
}

// lineOf returns the line of an indexed key ("file_sync[2].guest"), or of
// its closest enclosing table when the key itself is not listed, or 0.
func (c *Config) lineOf(key string) int {
	for k := key; k != ""; {
		for _, e := range c.keys {
			if e.indexed == k {
				return e.line
			}
		}
		i := strings.LastIndexAny(k, ".[")
		if i <= 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// scanKeyLines lists the keys and table headers of a TOML document with
// their line numbers. It runs only on documents the TOML decoder accepted,
// so it can be forgiving: it understands table and array-of-tables headers,
// bare, quoted and dotted keys, and skips over multi-line strings and
// arrays. Keys inside inline tables are not listed (callers fall back to
// the enclosing key's line).
func scanKeyLines(data []byte) []keyLine {
	var (
		out    []keyLine
		table  []string           // current table path
		counts = map[string]int{} // array-of-tables occurrences by dotted path
	)
	// indexed renders parts with the index of the latest element of every
	// array of tables on the way, as TOML resolves [a.b] after [[a]].
	indexed := func(parts []string) string {
		out := make([]string, len(parts))
		for j, p := range parts {
			out[j] = p
			if n := counts[strings.Join(parts[:j+1], ".")]; n > 0 {
				out[j] += "[" + strconv.Itoa(n-1) + "]"
			}
		}
		return strings.Join(out, ".")
	}
	text := string(data)
	line := 1
	for len(text) > 0 {
		nl := strings.IndexByte(text, '\n')
		cur := text
		if nl >= 0 {
			cur = text[:nl]
		}
		ln := strings.TrimSpace(cur)
		consumed := len(cur) + 1
		switch {
		case ln == "" || ln[0] == '#':
		case strings.HasPrefix(ln, "[["):
			if parts, _, ok := splitKey(ln[2:], "]]"); ok {
				table = parts
				counts[strings.Join(parts, ".")]++
				out = append(out, keyLine{strings.Join(parts, "."), indexed(parts), line})
			}
		case ln[0] == '[':
			if parts, _, ok := splitKey(ln[1:], "]"); ok {
				table = parts
				out = append(out, keyLine{strings.Join(parts, "."), indexed(parts), line})
			}
		default:
			parts, rest, ok := splitKey(ln, "=")
			if !ok {
				break
			}
			full := append(append([]string{}, table...), parts...)
			out = append(out, keyLine{strings.Join(full, "."), indexed(table) + joinDot(len(table) > 0, parts), line})
			// The value may span lines: skip to its end.
			start := len(cur) - len(strings.TrimLeft(cur, " \t")) + len(ln) - len(rest)
			consumed = start + valueLen(text[start:]) + 1
			line += strings.Count(text[:min(consumed, len(text))], "\n") - 1
		}
		line++
		if consumed >= len(text) {
			break
		}
		text = text[consumed:]
	}
	return out
}

func joinDot(sep bool, parts []string) string {
	s := strings.Join(parts, ".")
	if sep {
		return "." + s
	}
	return s
}

// valueLen returns the length of the TOML value at the start of s up to
// (not including) the newline that ends it, following strings, multi-line
// strings, arrays and inline tables across lines.
func valueLen(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\n' && depth == 0:
			return i
		case c == '#':
			nl := strings.IndexByte(s[i:], '\n')
			if nl < 0 {
				return len(s)
			}
			i += nl - 1
		case strings.HasPrefix(s[i:], `"""`) || strings.HasPrefix(s[i:], `'''`):
			end := closing(s[i+3:], s[i:i+3], c == '"')
			if end < 0 {
				return len(s)
			}
			i += 3 + end + 2
		case c == '"' || c == '\'':
			end := closing(s[i+1:], string(c), c == '"')
			if end < 0 {
				return len(s)
			}
			i += 1 + end
		case c == '[' || c == '{':
			depth++
		case c == ']' || c == '}':
			depth--
		}
	}
	return len(s)
}

// closing returns the index in s of the delimiter that closes a string,
// honouring backslash escapes in basic strings, or -1.
func closing(s, delim string, escapes bool) int {
	for i := 0; i < len(s); i++ {
		if escapes && s[i] == '\\' {
			i++
			continue
		}
		if strings.HasPrefix(s[i:], delim) {
			// A closing """ may be followed by up to two more quotes that
			// belong to the content.
			for len(delim) == 3 && i+3 < len(s) && s[i+3] == delim[0] {
				i++
			}
			return i
		}
	}
	return -1
}

// splitKey parses a possibly dotted, possibly quoted key at the start of s
// up to the terminator term, returning its parts and the text after term.
func splitKey(s, term string) ([]string, string, bool) {
	var parts []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return nil, "", false
		}
		switch s[0] {
		case '"', '\'':
			end := closing(s[1:], s[:1], s[0] == '"')
			if end < 0 {
				return nil, "", false
			}
			part := s[1 : 1+end]
			if s[0] == '"' {
				if u, err := strconv.Unquote(s[:end+2]); err == nil {
					part = u
				}
			}
			parts = append(parts, part)
			s = s[end+2:]
		default:
			end := 0
			for end < len(s) && isBareKeyChar(s[end]) {
				end++
			}
			if end == 0 {
				return nil, "", false
			}
			parts = append(parts, s[:end])
			s = s[end:]
		}
		s = strings.TrimLeft(s, " \t")
		switch {
		case strings.HasPrefix(s, term):
			return parts, s[len(term):], true
		case strings.HasPrefix(s, "."):
			s = s[1:]
		default:
			return nil, "", false
		}
	}
}

func isBareKeyChar(b byte) bool {
	return b == '_' || b == '-' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}
