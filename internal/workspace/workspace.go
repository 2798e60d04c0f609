// Package workspace is the host side of `banger vm workspace`: it decides
// which files of a git repository make up a snapshot for the guest
// (/root/repo), writes that snapshot as a root-owned tar stream, and brings
// the guest's commits back into the host repository as a branch without
// touching the checked-out branch or the working tree.
//
// Selecting files (Select) is separate from writing them (WriteTar), so the
// selection can be tested and sized (for progress) before anything is sent.
package workspace

import (
	"banger/internal/cmdrun"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// GuestDir is where a workspace lives in the guest.
const GuestDir = "/root/repo"

// Mode says which files of the repository a snapshot holds.
type Mode string

// Snapshot modes.
const (
	// ModeWorktree is the working tree as the user sees it: tracked files
	// with their uncommitted changes, untracked files git does not ignore,
	// and the .git directory (so the guest can commit). Submodule contents
	// are left out.
	ModeWorktree Mode = "worktree"
	// ModeFullCopy is every file under the repository root: ignored files
	// and submodules included.
	ModeFullCopy Mode = "full_copy"
)

// ParseMode accepts "" (ModeWorktree), "worktree" and "full_copy".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeWorktree:
		return ModeWorktree, nil
	case ModeFullCopy:
		return ModeFullCopy, nil
	}
	return "", fmt.Errorf("workspace mode %q: want %s or %s", s, ModeWorktree, ModeFullCopy)
}

// Entry is one path of a snapshot, relative to the repository root with
// forward slashes.
type Entry struct {
	Path string
	Info fs.FileInfo
}

// Selection is what a snapshot will contain.
type Selection struct {
	// Root is the repository root the entries are relative to.
	Root string
	// Entries are directories, regular files and symlinks, parents before
	// children, sorted.
	Entries []Entry
	// Bytes is the total size of the regular files.
	Bytes int64
	// Files is how many regular files there are.
	Files int
	// SkippedSubmodules lists submodule paths whose contents ModeWorktree
	// left out.
	SkippedSubmodules []string
}

// git runs git in dir and returns its stdout; a failure is a
// *cmdrun.Error carrying git's argv and stderr.
func git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return cmdrun.Cmd{Argv: append([]string{"git", "-C", dir}, args...)}.Stdout(ctx)
}

// Toplevel returns the root of the git working tree containing dir.
func Toplevel(ctx context.Context, dir string) (string, error) {
	out, err := git(ctx, dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return "", fmt.Errorf("find repository of %s: %w", dir, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// GitDir returns the absolute git directory of the repository at root
// (its .git, or where a worktree's .git file points).
func GitDir(ctx context.Context, root string) (string, error) {
	out, err := git(ctx, root, "rev-parse", "--absolute-git-dir")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Select lists the snapshot of the repository at root in mode. root must be
// the top of a working tree whose .git is a directory (linked worktrees
// and separate git dirs are refused: their history lives elsewhere).
func Select(ctx context.Context, root string, mode Mode) (Selection, error) {
	sel := Selection{Root: root}
	gitDir := filepath.Join(root, ".git")
	fi, err := os.Lstat(gitDir)
	if err != nil {
		return sel, fmt.Errorf("workspace %s: not the top of a git repository: %w", root, err)
	}
	if !fi.IsDir() {
		return sel, fmt.Errorf("workspace %s: .git is not a directory (a linked worktree or a separate git dir); use the main checkout", root)
	}
	paths := map[string]bool{}
	switch mode {
	case ModeFullCopy:
		if err := walkAll(root, ".", paths); err != nil {
			return sel, err
		}
	case ModeWorktree:
		out, err := git(ctx, root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
		if err != nil {
			return sel, fmt.Errorf("workspace %s: list files: %w", root, err)
		}
		subs, err := submodules(ctx, root)
		if err != nil {
			return sel, err
		}
		for _, p := range strings.Split(string(out), "\x00") {
			if p == "" {
				continue
			}
			if subs[p] {
				// A gitlink: keep the (empty) directory, not its contents.
				sel.SkippedSubmodules = append(sel.SkippedSubmodules, p)
				if fi, err := os.Lstat(filepath.Join(root, p)); err == nil && fi.IsDir() {
					paths[p] = true
				}
				continue
			}
			paths[p] = true
		}
		if err := walkAll(root, ".git", paths); err != nil {
			return sel, err
		}
	default:
		return sel, fmt.Errorf("workspace mode %q: want %s or %s", mode, ModeWorktree, ModeFullCopy)
	}
	// Every parent directory gets its own entry, so modes survive.
	for p := range paths {
		for d := path.Dir(p); d != "." && !paths[d]; d = path.Dir(d) {
			paths[d] = true
		}
	}
	names := make([]string, 0, len(paths))
	for p := range paths {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // tracked but deleted in the working tree
		}
		if err != nil {
			return sel, fmt.Errorf("workspace: %w", err)
		}
		m := fi.Mode()
		if !m.IsRegular() && !m.IsDir() && m&fs.ModeSymlink == 0 {
			continue // sockets, fifos, devices
		}
		if m.IsRegular() {
			sel.Bytes += fi.Size()
			sel.Files++
		}
		sel.Entries = append(sel.Entries, Entry{Path: p, Info: fi})
	}
	return sel, nil
}

// walkAll adds every path under rel (relative to root) to paths.
func walkAll(root, rel string, paths map[string]bool) error {
	start := filepath.Join(root, filepath.FromSlash(rel))
	return filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("workspace: walk %s: %w", p, err)
		}
		r, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if r != "." {
			paths[filepath.ToSlash(r)] = true
		}
		return nil
	})
}

// submodules returns the paths of the gitlinks in the index.
func submodules(ctx context.Context, root string) (map[string]bool, error) {
	out, err := git(ctx, root, "ls-files", "-z", "--stage")
	if err != nil {
		return nil, fmt.Errorf("workspace %s: list index: %w", root, err)
	}
	subs := map[string]bool{}
	for _, rec := range strings.Split(string(out), "\x00") {
		// "<mode> <sha> <stage>\t<path>"
		meta, p, ok := strings.Cut(rec, "\t")
		if ok && strings.HasPrefix(meta, "160000 ") {
			subs[p] = true
		}
	}
	return subs, nil
}
