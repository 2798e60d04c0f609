package api

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Session and workspace endpoints. {ref} is a VM, {name} a session name.
const (
	PathVMSessions        = "/v1/vms/{ref}/sessions"
	PathVMSession         = "/v1/vms/{ref}/sessions/{name}"
	PathVMSessionStop     = "/v1/vms/{ref}/sessions/{name}/stop"
	PathVMSessionLogs     = "/v1/vms/{ref}/sessions/{name}/logs"
	PathVMSessionAttach   = "/v1/vms/{ref}/sessions/{name}/attach"
	PathVMWorkspace       = "/v1/vms/{ref}/workspace"
	PathVMWorkspaceBundle = "/v1/vms/{ref}/workspace/bundle"
	// PathVMWorkspaceManifest lists the guest's /root/repo (GET) for an
	// incremental prepare.
	PathVMWorkspaceManifest = "/v1/vms/{ref}/workspace/manifest"
)

// Session states as the API reports them.
const (
	SessionStarting = "starting" // recorded, the agent has not confirmed it
	SessionRunning  = "running"
	SessionExited   = "exited"
	SessionFailed   = "failed" // never launched; Diagnostics says why
	SessionLost     = "lost"   // the guest no longer knows it (rebooted)
	SessionUnknown  = "unknown"
)

// Session is a long-lived command run by the guest agent: durable metadata
// from the daemon's store merged with the live state the guest reports.
type Session struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Cwd     string   `json:"cwd"`
	// EnvNames are the names of the extra environment variables; values
	// are never stored.
	EnvNames    []string   `json:"env_names,omitempty"`
	PTY         bool       `json:"pty"`
	State       string     `json:"state"`
	PID         int        `json:"pid,omitempty"`
	StartedAt   time.Time  `json:"started_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	ExitCode    *int       `json:"exit_code,omitempty"`
	Signal      string     `json:"signal,omitempty"`
	Diagnostics string     `json:"diagnostics,omitempty"`
	OutputBytes int64      `json:"output_bytes"`
}

// StartSessionRequest launches a session. Name may be empty (the daemon
// picks "s1", "s2", ...). Env holds KEY=VALUE entries.
type StartSessionRequest struct {
	Name string   `json:"name,omitempty"`
	Argv []string `json:"argv"`
	Cwd  string   `json:"cwd,omitempty"`
	Env  []string `json:"env,omitempty"`
	PTY  bool     `json:"pty,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
}

// StopSessionRequest signals a session ("TERM" when empty) and waits up to
// WaitSeconds (0 means 10) for it to exit.
type StopSessionRequest struct {
	Signal      string `json:"signal,omitempty"`
	WaitSeconds int    `json:"wait_seconds,omitempty"`
}

// WorkspaceStatus describes /root/repo in a guest.
type WorkspaceStatus struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	// Git says Path is a git work tree.
	Git bool `json:"git"`
	// Dirty says there are uncommitted changes (or, without git, any
	// content at all); Changes holds `git status --porcelain` (bounded).
	Dirty   bool   `json:"dirty"`
	Changes string `json:"changes,omitempty"`
	// Head is the commit checked out, "" without commits; Branch its
	// branch, "" when detached.
	Head   string `json:"head,omitempty"`
	Branch string `json:"branch,omitempty"`
}

func sessionPath(pattern, ref, name string) string {
	return strings.Replace(vmPath(pattern, ref), "{name}", url.PathEscape(name), 1)
}

// StartSession launches a session in the VM's guest.
func (c *Client) StartSession(ctx context.Context, ref string, req StartSessionRequest) (Session, error) {
	var out Session
	err := c.Do(ctx, http.MethodPost, vmPath(PathVMSessions, ref), req, &out)
	return out, err
}

// Sessions lists the VM's sessions, oldest first.
func (c *Client) Sessions(ctx context.Context, ref string) ([]Session, error) {
	var out []Session
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMSessions, ref), nil, &out)
	return out, err
}

// Session returns one session.
func (c *Client) Session(ctx context.Context, ref, name string) (Session, error) {
	var out Session
	err := c.Do(ctx, http.MethodGet, sessionPath(PathVMSession, ref, name), nil, &out)
	return out, err
}

// StopSession signals a session and returns it after it exited or the
// wait ran out.
func (c *Client) StopSession(ctx context.Context, ref, name string, req StopSessionRequest) (Session, error) {
	var out Session
	err := c.Do(ctx, http.MethodPost, sessionPath(PathVMSessionStop, ref, name), req, &out)
	return out, err
}

// RemoveSession forgets an ended session and its guest log.
func (c *Client) RemoveSession(ctx context.Context, ref, name string) error {
	return c.Do(ctx, http.MethodDelete, sessionPath(PathVMSession, ref, name), nil, nil)
}

