package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// hostileDaemon answers the guest-facing reads with what a hostile guest
// would put there: escape sequences that retitle the terminal, clear the
// screen, write the clipboard or make the terminal answer on its input.
func hostileDaemon(t *testing.T) {
	t.Helper()
	const evil = "\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZXZpbA==\x07\x1bP+q544e\x1b\\"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VersionInfo{Version: "test", PID: 1, BuildStamp: time.Now().Add(time.Hour)})
	})
	mux.HandleFunc("GET "+api.PathVMLogs, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("[    0.1] boot\r\n" + evil + "login:\n"))
	})
	mux.HandleFunc("GET "+api.PathVMPorts, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]api.Port{{Proto: "tcp", Address: "0.0.0.0", Port: 22, PID: 7, Process: "sshd" + evil}})
	})
	mux.HandleFunc("GET "+api.PathVMHealth, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Health{AgentVersion: "1" + evil, Hostname: "h\x1b[31m", BootID: "b\r\n", Systemd: "running" + evil})
	})
	serveFakeDaemon(t, mux)
}

func TestGuestTextIsSanitised(t *testing.T) {
	hostileDaemon(t)
	for _, args := range [][]string{
		{"vm", "logs", "x"},
		{"vm", "ports", "x"},
		{"vm", "health", "x"},
	} {
		out, errOut, code := runMain(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		if strings.ContainsAny(out, "\x1b\x07\r") {
			t.Errorf("%v printed control bytes: %q", args, out)
		}
		if !strings.Contains(out, map[string]string{"logs": "login:", "ports": "sshd", "health": "running"}[args[1]]) {
			t.Errorf("%v lost the text: %q", args, out)
		}
	}
	// --raw is the explicit way to get the bytes.
	out, _, _ := runMain(t, "vm", "logs", "--raw", "x")
	if !strings.Contains(out, "\x1b]0;pwned") {
		t.Errorf("--raw filtered the log: %q", out)
	}
}
