package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/termsafe"
	"banger/internal/units"
	"banger/internal/workspace"
)

// Workspace bounds. What the guest says about /root/repo is untrusted:
// its change list is cut at MaxChanges bytes, and the git bundle a pull
// receives at MaxBundle.
const (
	MaxChanges = 8 << 10
	MaxBundle  = 2 << 30
	// pullTimeout gives up a pull (bundle, unbundle, branch update) that
	// takes longer, as the CLI's --timeout default does.
	pullTimeout = 30 * time.Minute
)

// WorkspacePrepareIn is the input of workspace_prepare.
type WorkspacePrepareIn struct {
	VMRef
	Path  string `json:"path,omitempty" jsonschema:"a directory inside the git repository on the host to copy (default: this MCP server's working directory)"`
	Mode  string `json:"mode,omitempty" jsonschema:"what to copy: worktree (default: tracked files with their uncommitted changes, untracked files git does not ignore, and .git so the guest can commit) or full_copy (every file, ignored ones and submodules included)"`
	Force bool   `json:"force,omitempty" jsonschema:"replace /root/repo even when it has changes not committed in the guest (they are lost)"`
}

func (in WorkspacePrepareIn) hostPath() string { return in.Path }

// WorkspacePrepareOut is the result of workspace_prepare: what was sent
// and the guest's /root/repo afterwards.
type WorkspacePrepareOut struct {
	// Repo is the root of the host repository that was copied.
	Repo string `json:"repo"`
	Mode string `json:"mode"`
	// Entries counts files, directories and symlinks sent; Files the
	// regular files among them, FileBytes their total size.
	Entries   int   `json:"entries"`
	Files     int   `json:"files"`
	FileBytes int64 `json:"file_bytes"`
	// SentBytes is the size of the tar stream sent to the guest.
	SentBytes int64 `json:"sent_bytes"`
	// SkippedSubmodules lists submodules whose contents worktree mode
	// left out (full_copy sends them).
	SkippedSubmodules []string            `json:"skipped_submodules,omitempty"`
	Workspace         api.WorkspaceStatus `json:"workspace"`
}

// WorkspacePullIn is the input of workspace_pull.
type WorkspacePullIn struct {
	VMRef
	Path   string `json:"path,omitempty" jsonschema:"a directory inside the host git repository to write the branch into (default: this MCP server's working directory)"`
	Branch string `json:"branch,omitempty" jsonschema:"host branch to create or update (default banger/VM); never the branch checked out on the host"`
	Force  bool   `json:"force,omitempty" jsonschema:"replace the branch even when it is not an ancestor of the guest's commit (its previous commits are then left only in the host's reflog)"`
}

func (in WorkspacePullIn) hostPath() string { return in.Path }

// WorkspacePullOut is the result of workspace_pull.
type WorkspacePullOut struct {
	// Repo is the root of the host repository the branch is in.
	Repo   string `json:"repo"`
	Branch string `json:"branch"`
	// Commit is the guest's HEAD, now the branch's tip; Previous the tip
	// before, "" when the branch was created.
	Commit   string `json:"commit"`
	Previous string `json:"previous,omitempty"`
	// Result is created, fast_forward, forced or unchanged.
	Result      string `json:"result"`
	Created     bool   `json:"created"`
	FastForward bool   `json:"fast_forward"`
	Forced      bool   `json:"forced"`
	// BundleBytes is the size of the git bundle the guest sent (0 when
	// the host already had the commit).
	BundleBytes int64 `json:"bundle_bytes"`
	// GuestDirty says /root/repo had uncommitted changes, which were not
	// pulled: commit them in the guest first.
	GuestDirty bool `json:"guest_dirty"`
}

// hostRepo returns the root of the git repository containing dir, or the
// server's working directory when dir is empty.
func hostRepo(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("path: %w", err)
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", dir, err)
	}
	return workspace.Toplevel(ctx, abs)
}

// safeStatus bounds and cleans what the guest said about /root/repo:
// one-line fields lose control characters and are capped at MaxFlowText,
// the change list keeps its lines and is capped at MaxChanges.
func safeStatus(st api.WorkspaceStatus) api.WorkspaceStatus {
	st.Path = capText(termsafe.Line(st.Path))
	st.Head = capText(termsafe.Line(st.Head))
	st.Branch = capText(termsafe.Line(st.Branch))
	if st.Changes != "" {
		var b strings.Builder
		// A strings.Builder never fails a write.
		_, _ = termsafe.Writer(&b).Write([]byte(termsafe.Truncate(st.Changes, 4*MaxChanges)))
		st.Changes = termsafe.Truncate(b.String(), MaxChanges)
	}
	return st
}

func (s *Server) workspaceStatus(ctx context.Context, _ *mcp.CallToolRequest, in VMRef) (*mcp.CallToolResult, api.WorkspaceStatus, error) {
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, api.WorkspaceStatus{}, err
	}
	st, err := s.opt.Client.WorkspaceStatus(ctx, v.ID)
	if err != nil {
		return nil, api.WorkspaceStatus{}, fmt.Errorf("workspace status of vm %s: %w", v.Name, err)
	}
	return nil, safeStatus(st), nil
}

