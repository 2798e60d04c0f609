package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withFileSync appends [[file_sync]] entries to the test config before
// any daemon of the test reads it.
func (e *env) withFileSync(entries string) {
	e.t.Helper()
	var cfg string
	for _, kv := range e.envv {
		if v, ok := strings.CutPrefix(kv, "BANGER_CONFIG="); ok {
			cfg = v
		}
	}
	if cfg == "" {
		e.t.Fatal("no BANGER_CONFIG in the test environment")
	}
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(entries); err != nil {
		e.t.Fatal(err)
	}
}

// hostGit runs git in dir with a fixed identity.
func hostGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=host", "GIT_AUTHOR_EMAIL=host@example.com",
		"GIT_COMMITTER_NAME=host", "GIT_COMMITTER_EMAIL=host@example.com", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// guestSession is the part of `session list --json` the test reads.
type guestSession struct {
	Name        string   `json:"name"`
	State       string   `json:"state"`
	PID         int      `json:"pid"`
	Cwd         string   `json:"cwd"`
	EnvNames    []string `json:"env_names"`
	ExitCode    *int     `json:"exit_code"`
	Diagnostics string   `json:"diagnostics"`
}

func (e *env) sessions(vm string) map[string]guestSession {
	e.t.Helper()
	r := e.must(e.banger("", "vm", "session", "list", vm, "--json"))
	var list []guestSession
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		e.t.Fatalf("session list --json: %v: %s", err, r.stdout)
	}
	out := map[string]guestSession{}
	for _, s := range list {
		out[s.Name] = s
	}
	return out
}

// attachUntil runs `session attach` in pipe mode, waits for a line with
// prefix, types the detach keys and returns that line. The CLI must exit
// 0 saying it detached.
func (e *env) attachUntil(t *testing.T, vm, session, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), "vm", "session", "attach", vm, session, "--replay", "0")
	cmd.Env = e.envv
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var line string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			line = sc.Text()
			break
		}
	}
	if line == "" {
		cmd.Wait()
		t.Fatalf("attach never printed %q; stderr: %s", prefix, stderr.String())
	}
	if _, err := stdin.Write([]byte{0x10, 0x11}); err != nil { // ctrl-p ctrl-q
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("attach after detach keys: %v; stderr: %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "detached from session "+session) {
		t.Errorf("attach stderr does not say it detached: %s", stderr.String())
	}
	return line
}

func tickNumber(t *testing.T, line string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "tick")))
	if err != nil {
		t.Fatalf("output line %q: %v", line, err)
	}
	return n
}

