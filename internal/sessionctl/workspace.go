package sessionctl

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/units"
	"banger/internal/workspace"
)

// Guest paths of a workspace transfer: the tar is unpacked next to
// /root/repo (same filesystem) and swapped in; pull bundles are written
// on the work disk, not in the guest's memory.
const (
	workspaceIncoming = "/root/.banger-repo.incoming"
	workspaceBundle   = "/root/.banger-pull.bundle"
	// workspaceOld prefixes a replaced /root/repo while it is removed.
	workspaceOld = "/root/.banger-repo.old-"
	// maxChanges bounds the `git status` text kept in a WorkspaceStatus.
	maxChanges = 4 << 10
	// maxGuestOutput bounds what guestRun keeps of a command's output.
	maxGuestOutput = 1 << 20
	// maxManifest bounds the guest's manifest of /root/repo; a larger
	// repo is sent whole.
	maxManifest = 64 << 20
	// maxDeletes bounds the paths an incremental prepare may delete.
	maxDeletes = workspace.MaxManifestEntries
	// maxExcludes bounds the commits a bundle request may name.
	maxExcludes = 256
)

// cappedBuffer keeps the first max bytes written to it, drops the rest
// and notes that more came: guest output is bounded before it is kept.
type cappedBuffer struct {
	b    bytes.Buffer
	max  int
	over bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	room := max(c.max-c.b.Len(), 0)
	if room < len(p) {
		c.over = true
	}
	c.b.Write(p[:min(room, len(p))])
	return len(p), nil
}

// guestRun runs argv in the guest's /root and returns its (bounded)
// stdout and stderr and exit code.
func guestRun(ctx context.Context, c WorkspaceAgent, argv ...string) (string, string, int, error) {
	out, errb := &cappedBuffer{max: maxGuestOutput}, &cappedBuffer{max: maxGuestOutput}
	st, err := c.Exec(ctx, agent.ExecRequest{Argv: argv, Dir: "/root"}, agentclient.ExecIO{Stdout: out, Stderr: errb})
	if err != nil {
		return out.b.String(), errb.b.String(), -1, err
	}
	return out.b.String(), errb.b.String(), st.Code, nil
}

