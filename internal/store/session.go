package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Session states.
const (
	SessionStarting = "starting" // recorded, not yet confirmed by the agent
	SessionRunning  = "running"
	SessionExited   = "exited" // ExitCode holds the status
	SessionFailed   = "failed" // never launched; Diagnostics says why
	// SessionLost is a session the guest forgot while it ran (its agent
	// restarted or the VM rebooted): it ended, with no exit status.
	SessionLost = "lost"
)

// Session is the durable metadata of a long-lived command the agent runs in
// a VM. The process and its output live in the guest; environment values
// are never stored, only their names.
type Session struct {
	VMID, Name  string
	Command     []string
	Cwd         string
	EnvNames    []string
	PTY         bool
	State       string // SessionStarting, SessionRunning, SessionExited, SessionFailed, SessionLost
	ExitCode    *int   // nil until the command exits
	Diagnostics string // why it failed or was lost (missing cwd, command not found, agent restart)
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const sessionColumns = "vm_id, name, command, cwd, env_names, pty, state, exit_code, diagnostics, created_at, updated_at"

func validateSession(ss Session) error {
	switch {
	case ss.VMID == "":
		return fmt.Errorf("empty vm id: %w", ErrInvalid)
	case ss.Name == "":
		return fmt.Errorf("empty name: %w", ErrInvalid)
	case len(ss.Command) == 0:
		return fmt.Errorf("empty command: %w", ErrInvalid)
	case !validSessionState(ss.State):
		return fmt.Errorf("unknown state %q: %w", ss.State, ErrInvalid)
	}
	return nil
}

func validSessionState(st string) bool {
	switch st {
	case SessionStarting, SessionRunning, SessionExited, SessionFailed, SessionLost:
		return true
	}
	return false
}

// CreateSession records ss. CreatedAt and UpdatedAt default to the store
// clock. A session name already used in the VM is ErrConflict; a missing
// VM is ErrNotFound.
func (s *Store) CreateSession(ctx context.Context, ss Session) error {
	if err := validateSession(ss); err != nil {
		return fmt.Errorf("create session %q in vm %s: %w", ss.Name, ss.VMID, err)
	}
	if ss.CreatedAt.IsZero() {
		ss.CreatedAt = s.now()
	}
	if ss.UpdatedAt.IsZero() {
		ss.UpdatedAt = ss.CreatedAt
	}
	err := s.write(ctx, func(tx *sql.Tx) error { return insertSession(ctx, tx, ss) })
	if err != nil {
		return fmt.Errorf("create session %q in vm %s: %w", ss.Name, ss.VMID, err)
	}
	return nil
}

func insertSession(ctx context.Context, tx *sql.Tx, ss Session) error {
	cmd, env, err := sessionJSON(ss)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO sessions ("+sessionColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		ss.VMID, ss.Name, cmd, ss.Cwd, env, ss.PTY, ss.State, exitArg(ss.ExitCode), ss.Diagnostics,
		formatTime(ss.CreatedAt), formatTime(ss.UpdatedAt))
	switch {
	case isUnique(err):
		return fmt.Errorf("session name already used: %w", ErrConflict)
	case isForeignKey(err):
		return &NotFoundError{Kind: "vm", Ref: ss.VMID}
	}
	return err
}

func sessionJSON(ss Session) (cmd, env string, err error) {
	c, err := json.Marshal(ss.Command)
	if err != nil {
		return "", "", fmt.Errorf("encode command: %w", err)
	}
	envNames := ss.EnvNames
	if envNames == nil {
		envNames = []string{}
	}
	e, err := json.Marshal(envNames)
	if err != nil {
		return "", "", fmt.Errorf("encode env names: %w", err)
	}
	return string(c), string(e), nil
}

func exitArg(code *int) any {
	if code == nil {
		return nil
	}
	return *code
}

func scanSession(row interface{ Scan(...any) error }) (Session, error) {
	var ss Session
	var cmd, env, created, updated string
	var exit sql.NullInt64
	if err := row.Scan(&ss.VMID, &ss.Name, &cmd, &ss.Cwd, &env, &ss.PTY, &ss.State, &exit, &ss.Diagnostics, &created, &updated); err != nil {
		return Session{}, err
	}
	if err := json.Unmarshal([]byte(cmd), &ss.Command); err != nil {
		return Session{}, fmt.Errorf("decode stored command: %w", err)
	}
	if err := json.Unmarshal([]byte(env), &ss.EnvNames); err != nil {
		return Session{}, fmt.Errorf("decode stored env names: %w", err)
	}
	if len(ss.EnvNames) == 0 {
		ss.EnvNames = nil
	}
	if exit.Valid {
		c := int(exit.Int64)
		ss.ExitCode = &c
	}
	var err error
	if ss.CreatedAt, err = parseTime(created); err != nil {
		return Session{}, err
	}
	if ss.UpdatedAt, err = parseTime(updated); err != nil {
		return Session{}, err
	}
	return ss, nil
}

func getSession(ctx context.Context, tx *sql.Tx, vmID, name string) (Session, error) {
	ss, err := scanSession(tx.QueryRowContext(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE vm_id = ? AND name = ?", vmID, name))
	if err == sql.ErrNoRows {
		return Session{}, &NotFoundError{Kind: "session", Ref: name}
	}
	return ss, err
}

// GetSession returns session name of VM vmID.
func (s *Store) GetSession(ctx context.Context, vmID, name string) (Session, error) {
	var ss Session
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		ss, err = getSession(ctx, tx, vmID, name)
		return err
	})
	if err != nil {
		return Session{}, fmt.Errorf("get session in vm %s: %w", vmID, err)
	}
	return ss, nil
}

// ListSessions returns VM vmID's sessions, oldest first.
func (s *Store) ListSessions(ctx context.Context, vmID string) ([]Session, error) {
	var out []Session
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE vm_id = ? ORDER BY created_at, name", vmID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			ss, err := scanSession(rows)
			if err != nil {
				return err
			}
			out = append(out, ss)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions of vm %s: %w", vmID, err)
	}
	return out, nil
}

