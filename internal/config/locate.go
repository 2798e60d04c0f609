package config

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Where a key is. The TOML decoder knows the position of every key it
// read, but says so only in the errors it returns. To find the line of a
// key that failed a check after decoding (Validate, unknown keys), the
// file is decoded once more into a probe: a struct with a single field at
// that key whose UnmarshalTOML fails, so the decoder's error carries the
// key's position. The decoder keeps one position per dotted key, the last
// one written, so for an entry of an array of tables ([[file_sync]]) the
// document is first cut just before the next entry's header.

// errProbe is the probe's failure; its text marks the decoder's error as
// the probe's own.
var errProbe = errors.New("config key probe")

// probe is the field type of a probe struct.
type probe struct{}

// UnmarshalTOML fails, so that the decoder reports where the key is.
func (probe) UnmarshalTOML(any) error { return errProbe }

// locator finds the positions of keys in one TOML document.
type locator struct {
	data []byte
	md   toml.MetaData
}

// newLocator reads data's key types; nil when data does not decode.
func newLocator(data []byte) *locator {
	if len(data) == 0 {
		return nil
	}
	var m map[string]any
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&m)
	if err != nil {
		return nil
	}
	return &locator{data: data, md: md}
}

// isArray reports whether the key is an array (of tables or of values).
func (l *locator) isArray(key []string) bool {
	t := l.md.Type(key...)
	return t == "ArrayHash" || t == "Array"
}

// isTableArray reports whether the key is an array of tables written with
// [[...]] headers.
func (l *locator) isTableArray(key []string) bool { return l.md.Type(key...) == "ArrayHash" }

// position returns the position the decoder holds for key in doc (a
// prefix of the document), or false when doc does not hold the key.
func (l *locator) position(doc []byte, key []string) (toml.Position, bool) {
	t := reflect.TypeOf(probe{})
	for i := len(key) - 1; i >= 0; i-- {
		t = reflect.StructOf([]reflect.StructField{{
			Name: "F", Type: t, Tag: reflect.StructTag("toml:" + strconv.Quote(key[i])),
		}})
		if i > 0 && l.isArray(key[:i]) {
			t = reflect.SliceOf(t)
		}
	}
	_, err := toml.NewDecoder(bytes.NewReader(doc)).Decode(reflect.New(t).Interface())
	var pe toml.ParseError
	if !errors.As(err, &pe) || pe.Message != errProbe.Error() || pe.Position.Line == 0 {
		return toml.Position{}, false
	}
	return pe.Position, true
}

// entryStarts returns the offsets of the lines holding the [[key]]
// headers of an array of tables, in document order. The text before
// each offset is a complete document.
func (l *locator) entryStarts(key []string) []int {
	var starts []int
	for end := len(l.data); ; {
		pos, ok := l.position(l.data[:end], key)
		if !ok {
			break
		}
		s := bytes.LastIndexByte(l.data[:min(pos.Start, end)], '\n') + 1
		if s >= end {
			break
		}
		starts = append([]int{s}, starts...)
		end = s
	}
	return starts
}

// entry returns the part of the document that ends with entry i of the
// array of tables key, and the offset where that entry starts.
func (l *locator) entry(key []string, i int) (doc []byte, from int) {
	starts := l.entryStarts(key)
	if i >= len(starts) {
		return l.data, 0
	}
	end := len(l.data)
	if i+1 < len(starts) {
		end = starts[i+1]
	}
	return l.data[:end], starts[i]
}

// line returns the line of an indexed key such as "file_sync[2].guest"
// or "network.dns_upstream[1]", or of its closest enclosing key the file
// holds, or 0.
func (l *locator) line(indexed string) int {
	if l == nil {
		return 0
	}
	doc, from := l.data, 0
	var key []string
	for _, part := range strings.Split(indexed, ".") {
		name, idx, hasIdx := cutIndex(part)
		key = append(key, name)
		if hasIdx && l.isTableArray(key) {
			doc, from = l.entry(key, idx)
		}
	}
	for n := len(key); n > 0; n-- {
		if pos, ok := l.position(doc, key[:n]); ok && pos.Start >= from {
			return lineAt(doc, pos)
		}
	}
	return 0
}

// lineAt returns the line of a position the decoder reported in doc. The
// decoder's Line is where the value ends (the last line of a multi-line
// string); its Start is where the value begins, so the line is counted
// from there.
func lineAt(doc []byte, pos toml.Position) int {
	if pos.Start <= 0 || pos.Start > len(doc) {
		return pos.Line
	}
	return bytes.Count(doc[:pos.Start], []byte("\n")) + 1
}

// cutIndex splits "name[3]" into "name", 3, true.
func cutIndex(part string) (string, int, bool) {
	name, rest, ok := strings.Cut(part, "[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return part, 0, false
	}
	i, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
	if err != nil {
		return part, 0, false
	}
	return name, i, true
}

// indexedKey renders a key the decoder names without array indexes
// ("file_sync.mdoe") with the index of the array-of-tables entry it is
// first found in ("file_sync[1].mdoe"), from the decoder's ordered keys.
func indexedKey(md toml.MetaData, k toml.Key) string {
	counts := map[string]int{}
	for _, seen := range md.Keys() {
		if md.Type(seen...) == "ArrayHash" && len(seen) < len(k) {
			counts[seen.String()]++
		}
		if seen.String() == k.String() {
			break
		}
	}
	parts := make([]string, len(k))
	for i := range k {
		parts[i] = k[i]
		if n := counts[k[:i+1].String()]; n > 0 {
			parts[i] += "[" + strconv.Itoa(n-1) + "]"
		}
	}
	return strings.Join(parts, ".")
}
