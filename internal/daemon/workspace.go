package daemon

import (
	"fmt"
	"io"
	"net/http"

	"banger/internal/api"
)

// workspaceRoutes are the /root/repo endpoints of a VM; sessionctl does
// the work.
func (d *Daemon) workspaceRoutes() []Route {
	return []Route{
		{"GET " + api.PathVMWorkspace, d.handleWorkspaceStatus},
		{"PUT " + api.PathVMWorkspace, d.handlePrepareWorkspace},
		{"GET " + api.PathVMWorkspaceBundle, d.handleWorkspaceBundle},
	}
}

func (d *Daemon) handleWorkspaceStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := d.Sessions.WorkspaceStatus(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// handlePrepareWorkspace replaces /root/repo with the request's tar; a
// dirty /root/repo is refused unless force=1.
func (d *Daemon) handlePrepareWorkspace(w http.ResponseWriter, r *http.Request) error {
	force := r.URL.Query().Get("force") != ""
	st, err := d.Sessions.PrepareWorkspace(r.Context(), r.PathValue("ref"), r.Body, force)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// handleWorkspaceBundle answers a git bundle of the guest workspace's
// HEAD without what the exclude commits (the host has) already hold.
func (d *Daemon) handleWorkspaceBundle(w http.ResponseWriter, r *http.Request) error {
	b, err := d.Sessions.WorkspaceBundle(r.Context(), r.PathValue("ref"), r.URL.Query()["exclude"])
	if err != nil {
		return err
	}
	defer b.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(b.Size))
	w.WriteHeader(http.StatusOK)
	if _, err := io.CopyN(w, b, b.Size); err != nil {
		return fmt.Errorf("send bundle: %w", err)
	}
	return nil
}
