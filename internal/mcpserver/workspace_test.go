package mcpserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/testenv"
)

// gitIn runs git in dir with a fixed identity and no user or system
// config, and returns its trimmed output.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostRepoForTest makes a repository with a committed file changed in the
// working tree, an untracked file, and an ignored one.
func hostRepoForTest(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "git")
	// The server's own git calls (branch update reflogs) see this
	// environment.
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	t.Setenv("GIT_COMMITTER_NAME", "t")
	t.Setenv("GIT_COMMITTER_EMAIL", "t@example.com")
	dir := t.TempDir()
	gitIn(t, dir, "init", "-q", "-b", "main")
	writeFile(t, filepath.Join(dir, "README"), "hello\n")
	writeFile(t, filepath.Join(dir, "src", "main.go"), "package main\n")
	writeFile(t, filepath.Join(dir, ".gitignore"), "secret.env\n")
	gitIn(t, dir, "add", ".")
	gitIn(t, dir, "commit", "-q", "-m", "first")
	writeFile(t, filepath.Join(dir, "README"), "hello, changed\n")
	writeFile(t, filepath.Join(dir, "notes.txt"), "untracked\n")
	writeFile(t, filepath.Join(dir, "secret.env"), "TOKEN=x\n")
	return dir
}

func TestWorkspace_prepare(t *testing.T) {
	repo := hostRepoForTest(t)
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, false)
	var vm VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "ws"}, &vm); e != "" {
		t.Fatal(e)
	}

	// A directory inside the repository names the whole repository.
	var out WorkspacePrepareOut
	if e := call(t, cs, "workspace_prepare", map[string]any{"vm": "ws", "path": filepath.Join(repo, "src")}, &out); e != "" {
		t.Fatal(e)
	}
	for name, want := range map[string]string{"README": "hello, changed\n", "src/main.go": "package main\n", "notes.txt": "untracked\n", ".gitignore": "secret.env\n", "src/": "<dir>"} {
		if got, ok := f.wsTar[name]; !ok || got != want {
			t.Errorf("the daemon got %s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := f.wsTar[".git/HEAD"]; !ok {
		t.Error("worktree mode did not send .git")
	}
	if _, ok := f.wsTar["secret.env"]; ok {
		t.Error("worktree mode sent an ignored file")
	}
	files := 0
	var size int64
	for _, v := range f.wsTar {
		if v != "<dir>" {
			files++
			size += int64(len(v))
		}
	}
	if out.Files != files || out.FileBytes != size || out.Entries != len(f.wsTar) || out.SentBytes != f.wsTarSize || out.Mode != "worktree" {
		t.Errorf("prepare reported %d files, %d bytes, %d entries, %d sent (%s); the daemon got %d files, %d bytes, %d entries, %d sent",
			out.Files, out.FileBytes, out.Entries, out.SentBytes, out.Mode, files, size, len(f.wsTar), f.wsTarSize)
	}
	if resolved, _ := filepath.EvalSymlinks(repo); out.Repo != resolved && out.Repo != repo {
		t.Errorf("repo %q, want %q", out.Repo, repo)
	}
	// What the guest answers is cleaned before the model sees it.
	if !out.Workspace.Git || out.Workspace.Branch != "main" {
		t.Errorf("workspace after prepare: %+v", out.Workspace)
	}
	if !slices.Equal(f.wsCalls, []string{"status ws", "prepare ws"}) || f.wsForce[0] {
		t.Errorf("daemon calls %q, force %v", f.wsCalls, f.wsForce)
	}

	// full_copy sends ignored files too; the default path is the
	// server's working directory.
	t.Chdir(repo)
	if e := call(t, cs, "workspace_prepare", map[string]any{"vm": "ws", "mode": "full_copy"}, &out); e != "" {
		t.Fatal(e)
	}
	if f.wsTar["secret.env"] != "TOKEN=x\n" || out.Mode != "full_copy" {
		t.Errorf("full_copy: secret.env = %q, mode %q", f.wsTar["secret.env"], out.Mode)
	}

	// Uncommitted guest changes: refused without force, before anything
	// is sent; replaced with it.
	f.mu.Lock()
	f.ws[vm.VM.ID] = api.WorkspaceStatus{Exists: true, Git: true, Dirty: true, Changes: " M app.go\x1b[2J\n?? new.txt"}
	f.wsCalls = nil
	f.mu.Unlock()
	e := call(t, cs, "workspace_prepare", map[string]any{"vm": "ws", "path": repo}, nil)
	if !strings.Contains(e, "force=true") || !strings.Contains(e, "M app.go") || strings.Contains(e, "\x1b") {
		t.Errorf("prepare over a dirty workspace: %q", e)
	}
	if !slices.Equal(f.wsCalls, []string{"status ws"}) {
		t.Errorf("a refused prepare reached the daemon: %q", f.wsCalls)
	}
	if e := call(t, cs, "workspace_prepare", map[string]any{"vm": "ws", "path": repo, "force": true}, &out); e != "" {
		t.Fatal(e)
	}
	if !slices.Equal(f.wsCalls, []string{"status ws", "prepare ws"}) || !f.wsForce[len(f.wsForce)-1] {
		t.Errorf("forced prepare: calls %q, force %v", f.wsCalls, f.wsForce)
	}

	// A directory outside any repository.
	if e := call(t, cs, "workspace_prepare", map[string]any{"vm": "ws", "path": t.TempDir()}, nil); !strings.Contains(e, "find repository") {
		t.Errorf("prepare outside a repository: %q", e)
	}
}

func TestWorkspace_status(t *testing.T) {
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, false)
	var vm VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "ws"}, &vm); e != "" {
		t.Fatal(e)
	}
	head := strings.Repeat("b", 40)
	f.mu.Lock()
	f.ws[vm.VM.ID] = api.WorkspaceStatus{Exists: true, Git: true, Dirty: true, Head: head, Branch: "feature\x1b[31m",
		Changes: " M a.go\n" + strings.Repeat("?? x\x07\n", 4*MaxChanges)}
	f.mu.Unlock()
	var st api.WorkspaceStatus
	if e := call(t, cs, "workspace_status", map[string]any{"vm": "ws"}, &st); e != "" {
		t.Fatal(e)
	}
	if st.Path != "/root/repo" || !st.Exists || !st.Git || !st.Dirty || st.Head != head || st.Branch != "feature" {
		t.Errorf("status %+v", st)
	}
	if len(st.Changes) > MaxChanges || !strings.HasPrefix(st.Changes, " M a.go\n?? x\n") || strings.ContainsAny(st.Changes, "\x07\x1b") || !strings.HasSuffix(st.Changes, "…") {
		t.Errorf("changes not bounded and cleaned: %d bytes, %q...", len(st.Changes), st.Changes[:min(len(st.Changes), 40)])
	}
}

