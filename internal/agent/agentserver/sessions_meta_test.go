package agentserver

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent"
)

// metaSession is a session of a Sessions whose server logs into buf.
func metaSession(t *testing.T, dir string, buf *bytes.Buffer) *session {
	t.Helper()
	s, err := NewSessions(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s.server = &Server{Logger: slog.New(slog.NewTextHandler(buf, nil))}
	return &session{owner: s, dir: dir, info: agent.SessionInfo{Name: "build", State: agent.SessionRunning}}
}

func TestSession_saveMeta(t *testing.T) {
	t.Run("writes", func(t *testing.T) {
		var buf bytes.Buffer
		dir := t.TempDir()
		metaSession(t, dir, &buf).saveMeta()
		b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		if err != nil {
			t.Fatal(err)
		}
		var info agent.SessionInfo
		if err := json.Unmarshal(b, &info); err != nil || info.Name != "build" {
			t.Fatalf("meta.json = %s (%v), want session build", b, err)
		}
		if st, _ := os.Stat(filepath.Join(dir, "meta.json")); st.Mode().Perm() != 0o600 {
			t.Errorf("meta.json mode = %v, want 0600", st.Mode().Perm())
		}
		if buf.Len() != 0 {
			t.Errorf("logged %q on success", buf.String())
		}
	})
	t.Run("failure is logged", func(t *testing.T) {
		var buf bytes.Buffer
		metaSession(t, filepath.Join(t.TempDir(), "removed"), &buf).saveMeta()
		if got := buf.String(); !strings.Contains(got, "session=build") || !strings.Contains(got, "meta.json") {
			t.Errorf("log = %q, want a warning naming the session and meta.json", got)
		}
	})
}
