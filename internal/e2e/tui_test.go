package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/internal/testenv"
)

// tmuxScreen drives `banger tui` in a detached tmux server of its own
// (a socket in the test's temporary directory), inside the test's network
// namespace.
type tmuxScreen struct {
	e      *env
	socket string
	conf   string
}

func newTmux(e *env, t *testing.T) *tmuxScreen {
	t.Helper()
	testenv.RequireCommand(t, "tmux")
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g default-terminal xterm-256color\nset -g status off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &tmuxScreen{e: e, socket: filepath.Join(dir, "tmux.sock"), conf: conf}
	// The server is ours (its socket name is unique): end it, and with it
	// every dashboard it runs, before the daemon is stopped.
	t.Cleanup(func() { _, _ = s.run(context.Background(), "kill-server") })
	return s
}

// run runs a tmux client command against the private server, inside the
// namespace (so a server it starts, and the dashboards in it, live there).
func (s *tmuxScreen) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := s.e.ns.Command(ctx, "tmux", append([]string{"-S", s.socket, "-f", s.conf}, args...)...)
	cmd.Env = s.e.envv
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tmux %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *tmuxScreen) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// start opens a session running the dashboard with extra environment.
func (s *tmuxScreen) start(t *testing.T, session string, env ...string) {
	t.Helper()
	shell := strings.Join(append(env, filepath.Join(s.e.bin, "banger"), "tui"), " ")
	s.must(t, "new-session", "-d", "-s", session, "-x", "120", "-y", "30", shell)
}

func (s *tmuxScreen) keys(t *testing.T, session string, keys ...string) {
	t.Helper()
	s.must(t, append([]string{"send-keys", "-t", session}, keys...)...)
}

func (s *tmuxScreen) text(t *testing.T, session, txt string) {
	t.Helper()
	s.must(t, "send-keys", "-t", session, "-l", txt)
}

// capture returns the pane's text (with escape sequences when escapes).
func (s *tmuxScreen) capture(t *testing.T, session string, escapes bool) string {
	t.Helper()
	args := []string{"capture-pane", "-p", "-t", session}
	if escapes {
		args = append(args, "-e")
	}
	return s.must(t, args...)
}

