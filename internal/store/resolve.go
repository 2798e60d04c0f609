package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"strings"

	"banger/internal/suggest"
)

// minPrefix is the shortest id prefix accepted as a reference.
const minPrefix = 4

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
	return "", &NotFoundError{Kind: kind, Ref: ref, Suggestions: suggest.Closest(ref, names)}
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
