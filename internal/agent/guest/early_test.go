package guest

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeNotify listens as systemd's notify socket in a temp dir and sets
// NOTIFY_SOCKET to it. Each datagram's text goes to the returned channel;
// descriptors passed with it are closed when close is true (as systemd
// does once it processed the message) and kept open otherwise.
func fakeNotify(t *testing.T, closeFDs bool) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 16)
	var kept []int
	t.Cleanup(func() {
		conn.Close()
		for _, fd := range kept {
			unix.Close(fd)
		}
	})
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 4096)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			scms, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, scm := range scms {
				fds, _ := unix.ParseUnixRights(&scm)
				for _, fd := range fds {
					if closeFDs {
						unix.Close(fd)
					} else {
						kept = append(kept, fd)
					}
				}
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

// TestNotifyBarrier checks the barrier returns once the receiver closed
// the descriptor it was sent, and fails (not hangs) when it never does.
func TestNotifyBarrier(t *testing.T) {
	msgs := fakeNotify(t, true)
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("notify: %v", err)
	}
	if m := <-msgs; m != "READY=1" {
		t.Errorf("notify sent %q", m)
	}
	if err := notifyBarrier(5 * time.Second); err != nil {
		t.Fatalf("barrier with a receiver that closes: %v", err)
	}
	if m := <-msgs; m != "BARRIER=1" {
		t.Errorf("barrier sent %q", m)
	}

	fakeNotify(t, false)
	start := time.Now()
	if err := notifyBarrier(300 * time.Millisecond); err == nil {
		t.Fatal("barrier returned although the receiver kept the descriptor open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("barrier took %s to time out", d)
	}
}

// TestAdoptEarlyAgent_nothingToAdopt checks the unit serves itself when no
// early agent was started, and when the pid file names a process that is
// not the early agent (a stale or planted file): the file is removed
// either way and no notification is sent.
func TestAdoptEarlyAgent_nothingToAdopt(t *testing.T) {
	msgs := fakeNotify(t, true)
	EarlyPIDFile = filepath.Join(t.TempDir(), "agent-early.pid")
	t.Cleanup(func() { EarlyPIDFile = "/run/banger/agent-early.pid" })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	if adopted, err := adoptEarlyAgent(log); adopted || err != nil {
		t.Fatalf("no pid file: adopted %v, err %v", adopted, err)
	}
	for _, content := range []string{"1\n", "garbage", "0", "\n"} {
		if err := os.WriteFile(EarlyPIDFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		adopted, err := adoptEarlyAgent(log)
		if adopted || err == nil {
			t.Errorf("pid file %q: adopted %v, err %v", content, adopted, err)
		}
		if _, err := os.Stat(EarlyPIDFile); !os.IsNotExist(err) {
			t.Errorf("pid file %q left behind", content)
		}
	}
	// This test process is alive but is not the early agent: it must not
	// be adopted (or ended).
	if err := os.WriteFile(EarlyPIDFile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if adopted, err := adoptEarlyAgent(log); adopted || err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("pid of a process that is not the agent: adopted %v, err %v", adopted, err)
	}
	select {
	case m := <-msgs:
		t.Errorf("systemd was notified %q with nothing adopted", m)
	default:
	}
}

// TestEarlyIdentityPipe checks what /init writes is what the early agent
// reads, and that a truncated hand-over is an error, not an empty token.
func TestEarlyIdentityPipe(t *testing.T) {
	want := earlyIdentity{Token: "tok", Env: []string{"A=1"}, Hostname: "vm1", VMID: "id1", Err: "dns: bad"}
	for _, tc := range []struct {
		name string
		data func([]byte) []byte
		ok   bool
	}{
		{"whole", func(b []byte) []byte { return b }, true},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, false},
		{"empty", func([]byte) []byte { return nil }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(want)
			go func() { w.Write(tc.data(b)); w.Close() }()
			fd, err := unix.Dup(int(r.Fd()))
			r.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, err := readEarlyIdentity(fd)
			if tc.ok {
				if err != nil || got.Token != want.Token || got.Hostname != want.Hostname || got.Err != want.Err || len(got.Env) != 1 {
					t.Errorf("read %+v, %v; want %+v", got, err, want)
				}
			} else if err == nil {
				t.Errorf("read %+v from a %s hand-over, want an error", got, tc.name)
			}
		})
	}
}

// TestLogOutput checks lines go to the console until toJournal, then to a
// journal stream opened with the stream protocol's header, and back to
// the console when the journal goes away.
func TestLogOutput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	journalStdout = path
	t.Cleanup(func() { journalStdout = "/run/systemd/journal/stdout" })

	var console strings.Builder
	o := &logOutput{console: &console}
	io.WriteString(o, "before\n")
	o.toJournal()
	got := make(chan []string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		var lines []string
		s := bufio.NewScanner(c)
		for len(lines) < 8 && s.Scan() {
			lines = append(lines, s.Text())
		}
		c.Close()
		got <- lines
	}()
	io.WriteString(o, "after\n")
	lines := <-got
	want := []string{"banger-agent", "", "6", "0", "0", "0", "0", "after"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("journal stream got %q, want %q", lines, want)
	}
	l.Close()
	// The reader closed the stream: the next lines reach the console.
	for i := 0; i < 50 && !strings.Contains(console.String(), "late"); i++ {
		io.WriteString(o, "late\n")
	}
	if c := console.String(); !strings.HasPrefix(c, "before\n") || !strings.Contains(c, "late\n") || strings.Contains(c, "after") {
		t.Errorf("console got %q", c)
	}
}

// TestCatches checks the SigCgt reading against this process, whose Go
// runtime catches SIGUSR1 and SIGINT, and a child that ignores them all.
func TestCatches(t *testing.T) {
	if !catches(os.Getpid(), unix.SIGUSR1) {
		t.Error("a Go process does not catch SIGUSR1")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if catches(cmd.Process.Pid, unix.SIGUSR1) {
		t.Error("sleep(1) catches SIGUSR1")
	}
	if catches(1<<30, unix.SIGUSR1) {
		t.Error("a missing process catches SIGUSR1")
	}
}
