package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/internal/wait"
)

// logSink collects what a JSON slog handler writes.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	VMID  string `json:"vm_id"`
	Line  string `json:"line"`
	Cut   bool   `json:"cut"`
}

func (s *logSink) entries(t *testing.T) []logEntry {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logEntry
	sc := bufio.NewScanner(bytes.NewReader(s.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e logEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// waitFor waits until the sink holds an entry whose line contains s.
func (s *logSink) waitFor(t *testing.T, sub string) logEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var found logEntry
	err := wait.Until(ctx, 5*time.Millisecond, func() (bool, error) {
		for _, e := range s.entries(t) {
			if strings.Contains(e.Line, sub) {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no log entry with %q in %+v", sub, s.entries(t))
	}
	return found
}

func newSink() (*logSink, *slog.Logger) {
	s := &logSink{}
	return s, slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// probe appends numbered probe lines until one reaches the log: from then
// on the follower is reading.
func probe(t *testing.T, sink *logSink, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	err := wait.Until(ctx, 20*time.Millisecond, func() (bool, error) {
		for _, e := range sink.entries(t) {
			if strings.HasPrefix(e.Line, "probe ") {
				return true, nil
			}
		}
		n++
		appendFile(t, path, fmt.Sprintf("probe %d\n", n))
		return false, nil
	})
	if err != nil {
		t.Fatal("the follower never logged a probe line")
	}
}

func TestFollowLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmm.log")
	appendFile(t, path, "2026-01-01T00:00:00.000000000 [old:main:ERROR] written before the follower\n")
	sink, log := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- FollowLog(ctx, path, log.With("vm_id", "01JVM")) }()
	probe(t, sink, path)

	lines := []struct{ text, level string }{
		{"2026-01-01T00:00:00.000000000 [01JVM:main:ERROR] boom", "ERROR"},
		{"2026-01-01T00:00:00.000000000 [01JVM:fc_vcpu 0:WARN] careful", "WARN"},
		{"2026-01-01T00:00:00.000000000 [01JVM:fc_api:INFO:src/api_server/src/lib.rs:12] api", "INFO"},
		{"2026-01-01T00:00:00.000000000 [DEBUG] bracketed alone", "DEBUG"},
		{"2026-01-01T00:00:00.000000000 [01JVM:main:TRACE] very detailed", "DEBUG"},
		{"no level word at all", "INFO"},
	}
	for _, l := range lines {
		appendFile(t, path, l.text+"\n")
	}
	// A line written in two pieces is one line.
	appendFile(t, path, "[01JVM:main:INFO] first ha")
	appendFile(t, path, "lf, second half\n")
	// A line over the bound is cut.
	appendFile(t, path, "[01JVM:main:WARN] long "+strings.Repeat("x", 3*MaxLogLine)+"\n")
	appendFile(t, path, "[01JVM:main:INFO] after the long one\n")

	for _, l := range lines {
		e := sink.waitFor(t, l.text)
		if e.Level != l.level || e.VMID != "01JVM" || e.Line != l.text {
			t.Errorf("line %q logged as %+v, want level %s with vm_id", l.text, e, l.level)
		}
	}
	if e := sink.waitFor(t, "first half, second half"); e.Line != "[01JVM:main:INFO] first half, second half" {
		t.Errorf("split line logged as %q", e.Line)
	}
	long := sink.waitFor(t, "long xxx")
	if len(long.Line) != MaxLogLine || !long.Cut || long.Level != "WARN" {
		t.Errorf("long line: %d bytes, cut %v, level %s; want %d bytes, cut", len(long.Line), long.Cut, long.Level, MaxLogLine)
	}
	sink.waitFor(t, "after the long one")

	// Truncation: the follower starts over at the new beginning.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "[x:main:ERROR] after truncation\n")
	if e := sink.waitFor(t, "after truncation"); e.Level != "ERROR" {
		t.Errorf("after truncation logged as %+v", e)
	}

	for _, e := range sink.entries(t) {
		if strings.Contains(e.Line, "before the follower") {
			t.Errorf("a line written before FollowLog was logged: %+v", e)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("FollowLog after cancel = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FollowLog did not return after cancel")
	}
}

func TestFollowLog_FileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmm.log")
	appendFile(t, path, "")
	sink, log := newSink()
	done := make(chan error, 1)
	go func() { done <- FollowLog(context.Background(), path, log) }()
	probe(t, sink, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("FollowLog after removal = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FollowLog did not return after its file was removed")
	}
}

// TestFollow: the daemon's background copy tags lines with the vm id,
// runs once per file, ends when the VMM exits and, started again, goes on
// where it stopped.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vmm.log")
	sock := filepath.Join(dir, "api.sock")
	appendFile(t, path, "old\n")
	// A stand-in VMM: its command line names the API socket, it exits when
	// its stdin closes.
	cmd := exec.Command("/bin/sh", "-c", "read x", "sh", sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	st, err := vmm.ProcStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h := vmm.Handles{VMM: vmm.Firecracker, PID: cmd.Process.Pid, StartTime: st, APISocket: sock, VMMLog: path}
	if !vmm.Alive(h) {
		t.Fatal("stand-in VMM not Alive")
	}
	sink, log := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	noteLogStart(path) // as Start does before spawning
	appendFile(t, path, "[01JF:main:WARN] written before Follow\n")
	Follow(ctx, "01JF", h, log)
	Follow(ctx, "01JF", h, log) // a second call while it runs is a no-op
	if e := sink.waitFor(t, "written before Follow"); e.VMID != "01JF" || e.Level != "WARN" {
		t.Errorf("logged as %+v", e)
	}
	appendFile(t, path, "[01JF:main:INFO] while running\n")
	sink.waitFor(t, "while running")

	stdin.Close()
	_ = cmd.Wait()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	stopped := func() (bool, error) {
		following.Lock()
		defer following.Unlock()
		st := following.m[path]
		return st != nil && !st.running, nil
	}
	if err := wait.Until(wctx, 10*time.Millisecond, stopped); err != nil {
		t.Fatal("the copy did not end after the VMM exited")
	}
	appendFile(t, path, "[01JF:main:INFO] between runs\n")
	Follow(ctx, "01JF", vmm.Handles{VMM: vmm.Firecracker, PID: h.PID, StartTime: h.StartTime + 1, APISocket: sock, VMMLog: path}, log)
	sink.waitFor(t, "between runs")
	n := 0
	for _, e := range sink.entries(t) {
		if e.Line == "old" {
			t.Errorf("a line from before the VMM started was logged")
		}
		if strings.Contains(e.Line, "written before Follow") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("line logged %d times, want once", n)
	}
}

func TestLogLevel(t *testing.T) {
	tests := []struct {
		line string
		want slog.Level
	}{
		{"2026 [vm:main:ERROR] x", slog.LevelError},
		{"2026 [vm:main:WARN] x", slog.LevelWarn},
		{"[WARNING] x", slog.LevelWarn},
		{"2026 [vm:main] [INFO] x", slog.LevelInfo},
		{"2026 [vm:main:DEBUG] x", slog.LevelDebug},
		{"2026 [vm:main] a message saying [ERROR] later", slog.LevelInfo},
		{"plain", slog.LevelInfo},
		{"[unterminated ERROR", slog.LevelInfo},
	}
	for _, tt := range tests {
		if got := LogLevel(tt.line); got != tt.want {
			t.Errorf("LogLevel(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
