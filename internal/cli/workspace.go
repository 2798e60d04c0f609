package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/units"
	"banger/internal/workspace"
)

func newWorkspaceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workspace",
		Short: "Copy a git repository into a VM (/root/repo) and pull its commits back",
		Args:  noArgs,
	}
	cmd.AddCommand(newWorkspacePrepareCmd(a), newWorkspacePullCmd(a), newWorkspaceStatusCmd(a))
	return cmd
}

// workspaceOpts are the options of a prepare.
type workspaceOpts struct {
	path  string // any directory inside the repository; "" is the current one
	mode  string
	force bool
	full  bool // send everything, never only what changed
}

func newWorkspacePrepareCmd(a *app) *cobra.Command {
	var o workspaceOpts
	cmd := &cobra.Command{
		Use:   "prepare NAME [--path DIR] [--mode MODE] [--force]",
		Short: "Copy the host repository to /root/repo in a running VM",
		Long: "Copy the git repository containing DIR (default: the current directory) to /root/repo\n" +
			"in the guest. Mode worktree (default) copies the working tree as you see it (tracked\n" +
			"files with their uncommitted changes and untracked files git does not ignore) and the\n" +
			".git directory, so the guest can commit; full_copy copies everything, ignored files\n" +
			"and submodules included. A /root/repo with uncommitted changes in the guest is\n" +
			"refused unless --force.\n\n" +
			"When the guest already has a repo there, only what differs is sent (compared by type,\n" +
			"size, modification time, permissions and symlink target, as rsync does by default),\n" +
			"and what the host no longer has is deleted; --full sends everything and swaps the\n" +
			"whole tree in.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			st, err := a.prepareWorkspace(cmd.Context(), c, args[0], o)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, st)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.path, "path", "", "directory inside the host repository (default: current directory)")
	cmd.Flags().StringVar(&o.mode, "mode", string(workspace.ModeWorktree), "what to copy: worktree or full_copy")
	cmd.Flags().BoolVar(&o.force, "force", false, "replace /root/repo even when it has uncommitted changes")
	cmd.Flags().BoolVar(&o.full, "full", false, "send the whole tree, not only what changed")
	return cmd
}

// prepareWorkspace copies the repository to /root/repo in vm, showing
// progress on stderr.
func (a *app) prepareWorkspace(ctx context.Context, c *api.Client, vm string, o workspaceOpts) (api.WorkspaceStatus, error) {
	mode, err := workspace.ParseMode(o.mode)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	dir := o.path
	if dir == "" {
		if dir, err = os.Getwd(); err != nil {
			return api.WorkspaceStatus{}, err
		}
	}
	root, err := workspace.Toplevel(ctx, dir)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	var delta *workspace.Delta
	if !o.full {
		if delta, err = a.workspaceDelta(ctx, c, vm, root, mode); err != nil {
			return api.WorkspaceStatus{}, err
		}
	}
	if delta == nil && !o.force {
		st, err := c.WorkspaceStatus(ctx, vm)
		if err != nil {
			return api.WorkspaceStatus{}, err
		}
		if st.Dirty {
			return api.WorkspaceStatus{}, fmt.Errorf("vm %s: %s has changes not committed in the guest:\n%s\n(pull or commit them first, or replace them with --force)", vm, st.Path, st.Changes)
		}
	}
	var sel workspace.Selection
	if delta != nil {
		sel = delta.Send
		fmt.Fprintf(a.streams.ErrOut, "workspace: %s (%s): %d entries changed (%s), %d to delete\n", root, mode, len(sel.Entries), units.Bytes(sel.Bytes), len(delta.Delete))
	} else {
		if sel, err = workspace.Select(ctx, root, mode); err != nil {
			return api.WorkspaceStatus{}, err
		}
		fmt.Fprintf(a.streams.ErrOut, "workspace: %s (%s): %d entries, %s\n", root, mode, len(sel.Entries), units.Bytes(sel.Bytes))
	}
	if len(sel.SkippedSubmodules) > 0 {
		fmt.Fprintf(a.streams.ErrOut, "workspace: submodule contents not copied (use --mode full_copy): %v\n", sel.SkippedSubmodules)
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	cw := &countingWriter{w: pw}
	sent := new(workspace.Sent)
	go func() { pw.CloseWithError(workspace.WriteTarCounted(tctx, cw, sel, sent)) }()
	stopProgress := a.showTransfer(sent, sel)
	start := time.Now()
	var st api.WorkspaceStatus
	if delta != nil {
		st, err = c.UpdateWorkspace(ctx, vm, delta.Delete, pr, o.force)
	} else {
		st, err = c.PrepareWorkspace(ctx, vm, pr, o.force)
	}
	stopProgress()
	pr.CloseWithError(errors.New("upload ended"))
	if err != nil {
		return st, err
	}
	fmt.Fprintf(a.streams.ErrOut, "workspace: sent %s in %s; %s in vm %s at %s", units.Bytes(cw.n.Load()), formatDuration(time.Since(start)), st.Path, vm, dashIfEmpty(units.ShortID(st.Head)))
	if st.Branch != "" {
		fmt.Fprintf(a.streams.ErrOut, " on %s", st.Branch)
	}
	fmt.Fprintln(a.streams.ErrOut)
	return st, nil
}

// workspaceDelta selects the repository and compares it with the guest's
// /root/repo; nil means send it whole (the guest has no repo, or its
// listing could not be had).
func (a *app) workspaceDelta(ctx context.Context, c *api.Client, vm, root string, mode workspace.Mode) (*workspace.Delta, error) {
	man, err := c.WorkspaceManifest(ctx, vm)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeUnavailable {
			fmt.Fprintf(a.streams.ErrOut, "workspace: sending the whole tree: %v\n", err)
			return nil, nil
		}
		return nil, err
	}
	if len(man) == 0 {
		return nil, nil
	}
	sel, err := workspace.Select(ctx, root, mode)
	if err != nil {
		return nil, err
	}
	guest := make([]workspace.GuestEntry, len(man))
	for i, e := range man {
		var t byte
		if len(e.Type) == 1 {
			t = e.Type[0]
		}
		guest[i] = workspace.GuestEntry{Path: e.Path, Type: t, Size: e.Size, Mtime: time.Unix(0, e.MtimeNS), Perm: fs.FileMode(e.Perm) & fs.ModePerm, Link: e.Link}
	}
	d := workspace.Diff(sel, guest)
	return &d, nil
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "(no commits)"
	}
	return s
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// showTransfer prints the bytes and files sent so far against the
// selection's totals on stderr until the returned function is called: a
// bar redrawn in place on a terminal, a plain line every few seconds
// otherwise. Small transfers print nothing.
func (a *app) showTransfer(sent *workspace.Sent, sel workspace.Selection) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	every := 5 * time.Second
	if a.streams.ErrTTY {
		every = 200 * time.Millisecond
	}
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-done:
				if drawn && a.streams.ErrTTY {
					fmt.Fprint(a.streams.ErrOut, clearLine)
				}
				return
			case <-t.C:
				line := transferLine(sent.Bytes.Load(), sel.Bytes, sent.Files.Load(), int64(sel.Files), a.streams.ErrTTY)
				if a.streams.ErrTTY {
					fmt.Fprint(a.streams.ErrOut, clearLine+line)
				} else {
					fmt.Fprintln(a.streams.ErrOut, line)
				}
				drawn = true
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// transferLine is the progress line of a workspace upload: on a terminal
// a bar over the bytes (over the files when they are all empty) and the
// files sent, otherwise the same figures without a bar.
func transferLine(bytes, totalBytes, files, totalFiles int64, tty bool) string {
	b := api.Progress{Done: bytes, Total: totalBytes, Unit: api.UnitBytes}
	f := api.Progress{Done: files, Total: totalFiles, Unit: api.UnitFiles}
	main, other := b, f
	if totalBytes <= 0 {
		main, other = f, b
	}
	if tty {
		return "workspace: " + progressBar(main, barWidth) + ", " + progressAmount(other)
	}
	return fmt.Sprintf("workspace: sent %d%% %s, %s", percent(main), progressAmount(main), progressAmount(other))
}

func newWorkspacePullCmd(a *app) *cobra.Command {
	var (
		path, branch, maxSize string
		force                 bool
		timeout               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pull NAME [--branch B] [--path DIR] [--force]",
		Short: "Bring the guest's commits back into the host repository as a branch",
		Long: "Fetch the commit checked out in /root/repo into the host repository as branch B\n" +
			"(default banger/NAME), without touching your checked-out branch or working tree.\n" +
			"An existing B that is not an ancestor of the guest's commit is replaced only with\n" +
			"--force. Uncommitted guest changes are not pulled: commit them in the guest first.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			vm, err := c.GetVM(ctx, args[0])
			if err != nil {
				return err
			}
			if branch == "" {
				branch = workspace.BranchName(vm.Name)
			}
			if err := workspace.ValidateBranch(branch); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			limit, err := units.ParseSize(maxSize)
			if err != nil || limit <= 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--max-size %q: want a positive size such as 512M or 2G", maxSize)}
			}
			if timeout <= 0 {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--timeout %s: want a positive duration such as 10m", timeout)}
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			u, st, err := a.pullWorkspace(ctx, c, vm.Name, path, branch, force, limit)
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("pull from %s: not finished within --timeout %s: %w", vm.Name, timeout, err)
			}
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, u)
			}
			switch {
			case u.Old == u.New:
				fmt.Fprintf(a.streams.Out, "%s already at %s\n", u.Branch, units.ShortID(u.New))
			case u.Old == "":
				fmt.Fprintf(a.streams.Out, "%s created at %s\n", u.Branch, units.ShortID(u.New))
			case u.Forced:
				fmt.Fprintf(a.streams.Out, "%s replaced: %s -> %s (forced)\n", u.Branch, units.ShortID(u.Old), units.ShortID(u.New))
			default:
				fmt.Fprintf(a.streams.Out, "%s updated: %s -> %s\n", u.Branch, units.ShortID(u.Old), units.ShortID(u.New))
			}
			if st.Dirty {
				fmt.Fprintf(a.streams.ErrOut, "note: %s in vm %s has uncommitted changes; they were not pulled\n", st.Path, vm.Name)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&branch, "branch", "", "host branch to create or update (default banger/NAME)")
	cmd.Flags().StringVar(&path, "path", "", "directory inside the host repository (default: current directory)")
	cmd.Flags().BoolVar(&force, "force", false, "replace the branch even when it is not an ancestor of the guest's commit")
	cmd.Flags().StringVar(&maxSize, "max-size", "2G", "largest git bundle the guest may send")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up a pull that takes longer")
	return cmd
}

