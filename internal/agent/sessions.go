package agent

import "net/http"

// Sessions manages long-lived commands in the guest.
type Sessions struct{}

func (s *Server) sessionRoutes(mux *http.ServeMux) {}