func TestWorkspace_pull(t *testing.T) {
	repo := hostRepoForTest(t)
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, false)
	var vm VMOut
	if e := call(t, cs, "vm_create", map[string]any{"name": "ws"}, &vm); e != "" {
		t.Fatal(e)
	}
	// The guest: a clone of the host repository with commits of its own.
	guest := filepath.Join(t.TempDir(), "guest")
	gitIn(t, repo, "clone", "-q", repo, guest)
	guestCommit := func(file, msg string) string {
		writeFile(t, filepath.Join(guest, file), msg+"\n")
		gitIn(t, guest, "add", ".")
		gitIn(t, guest, "commit", "-q", "-m", msg)
		head := gitIn(t, guest, "rev-parse", "HEAD")
		f.mu.Lock()
		f.guestRepo = guest
		f.ws[vm.VM.ID] = api.WorkspaceStatus{Exists: true, Git: true, Head: head, Branch: "main"}
		f.mu.Unlock()
		return head
	}
	hostBranch := func(name string) string { return gitIn(t, repo, "rev-parse", "--verify", "-q", "refs/heads/"+name) }
	hostHead := gitIn(t, repo, "rev-parse", "HEAD")

	first := guestCommit("guest.txt", "from the guest")
	var out WorkspacePullOut
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo}, &out); e != "" {
		t.Fatal(e)
	}
	if got := hostBranch("banger/ws"); got != first {
		t.Fatalf("banger/ws = %q, want the guest's %s", got, first)
	}
	if out.Branch != "banger/ws" || out.Commit != first || out.Result != "created" || !out.Created || out.BundleBytes == 0 || out.GuestDirty {
		t.Errorf("first pull: %+v", out)
	}
	// The user's checkout is untouched.
	if gitIn(t, repo, "rev-parse", "HEAD") != hostHead || gitIn(t, repo, "symbolic-ref", "HEAD") != "refs/heads/main" {
		t.Error("pull moved the host's checked-out branch")
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "README")); string(b) != "hello, changed\n" {
		t.Errorf("pull touched the working tree: README %q", b)
	}

	// A second commit fast-forwards; pulling again changes nothing.
	second := guestCommit("guest.txt", "more from the guest")
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo}, &out); e != "" {
		t.Fatal(e)
	}
	if hostBranch("banger/ws") != second || out.Result != "fast_forward" || !out.FastForward || out.Previous != first {
		t.Errorf("second pull: %+v", out)
	}
	f.wsCalls = nil
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo}, &out); e != "" || out.Result != "unchanged" || out.BundleBytes != 0 {
		t.Errorf("repeated pull: %q %+v", e, out)
	}
	if slices.Contains(f.wsCalls, "bundle ws") {
		t.Error("a bundle was fetched for a commit the host has")
	}

	// History rewritten in the guest: refused without force.
	gitIn(t, guest, "reset", "-q", "--hard", "HEAD~1")
	rewritten := guestCommit("other.txt", "another attempt")
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo}, nil); !strings.Contains(e, "not an ancestor") {
		t.Errorf("non-fast-forward pull: %q", e)
	}
	if hostBranch("banger/ws") != second {
		t.Error("a refused pull moved the branch")
	}
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo, "force": true}, &out); e != "" {
		t.Fatal(e)
	}
	if hostBranch("banger/ws") != rewritten || out.Result != "forced" || !out.Forced || out.Previous != second {
		t.Errorf("forced pull: %+v", out)
	}

	// A branch of one's own; never the checked-out one, never a bad name.
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo, "branch": "try/one"}, &out); e != "" || hostBranch("try/one") != rewritten {
		t.Errorf("pull into try/one: %q %+v", e, out)
	}
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo, "branch": "main"}, nil); !strings.Contains(e, "checked out") {
		t.Errorf("pull into the checked-out branch: %q", e)
	}
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo, "branch": "bad..name"}, nil); !strings.Contains(e, "not valid") {
		t.Errorf("bad branch name: %q", e)
	}

	// Nothing to pull.
	f.mu.Lock()
	f.ws[vm.VM.ID] = api.WorkspaceStatus{}
	f.mu.Unlock()
	if e := call(t, cs, "workspace_pull", map[string]any{"vm": "ws", "path": repo}, nil); !strings.Contains(e, "workspace_prepare") {
		t.Errorf("pull without a guest repository: %q", e)
	}
}

