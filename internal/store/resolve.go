package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// minPrefix is the shortest id prefix accepted as a reference.
const minPrefix = 4

// maxSuggestions bounds the close matches listed in a NotFoundError.
const maxSuggestions = 5

// NotFoundError reports a reference (id, id prefix or name) that matched no
// record of Kind ("vm", "image"), with the names closest to it. It unwraps
// to ErrNotFound.
type NotFoundError struct {
	Kind, Ref   string
	Suggestions []string
}

// Error implements error.
func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("%s %q not found", e.Kind, e.Ref)
	if len(e.Suggestions) > 0 {
		msg += " (did you mean " + strings.Join(e.Suggestions, ", ") + "?)"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Unwrap() error { return ErrNotFound }

// AmbiguousError reports an id prefix that matches several records of Kind.
// It unwraps to ErrAmbiguous.
type AmbiguousError struct {
	Kind, Ref string
	Matches   []string // the names of the matching records
}

// Error implements error.
func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("%s id prefix %q is ambiguous: matches %s", e.Kind, e.Ref, strings.Join(e.Matches, ", "))
}

// Unwrap makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Unwrap() error { return ErrAmbiguous }

// resolveRef finds the id of the record of kind in table named by ref: an
// exact id, then an exact name, then a unique id prefix of at least
// minPrefix characters. Names match case-insensitively only through
// suggestions; VM and image names are lowercase by rule.
func resolveRef(ctx context.Context, tx *sql.Tx, kind, table, ref string) (string, error) {
	if ref == "" {
		return "", fmt.Errorf("empty %s reference: %w", kind, ErrInvalid)
	}
	var id string
	err := tx.QueryRowContext(ctx, "SELECT id FROM "+table+" WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1", ref, ref, ref).Scan(&id)
	if err == nil {
		return id, nil
	}
	if err != sql.ErrNoRows {
		return "", fmt.Errorf("resolve %s %q: %w", kind, ref, err)
	}
	if len(ref) >= minPrefix {
		rows, err := tx.QueryContext(ctx, "SELECT id, name FROM "+table+" WHERE substr(id, 1, ?) = ? ORDER BY name", len(ref), ref)
		if err != nil {
			return "", fmt.Errorf("resolve %s %q: %w", kind, ref, err)
		}
		var ids, names []string
		for rows.Next() {
			var i, n string
			if err := rows.Scan(&i, &n); err != nil {
				rows.Close()
				return "", fmt.Errorf("resolve %s %q: %w", kind, ref, err)
			}
			ids, names = append(ids, i), append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return "", fmt.Errorf("resolve %s %q: %w", kind, ref, err)
		}
		switch len(ids) {
		case 0:
		case 1:
			return ids[0], nil
		default:
			return "", &AmbiguousError{Kind: kind, Ref: ref, Matches: names}
		}
	}
	names, err := columnStrings(ctx, tx, "SELECT name FROM "+table)
	if err != nil {
		return "", fmt.Errorf("resolve %s %q: %w", kind, ref, err)
	}
	return "", &NotFoundError{Kind: kind, Ref: ref, Suggestions: suggest(ref, names)}
}

// wrapLookup wraps a lookup failure with op and ref, except for the typed
// errors that already name the kind and reference.
func wrapLookup(op, ref string, err error) error {
	var nf *NotFoundError
	var am *AmbiguousError
	if errors.As(err, &nf) || errors.As(err, &am) {
		return err
	}
	return fmt.Errorf("%s %q: %w", op, ref, err)
}

// columnStrings runs a one-column query.
func columnStrings(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// suggest returns the names close to ref: those sharing a prefix with it
// (either way round, case-insensitively) or within an edit distance (see editDistance) that
// grows with ref's length. Closest first, at most maxSuggestions.
func suggest(ref string, names []string) []string {
	r := strings.ToLower(ref)
	maxDist := 1 + len(r)/4
	type cand struct {
		name string
		dist int
	}
	var cs []cand
	for _, n := range names {
		l := strings.ToLower(n)
		d := editDistance(r, l)
		switch {
		case d <= maxDist:
		case strings.HasPrefix(l, r) || strings.HasPrefix(r, l) && len(l) >= 2:
		default:
			continue
		}
		cs = append(cs, cand{n, d})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].dist != cs[j].dist {
			return cs[i].dist < cs[j].dist
		}
		return cs[i].name < cs[j].name
	})
	if len(cs) > maxSuggestions {
		cs = cs[:maxSuggestions]
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.name)
	}
	return out
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and adjacent transpositions ("wbe"
// for "web") each cost one. Counted in bytes: names are ASCII DNS labels.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
