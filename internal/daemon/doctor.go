package daemon

import (
	"context"
	"net/http"
	"os"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/doctor"
	"banger/internal/hostcap"
)

func (d *Daemon) doctorRoutes() []Route {
	return []Route{
		{"GET " + api.PathDoctor, d.handleDoctor},
	}
}

// handleDoctor runs the host checks here, where VMs run: the same probes
// choose the VMM, so `banger doctor` and `vm create` agree.
func (d *Daemon) handleDoctor(w http.ResponseWriter, r *http.Request) error {
	host, _ := config.ProbeHost() // zero fields fall back to built-ins
	in := doctor.Input{
		Config: d.Config,
		Paths:  d.Paths,
		Host:   host,
		DefaultImage: func(ctx context.Context) (string, string) {
			return d.ImageManager().DefaultImageState(ctx)
		},
	}
	if self, err := os.Executable(); err == nil {
		in.BangerdPath = self
	}
	return writeJSON(w, http.StatusOK, doctor.Run(r.Context(), hostcap.Real(), in))
}
