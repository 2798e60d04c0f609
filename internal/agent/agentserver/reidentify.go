package agentserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"banger/internal/agent"
)

// minTokenLen is the shortest token POST /identity accepts: a guest must
// not be handed (or talk itself into) a guessable one.
const minTokenLen = 32

// handleReidentify gives a restored guest its own identity (POST
// /identity). The new token takes effect for the requests after this one.
func (s *Server) handleReidentify(w http.ResponseWriter, r *http.Request) {
	if s.Reidentify == nil {
		writeError(w, http.StatusNotFound, agent.CodeNotFound, errors.New("this agent cannot take a new identity"))
		return
	}
	var req agent.Reidentify
	if err := json.NewDecoder(io.LimitReader(r.Body, 256<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("decode identity: %w", err))
		return
	}
	if len(req.Identity.Token) < minTokenLen {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("identity: token shorter than %d characters", minTokenLen))
		return
	}
	if len(req.Identity.Files) > 0 {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, errors.New("identity: file_sync entries apply at boot, not here"))
		return
	}
	if err := s.Reidentify(req); err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("apply identity: %w", err))
		return
	}
	tok := req.Identity.Token
	s.token.Store(&tok)
	w.WriteHeader(http.StatusNoContent)
}
