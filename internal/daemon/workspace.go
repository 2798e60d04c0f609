package daemon

import (
	"encoding/binary"
	"encoding/json"
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
		{"GET " + api.PathVMWorkspaceManifest, d.handleWorkspaceManifest},
	}
}

func (d *Daemon) handleWorkspaceStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := d.Sessions.WorkspaceStatus(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// handleWorkspaceManifest lists the guest's /root/repo.
func (d *Daemon) handleWorkspaceManifest(w http.ResponseWriter, r *http.Request) error {
	m, err := d.Sessions.WorkspaceManifest(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, m)
}

// maxDeleteList bounds the JSON list of paths an incremental prepare
// deletes.
const maxDeleteList = 64 << 20

// handlePrepareWorkspace replaces /root/repo with the request's tar, or
// with delta=1 updates it in place (see api.Client.UpdateWorkspace); a
// dirty /root/repo is refused unless force=1.
func (d *Daemon) handlePrepareWorkspace(w http.ResponseWriter, r *http.Request) error {
	force := r.URL.Query().Get("force") != ""
	if r.URL.Query().Get("delta") != "" {
		var n [4]byte
		if _, err := io.ReadFull(r.Body, n[:]); err != nil {
			return api.Errorf(api.CodeInvalid, "workspace update: read the delete list's length: %v", err)
		}
		size := binary.BigEndian.Uint32(n[:])
		if size > maxDeleteList {
			return api.Errorf(api.CodeInvalid, "workspace update: delete list of %d bytes, at most %d", size, maxDeleteList)
		}
		list := make([]byte, size)
		if _, err := io.ReadFull(r.Body, list); err != nil {
			return api.Errorf(api.CodeInvalid, "workspace update: read the delete list: %v", err)
		}
		var del []string
		if err := json.Unmarshal(list, &del); err != nil {
			return api.Errorf(api.CodeInvalid, "workspace update: delete list: %v", err)
		}
		st, err := d.Sessions.UpdateWorkspace(r.Context(), r.PathValue("ref"), del, r.Body, force)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, st)
	}
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
