package agentserver

import (
	"banger/internal/agent"
	"banger/internal/tarfs"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
)

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	dir := r.URL.Query().Get("dir")
	if !filepath.IsAbs(dir) {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("dir %q: want an absolute guest path", dir))
		return
	}
	if err := tarfs.Extract(dir, r.Body, os.Geteuid() == 0); err != nil {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if !filepath.IsAbs(p) {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("path %q: want an absolute guest path", p))
		return
	}
	p = filepath.Clean(p)
	if _, err := os.Lstat(p); err != nil {
		status, code := http.StatusBadRequest, agent.CodeBadRequest
		if errors.Is(err, fs.ErrNotExist) {
			status, code = http.StatusNotFound, agent.CodeNotFound
		}
		writeError(w, status, code, fmt.Errorf("stat %s: %w", p, err))
		return
	}
	w.Header().Set("Trailer", agent.ErrorTrailer)
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if err := tarfs.Write(w, p, false); err != nil {
		w.Header().Set(agent.ErrorTrailer, err.Error())
		s.logger().Warn("download failed", "path", p, "err", err)
	}
}
