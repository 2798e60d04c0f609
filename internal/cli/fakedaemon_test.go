package cli

import (
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

// serveFakeDaemon serves mux as bangerd on a real unix socket for the
// test's length and points the CLI at it (BANGER_SOCKET). mux answers the
// version probe itself: a newer stamp than the CLI's keeps the CLI from
// replacing it.
func serveFakeDaemon(t *testing.T, mux *http.ServeMux) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	t.Setenv("BANGER_SOCKET", sock)
}
