package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// run runs a command in dir and fails the test on error.
func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func write(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// testRepo makes a repository with a committed file changed in the
// working tree, a committed file deleted, an untracked file, an ignored
// file and directory, a symlink and a submodule.
func testRepo(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "git")
	base := t.TempDir()
	sub := filepath.Join(base, "sub")
	os.MkdirAll(sub, 0o755)
	run(t, sub, "git", "init", "-q", "-b", "main")
	write(t, filepath.Join(sub, "lib.txt"), "lib\n", 0o644)
	run(t, sub, "git", "add", ".")
	run(t, sub, "git", "commit", "-q", "-m", "sub")

	repo := filepath.Join(base, "repo")
	os.MkdirAll(repo, 0o755)
	run(t, repo, "git", "init", "-q", "-b", "main")
	write(t, filepath.Join(repo, "README"), "v1\n", 0o644)
	write(t, filepath.Join(repo, "bin", "tool.sh"), "#!/bin/sh\n", 0o755)
	write(t, filepath.Join(repo, "gone.txt"), "x\n", 0o644)
	write(t, filepath.Join(repo, ".gitignore"), "*.log\nbuild/\n", 0o644)
	run(t, repo, "git", "add", ".")
	run(t, repo, "git", "commit", "-q", "-m", "first")
	run(t, repo, "git", "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "vendor/sub")
	run(t, repo, "git", "commit", "-q", "-m", "add submodule")

	write(t, filepath.Join(repo, "README"), "v2 uncommitted\n", 0o644)
	os.Remove(filepath.Join(repo, "gone.txt"))
	write(t, filepath.Join(repo, "notes", "new.txt"), "untracked\n", 0o600)
	write(t, filepath.Join(repo, "debug.log"), "ignored\n", 0o644)
	write(t, filepath.Join(repo, "build", "out.o"), "ignored\n", 0o644)
	if err := os.Symlink("README", filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	return repo
}

func paths(sel Selection) []string {
	var out []string
	for _, e := range sel.Entries {
		out = append(out, e.Path)
	}
	return out
}

func TestSelect(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	tests := []struct {
		mode          Mode
		want, notWant []string
		skipped       []string
	}{
		{
			mode:    ModeWorktree,
			want:    []string{"README", "bin", "bin/tool.sh", ".gitignore", "notes", "notes/new.txt", "link", ".git", ".git/HEAD", ".gitmodules", "vendor/sub"},
			notWant: []string{"debug.log", "build", "build/out.o", "gone.txt", "vendor/sub/lib.txt", "vendor/sub/.git"},
			skipped: []string{"vendor/sub"},
		},
		{
			mode:    ModeFullCopy,
			want:    []string{"README", "notes/new.txt", "debug.log", "build/out.o", "vendor/sub/lib.txt", "vendor/sub/.git", ".git/HEAD", ".git/modules"},
			notWant: []string{"gone.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			sel, err := Select(ctx, repo, tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			got := paths(sel)
			for _, p := range tt.want {
				if !slices.Contains(got, p) {
					t.Errorf("%s missing from the selection", p)
				}
			}
			for _, p := range tt.notWant {
				if slices.Contains(got, p) {
					t.Errorf("%s should not be selected", p)
				}
			}
			if !slices.Equal(sel.SkippedSubmodules, tt.skipped) {
				t.Errorf("skipped submodules = %v, want %v", sel.SkippedSubmodules, tt.skipped)
			}
			if !slices.IsSorted(got) {
				t.Errorf("entries not sorted: %v", got)
			}
			var sum int64
			for _, e := range sel.Entries {
				if e.Info.Mode().IsRegular() {
					sum += e.Info.Size()
				}
			}
			if sum != sel.Bytes || sel.Bytes == 0 {
				t.Errorf("Bytes = %d, sum of files %d", sel.Bytes, sum)
			}
		})
	}
}

func TestSelect_refusesNonRepos(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	if _, err := Select(ctx, filepath.Join(repo, "bin"), ModeWorktree); err == nil {
		t.Error("a subdirectory of a repo was accepted as a workspace root")
	}
	wt := filepath.Join(t.TempDir(), "wt")
	run(t, repo, "git", "worktree", "add", "-q", wt)
	if _, err := Select(ctx, wt, ModeWorktree); err == nil || !strings.Contains(err.Error(), "linked worktree") {
		t.Errorf("linked worktree: err = %v", err)
	}
	if _, err := ParseMode("everything"); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestWriteTar(t *testing.T) {
	repo := testRepo(t)
	sel, err := Select(context.Background(), repo, ModeWorktree)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), &buf, sel); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	seen := map[string]*tar.Header{}
	contents := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s owned by %d:%d (%q:%q), want 0:0", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if strings.HasPrefix(h.Name, "/") || strings.Contains(h.Name, "..") {
			t.Errorf("entry name %q is not relative", h.Name)
		}
		b, _ := io.ReadAll(tr)
		seen[h.Name] = h
		contents[h.Name] = string(b)
	}
	cases := []struct {
		name string
		typ  byte
		mode int64
		data string
		link string
	}{
		{name: "README", typ: tar.TypeReg, mode: 0o644, data: "v2 uncommitted\n"},
		{name: "bin/tool.sh", typ: tar.TypeReg, mode: 0o755, data: "#!/bin/sh\n"},
		{name: "notes/new.txt", typ: tar.TypeReg, mode: 0o600, data: "untracked\n"},
		{name: "notes/", typ: tar.TypeDir, mode: 0o755},
		{name: "link", typ: tar.TypeSymlink, mode: 0o777, link: "README"},
	}
	for _, c := range cases {
		h, ok := seen[c.name]
		if !ok {
			t.Errorf("%s not in the tar", c.name)
			continue
		}
		if h.Typeflag != c.typ || h.Mode&0o7777 != c.mode || contents[c.name] != c.data || h.Linkname != c.link {
			t.Errorf("%s: type %c mode %o data %q link %q; want %c %o %q %q", c.name, h.Typeflag, h.Mode, contents[c.name], h.Linkname, c.typ, c.mode, c.data, c.link)
		}
	}
	if _, ok := seen[".git/HEAD"]; !ok {
		t.Error(".git/HEAD not in the tar")
	}

	// The tar is a usable repository: git sees the same status as the host.
	dst := t.TempDir()
	cmd := exec.Command("tar", "-x", "-C", dst)
	cmd.Stdin = bytes.NewReader(mustTar(t, sel))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	want := run(t, repo, "git", "status", "--porcelain", "--ignore-submodules=all")
	got := run(t, dst, "git", "-c", "safe.directory=*", "status", "--porcelain", "--ignore-submodules=all")
	if got != want {
		t.Errorf("status of the extracted copy:\n%s\nwant:\n%s", got, want)
	}
	if log := run(t, dst, "git", "-c", "safe.directory=*", "log", "--format=%s"); log != "add submodule\nfirst" {
		t.Errorf("history of the copy = %q", log)
	}
}

