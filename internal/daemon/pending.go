package daemon

import (
	"net/http"

	"banger/internal/api"
)

// pendingRoutes answers endpoints the CLI already calls but whose
// implementation has not landed, with a clear not-implemented error.
// Remove a row when its area adds the real route.
func (d *Daemon) pendingRoutes() []Route {
	return []Route{
		{"POST " + api.PathVMs, func(w http.ResponseWriter, r *http.Request) error {
			var req api.CreateVMRequest
			if err := readJSON(r, &req); err != nil {
				return err
			}
			return api.Errorf(api.CodeNotImplemented, "vm create is not implemented yet in this bangerd")
		}},
	}
}
