// Package store keeps bangerd's durable state in SQLite: images, VMs, guest
// address leases and agent session metadata.
//
// It records what a VM is (its spec, desired and last state, address, vsock
// CID, timestamps), never what the kernel handed out for it (PIDs, taps,
// sockets, devices): those live in the daemon's handle cache. Every exported
// method runs in its own transaction and delegates to lowercase helpers that
// take the transaction, so helpers compose without nesting transactions.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors, matched with errors.Is. The daemon maps each to an API
// error code (not found, conflict, invalid).
var (
	// ErrNotFound reports that the named record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict reports a uniqueness or state conflict: a duplicate name,
	// an image still used by VMs, a full subnet.
	ErrConflict = errors.New("conflict")
	// ErrAmbiguous reports a reference (an id prefix) that matches several
	// records.
	ErrAmbiguous = errors.New("ambiguous")
	// ErrInvalid reports a record that breaks the store's rules (an unknown
	// state, an empty name) before it reaches SQLite.
	ErrInvalid = errors.New("invalid")
)

// busyTimeout is how long a connection waits for another writer's lock
// before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Store is bangerd's SQLite database. It is safe for concurrent use.
type Store struct {
	db *sql.DB

	// Now is the clock used for CreatedAt, UpdatedAt and lease times.
	// Tests replace it; it defaults to time.Now.
	Now func() time.Time
}

// dsn builds the connection string for path. PRAGMAs are per connection, so
// they go in the DSN: the driver runs them on every connection database/sql
// opens, not only on the first one.
func dsn(path string) string {
	q := url.Values{}
	// busy_timeout: concurrent writers (the daemon's handlers, a second
	// bangerd starting up) wait for the lock instead of failing at once with
	// SQLITE_BUSY. Listed first so the PRAGMAs below can wait too.
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	// journal_mode=WAL: readers (vm list, status) never block the writer and
	// the writer never blocks readers; commits are one append to the log.
	q.Add("_pragma", "journal_mode(WAL)")
	// foreign_keys=ON: SQLite leaves foreign keys off by default; leases and
	// sessions rely on ON DELETE CASCADE to disappear with their VM.
	q.Add("_pragma", "foreign_keys(1)")
	// synchronous=NORMAL: with WAL this stays consistent after a crash and
	// only the last commits may be lost on power failure; FULL would fsync
	// every commit for little gain on a developer's workstation.
	q.Add("_pragma", "synchronous(NORMAL)")
	// _txlock=immediate: write transactions take the write lock at BEGIN, so
	// read-modify-write helpers (UpdateVM, AllocateLease) cannot both read the
	// same state and then collide at COMMIT. Read-only transactions still
	// start with a plain, deferred BEGIN.
	q.Add("_txlock", "immediate")
	// A plain file name, not a "file:" URI: URI parsing would treat a '#'
	// in the path as the start of a fragment. The driver splits the DSN at
	// its first '?', so Open refuses paths containing one.
	return path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and applies every
// pending migration, each in its own transaction.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.Contains(path, "?") {
		return nil, fmt.Errorf("open store %q: path must be non-empty and contain no '?': %w", path, ErrInvalid)
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := migrate(ctx, db, len(migrations)); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, Now: time.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// SchemaVersion reports the number of the last migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	v, err := userVersion(ctx, s.db)
	if err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// NewID returns a fresh random record id: 32 lowercase hex digits, so a
// short prefix is enough to name a VM or image.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("read random id: %v", err)) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// now returns the store clock's time in UTC.
func (s *Store) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

// write runs fn in a write transaction (BEGIN IMMEDIATE, see dsn).
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// read runs fn in a read-only transaction, which sees one consistent
// snapshot and never waits for the writer.
func (s *Store) read(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// timeLayout is fixed width so stored times sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// formatOptTime stores the zero time as NULL.
func formatOptTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return formatTime(t)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", s, err)
	}
	return t, nil
}

func parseOptTime(s sql.NullString) (time.Time, error) {
	if !s.Valid {
		return time.Time{}, nil
	}
	return parseTime(s.String)
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// isForeignKey reports whether err is a FOREIGN KEY violation.
func isForeignKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}
