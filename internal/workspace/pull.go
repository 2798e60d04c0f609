package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"banger/internal/cmdrun"
	"banger/internal/units"
)

// BranchPrefix starts the default branch name of a pulled workspace.
const BranchPrefix = "banger/"

// BranchName is the default branch a VM's workspace is pulled into:
// "banger/<vm>".
func BranchName(vm string) string { return BranchPrefix + vm }

// ValidateBranch checks that name is a valid branch name
// (git check-ref-format --branch rules, without asking git).
func ValidateBranch(name string) error {
	bad := name == "" || name == "@" || strings.HasPrefix(name, "-") || strings.HasPrefix(name, "/") ||
		strings.HasSuffix(name, "/") || strings.HasSuffix(name, ".") || strings.HasSuffix(name, ".lock") ||
		strings.Contains(name, "..") || strings.Contains(name, "//") || strings.Contains(name, "@{") ||
		badRefChars.MatchString(name)
	for _, c := range strings.Split(name, "/") {
		if strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("branch name %q is not valid", name)
	}
	return nil
}

var badRefChars = regexp.MustCompile(`[\x00-\x20\x7f~^:?*\[\\]`)

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// HasCommit reports whether the repository at root has commit sha.
func HasCommit(ctx context.Context, root, sha string) bool {
	if !shaRE.MatchString(sha) {
		return false
	}
	_, err := git(ctx, root, "cat-file", "-e", sha+"^{commit}")
	return err == nil
}

// Tips returns commits the host repository has that the guest probably
// shares: HEAD and the local branch tips, at most max. A bundle built
// against them only carries what is new in the guest.
func Tips(ctx context.Context, root string, max int) ([]string, error) {
	out, err := git(ctx, root, "for-each-ref", "--format=%(objectname)", "--sort=-committerdate", "refs/heads/")
	if err != nil {
		return nil, fmt.Errorf("list branches of %s: %w", root, err)
	}
	seen := map[string]bool{}
	var tips []string
	add := func(s string) {
		s = strings.TrimSpace(s)
		if shaRE.MatchString(s) && !seen[s] && len(tips) < max {
			seen[s] = true
			tips = append(tips, s)
		}
	}
	if head, err := git(ctx, root, "rev-parse", "-q", "--verify", "HEAD^{commit}"); err == nil {
		add(string(head))
	}
	for _, l := range strings.Split(string(out), "\n") {
		add(l)
	}
	return tips, nil
}

// Unbundle stores the objects of the bundle file in the repository at
// root (git bundle unbundle: no ref is changed).
func Unbundle(ctx context.Context, root, bundle string) error {
	if _, err := git(ctx, root, "bundle", "unbundle", bundle); err != nil {
		return fmt.Errorf("import bundle: %w", err)
	}
	return nil
}

// ErrNotFastForward is returned by UpdateBranch when the branch exists and
// is not an ancestor of the new commit.
var ErrNotFastForward = errors.New("branch is not an ancestor of the guest's commit")

// ErrCheckedOut is returned by UpdateBranch for the branch checked out in
// the host repository.
var ErrCheckedOut = errors.New("branch is checked out")

// BranchUpdate says what UpdateBranch did.
type BranchUpdate struct {
	Branch string `json:"branch"`
	// Old is the previous tip, "" for a new branch.
	Old string `json:"old,omitempty"`
	New string `json:"new"`
	// Forced says a non-ancestor tip was replaced.
	Forced bool `json:"forced,omitempty"`
}

// UpdateBranch points refs/heads/<branch> of the repository at root to
// commit sha, which must already be in the repository. It never touches
// the checked-out branch or the working tree: the branch checked out is
// refused, and so is an existing branch that is not an ancestor of sha,
// unless force.
func UpdateBranch(ctx context.Context, root, branch, sha string, force bool) (BranchUpdate, error) {
	u := BranchUpdate{Branch: branch, New: sha}
	if err := ValidateBranch(branch); err != nil {
		return u, err
	}
	if !HasCommit(ctx, root, sha) {
		return u, fmt.Errorf("commit %s is not in %s", sha, root)
	}
	ref := "refs/heads/" + branch
	if cur, err := git(ctx, root, "symbolic-ref", "-q", "HEAD"); err == nil && strings.TrimSpace(string(cur)) == ref {
		return u, fmt.Errorf("%s: %w in %s; pick another with --branch", branch, ErrCheckedOut, root)
	}
	if old, err := git(ctx, root, "rev-parse", "-q", "--verify", ref); err == nil {
		u.Old = strings.TrimSpace(string(old))
	}
	if u.Old == sha {
		return u, nil
	}
	if u.Old != "" {
		if _, err := git(ctx, root, "merge-base", "--is-ancestor", u.Old, sha); err != nil {
			var ce *cmdrun.Error
			if !errors.As(err, &ce) || ce.ExitCode() != 1 {
				return u, fmt.Errorf("compare %s with %s: %w", branch, sha, err)
			}
			if !force {
				return u, fmt.Errorf("%s (%s): %w; use --force to replace it or --branch to pick another", branch, units.ShortID(u.Old), ErrNotFastForward)
			}
			u.Forced = true
		}
	}
	// The old value makes the update atomic against a concurrent change.
	old := u.Old
	if old == "" {
		old = strings.Repeat("0", len(sha))
	}
	if _, err := git(ctx, root, "update-ref", "-m", "banger workspace pull", ref, sha, old); err != nil {
		return u, fmt.Errorf("update %s: %w", branch, err)
	}
	return u, nil
}

// ErrBundleTooLarge is returned (wrapped) by FetchBundle when the guest's
// bundle is larger than the bound it was given.
var ErrBundleTooLarge = errors.New("the guest's bundle exceeds the size limit")

// FetchBundle brings the objects of a guest's HEAD into the repository
// at root: open asks the guest for a bundle of what the host's branch
// tips (given to it) do not hold; the bundle is kept in the repository's
// git directory (the disk its objects go to, not a RAM-backed temp dir)
// while it is read, cut at max bytes, then unbundled. It returns the
// bundle's size.
func FetchBundle(ctx context.Context, root string, max int64, open func(ctx context.Context, tips []string) (io.ReadCloser, error)) (int64, error) {
	tips, err := Tips(ctx, root, 64)
	if err != nil {
		return 0, err
	}
	gitDir, err := GitDir(ctx, root)
	if err != nil {
		return 0, err
	}
	body, err := open(ctx, tips)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	f, err := os.CreateTemp(gitDir, "banger-pull-*.bundle")
	if err != nil {
		return 0, fmt.Errorf("bundle file: %w", err)
	}
	defer os.Remove(f.Name())
	n, cerr := io.Copy(f, io.LimitReader(body, max+1))
	if err := errors.Join(cerr, f.Close()); err != nil {
		return n, fmt.Errorf("receive bundle: %w", err)
	}
	if n > max {
		return n, fmt.Errorf("%w (%s)", ErrBundleTooLarge, units.FormatSize(max))
	}
	if err := Unbundle(ctx, root, f.Name()); err != nil {
		return n, err
	}
	return n, nil
}