// counter counts the bytes written through it.
type counter struct {
	w io.Writer
	n atomic.Int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// workspacePrepare does what `banger vm workspace prepare` does: the tar
// of the host repository is made here, on the user's host as the user,
// and streamed to the daemon, which unpacks it into the guest.
func (s *Server) workspacePrepare(ctx context.Context, _ *mcp.CallToolRequest, in WorkspacePrepareIn) (*mcp.CallToolResult, WorkspacePrepareOut, error) {
	mode, err := workspace.ParseMode(in.Mode)
	if err != nil {
		return nil, WorkspacePrepareOut{}, err
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, WorkspacePrepareOut{}, err
	}
	root, err := hostRepo(ctx, in.Path)
	if err != nil {
		return nil, WorkspacePrepareOut{}, err
	}
	if !in.Force {
		st, err := s.opt.Client.WorkspaceStatus(ctx, v.ID)
		if err != nil {
			return nil, WorkspacePrepareOut{}, fmt.Errorf("workspace status of vm %s: %w", v.Name, err)
		}
		if st.Dirty {
			st = safeStatus(st)
			return nil, WorkspacePrepareOut{}, fmt.Errorf("vm %s: %s has changes not committed in the guest (pull or commit them first, or replace them with force=true):\n%s", v.Name, st.Path, st.Changes)
		}
	}
	sel, err := workspace.Select(ctx, root, mode)
	if err != nil {
		return nil, WorkspacePrepareOut{}, err
	}
	out := WorkspacePrepareOut{Repo: root, Mode: string(mode), Entries: len(sel.Entries), FileBytes: sel.Bytes, SkippedSubmodules: sel.SkippedSubmodules}
	for _, e := range sel.Entries {
		if e.Info.Mode().IsRegular() {
			out.Files++
		}
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	cw := &counter{w: pw}
	go func() { pw.CloseWithError(workspace.WriteTar(tctx, cw, sel)) }()
	st, err := s.opt.Client.PrepareWorkspace(ctx, v.ID, pr, in.Force)
	// Ends the writer if the daemon stopped reading early.
	pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		return nil, WorkspacePrepareOut{}, fmt.Errorf("prepare workspace of vm %s from %s: %w", v.Name, root, err)
	}
	out.SentBytes = cw.n.Load()
	out.Workspace = safeStatus(st)
	return nil, out, nil
}

// workspacePull does what `banger vm workspace pull` does: the guest's
// HEAD comes back as a git bundle (only what the host lacks), its objects
// go into the host repository and the branch is created or moved to it.
func (s *Server) workspacePull(ctx context.Context, _ *mcp.CallToolRequest, in WorkspacePullIn) (*mcp.CallToolResult, WorkspacePullOut, error) {
	if in.Branch != "" {
		if err := workspace.ValidateBranch(in.Branch); err != nil {
			return nil, WorkspacePullOut{}, err
		}
	}
	v, err := s.vm(ctx, in.VM)
	if err != nil {
		return nil, WorkspacePullOut{}, err
	}
	branch := in.Branch
	if branch == "" {
		branch = workspace.BranchName(v.Name)
		if err := workspace.ValidateBranch(branch); err != nil {
			return nil, WorkspacePullOut{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	root, err := hostRepo(ctx, in.Path)
	if err != nil {
		return nil, WorkspacePullOut{}, err
	}
	st, err := s.opt.Client.WorkspaceStatus(ctx, v.ID)
	if err != nil {
		return nil, WorkspacePullOut{}, fmt.Errorf("workspace status of vm %s: %w", v.Name, err)
	}
	st = safeStatus(st)
	switch {
	case !st.Git:
		return nil, WorkspacePullOut{}, fmt.Errorf("vm %s: no git repository at %s (copy one with workspace_prepare)", v.Name, st.Path)
	case st.Head == "":
		return nil, WorkspacePullOut{}, fmt.Errorf("vm %s: %s has no commits yet", v.Name, st.Path)
	}
	out := WorkspacePullOut{Repo: root, Branch: branch, GuestDirty: st.Dirty}
	if !workspace.HasCommit(ctx, root, st.Head) {
		if out.BundleBytes, err = s.fetchBundle(ctx, v, root); err != nil {
			return nil, WorkspacePullOut{}, err
		}
	}
	u, err := workspace.UpdateBranch(ctx, root, branch, st.Head, in.Force)
	if err != nil {
		return nil, WorkspacePullOut{}, fmt.Errorf("pull vm %s into %s: %w", v.Name, root, err)
	}
	out.Commit, out.Previous, out.Forced = u.New, u.Old, u.Forced
	switch {
	case u.Old == u.New:
		out.Result = "unchanged"
	case u.Old == "":
		out.Result, out.Created = "created", true
	case u.Forced:
		out.Result = "forced"
	default:
		out.Result, out.FastForward = "fast_forward", true
	}
	return nil, out, nil
}

// fetchBundle stores the objects of the guest's HEAD that the host
// lacks in the repository at root (see workspace.FetchBundle), the bundle
// cut at MaxBundle; it returns the bundle's size.
func (s *Server) fetchBundle(ctx context.Context, v api.VM, root string) (int64, error) {
	n, err := workspace.FetchBundle(ctx, root, MaxBundle, func(ctx context.Context, tips []string) (io.ReadCloser, error) {
		return s.opt.Client.WorkspaceBundle(ctx, v.ID, tips)
	})
	switch {
	case errors.Is(err, workspace.ErrBundleTooLarge):
		return n, fmt.Errorf("vm %s: the guest's bundle exceeds %s; pull it with `banger vm workspace pull --max-size`", v.Name, units.FormatSize(MaxBundle))
	case err != nil:
		return n, fmt.Errorf("pull vm %s into %s: %w", v.Name, root, err)
	}
	return n, nil
}