// UpdateSession reads session name of VM vmID, lets fn change it and writes
// it back in one write transaction, setting UpdatedAt. fn must not change
// VMID, Name or CreatedAt. If fn fails nothing is written.
func (s *Store) UpdateSession(ctx context.Context, vmID, name string, fn func(*Session) error) (Session, error) {
	var out Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		ss, err := getSession(ctx, tx, vmID, name)
		if err != nil {
			return err
		}
		orig := ss
		if err := fn(&ss); err != nil {
			return err
		}
		if ss.VMID != orig.VMID || ss.Name != orig.Name || !ss.CreatedAt.Equal(orig.CreatedAt) {
			return fmt.Errorf("vm id, name and created time are immutable: %w", ErrInvalid)
		}
		if err := validateSession(ss); err != nil {
			return err
		}
		ss.UpdatedAt = s.now()
		cmd, env, err := sessionJSON(ss)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE sessions SET command = ?, cwd = ?, env_names = ?, pty = ?, state = ?, exit_code = ?,
			diagnostics = ?, updated_at = ? WHERE vm_id = ? AND name = ?`,
			cmd, ss.Cwd, env, ss.PTY, ss.State, exitArg(ss.ExitCode), ss.Diagnostics, formatTime(ss.UpdatedAt), vmID, name)
		if err != nil {
			return err
		}
		out = ss
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("update session %q in vm %s: %w", name, vmID, err)
	}
	return out, nil
}

// DeleteSession removes session name of VM vmID. A missing session is
// ErrNotFound.
func (s *Store) DeleteSession(ctx context.Context, vmID, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE vm_id = ? AND name = ?", vmID, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return &NotFoundError{Kind: "session", Ref: name}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete session %q in vm %s: %w", name, vmID, err)
	}
	return nil
}
