package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"banger/internal/api"
)

// HandlerFunc serves one API request. A returned error becomes the JSON
// api.Error response (when nothing was written yet) with the status of
// its code; see errors.go for how errors are classified.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Route binds a ServeMux pattern such as "GET /v1/operations/{id}" to a
// handler.
type Route struct {
	Pattern string
	Handler HandlerFunc
}

// routeTable is every endpoint of the daemon. Each area contributes a
// method returning its routes from its own file; add a line here for a new
// area.
func (d *Daemon) routeTable() []Route {
	return slices.Concat(
		d.daemonRoutes(),    // daemon.go handlers: version, status, stop, logs
		d.operationRoutes(), // operations: get, list, events, cancel
		d.imageRoutes(),     // image.go: list, show, rm, export, build, pull, import
		d.vmRoutes(),        // vm.go: lifecycle and guest access
		d.snapshotRoutes(),  // snapshot.go: named snapshots and fork
		d.netRoutes(),       // net.go: egress policy and flow log
		d.sessionRoutes(),   // session.go, workspace.go: sessions and /root/repo
		d.doctorRoutes(),    // doctor.go: host checks
		d.extra,             // AddRoutes (tests)
	)
}

// maxRequestBody bounds JSON request bodies.
const maxRequestBody = 1 << 20

func (d *Daemon) buildMux() (mux *http.ServeMux, err error) {
	mux = http.NewServeMux()
	defer func() {
		// ServeMux panics on conflicting patterns: report it as an error.
		if r := recover(); r != nil {
			err = fmt.Errorf("build routes: %v", r)
		}
	}()
	for _, rt := range d.routeTable() {
		mux.Handle(rt.Pattern, d.wrap(rt.Pattern, rt.Handler))
	}
	mux.Handle("/", d.wrap("/", func(w http.ResponseWriter, r *http.Request) error {
		return api.Errorf(api.CodeNotFound, "no endpoint %s %s (is the CLI newer than bangerd?)", r.Method, r.URL.Path)
	}))
	return mux, nil
}

// wrap adapts a HandlerFunc: it writes returned errors and logs the
// request.
func (d *Daemon) wrap(pattern string, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		caller := r.Header.Get(api.HeaderCaller)
		rec := &recorder{ResponseWriter: w}
		err := h(rec, r)
		if err != nil {
			e := toAPIError(err)
			if rec.status == 0 && !rec.hijacked {
				writeJSON(rec, e.Code.HTTPStatus(), e)
			}
			level := levelFor(e.Code)
			d.Logger.Log(r.Context(), level, "request failed", logKeyMethod, r.Method, logKeyPath, r.URL.Path, logKeyStatus, rec.status, logKeyCaller, caller, logKeyErr, err)
			return
		}
		// A named caller (an MCP tool call) is logged at info, so the log
		// holds every call a coding agent made.
		level := slog.LevelDebug
		if caller != "" {
			level = slog.LevelInfo
		}
		d.Logger.Log(r.Context(), level, "request", logKeyMethod, r.Method, logKeyPath, r.URL.Path, logKeyStatus, rec.status, logKeyCaller, caller, logKeyTook, time.Since(start))
	})
}

// recorder remembers the status written and whether the connection was
// taken over; Unwrap lets http.ResponseController reach Flush and Hijack.
type recorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeJSON writes v as the JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	return nil
}

// readJSON decodes the request body into v strictly (unknown fields are
// an invalid-request error).
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return api.Errorf(api.CodeInvalid, "%s %s: empty request body", r.Method, r.URL.Path)
		}
		return api.Errorf(api.CodeInvalid, "%s %s: decode body: %w", r.Method, r.URL.Path, err)
	}
	return nil
}

// flush pushes buffered response bytes to the client.
func flush(w http.ResponseWriter) error {
	return http.NewResponseController(w).Flush()
}