// TestWorkspace boots one VM and checks file_sync, workspace prepare and
// pull, and sessions surviving a kill -9 of the daemon. Subtests share
// the VM and run in order.
func TestWorkspace(t *testing.T) {
	e := newEnv(t)

	// file_sync payload: a file, a directory with its own modes, and a
	// missing path; host owners are not root, guest owners must be.
	syncSrc := t.TempDir()
	token := filepath.Join(syncSrc, "token.json")
	os.WriteFile(token, []byte(`{"token":"s3cret"}`), 0o644)
	tool := filepath.Join(syncSrc, "tool")
	os.MkdirAll(filepath.Join(tool, "sub"), 0o750)
	os.WriteFile(filepath.Join(tool, "run.sh"), []byte("#!/bin/sh\necho tool\n"), 0o755)
	os.WriteFile(filepath.Join(tool, "sub", "key"), []byte("k"), 0o400)
	for _, p := range []string{token, tool, filepath.Join(tool, "run.sh"), filepath.Join(tool, "sub"), filepath.Join(tool, "sub", "key")} {
		if err := os.Lchown(p, 4321, 4321); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(syncSrc, "not-there")
	e.withFileSync(fmt.Sprintf(`
[[file_sync]]
host = %q
guest = "~/.config/tool/token.json"
mode = "0640"

[[file_sync]]
host = %q
guest = "/root/tool"

[[file_sync]]
host = %q
guest = "~/not-there"
`, token, tool, missing))
	e.ensureImage()

	r := e.must(e.banger("", "vm", "create", "--name", "w1"))
	t.Run("file_sync installs files and directories, warns on a missing path", func(t *testing.T) {
		if !strings.Contains(r.stderr, missing) || !strings.Contains(r.stderr, "does not exist") {
			t.Errorf("create did not warn about %s:\n%s", missing, r.stderr)
		}
		out := e.must(e.banger("", "vm", "exec", "w1", "--", "stat", "-c", "%u:%g %a %n",
			"/root/.config/tool/token.json", "/root/tool", "/root/tool/run.sh", "/root/tool/sub", "/root/tool/sub/key")).stdout
		for _, want := range []string{
			"0:0 640 /root/.config/tool/token.json",
			"0:0 750 /root/tool\n",
			"0:0 755 /root/tool/run.sh",
			"0:0 750 /root/tool/sub\n",
			"0:0 400 /root/tool/sub/key",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("guest stat lacks %q:\n%s", want, out)
			}
		}
		got := e.must(e.banger("", "vm", "exec", "w1", "--", "cat", "/root/.config/tool/token.json")).stdout
		if got != `{"token":"s3cret"}` {
			t.Errorf("synced token = %q", got)
		}
		if r := e.banger("", "vm", "exec", "w1", "--", "test", "-e", "/root/not-there"); r.code == 0 {
			t.Error("the missing host path exists in the guest")
		}
	})

	repo := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(repo, 0o755)
	hostGit(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "README"), []byte("v1\n"), 0o644)
	os.WriteFile(filepath.Join(repo, ".gitignore"), []byte("*.log\n"), 0o644)
	hostGit(t, repo, "add", ".")
	hostGit(t, repo, "commit", "-q", "-m", "first")
	hostGit(t, repo, "commit", "-q", "--allow-empty", "-m", "second")
	os.WriteFile(filepath.Join(repo, "README"), []byte("v2 uncommitted\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "new.txt"), []byte("untracked\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "debug.log"), []byte("ignored\n"), 0o644)
	hostStatus := hostGit(t, repo, "status", "--porcelain")

	t.Run("workspace prepare copies the working tree and history", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "workspace", "prepare", "w1", "--path", repo))
		if !strings.Contains(r.stderr, "workspace: sent") {
			t.Errorf("no transfer summary:\n%s", r.stderr)
		}
		out := e.must(e.banger("", "vm", "exec", "w1", "-w", "/root/repo", "--", "sh", "-c",
			"cat README new.txt; git log --format=%s; git status --porcelain; test -e debug.log && echo IGNORED-COPIED; stat -c %u:%g README")).stdout
		want := "v2 uncommitted\nuntracked\nsecond\nfirst\n M README\n?? new.txt\n0:0\n"
		if out != want {
			t.Fatalf("guest repo:\n%s\nwant:\n%s", out, want)
		}
	})

	t.Run("workspace prepare refuses a dirty guest repo", func(t *testing.T) {
		r := e.banger("", "vm", "workspace", "prepare", "w1", "--path", repo)
		if r.code == 0 || !strings.Contains(r.stderr, "not committed") || !strings.Contains(r.stderr, "new.txt") {
			t.Fatalf("prepare over a dirty guest repo: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("a second prepare sends only what changed and deletes what went", func(t *testing.T) {
		e.must(e.banger("", "vm", "exec", "w1", "--", "sh", "-c", "echo stray > /root/repo/guest-only.txt"))
		later := filepath.Join(repo, "later.txt")
		if err := os.WriteFile(later, []byte("later\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(later)
		r := e.must(e.banger("", "vm", "workspace", "prepare", "w1", "--path", repo, "--force"))
		// later.txt, and .git/index when the host's git status rewrote it.
		m := regexp.MustCompile(`: (\d+) entries changed \(.*\), 1 to delete`).FindStringSubmatch(r.stderr)
		n := 0
		if len(m) == 2 {
			n, _ = strconv.Atoi(m[1])
		}
		if n < 1 || n > 3 {
			t.Errorf("not an incremental prepare of a new file and one deletion:\n%s", r.stderr)
		}
		out := e.must(e.banger("", "vm", "exec", "w1", "-w", "/root/repo", "--", "sh", "-c",
			"cat README later.txt; test -e guest-only.txt && echo STRAY-KEPT; git status --porcelain")).stdout
		if want := "v2 uncommitted\nlater\n M README\n?? later.txt\n?? new.txt\n"; out != want {
			t.Errorf("guest repo after the incremental prepare:\n%s\nwant:\n%s", out, want)
		}
	})

	t.Run("workspace pull brings guest commits back as a branch", func(t *testing.T) {
		e.must(e.banger("", "vm", "exec", "w1", "-w", "/root/repo", "--", "sh", "-c",
			"git add -A && git -c user.name=guest -c user.email=guest@example.com commit -q -m 'guest commit'"))
		r := e.must(e.banger("", "vm", "workspace", "pull", "w1", "--path", repo))
		if !strings.Contains(r.stdout, "banger/w1 created") {
			t.Errorf("pull output: %s\n%s", r.stdout, r.stderr)
		}
		if got := hostGit(t, repo, "log", "--format=%s", "banger/w1"); got != "guest commit\nsecond\nfirst" {
			t.Errorf("banger/w1 history = %q", got)
		}
		if got := hostGit(t, repo, "show", "banger/w1:new.txt"); got != "untracked" {
			t.Errorf("new.txt on banger/w1 = %q", got)
		}
		if cur := hostGit(t, repo, "symbolic-ref", "--short", "HEAD"); cur != "main" {
			t.Errorf("host checked-out branch is now %s", cur)
		}
		if st := hostGit(t, repo, "status", "--porcelain"); st != hostStatus {
			t.Errorf("host working tree changed:\n%s\nwas:\n%s", st, hostStatus)
		}
		// Pulling again is a no-op; a diverged branch needs --force.
		e.must(e.banger("", "vm", "workspace", "pull", "w1", "--path", repo))
		hostGit(t, repo, "branch", "-f", "other", "main~1")
		hostGit(t, repo, "update-ref", "refs/heads/other", hostGit(t, repo, "commit-tree", "-p", "main", "-m", "diverged", "main^{tree}"))
		if r := e.banger("", "vm", "workspace", "pull", "w1", "--path", repo, "--branch", "other"); r.code == 0 {
			t.Error("pull replaced a diverged branch without --force")
		}
		e.must(e.banger("", "vm", "workspace", "pull", "w1", "--path", repo, "--branch", "other", "--force"))
		if a, b := hostGit(t, repo, "rev-parse", "other"), hostGit(t, repo, "rev-parse", "banger/w1"); a != b {
			t.Errorf("forced pull: other = %s, banger/w1 = %s", a, b)
		}
	})

	t.Run("session start checks the cwd and the command", func(t *testing.T) {
		r := e.banger("", "vm", "session", "start", "w1", "--name", "badcwd", "--cwd", "/nope", "--", "sh")
		if r.code == 0 || !strings.Contains(r.stderr, "cwd") || !strings.Contains(r.stderr, "/nope") {
			t.Errorf("missing cwd: exit %d: %s", r.code, r.stderr)
		}
		r = e.banger("", "vm", "session", "start", "w1", "--name", "badcmd", "--", "no-such-command")
		if r.code == 0 || !strings.Contains(r.stderr, "no-such-command") || !strings.Contains(r.stderr, "not found") {
			t.Errorf("missing command: exit %d: %s", r.code, r.stderr)
		}
		ss := e.sessions("w1")
		if s := ss["badcmd"]; s.State != "failed" || !strings.Contains(s.Diagnostics, "not found") {
			t.Errorf("failed launch recorded as %+v", s)
		}
	})

	loop := `trap 'exit 7' TERM; i=0; while :; do i=$((i+1)); echo tick $i; sleep 1; done`
	var pid, lastTick int
	t.Run("session start, attach and detach", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "session", "start", "w1", "--name", "loop", "--cwd", "/root/repo", "--env", "SECRET=hunter2", "--", "sh", "-c", loop))
		if strings.TrimSpace(r.stdout) != "loop" {
			t.Fatalf("start printed %q", r.stdout)
		}
		s := e.sessions("w1")["loop"]
		if s.State != "running" || s.PID <= 0 || s.Cwd != "/root/repo" || len(s.EnvNames) != 1 || s.EnvNames[0] != "SECRET" {
			t.Fatalf("session after start: %+v", s)
		}
		pid = s.PID
		lastTick = tickNumber(t, e.attachUntil(t, "w1", "loop", "tick"))
		if s := e.sessions("w1")["loop"]; s.State != "running" || s.PID != pid {
			t.Fatalf("session after detach: %+v", s)
		}
	})

	t.Run("sessions survive kill -9 of the daemon", func(t *testing.T) {
		dpid := e.daemonPID()
		if dpid == 0 {
			t.Fatal("no daemon running")
		}
		syscall.Kill(dpid, syscall.SIGKILL)
		waitGone(dpid, 10*time.Second)
		s := e.sessions("w1")["loop"] // starts a new daemon
		if s.State != "running" || s.PID != pid {
			t.Fatalf("after kill -9: %+v, want running pid %d", s, pid)
		}
		if newPID := e.daemonPID(); newPID == 0 || newPID == dpid {
			t.Fatalf("daemon pid %d after kill -9 of %d", newPID, dpid)
		}
		n := tickNumber(t, e.attachUntil(t, "w1", "loop", "tick"))
		if n <= lastTick {
			t.Errorf("re-attached output tick %d, not after %d: not the same process", n, lastTick)
		}
		logs := e.must(e.banger("", "vm", "session", "logs", "w1", "loop")).stdout
		if !strings.HasPrefix(logs, "tick 1\ntick 2\n") {
			t.Errorf("session logs start %q", logs[:min(len(logs), 40)])
		}
	})

	t.Run("session stop records the exit status", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "session", "stop", "w1", "loop"))
		if !strings.Contains(r.stdout, "exit 7") {
			t.Errorf("stop output: %s", r.stdout)
		}
		s := e.sessions("w1")["loop"]
		if s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 7 {
			t.Fatalf("after stop: %+v", s)
		}
		// The status stays recorded across a daemon restart.
		e.must(e.banger("", "daemon", "stop"))
		if s := e.sessions("w1")["loop"]; s.State != "exited" || s.ExitCode == nil || *s.ExitCode != 7 {
			t.Fatalf("after daemon restart: %+v", s)
		}
	})

	t.Run("pty session attaches through a pipe and detaches", func(t *testing.T) {
		e.must(e.banger("", "vm", "session", "start", "w1", "--name", "tty", "--pty", "--", "sh", "-c", "while :; do echo pts $(tty); sleep 1; done"))
		line := e.attachUntil(t, "w1", "tty", "pts ")
		if !strings.Contains(line, "/dev/pts/") {
			t.Errorf("pty session output %q, want a /dev/pts terminal", line)
		}
		r := e.must(e.banger("", "vm", "session", "stop", "w1", "tty", "--signal", "KILL"))
		if !strings.Contains(r.stdout, "SIGKILL") {
			t.Errorf("stop --signal KILL: %s", r.stdout)
		}
	})

	t.Run("vm run --workspace prepares the repo before the command", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "run", "--name", "w2", "--rm", "--workspace="+repo, "--",
			"sh", "-c", "cd /root/repo && git log -1 --format=%s && cat new.txt"))
		if r.stdout != "second\nuntracked\n" {
			t.Errorf("vm run --workspace: stdout %q\nstderr: %s", r.stdout, r.stderr)
		}
	})
}