func mustTar(t *testing.T, sel Selection) []byte {
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), &buf, sel); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBranchName(t *testing.T) {
	if got := BranchName("dev-1"); got != "banger/dev-1" {
		t.Errorf("BranchName = %q", got)
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"banger/dev-1", true},
		{"feature/x.y", true},
		{"", false},
		{"-x", false},
		{"a..b", false},
		{"a b", false},
		{"a~1", false},
		{"x.lock", false},
		{"a/.hidden", false},
		{"trailing/", false},
		{"a@{1}", false},
		{"q?", false},
	}
	for _, tt := range tests {
		if err := ValidateBranch(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateBranch(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestPull plays the guest's side with a clone: commits made there come
// back as a branch through a bundle, the checked-out branch and the
// working tree stay as they were, and a diverged branch needs force.
func TestPull(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	guest := filepath.Join(t.TempDir(), "guest")
	run(t, repo, "git", "clone", "-q", repo, guest)
	write(t, filepath.Join(guest, "feature.txt"), "from the guest\n", 0o644)
	run(t, guest, "git", "add", "feature.txt")
	run(t, guest, "git", "commit", "-q", "-m", "guest work")
	head := run(t, guest, "git", "rev-parse", "HEAD")

	if HasCommit(ctx, repo, head) {
		t.Fatal("host already has the guest commit")
	}
	tips, err := Tips(ctx, repo, 10)
	if err != nil || len(tips) == 0 {
		t.Fatalf("Tips = %v, %v", tips, err)
	}
	args := []string{"git", "bundle", "create", filepath.Join(t.TempDir(), "b.bundle"), "HEAD"}
	for _, tip := range tips {
		args = append(args, "^"+tip)
	}
	bundle := args[3]
	run(t, guest, args...)
	if err := Unbundle(ctx, repo, bundle); err != nil {
		t.Fatal(err)
	}
	statusBefore := run(t, repo, "git", "status", "--porcelain")
	u, err := UpdateBranch(ctx, repo, BranchName("w1"), head, false)
	if err != nil {
		t.Fatal(err)
	}
	if u.Old != "" || u.New != head || u.Forced {
		t.Errorf("update = %+v", u)
	}
	if got := run(t, repo, "git", "rev-parse", "banger/w1"); got != head {
		t.Errorf("banger/w1 = %s, want %s", got, head)
	}
	if cur := run(t, repo, "git", "symbolic-ref", "--short", "HEAD"); cur != "main" {
		t.Errorf("checked-out branch changed to %s", cur)
	}
	if after := run(t, repo, "git", "status", "--porcelain"); after != statusBefore {
		t.Errorf("working tree changed:\n%s\nwas:\n%s", after, statusBefore)
	}

	// An existing branch that is an ancestor fast-forwards; a diverged
	// one is refused without force and replaced with it.
	run(t, repo, "git", "branch", "-f", "banger/w2", "HEAD")
	if u, err := UpdateBranch(ctx, repo, "banger/w2", head, false); err != nil || u.Old == "" || u.Forced {
		t.Fatalf("fast-forward of banger/w2: %+v, %v", u, err)
	}
	run(t, repo, "git", "branch", "-f", "diverged", "HEAD~1")
	run(t, repo, "git", "update-ref", "refs/heads/diverged", run(t, repo, "git", "commit-tree", "-p", "HEAD~1", "-m", "other", "HEAD^{tree}"))
	if _, err := UpdateBranch(ctx, repo, "diverged", head, false); !errors.Is(err, ErrNotFastForward) {
		t.Errorf("diverged without force: %v, want ErrNotFastForward", err)
	}
	if u, err := UpdateBranch(ctx, repo, "diverged", head, true); err != nil || !u.Forced {
		t.Errorf("diverged with force: %+v, %v", u, err)
	}
	if _, err := UpdateBranch(ctx, repo, "main", head, true); !errors.Is(err, ErrCheckedOut) {
		t.Errorf("checked-out branch: %v, want ErrCheckedOut", err)
	}
}
