package config

import (
	"banger/internal/units"
	"os"
)

// Typed config values. Each implements encoding.TextUnmarshaler, so the
// TOML decoder checks a value while it decodes it and reports a bad one
// with its line and key (see decodeError). Checks that need more than
// one value, or a bound that depends on the key, stay in Validate.

// Size is a byte count written with ParseSize syntax ("8G", "512M"). The
// zero Size means "not set".
type Size int64

// UnmarshalText parses a ParseSize string.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := units.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// MarshalText renders s with FormatSize, so a Size round-trips.
func (s Size) MarshalText() ([]byte, error) { return []byte(units.FormatSize(int64(s))), nil }

// String renders s with FormatSize ("16G").
func (s Size) String() string { return units.FormatSize(int64(s)) }

// FileMode is an octal permission string as ParseFileMode reads it
// ("0644", "644", "0o644"). It stays a string so that "" (not set) and
// "0" remain different.
type FileMode string

// UnmarshalText accepts what ParseFileMode accepts.
func (m *FileMode) UnmarshalText(b []byte) error {
	if _, err := ParseFileMode(string(b)); err != nil {
		return err
	}
	*m = FileMode(b)
	return nil
}

// Perm returns the mode, or def when m is not set. An invalid m (only
// possible when built in code) also yields def; Validate reports it.
func (m FileMode) Perm(def os.FileMode) os.FileMode {
	if m == "" {
		return def
	}
	p, err := ParseFileMode(string(m))
	if err != nil {
		return def
	}
	return p
}