func TestWorkspace_scope(t *testing.T) {
	repo := hostRepoForTest(t)
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, false)
	// "other" exists in the daemon but this server did not create it.
	for tool, args := range map[string]map[string]any{
		"workspace_prepare": {"vm": "other", "path": repo, "force": true},
		"workspace_status":  {"vm": "other"},
		"workspace_pull":    {"vm": "other", "path": repo},
	} {
		if e := call(t, cs, tool, args, nil); !strings.Contains(e, "only touches VMs it created") {
			t.Errorf("%s on a VM this server did not create: %q", tool, e)
		}
	}
	if len(f.wsCalls) != 0 {
		t.Errorf("refused calls reached the daemon: %q", f.wsCalls)
	}
	if _, err := exec.Command("git", "-C", repo, "rev-parse", "--verify", "-q", "refs/heads/banger/other").Output(); err == nil {
		t.Error("a refused pull created a branch")
	}
	// With --all the same VM is in scope.
	all := connect(t, c, true)
	if e := call(t, all, "workspace_status", map[string]any{"vm": "other"}, nil); e != "" {
		t.Errorf("workspace_status with --all: %q", e)
	}
}

func TestWorkspace_badInput(t *testing.T) {
	c := newFakeDaemon(t)
	f := fakes[c.Socket]
	cs := connect(t, c, true)
	for _, tc := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"workspace_prepare", map[string]any{}, `"vm"`},
		{"workspace_prepare", map[string]any{"vm": ""}, "vm: required"},
		{"workspace_prepare", map[string]any{"vm": "other", "mode": "copy"}, `workspace mode "copy": want worktree or full_copy`},
		{"workspace_status", map[string]any{}, `"vm"`},
		{"workspace_pull", map[string]any{"path": "."}, `"vm"`},
		{"workspace_pull", map[string]any{"vm": "other", "branch": "-x"}, "not valid"},
	} {
		if e := call(t, cs, tc.tool, tc.args, nil); !strings.Contains(e, tc.want) {
			t.Errorf("%s %v: %q, want it to say %s", tc.tool, tc.args, e, tc.want)
		}
	}
	if len(f.wsCalls) != 0 {
		t.Errorf("bad input reached the daemon: %q", f.wsCalls)
	}
}
