// Package agentserver is the guest side of the agent API
// (internal/agent): the HTTP Server banger-agent runs, with exec (pipes or
// a PTY), file transfer, listening ports, ssh host keys and long-lived
// sessions. It runs in the guest only; bangerd never links it (a test in
// internal/guestcontract keeps it so), nor its PTY dependency.
package agentserver

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"banger/internal/agent"
)

// Server is the guest side of the agent API. Serve it on any listener (a
// vsock listener, a yamux session, a unix socket in tests). Fields are
// read when a request arrives; set them before serving.
type Server struct {
	// Token is the bearer token every request must carry. An empty token
	// rejects every request.
	Token string
	// Version is reported by /healthz.
	Version string
	// Logger receives request failures; nil discards.
	Logger *slog.Logger
	// Env is the base environment of executed commands; nil means
	// DefaultEnv().
	Env []string
	// HomeDir is the working directory of commands that name none; empty
	// means /root.
	HomeDir string
	// HostKeyGlob finds the ssh host public keys; empty means
	// /etc/ssh/ssh_host_*_key.pub.
	HostKeyGlob string
	// Sessions manages long-lived sessions; nil disables /sessions.
	Sessions *Sessions
	// SetClock steps the wall clock and AddEntropy feeds the kernel's
	// random pool, for POST /thaw; nil means the real system calls.
	SetClock   func(time.Time) error
	AddEntropy func([]byte) error
	// Reidentify applies a new identity to a guest restored from another
	// VM's memory (POST /identity); nil refuses the endpoint.
	Reidentify func(agent.Reidentify) error

	// token replaces Token once POST /identity succeeded.
	token atomic.Pointer[string]

	identityErr atomic.Pointer[string]
	identitySet atomic.Bool
	// identityEnv is the identity's environment (Identity.Env), added to
	// Env for every command; replaced by each identity applied.
	identityEnv atomic.Pointer[[]string]
}

// SetIdentityEnv sets the environment the VM's identity gives every
// command and session (secret placeholders, CA bundle variables).
func (s *Server) SetIdentityEnv(env []string) {
	c := append([]string(nil), env...)
	s.identityEnv.Store(&c)
}

// SetIdentityResult records the outcome of the boot-time identity apply,
// reported by /healthz.
func (s *Server) SetIdentityResult(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.identityErr.Store(&msg)
	s.identitySet.Store(err == nil)
}

// DefaultEnv is the base environment of commands run by the agent.
func DefaultEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"USER=root",
		"LOGNAME=root",
		"SHELL=/bin/sh",
		"LANG=C.UTF-8",
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Handler returns the HTTP handler of the API, with authentication.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agent.PathHealth, s.handleHealth)
	mux.HandleFunc("POST "+agent.PathExec, s.handleExec)
	mux.HandleFunc("PUT "+agent.PathFiles, s.handleUpload)
	mux.HandleFunc("GET "+agent.PathFiles, s.handleDownload)
	mux.HandleFunc("GET "+agent.PathPorts, s.handlePorts)
	mux.HandleFunc("GET "+agent.PathStats, s.handleStats)
	mux.HandleFunc("GET "+agent.PathHostKeys, s.handleHostKeys)
	mux.HandleFunc("POST "+agent.PathThaw, s.handleThaw)
	mux.HandleFunc("POST "+agent.PathIdentity, s.handleReidentify)
	s.sessionRoutes(mux)
	return s.auth(mux)
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		want := s.Token
		if t := s.token.Load(); t != nil {
			want = *t
		}
		if !ok || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			writeError(w, http.StatusUnauthorized, agent.CodeUnauthorized, errors.New("missing or wrong bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve serves the API on l until ctx ends or l fails. Connections are
// closed when ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	err := hs.Serve(l)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	writeJSON(w, status, agent.ErrorBody{Error: err.Error(), Code: code})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.health(r.Context()))
}

func (s *Server) health(ctx context.Context) agent.Health {
	h := agent.Health{Version: s.Version}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		h.BootID = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if secs, err := strconv.ParseFloat(f[0], 64); err == nil {
				h.Uptime = time.Duration(secs * float64(time.Second))
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		for i := 0; i < 3 && i < len(f); i++ {
			h.Load[i], _ = strconv.ParseFloat(f[i], 64)
		}
	}
	h.Hostname, _ = os.Hostname()
	h.Init = initName()
	if h.Init == "systemd" {
		h.SystemState = systemctl(ctx, "is-system-running")
		h.MultiUser = systemctl(ctx, "is-active", "multi-user.target") == "active"
	} else {
		h.MultiUser = true
	}
	if p := s.identityErr.Load(); p != nil {
		h.IdentityApplied = s.identitySet.Load()
		h.IdentityError = *p
	}
	return h
}

// initName names PID 1: "systemd", "agent" (banger-agent) or its comm.
func initName() string {
	if os.Getpid() == 1 {
		return "agent"
	}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		return "systemd"
	}
	b, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		return ""
	}
	name := strings.TrimSpace(string(b))
	if name == "banger-agent" {
		return "agent"
	}
	return name
}

// systemctl runs a systemctl query and returns its first output line.
func systemctl(ctx context.Context, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "systemctl", args...).Output()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func (s *Server) handleHostKeys(w http.ResponseWriter, r *http.Request) {
	glob := s.HostKeyGlob
	if glob == "" {
		glob = "/etc/ssh/ssh_host_*_key.pub"
	}
	paths, err := filepath.Glob(glob)
	if err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("find host keys: %w", err))
		return
	}
	sort.Strings(paths)
	keys := []string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("read host key: %w", err))
			return
		}
		if line := strings.TrimSpace(string(b)); line != "" {
			keys = append(keys, line)
		}
	}
	writeJSON(w, http.StatusOK, keys)
}

func (s *Server) handlePorts(w http.ResponseWriter, r *http.Request) {
	ports, err := ListPorts("/proc")
	if err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, err)
		return
	}
	writeJSON(w, http.StatusOK, ports)
}