// statusScript reports on /root/repo: "missing", or "git" then the HEAD
// commit, the branch and `git status --porcelain`, or "plain" then up to
// 50 names it holds. A prepared repo's index holds the host's inode
// numbers and ctimes, so a default status would read and hash every file
// (a second or more per 30 MB under software emulation); with
// core.checkStat=minimal git trusts size and whole-second mtime, which
// the transfer keeps.
const statusScript = `cd ` + workspace.GuestDir + ` 2>/dev/null || { echo missing; exit 0; }
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "` + workspace.GuestDir + `" ]; then
  echo git
  git rev-parse -q --verify HEAD || echo
  git symbolic-ref -q --short HEAD || echo
  git -c core.checkStat=minimal -c core.trustctime=false status --porcelain || exit 3
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

// beforeFailed is statusAfter's exit status when its first commands
// failed.
const beforeFailed = 9

// status runs statusScript in the guest.
func (m *Manager) status(ctx context.Context, c WorkspaceAgent) (api.WorkspaceStatus, error) {
	return m.statusAfter(ctx, c, "")
}

// statusAfter runs the shell commands before, then statusScript, in one
// guest exec (each exec is a round trip worth saving under software
// emulation); before failing is an error of its own.
func (m *Manager) statusAfter(ctx context.Context, c WorkspaceAgent, before string) (api.WorkspaceStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opt.WorkspaceTimeout)
	defer cancel()
	script := statusScript
	if before != "" {
		script = "{ " + before + "; } || exit " + strconv.Itoa(beforeFailed) + "\n" + statusScript
	}
	out, errOut, code, err := guestRun(ctx, c, "sh", "-c", script)
	if err != nil {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "workspace status: %v", err)
	}
	if code == beforeFailed && before != "" {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "install workspace: %s", strings.TrimSpace(errOut))
	}
	if code != 0 {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "workspace status: exit %d: %s", code, strings.TrimSpace(errOut))
	}
	return parseStatus(out)
}

// WorkspaceStatus reports on /root/repo in VM ref's guest.
func (m *Manager) WorkspaceStatus(ctx context.Context, ref string) (api.WorkspaceStatus, error) {
	c, _, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	return m.status(ctx, c)
}

// PrepareWorkspace unpacks tarStream next to /root/repo in VM ref's
// guest and swaps it in. A dirty /root/repo is a conflict unless force.
func (m *Manager) PrepareWorkspace(ctx context.Context, ref string, tarStream io.Reader, force bool) (api.WorkspaceStatus, error) {
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	t0 := time.Now()
	if !force {
		st, err := m.status(ctx, c)
		if err != nil {
			return api.WorkspaceStatus{}, err
		}
		if st.Dirty {
			return api.WorkspaceStatus{}, api.Errorf(api.CodeConflict, "vm %s: %s has changes not committed in the guest:\n%s\n(commit or pull them first, or replace them with --force)", vm.Name, workspace.GuestDir, st.Changes)
		}
	}
	if _, errOut, code, err := guestRun(ctx, c, "rm", "-rf", workspaceIncoming); err != nil || code != 0 {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "vm %s: clear %s: %v %s", vm.Name, workspaceIncoming, err, errOut)
	}
	t1 := time.Now()
	if err := c.Upload(ctx, workspaceIncoming, tarStream); err != nil {
		_, _, _, _ = guestRun(context.WithoutCancel(ctx), c, "rm", "-rf", workspaceIncoming)
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "vm %s: upload workspace: %v", vm.Name, err)
	}
	t2 := time.Now()
	st, err := m.statusAfter(ctx, c, swapScript(workspace.GuestDir, workspaceIncoming, workspaceOld))
	if err != nil {
		return api.WorkspaceStatus{}, fmt.Errorf("vm %s: %w", vm.Name, err)
	}
	m.log.Info("workspace prepared", logKeyVM, vm.Name, "head", st.Head, "dirty", st.Dirty,
		"check", t1.Sub(t0), "upload", t2.Sub(t1), "install and status", time.Since(t2))
	return st, nil
}

// swapScript puts the tree at incoming in place of dir. The old tree is
// moved aside (to old + a number) and removed in the background: deleting
// thousands of files under software emulation takes seconds nobody needs
// to wait for. A removal cut short is finished by the next swap.
func swapScript(dir, incoming, old string) string {
	return fmt.Sprintf("rm -rf %[3]s* && if [ -e %[1]s ]; then mv %[1]s %[3]s$$; fi && mv %[2]s %[1]s && { setsid -f rm -rf %[3]s$$ >/dev/null 2>&1 </dev/null || true; }",
		dir, incoming, old)
}

// WorkspaceManifest lists VM ref's /root/repo for an incremental prepare
// (see workspace.ManifestScript), checked and bounded: the guest wrote
// it. A VM without a repo has an empty manifest.
func (m *Manager) WorkspaceManifest(ctx context.Context, ref string) ([]api.WorkspaceEntry, error) {
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	// The guest may never answer: bounded in time as in size.
	ctx, cancel := context.WithTimeout(ctx, m.opt.WorkspaceTimeout)
	defer cancel()
	out, errb := &cappedBuffer{max: maxManifest}, &cappedBuffer{max: maxGuestOutput}
	st, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"sh", "-c", workspace.ManifestScript}, Dir: "/root"}, agentclient.ExecIO{Stdout: out, Stderr: errb})
	switch {
	case err != nil:
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: list %s: %v", vm.Name, workspace.GuestDir, err)
	case st.Code == 3:
		return []api.WorkspaceEntry{}, nil
	case st.Code != 0:
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: list %s: exit %d: %s", vm.Name, workspace.GuestDir, st.Code, strings.TrimSpace(errb.b.String()))
	case out.over:
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: %s lists more than %s; prepare it whole", vm.Name, workspace.GuestDir, units.Bytes(maxManifest))
	}
	entries, err := workspace.ParseManifest(out.b.Bytes())
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: %v", vm.Name, err)
	}
	res := make([]api.WorkspaceEntry, len(entries))
	for i, e := range entries {
		res[i] = api.WorkspaceEntry{Path: e.Path, Type: string(e.Type), Size: e.Size, MtimeNS: e.Mtime.UnixNano(), Perm: uint32(e.Perm), Link: e.Link}
	}
	return res, nil
}

// UpdateWorkspace is the incremental prepare: it deletes paths from VM
// ref's /root/repo, then unpacks tarStream (the entries that changed)
// into it in place. A dirty /root/repo is a conflict unless force. An
// update cut short leaves a tree the next prepare completes: it only
// ever replaces what the host holds.
func (m *Manager) UpdateWorkspace(ctx context.Context, ref string, del []string, tarStream io.Reader, force bool) (api.WorkspaceStatus, error) {
	if len(del) > maxDeletes {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeInvalid, "workspace update: %d paths to delete, at most %d", len(del), maxDeletes)
	}
	var list bytes.Buffer
	for _, p := range del {
		if p == "" || p != path.Clean(p) || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") || strings.ContainsRune(p, 0) {
			return api.WorkspaceStatus{}, api.Errorf(api.CodeInvalid, "workspace update: bad path to delete %q", p)
		}
		list.WriteString("./" + p + "\x00")
	}
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	t0 := time.Now()
	st, err := m.status(ctx, c)
	if err != nil {
		return api.WorkspaceStatus{}, err
	}
	if st.Dirty && !force {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeConflict, "vm %s: %s has changes not committed in the guest:\n%s\n(commit or pull them first, or replace them with --force)", vm.Name, workspace.GuestDir, st.Changes)
	}
	t1 := time.Now()
	if list.Len() > 0 {
		errb := &cappedBuffer{max: maxGuestOutput}
		dctx, cancel := context.WithTimeout(ctx, m.opt.WorkspaceTimeout)
		defer cancel()
		res, err := c.Exec(dctx, agent.ExecRequest{Argv: []string{"xargs", "-0", "rm", "-rf", "--"}, Dir: workspace.GuestDir},
			agentclient.ExecIO{Stdin: &list, Stderr: errb})
		if err != nil || res.Code != 0 {
			return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "vm %s: delete in %s: %v %s", vm.Name, workspace.GuestDir, err, strings.TrimSpace(errb.b.String()))
		}
	}
	t2 := time.Now()
	if err := c.Upload(ctx, workspace.GuestDir, tarStream); err != nil {
		return api.WorkspaceStatus{}, api.Errorf(api.CodeUnavailable, "vm %s: upload workspace changes: %v", vm.Name, err)
	}
	t3 := time.Now()
	if st, err = m.status(ctx, c); err != nil {
		return api.WorkspaceStatus{}, err
	}
	m.log.Info("workspace updated", logKeyVM, vm.Name, "head", st.Head, "dirty", st.Dirty, "deleted", len(del),
		"check", t1.Sub(t0), "delete", t2.Sub(t1), "upload", t3.Sub(t2), "status", time.Since(t3))
	return st, nil
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// bundleNothingNew is bundleScript's exit status when the guest's HEAD
// holds no commit the excluded ones do not (git refuses an empty bundle).
const bundleNothingNew = 4

// bundleScript bundles HEAD of /root/repo into $1, leaving out the
// commits given after it that the guest has.
var bundleScript = `out=$1; shift
cd ` + workspace.GuestDir + ` || exit 2
for c in "$@"; do shift; git cat-file -e "$c^{commit}" 2>/dev/null && set -- "$@" "^$c"; done
if git rev-parse -q --verify HEAD >/dev/null && [ -z "$(git rev-list -n 1 HEAD "$@")" ]; then exit ` + strconv.Itoa(bundleNothingNew) + `; fi
git bundle create -q "$out" HEAD "$@"`

// Bundle is a git bundle read from the guest. Close it: that also removes
// the guest's copy.
type Bundle struct {
	// Size is the bundle's length in bytes.
	Size int64
	r    io.Reader
	once sync.Once
	done func()
}

// Read reads the bundle.
func (b *Bundle) Read(p []byte) (int, error) { return b.r.Read(p) }

// Close ends the download and removes the bundle in the guest; later
// calls do nothing.
func (b *Bundle) Close() error {
	b.once.Do(b.done)
	return nil
}

// WorkspaceBundle makes a git bundle of the guest workspace's HEAD in VM
// ref, without what the exclude commits (which the host has) already
// hold. Nothing new to bundle is a conflict.
func (m *Manager) WorkspaceBundle(ctx context.Context, ref string, exclude []string) (*Bundle, error) {
	if len(exclude) > maxExcludes {
		return nil, api.Errorf(api.CodeInvalid, "bundle: at most %d exclude commits", maxExcludes)
	}
	for _, e := range exclude {
		if !commitRE.MatchString(e) {
			return nil, api.Errorf(api.CodeInvalid, "bundle: exclude %q is not a full commit id", e)
		}
	}
	c, vm, err := m.opt.Agents.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	cleanup := func() { _, _, _, _ = guestRun(context.WithoutCancel(ctx), c, "rm", "-f", workspaceBundle) }
	argv := append([]string{"sh", "-c", bundleScript, "sh", workspaceBundle}, exclude...)
	_, errOut, code, err := guestRun(ctx, c, argv...)
	if err != nil {
		cleanup()
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: bundle workspace: %v", vm.Name, err)
	}
	switch code {
	case 0:
	case bundleNothingNew:
		cleanup()
		return nil, api.Errorf(api.CodeConflict, "vm %s: nothing to pull: the host already has the guest's commits", vm.Name)
	default:
		cleanup()
		return nil, api.Errorf(api.CodeInvalid, "vm %s: bundle %s: %s", vm.Name, workspace.GuestDir, strings.TrimSpace(errOut))
	}
	body, err := c.Download(ctx, workspaceBundle)
	if err != nil {
		cleanup()
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: download bundle: %v", vm.Name, err)
	}
	tr := tar.NewReader(body)
	h, err := tr.Next()
	if err != nil || h.Typeflag != tar.TypeReg {
		body.Close()
		cleanup()
		return nil, api.Errorf(api.CodeUnavailable, "vm %s: download bundle: %v", vm.Name, errors.Join(err, errors.New("no bundle file in the answer")))
	}
	return &Bundle{Size: h.Size, r: io.LimitReader(tr, h.Size), done: func() { body.Close(); cleanup() }}, nil
}
