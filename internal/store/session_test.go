package store

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSession_crud(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mustCreateVM(t, s, testVM("vm1", "t1"))
	ss := Session{
		VMID: "vm1", Name: "agent", Command: []string{"sh", "-c", "while :; do date; sleep 1; done"},
		Cwd: "/root/repo", EnvNames: []string{"ANTHROPIC_API_KEY", "TERM"}, PTY: true, State: SessionStarting,
	}
	if err := s.CreateSession(ctx, ss); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "vm1", "agent")
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("times not set from the clock: %v %v", got.CreatedAt, got.UpdatedAt)
	}
	ss.CreatedAt, ss.UpdatedAt = got.CreatedAt, got.UpdatedAt
	if diff := cmp.Diff(ss, got); diff != "" {
		t.Errorf("GetSession (-want +got):\n%s", diff)
	}

	if err := s.CreateSession(ctx, ss); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate session: %v, want ErrConflict", err)
	}
	bad := ss
	bad.VMID = "nope"
	if err := s.CreateSession(ctx, bad); !errors.Is(err, ErrNotFound) {
		t.Errorf("session of a missing vm: %v, want ErrNotFound", err)
	}
	bad = ss
	bad.Name, bad.Command = "x", nil
	if err := s.CreateSession(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty command: %v, want ErrInvalid", err)
	}

	updated, err := s.UpdateSession(ctx, "vm1", "agent", func(ss *Session) error {
		code := 7
		ss.State, ss.ExitCode = SessionExited, &code
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !updated.UpdatedAt.After(got.UpdatedAt) {
		t.Errorf("UpdatedAt not bumped")
	}
	again, _ := s.GetSession(ctx, "vm1", "agent")
	if again.State != SessionExited || again.ExitCode == nil || *again.ExitCode != 7 {
		t.Errorf("after update: state %s exit %v", again.State, again.ExitCode)
	}
	if _, err := s.UpdateSession(ctx, "vm1", "agent", func(ss *Session) error { ss.Name = "other"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("rename: %v, want ErrInvalid", err)
	}

	if err := s.CreateSession(ctx, Session{VMID: "vm1", Name: "b", Command: []string{"true"}, State: SessionFailed, Diagnostics: "cwd /nope missing"}); err != nil {
		t.Fatal(err)
	}
	lost, err := s.UpdateSession(ctx, "vm1", "b", func(ss *Session) error {
		ss.State, ss.Diagnostics = SessionLost, "agent restarted"
		return nil
	})
	if err != nil || lost.State != SessionLost {
		t.Errorf("mark lost: %+v, %v", lost, err)
	}
	if _, err := s.UpdateSession(ctx, "vm1", "b", func(ss *Session) error { ss.State = "gone"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown state: %v, want ErrInvalid", err)
	}
	list, err := s.ListSessions(ctx, "vm1")
	if err != nil || len(list) != 2 || list[0].Name != "agent" || list[1].Name != "b" || list[1].EnvNames != nil {
		t.Errorf("ListSessions = %+v, %v", list, err)
	}
	if err := s.DeleteSession(ctx, "vm1", "agent"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "vm1", "agent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSession after delete: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSession(ctx, "vm1", "agent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteSession: %v, want ErrNotFound", err)
	}
}