// pullWorkspace brings the guest's HEAD into the repository containing
// path (or the current directory) as branch.
func (a *app) pullWorkspace(ctx context.Context, c *api.Client, vm, path, branch string, force bool, maxBundle int64) (workspace.BranchUpdate, api.WorkspaceStatus, error) {
	var u workspace.BranchUpdate
	if path == "" {
		var err error
		if path, err = os.Getwd(); err != nil {
			return u, api.WorkspaceStatus{}, err
		}
	}
	root, err := workspace.Toplevel(ctx, path)
	if err != nil {
		return u, api.WorkspaceStatus{}, err
	}
	st, err := c.WorkspaceStatus(ctx, vm)
	if err != nil {
		return u, st, err
	}
	switch {
	case !st.Git:
		return u, st, fmt.Errorf("vm %s: no git repository at %s (copy one with: banger vm workspace prepare %s)", vm, st.Path, vm)
	case st.Head == "":
		return u, st, fmt.Errorf("vm %s: %s has no commits yet", vm, st.Path)
	}
	if !workspace.HasCommit(ctx, root, st.Head) {
		_, err := workspace.FetchBundle(ctx, root, maxBundle, func(ctx context.Context, tips []string) (io.ReadCloser, error) {
			return c.WorkspaceBundle(ctx, vm, tips)
		})
		if errors.Is(err, workspace.ErrBundleTooLarge) {
			return u, st, fmt.Errorf("vm %s: the guest's bundle exceeds --max-size %s; raise it to pull more", vm, units.FormatSize(maxBundle))
		}
		if err != nil {
			return u, st, err
		}
	}
	u, err = workspace.UpdateBranch(ctx, root, branch, st.Head, force)
	return u, st, err
}

func newWorkspaceStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show /root/repo in a VM: commit, branch and uncommitted changes",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			st, err := c.WorkspaceStatus(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, st)
			}
			rows := [][2]string{{"path", st.Path}, {"exists", fmt.Sprint(st.Exists)}, {"git", fmt.Sprint(st.Git)},
				{"head", dash(st.Head)}, {"branch", dash(st.Branch)}, {"dirty", fmt.Sprint(st.Dirty)}}
			if err := printFields(a.streams.Out, rows); err != nil {
				return err
			}
			if st.Changes != "" {
				fmt.Fprintln(a.streams.Out, st.Changes)
			}
			return nil
		},
	}
}
