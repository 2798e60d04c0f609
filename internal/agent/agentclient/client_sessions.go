package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"banger/internal/agent"
)

// StartSession launches a long-lived command under the agent, detached
// from any connection (POST /sessions). It fails with CodeCommandNotFound
// or CodeNoWorkingDir (CodeBadRequest from agents that predate it) before
// anything runs, and with CodeConflict when a session of that name is
// running.
func (c *Client) StartSession(ctx context.Context, req agent.SessionRequest) (agent.SessionInfo, error) {
	var info agent.SessionInfo
	err := c.sendJSON(ctx, http.MethodPost, agent.PathSessions, req, &info)
	return info, err
}

// Sessions lists the guest's sessions, oldest first (GET /sessions).
func (c *Client) Sessions(ctx context.Context) ([]agent.SessionInfo, error) {
	var list []agent.SessionInfo
	err := c.getJSON(ctx, agent.PathSessions, &list)
	return list, err
}

// Session describes one session (GET /sessions/{name}).
func (c *Client) Session(ctx context.Context, name string) (agent.SessionInfo, error) {
	var info agent.SessionInfo
	err := c.getJSON(ctx, agent.PathSessions+"/"+url.PathEscape(name), &info)
	return info, err
}

// SignalSession delivers a signal ("TERM", "KILL", "INT", a number) to
// the session's process group (POST /sessions/{name}/signal).
func (c *Client) SignalSession(ctx context.Context, name, signal string) error {
	return c.sendJSON(ctx, http.MethodPost, agent.PathSessions+"/"+url.PathEscape(name)+"/signal", agent.SignalRequest{Signal: signal}, nil)
}

// RemoveSession forgets an ended session and deletes its log
// (DELETE /sessions/{name}).
func (c *Client) RemoveSession(ctx context.Context, name string) error {
	return c.sendJSON(ctx, http.MethodDelete, agent.PathSessions+"/"+url.PathEscape(name), nil, nil)
}

// SessionLogs returns the session's kept output (GET
// /sessions/{name}/log). With follow, the stream continues until the
// session ends or ctx is cancelled; without it, it ends at the current
// end of the log and stalls longer than IdleTimeout abort it.
func (c *Client) SessionLogs(ctx context.Context, name string, follow bool) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	q := url.Values{}
	idle := durOr(c.IdleTimeout, DefaultIdleTimeout)
	if follow {
		q.Set("follow", "1")
		idle = 1<<63 - 1 // a followed session may be silent for hours
	}
	it := newIdleTimer(idle, cancel)
	req, err := c.newRequest(ctx, http.MethodGet, agent.PathSessions+"/"+url.PathEscape(name)+"/log", q, nil)
	if err != nil {
		it.stop()
		cancel()
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		it.stop()
		cancel()
		return nil, fmt.Errorf("session %s logs: %w", name, err)
	}
	return &downloadBody{resp: resp, idle: it, cancel: cancel, path: "session " + name + " log"}, nil
}

// AttachOptions tunes AttachSession.
type AttachOptions struct {
	// Replay is how many bytes of earlier output to send first (bounded
	// by what the log keeps).
	Replay int64
}

// AttachSession bridges eio to a running session (POST
// /sessions/{name}/attach upgraded to frames): its output (stdout and
// stderr merged) to eio.Stdout, eio.Stdin to its input, resizes and
// signals to it. Cancelling ctx detaches and leaves the session running;
// AttachSession then returns ctx's error. When the session exits (or had
// already exited) it returns its exit status.
func (c *Client) AttachSession(ctx context.Context, name string, opts AttachOptions, eio ExecIO) (agent.ExitStatus, error) {
	hctx, hcancel := context.WithTimeout(ctx, durOr(c.HeaderTimeout, DefaultHeaderTimeout))
	defer hcancel()
	q := url.Values{}
	if opts.Replay > 0 {
		q.Set("replay", strconv.FormatInt(opts.Replay, 10))
	}
	req, err := c.newRequest(hctx, http.MethodPost, agent.PathSessions+"/"+url.PathEscape(name)+"/attach", q, nil)
	if err != nil {
		return agent.ExitStatus{}, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", agent.UpgradeProtocol)
	resp, err := c.do(req)
	if err != nil {
		return agent.ExitStatus{}, fmt.Errorf("attach %s: %w", name, err)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return agent.ExitStatus{}, fmt.Errorf("attach %s: agent answered %s instead of switching protocols", name, resp.Status)
	}
	defer rwc.Close()
	return runExecStream(ctx, newStreamConn(rwc), rwc, eio, 0, "attach "+name)
}

// sendJSON performs a bounded request with an optional JSON body and
// answer.
func (c *Client) sendJSON(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := withDefaultTimeout(ctx, durOr(c.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.doJSON(req, out)
}