// SessionLogs streams the session's kept output; with follow it continues
// until the session ends or ctx does.
func (c *Client) SessionLogs(ctx context.Context, ref, name string, follow bool) (io.ReadCloser, error) {
	p := sessionPath(PathVMSessionLogs, ref, name)
	if follow {
		p += "?follow=1"
	}
	return c.Stream(ctx, http.MethodGet, p, nil)
}

// AttachSession attaches to a running session and returns the upgraded
// connection: Stdout frames carry its output (starting replay bytes back),
// Stdin, Resize and Signal frames go to it, an Exit frame ends it when the
// session exits. Closing the connection detaches.
func (c *Client) AttachSession(ctx context.Context, ref, name string, replay int64) (net.Conn, error) {
	p := sessionPath(PathVMSessionAttach, ref, name)
	if replay > 0 {
		p += "?replay=" + strconv.FormatInt(replay, 10)
	}
	return c.Upgrade(ctx, http.MethodPost, p, nil)
}

// WorkspaceStatus reports on /root/repo in the guest.
func (c *Client) WorkspaceStatus(ctx context.Context, ref string) (WorkspaceStatus, error) {
	var out WorkspaceStatus
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMWorkspace, ref), nil, &out)
	return out, err
}

// PrepareWorkspace replaces /root/repo in the guest with the tar stream
// (entries relative to the repository root). A dirty /root/repo is a
// conflict unless force.
func (c *Client) PrepareWorkspace(ctx context.Context, ref string, tarStream io.Reader, force bool) (WorkspaceStatus, error) {
	p := vmPath(PathVMWorkspace, ref)
	if force {
		p += "?force=1"
	}
	return c.putWorkspace(ctx, p, tarStream)
}

// putWorkspace sends a workspace body to p.
func (c *Client) putWorkspace(ctx context.Context, p string, body io.Reader) (WorkspaceStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+defaultDaemonAddress+p, body)
	if err != nil {
		return WorkspaceStatus{}, err
	}
	stampCaller(req)
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.http().Do(req)
	if err != nil {
		var de *DialError
		if errors.As(err, &de) {
			return WorkspaceStatus{}, de
		}
		return WorkspaceStatus{}, fmt.Errorf("prepare workspace: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return WorkspaceStatus{}, ReadError(resp)
	}
	var out WorkspaceStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("prepare workspace: %w", err)
	}
	return out, nil
}

// WorkspaceEntry is one entry of the guest's /root/repo, for an
// incremental prepare: the host sends only what differs.
type WorkspaceEntry struct {
	Path    string `json:"path"`
	Type    string `json:"type"` // "f" file, "d" directory, "l" symlink
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Perm    uint32 `json:"perm"`
	Link    string `json:"link,omitempty"`
}

// WorkspaceManifest lists the guest's /root/repo (empty when there is
// none).
func (c *Client) WorkspaceManifest(ctx context.Context, ref string) ([]WorkspaceEntry, error) {
	var out []WorkspaceEntry
	err := c.Do(ctx, http.MethodGet, vmPath(PathVMWorkspaceManifest, ref), nil, &out)
	return out, err
}

// MaxWorkspaceDeletes bounds the paths one UpdateWorkspace may delete.
const MaxWorkspaceDeletes = 1 << 20

// UpdateWorkspace is the incremental prepare: the guest deletes the paths
// in del from /root/repo, then unpacks the tar stream (the entries that
// changed) into it in place. The request body is the JSON list of paths,
// its length first as 4 bytes big-endian, then the tar.
func (c *Client) UpdateWorkspace(ctx context.Context, ref string, del []string, tarStream io.Reader, force bool) (WorkspaceStatus, error) {
	list, err := json.Marshal(del)
	if err != nil {
		return WorkspaceStatus{}, err
	}
	head := binary.BigEndian.AppendUint32(nil, uint32(len(list)))
	body := io.MultiReader(bytes.NewReader(head), bytes.NewReader(list), tarStream)
	q := "?delta=1"
	if force {
		q += "&force=1"
	}
	return c.putWorkspace(ctx, vmPath(PathVMWorkspace, ref)+q, body)
}

// WorkspaceBundle returns a git bundle of the guest workspace's HEAD,
// leaving out what the commits in exclude (that the guest has) already
// hold.
func (c *Client) WorkspaceBundle(ctx context.Context, ref string, exclude []string) (io.ReadCloser, error) {
	p := vmPath(PathVMWorkspaceBundle, ref)
	if len(exclude) > 0 {
		p += "?" + url.Values{"exclude": exclude}.Encode()
	}
	return c.Stream(ctx, http.MethodGet, p, nil)
}