// waitFor polls the pane until ok accepts it.
func (s *tmuxScreen) waitFor(t *testing.T, session, what string, d time.Duration, ok func(screen string) bool) string {
	t.Helper()
	deadline := time.Now().Add(d)
	var screen string
	for time.Now().Before(deadline) {
		screen = s.capture(t, session, false)
		if ok(screen) {
			return screen
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("after %s the screen does not show %s:\n%s", d, what, screen)
	return ""
}

// rowOf returns the VM table row of name.
func rowOf(screen, name string) string {
	re := regexp.MustCompile(`^[› ] ` + regexp.QuoteMeta(name) + `\s`)
	for _, l := range strings.Split(screen, "\n") {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

// TestTUI runs `banger tui` under tmux against a real daemon and checks
// what the screen shows while a VM is created through the form, reached
// with ssh and a session attach (the dashboard suspends and comes back),
// stopped and deleted with confirmation; then that NO_COLOR removes
// colour.
func TestTUI(t *testing.T) {
	e := newEnv(t)
	tm := newTmux(e, t)
	e.ensureImage()

	const sess = "dash"
	tm.start(t, sess)
	tm.waitFor(t, sess, "the empty VM list", time.Minute, func(s string) bool {
		return strings.Contains(s, "no VMs yet") && strings.Contains(s, "? keys")
	})

	t.Run("create through the form", func(t *testing.T) {
		tm.keys(t, sess, "c")
		form := tm.waitFor(t, sess, "the create form", 10*time.Second, func(s string) bool { return strings.Contains(s, "create a VM") })
		for _, want := range []string{"vcpu        2", "memory MiB  1024", "disk        2G"} {
			if !strings.Contains(form, want) {
				t.Errorf("form lacks the default %q:\n%s", want, form)
			}
		}
		tm.keys(t, sess, "C-u")
		tm.text(t, sess, "tui1")
		tm.keys(t, sess, "Enter")
		tm.waitFor(t, sess, "the create operation's stages", time.Minute, func(s string) bool {
			return strings.Contains(s, "create tui1") && (strings.Contains(s, "→") || strings.Contains(s, "✓"))
		})
		screen := tm.waitFor(t, sess, "tui1 running", 10*time.Minute, func(s string) bool {
			if strings.Contains(s, "create tui1 · failed") {
				log, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
				lines := strings.Split(string(log), "\n")
				t.Fatalf("create failed:\n%s\nbangerd.log tail:\n%s", s, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
			return strings.Contains(rowOf(s, "tui1"), "running") && strings.Contains(s, "create tui1: done")
		})
		if !strings.Contains(screen, "✓ boot") {
			t.Errorf("no finished boot stage on screen:\n%s", screen)
		}
		// The VMM is sampled from /proc: the details line gets its CPU and RSS.
		tm.waitFor(t, sess, "the VMM's CPU and memory", 30*time.Second, func(s string) bool {
			return regexp.MustCompile(`pid \d+ · vmm [0-9.]+% cpu, [0-9.]+ [KMG]iB rss`).MatchString(s)
		})
		v := e.vm("tui1")
		if v["state"] != "running" {
			t.Fatalf("daemon says tui1 is %v", v["state"])
		}
		if ip, _ := v["ip"].(string); ip == "" || !strings.Contains(rowOf(screen, "tui1"), ip) {
			t.Errorf("row %q lacks the VM's IP %q", rowOf(screen, "tui1"), ip)
		}
	})

	t.Run("ssh suspends the dashboard and returns", func(t *testing.T) {
		tm.keys(t, sess, "e")
		tm.waitFor(t, sess, "a shell in the guest", 2*time.Minute, func(s string) bool {
			// The agent answers while systemd is still starting, so sshd
			// may not listen yet: the dashboard shows ssh's failure, and
			// the user tries again.
			if strings.Contains(s, "error: ssh tui1: exit status 255") {
				tm.keys(t, sess, "Escape")
				time.Sleep(2 * time.Second)
				tm.keys(t, sess, "e")
			}
			return strings.Contains(s, "root@tui1")
		})
		tm.text(t, sess, "exit")
		tm.keys(t, sess, "Enter")
		tm.waitFor(t, sess, "the dashboard with the still-running reminder", time.Minute, func(s string) bool {
			return strings.Contains(s, "vm tui1 is still running") && strings.Contains(rowOf(s, "tui1"), "running")
		})
	})

	t.Run("attach to a session and detach", func(t *testing.T) {
		e.must(e.banger("", "vm", "session", "start", "tui1", "--name", "ticker", "--pty", "--",
			"sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done"))
		tm.keys(t, sess, "3")
		tm.waitFor(t, sess, "the ticker session", time.Minute, func(s string) bool {
			return strings.Contains(s, "sessions of tui1") && regexp.MustCompile(`ticker\s+running`).MatchString(s)
		})
		tm.keys(t, sess, "a")
		tm.waitFor(t, sess, "the session's output", time.Minute, func(s string) bool {
			return regexp.MustCompile(`tick-\d+`).MatchString(s) && !strings.Contains(s, "sessions of tui1")
		})
		tm.keys(t, sess, "C-p")
		tm.keys(t, sess, "C-q")
		tm.waitFor(t, sess, "the dashboard after detaching", time.Minute, func(s string) bool {
			return strings.Contains(s, "sessions of tui1") && strings.Contains(s, "vm tui1 is still running")
		})
		// The dashboard reappears as soon as the attach ends, and a key
		// sent before the TUI reads its input again is lost: press until
		// the view changes (pressing 1 again is harmless).
		tm.waitFor(t, sess, "the VMs view after detaching", time.Minute, func(s string) bool {
			if rowOf(s, "tui1") != "" {
				return true
			}
			tm.keys(t, sess, "1")
			return false
		})
	})

	t.Run("console log", func(t *testing.T) {
		tm.keys(t, sess, "4")
		tm.waitFor(t, sess, "the followed console", time.Minute, func(s string) bool {
			if !strings.Contains(s, "console of tui1") {
				tm.keys(t, sess, "4") // a lost key (see above): press again
			}
			return strings.Contains(s, "console of tui1 (following)") && strings.Contains(s, "tui1 login")
		})
		tm.keys(t, sess, "1")
	})

	t.Run("stop", func(t *testing.T) {
		tm.keys(t, sess, "x")
		tm.waitFor(t, sess, "tui1 stopped", 3*time.Minute, func(s string) bool {
			return strings.Contains(rowOf(s, "tui1"), "stopped") && strings.Contains(s, "vm tui1 stopped")
		})
		if v := e.vm("tui1"); v["state"] != "stopped" {
			t.Fatalf("daemon says tui1 is %v", v["state"])
		}
	})

	t.Run("delete with confirmation", func(t *testing.T) {
		tm.keys(t, sess, "d")
		tm.waitFor(t, sess, "the delete question", 10*time.Second, func(s string) bool {
			return strings.Contains(s, "delete vm tui1 and everything it owns?")
		})
		tm.keys(t, sess, "n")
		tm.waitFor(t, sess, "kept tui1", 10*time.Second, func(s string) bool {
			return strings.Contains(s, "kept tui1") && rowOf(s, "tui1") != ""
		})
		tm.keys(t, sess, "d")
		tm.waitFor(t, sess, "the delete question", 10*time.Second, func(s string) bool {
			return strings.Contains(s, "delete vm tui1 and everything it owns?")
		})
		tm.keys(t, sess, "y")
		tm.waitFor(t, sess, "tui1 gone", 2*time.Minute, func(s string) bool {
			return rowOf(s, "tui1") == "" && strings.Contains(s, "vm tui1 deleted") && strings.Contains(s, "no VMs yet")
		})
		if r := e.banger("", "vm", "show", "tui1"); r.code == 0 {
			t.Fatalf("daemon still has tui1:\n%s", r.stdout)
		}
	})

	t.Run("NO_COLOR", func(t *testing.T) {
		// CI=true makes termenv assume no terminal (so no colour at all):
		// both dashboards run without it, one with NO_COLOR.
		tm.start(t, "nocolor", "env", "-u", "CI", "NO_COLOR=1")
		tm.start(t, "colour", "env", "-u", "CI")
		sgr := regexp.MustCompile(`\x1b\[[0-9;]*m`)
		for _, s := range []string{"nocolor", "colour"} {
			tm.waitFor(t, s, "the dashboard", time.Minute, func(scr string) bool { return strings.Contains(scr, "? keys") })
		}
		if got := sgr.FindAllString(tm.capture(t, "nocolor", true), -1); len(got) > 0 {
			t.Errorf("NO_COLOR dashboard uses escape sequences %q", got)
		}
		// Without NO_COLOR the same screen is coloured, so the check above
		// can fail.
		if got := sgr.FindAllString(tm.capture(t, "colour", true), -1); len(got) == 0 {
			t.Errorf("the coloured dashboard has no SGR sequences:\n%q", tm.capture(t, "colour", true))
		}
		tm.keys(t, "nocolor", "q")
		tm.keys(t, "colour", "q")
	})

	t.Run("quit", func(t *testing.T) {
		tm.keys(t, sess, "q")
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := tm.run(context.Background(), "has-session", "-t", sess); err != nil {
				return // the dashboard exited and its session closed
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("q did not end the dashboard")
	})
}
