package daemon

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"banger/internal/api"
	"banger/internal/sessionctl"
	"banger/internal/store"
	"banger/internal/stream"
	"banger/internal/vmctl"
)

// sessionRoutes are the session and workspace endpoints of a VM. The
// handlers decode the request, call sessionctl and write its answer.
func (d *Daemon) sessionRoutes() []Route {
	return slices.Concat([]Route{
		{"POST " + api.PathVMSessions, d.handleStartSession},
		{"GET " + api.PathVMSessions, d.handleListSessions},
		{"GET " + api.PathVMSession, d.handleGetSession},
		{"DELETE " + api.PathVMSession, d.handleRemoveSession},
		{"POST " + api.PathVMSessionStop, d.handleStopSession},
		{"GET " + api.PathVMSessionLogs, d.handleSessionLogs},
		{"POST " + api.PathVMSessionAttach, d.handleAttachSession},
	}, d.workspaceRoutes())
}

// newSessions makes the session and workspace manager over the VMs'
// agents.
func (d *Daemon) newSessions() *sessionctl.Manager {
	return sessionctl.New(sessionctl.Options{
		Store:  d.Store,
		Agents: sessionAgents{vms: d.VMs},
		Logger: d.Logger.With("component", "sessionctl"),
	})
}

// sessionAgents gives sessionctl the agents of running VMs; a VM that
// does not run is a conflict.
type sessionAgents struct{ vms *vmctl.Manager }

// Agent returns VM ref's agent.
func (a sessionAgents) Agent(ctx context.Context, ref string) (sessionctl.Guest, store.VM, error) {
	c, vm, err := a.vms.Agent(ctx, ref)
	if errors.Is(err, vmctl.ErrNotRunning) {
		return nil, vm, api.WithCode(api.CodeConflict, err)
	}
	if err != nil {
		return nil, vm, err
	}
	return c, vm, nil
}

func (d *Daemon) handleStartSession(w http.ResponseWriter, r *http.Request) error {
	var req api.StartSessionRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	s, err := d.Sessions.Start(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, s)
}

func (d *Daemon) handleListSessions(w http.ResponseWriter, r *http.Request) error {
	out, err := d.Sessions.List(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetSession(w http.ResponseWriter, r *http.Request) error {
	s, err := d.Sessions.Get(r.Context(), r.PathValue("ref"), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s)
}

func (d *Daemon) handleRemoveSession(w http.ResponseWriter, r *http.Request) error {
	if err := d.Sessions.Remove(r.Context(), r.PathValue("ref"), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (d *Daemon) handleStopSession(w http.ResponseWriter, r *http.Request) error {
	var req api.StopSessionRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	s, err := d.Sessions.Stop(r.Context(), r.PathValue("ref"), r.PathValue("name"), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s)
}

func (d *Daemon) handleSessionLogs(w http.ResponseWriter, r *http.Request) error {
	follow := r.URL.Query().Get("follow") != ""
	body, err := d.Sessions.Logs(r.Context(), r.PathValue("ref"), r.PathValue("name"), follow)
	if err != nil {
		return err
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, stream.ChunkSize)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil
			}
			_ = flush(w)
		}
		if rerr != nil {
			return nil
		}
	}
}

// handleAttachSession bridges an attach stream from the CLI to the
// session in the guest. The CLI closing the stream detaches (the session
// keeps running); the session ending sends the Exit frame, after its exit
// status is recorded.
func (d *Daemon) handleAttachSession(w http.ResponseWriter, r *http.Request) error {
	var replay int64
	if s := r.URL.Query().Get("replay"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return api.Errorf(api.CodeInvalid, "replay %q: want a byte count", s)
		}
		replay = v
	}
	a, err := d.Sessions.Attach(r.Context(), r.PathValue("ref"), r.PathValue("name"), replay)
	if err != nil {
		return err
	}
	conn, err := d.Upgrade(w, r)
	if err != nil {
		return err
	}
	defer conn.Close()
	b := newFrameBridge(r.Context(), conn)
	defer b.close()
	eio := b.execIO()
	eio.Stderr = nil // sessions merge stderr into stdout
	st, err := a.Run(b.ctx, eio)
	if b.ctx.Err() != nil {
		return nil // detached
	}
	if err != nil {
		b.fail(err)
		return nil
	}
	b.exit(st)
	return nil
}
