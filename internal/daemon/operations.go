package daemon

import (
	"encoding/json"
	"net/http"

	"banger/internal/api"
)

func (d *Daemon) operationRoutes() []Route {
	return []Route{
		{"GET " + api.PathOperations, d.handleListOperations},
		{"GET " + api.PathOperation, d.handleGetOperation},
		{"GET " + api.PathOperationEvents, d.handleOperationEvents},
		{"POST " + api.PathOperationCancel, d.handleCancelOperation},
	}
}

func (d *Daemon) handleListOperations(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, d.Ops.List())
}

func (d *Daemon) handleGetOperation(w http.ResponseWriter, r *http.Request) error {
	op, err := d.Ops.Lookup(r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, op.Snapshot())
}

// handleOperationEvents streams the operation's events as NDJSON: every
// past one, then live ones, ending after the done event.
func (d *Daemon) handleOperationEvents(w http.ResponseWriter, r *http.Request) error {
	op, err := d.Ops.Lookup(r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", api.ContentTypeNDJSON)
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	err = op.Watch(r.Context(), func(ev api.Event) error {
		if err := enc.Encode(ev); err != nil {
			return err
		}
		return flush(w)
	})
	if err != nil {
		d.Logger.Debug("event stream ended early", "op", op.ID(), logKeyErr, err)
	}
	return nil
}

// handleCancelOperation cancels and answers with the current snapshot;
// the rollback continues in the background and ends the event stream.
func (d *Daemon) handleCancelOperation(w http.ResponseWriter, r *http.Request) error {
	op, err := d.Ops.Lookup(r.PathValue("id"))
	if err != nil {
		return err
	}
	op.Cancel()
	return writeJSON(w, http.StatusAccepted, op.Snapshot())
}
