package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
)

// A CLI newer than a running daemon that is in the middle of another
// terminal's operation uses that daemon as it is: stopping it would roll
// the operation back.
func TestAutostart_BusyOlderDaemonIsNotReplaced(t *testing.T) {
	var stops atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VersionInfo{Version: "old", PID: 1, BuildStamp: time.Unix(1, 0)})
	})
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Status{PID: 1, Operations: 1})
	})
	mux.HandleFunc("POST "+api.PathDaemonStop, func(w http.ResponseWriter, r *http.Request) {
		stops.Add(1)
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET "+api.PathVMs, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]api.VM{{Name: "kept", State: "running"}})
	})
	serveFakeDaemon(t, mux)

	out, errOut, code := runMain(t, "vm", "list")
	if code != 0 || !strings.Contains(out, "kept") {
		t.Fatalf("vm list through the busy daemon: exit %d: %s%s", code, out, errOut)
	}
	if stops.Load() != 0 {
		t.Error("the CLI stopped a daemon that was running an operation")
	}
	if !strings.Contains(errOut, "runs 1 operation(s); using it") || !strings.Contains(errOut, "--replace-daemon") {
		t.Errorf("stderr does not say what happened: %q", errOut)
	}
}
