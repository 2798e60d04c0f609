package daemon

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/workspace"
)

// Guest paths of a workspace transfer: the tar is unpacked next to
// /root/repo (same filesystem) and swapped in; pull bundles are written
// on the work disk, not in the guest's memory.
const (
	workspaceIncoming = "/root/.banger-repo.incoming"
	workspaceBundle   = "/root/.banger-pull.bundle"
	// maxChanges bounds the `git status` text kept in a WorkspaceStatus.
	maxChanges = 4 << 10
	// maxGuestOutput bounds what guestRun keeps of a command's output.
	maxGuestOutput = 1 << 20
)

func (d *Daemon) workspaceRoutes() []Route {
	return []Route{
		{"GET " + api.PathVMWorkspace, d.handleWorkspaceStatus},
		{"PUT " + api.PathVMWorkspace, d.handlePrepareWorkspace},
		{"GET " + api.PathVMWorkspaceBundle, d.handleWorkspaceBundle},
	}
}

// cappedBuffer keeps the first max bytes written to it and drops the rest.
type cappedBuffer struct {
	b   strings.Builder
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// guestRun runs argv in the guest and returns its (bounded) stdout and
// stderr and exit code.
func guestRun(ctx context.Context, c *agentclient.Client, argv ...string) (string, string, int, error) {
	var out, errb = &cappedBuffer{max: maxGuestOutput}, &cappedBuffer{max: maxGuestOutput}
	st, err := c.Exec(ctx, agent.ExecRequest{Argv: argv, Dir: "/root"}, agentclient.ExecIO{Stdout: out, Stderr: errb})
	if err != nil {
		return out.b.String(), errb.b.String(), -1, err
	}
	return out.b.String(), errb.b.String(), st.Code, nil
}

// statusScript reports on /root/repo: "missing", or "git" then the HEAD
// commit, the branch and `git status --porcelain`, or "plain" then up to
// 50 names it holds.
const statusScript = `cd ` + workspace.GuestDir + ` 2>/dev/null || { echo missing; exit 0; }
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "` + workspace.GuestDir + `" ]; then
  echo git
  git rev-parse -q --verify HEAD || echo
  git symbolic-ref -q --short HEAD || echo
  git status --porcelain || exit 3
else
  echo plain
  ls -A | head -n 50
fi`

// parseStatus turns statusScript's output into a WorkspaceStatus.
func parseStatus(out string) (api.WorkspaceStatus, error) {
	st := api.WorkspaceStatus{Path: workspace.GuestDir}
	lines := strings.Split(out, "\n")
	switch lines[0] {
	case "missing":
		return st, nil
	case "git":
		if len(lines) < 3 {
			return st, fmt.Errorf("workspace status: short answer %q", out)
		}
		st.Exists, st.Git = true, true
		st.Head, st.Branch = strings.TrimSpace(lines[1]), strings.TrimSpace(lines[2])
		st.Changes = strings.TrimRight(strings.Join(lines[3:], "\n"), "\n")
	case "plain":
		st.Exists = true
		st.Changes = strings.TrimRight(strings.Join(lines[1:], "\n"), "\n")
	default:
		return st, fmt.Errorf("workspace status: unexpected answer %q", out)
	}
	st.Dirty = st.Changes != ""
	if len(st.Changes) > maxChanges {
		st.Changes = st.Changes[:maxChanges] + "\n..."
	}
	return st, nil
}

func (d *Daemon) guestWorkspace(ctx context.Context, c *agentclient.Client) (api.WorkspaceStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, errOut, code, err := guestRun(ctx, c, "sh", "-c", statusScript)
	if err != nil {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "workspace status: %v", err)
	}
	if code != 0 {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "workspace status: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	return parseStatus(out)
}

func (d *Daemon) handleWorkspaceStatus(w http.ResponseWriter, r *http.Request) error {
	c, _, err := d.agentFor(r)
	if err != nil {
		return err
	}
	st, err := d.guestWorkspace(r.Context(), c)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// handlePrepareWorkspace unpacks the request's tar next to /root/repo and
// swaps it in. A dirty /root/repo is refused unless force=1.
func (d *Daemon) handlePrepareWorkspace(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	force := r.URL.Query().Get("force") != ""
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	if !force {
		st, err := d.guestWorkspace(ctx, c)
		if err != nil {
			return err
		}
		if st.Dirty {
			return api.Errorf(api.CodeConflict, "vm %s: %s has changes not committed in the guest:\n%s\n(commit or pull them first, or replace them with --force)", vm.Name, workspace.GuestDir, st.Changes)
		}
	}
	if _, errOut, code, err := guestRun(ctx, c, "rm", "-rf", workspaceIncoming); err != nil || code != 0 {
		return api.Errorf(api.CodeUnavailable, "vm %s: clear %s: %v %s", vm.Name, workspaceIncoming, err, errOut)
	}
	if err := c.Upload(ctx, workspaceIncoming, r.Body); err != nil {
		_, _, _, _ = guestRun(context.WithoutCancel(ctx), c, "rm", "-rf", workspaceIncoming)
		return api.Errorf(api.CodeUnavailable, "vm %s: upload workspace: %v", vm.Name, err)
	}
	swap := fmt.Sprintf("rm -rf %s && mv %s %s", workspace.GuestDir, workspaceIncoming, workspace.GuestDir)
	if _, errOut, code, err := guestRun(ctx, c, "sh", "-c", swap); err != nil || code != 0 {
		return api.Errorf(api.CodeUnavailable, "vm %s: install workspace: %v %s", vm.Name, err, strings.TrimSpace(errOut))
	}
	st, err := d.guestWorkspace(ctx, c)
	if err != nil {
		return err
	}
	d.Logger.Info("workspace prepared", "vm", vm.Name, "head", st.Head, "dirty", st.Dirty)
	return writeJSON(w, http.StatusOK, st)
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// bundleScript bundles HEAD of /root/repo into $1, leaving out the
// commits given after it that the guest has.
const bundleScript = `out=$1; shift
cd ` + workspace.GuestDir + ` || exit 2
for c in "$@"; do shift; git cat-file -e "$c^{commit}" 2>/dev/null && set -- "$@" "^$c"; done
git bundle create -q "$out" HEAD "$@"`

// handleWorkspaceBundle answers a git bundle of the guest workspace's
// HEAD without what the exclude commits (the host has) already hold.
func (d *Daemon) handleWorkspaceBundle(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	excl := r.URL.Query()["exclude"]
	if len(excl) > 256 {
		return api.Errorf(api.CodeInvalid, "bundle: at most 256 exclude commits")
	}
	for _, e := range excl {
		if !commitRE.MatchString(e) {
			return api.Errorf(api.CodeInvalid, "bundle: exclude %q is not a full commit id", e)
		}
	}
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	argv := append([]string{"sh", "-c", bundleScript, "sh", workspaceBundle}, excl...)
	_, errOut, code, err := guestRun(ctx, c, argv...)
	defer func() { _, _, _, _ = guestRun(context.WithoutCancel(ctx), c, "rm", "-f", workspaceBundle) }()
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: bundle workspace: %v", vm.Name, err)
	}
	if code != 0 {
		msg := strings.TrimSpace(errOut)
		if strings.Contains(msg, "empty bundle") {
			return api.Errorf(api.CodeConflict, "vm %s: nothing to pull: the host already has the guest's commits", vm.Name)
		}
		return api.Errorf(api.CodeInvalid, "vm %s: bundle %s: %s", vm.Name, workspace.GuestDir, msg)
	}
	body, err := c.Download(ctx, workspaceBundle)
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: download bundle: %v", vm.Name, err)
	}
	defer body.Close()
	tr := tar.NewReader(body)
	h, err := tr.Next()
	if err != nil || h.Typeflag != tar.TypeReg {
		return api.Errorf(api.CodeUnavailable, "vm %s: download bundle: %v", vm.Name, errors.Join(err, errors.New("no bundle file in the answer")))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(h.Size))
	w.WriteHeader(http.StatusOK)
	if _, err := io.CopyN(w, tr, h.Size); err != nil {
		return fmt.Errorf("send bundle: %w", err)
	}
	return nil
}
