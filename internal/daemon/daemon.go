// Package daemon is bangerd: it owns the host state (config, SQLite store,
// operations, and, as they are wired in, images, VMs, network and DNS) and
// serves the API of package api over a unix socket.
//
// Shape, for whoever adds a subsystem:
//   - state lives in fields of Daemon; initialise it in
//     startSubsystems and release it in stopSubsystems (subsystems.go);
//   - endpoints are rows of the one route table in routes.go: add a
//     method returning []Route in your own file (vmRoutes in vm.go) and one
//     line to routeTable;
//   - handlers are HandlerFunc: return an error (api.Errorf for a code,
//     store errors are classified in errors.go) and it becomes the JSON
//     error response; long work runs as an operation (d.Ops.Start) and the
//     handler answers with its api.OperationRef;
//   - attach-style endpoints call d.Upgrade and own the returned conn.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/egress"
	"banger/internal/hostnet"
	"banger/internal/imagectl"
	"banger/internal/operation"
	"banger/internal/sessionctl"
	"banger/internal/sshkey"
	"banger/internal/store"
	"banger/internal/vmctl"
)

// Log attribute keys used across the daemon.
const (
	logKeyErr    = "err"
	logKeySocket = "socket"
	logKeyPID    = "pid"
	logKeyPath   = "path"
	logKeyMethod = "method"
	logKeyStatus = "status"
	logKeyTook   = "took"
	logKeyCaller = "caller"
)

// Shutdown budgets: operations get time to roll back, requests to finish.
const (
	opsShutdownTimeout  = 60 * time.Second
	httpShutdownTimeout = 5 * time.Second
)

// Options configure a Daemon before Start. The zero value runs with the
// default paths and the config file they name.
type Options struct {
	// Paths overrides config.DefaultPaths().
	Paths *config.Paths
	// ConfigPath overrides Paths.ConfigFile.
	ConfigPath string
	// LogLevel overrides the config's log_level ("debug", "info", "warn",
	// "error").
	LogLevel string
	// LogWriter receives the JSON log instead of Paths.LogFile.
	LogWriter io.Writer
}

// Daemon is one running bangerd. Fields are set by Start and read-only
// afterwards unless their doc says otherwise.
type Daemon struct {
	opts Options

	// Config is the validated configuration.
	Config *config.Config
	// Paths are the host locations in use.
	Paths config.Paths
	// Logger is the daemon's structured log.
	Logger *slog.Logger
	// Store is the SQLite state.
	Store *store.Store
	// Ops runs long work (VM create, image build).
	Ops *operation.Manager
	// Images makes, finds and removes images; use ImageManager (image.go).
	Images     *imagectl.Manager
	imagesOnce sync.Once

	// VMs runs VM lifecycles (vmsys.go).
	VMs *vmctl.Manager
	// Sessions runs guest sessions and workspaces (session.go).
	Sessions *sessionctl.Manager
	// sshKey and knownHosts are banger's ssh identity and pinned guest
	// host keys.
	sshKey     sshkey.Key
	knownHosts *sshkey.KnownHosts
	// dns serves the .vm zone; hostNet keeps the bridge, NAT and taps.
	dns     *dns.Server
	hostNet *hostnet.Manager
	// egress decides policed VMs' DNS and proxied connections.
	egress *egress.Engine

	// dnsListen is the address the DNS server serves on, "" when it does
	// not serve; set by startSubsystems.
	dnsListen string

	startedAt time.Time
	extra     []Route
	sock      *socket
	server    *http.Server
	logFile   *os.File

	// runCtx ends when shutdown begins; streamCtx ends when long-lived
	// streams (log follow, attach) must let go.
	runCtx       context.Context
	requestStop  context.CancelFunc
	streamCtx    context.Context
	cancelStream context.CancelFunc

	done    chan struct{}
	doneErr error
}

// New returns a Daemon that Start will set up from opts.
func New(opts Options) *Daemon {
	return &Daemon{opts: opts, done: make(chan struct{})}
}

// Run starts the daemon and serves until ctx ends or a client asks it to
// stop, then shuts down gracefully.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	return d.Wait()
}

// AddRoutes adds routes to the table; call before Start. Tests use it to
// mount extra endpoints.
func (d *Daemon) AddRoutes(routes ...Route) { d.extra = append(d.extra, routes...) }

// Start loads the config (an invalid one is an error, and nothing is
// started), prepares the directories and the log, claims the socket,
// opens the store and starts serving in the background. It returns once
// the socket accepts connections. ctx ending stops the daemon.
func (d *Daemon) Start(ctx context.Context) (err error) {
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	if d.opts.Paths != nil {
		d.Paths = *d.opts.Paths
	} else if d.Paths, err = config.DefaultPaths(); err != nil {
		return err
	}
	cfgPath := d.opts.ConfigPath
	if cfgPath == "" {
		cfgPath = d.Paths.ConfigFile
	}
	if d.Config, err = config.Load(cfgPath); err != nil {
		return err
	}
	// Network keys the file leaves out get this instance's values, so a
	// second daemon (another state dir) collides with nothing.
	d.Config.ForInstance(d.Paths)
	level, err := parseLevel(d.opts.LogLevel, d.Config.LogLevel.String())
	if err != nil {
		return err
	}
	if err := d.Paths.Ensure(); err != nil {
		return err
	}
	w := d.opts.LogWriter
	if w == nil {
		f, err := os.OpenFile(d.Paths.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open log %s: %w", d.Paths.LogFile, err)
		}
		d.logFile = f
		cleanup = append(cleanup, func() { f.Close() })
		w = f
	}
	d.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))

	d.sock, err = claimSocket(ctx, d.Paths.Socket, d.Logger)
	if err != nil {
		return err
	}
	cleanup = append(cleanup, d.sock.release)

	if d.Store, err = store.Open(ctx, d.Paths.DB); err != nil {
		return err
	}
	cleanup = append(cleanup, func() { d.Store.Close() })
	d.Ops = operation.NewManager(d.Logger)
	d.Ops.Classify = func(err error) api.Code { return toAPIError(err).Code }
	d.startedAt = time.Now()

	d.runCtx, d.requestStop = context.WithCancel(ctx)
	cleanup = append(cleanup, d.requestStop)
	d.streamCtx, d.cancelStream = context.WithCancel(context.WithoutCancel(ctx))
	cleanup = append(cleanup, d.cancelStream)
	if err := d.startSubsystems(d.runCtx); err != nil {
		return err
	}
	cleanup = append(cleanup, func() { d.stopSubsystems(context.Background()) })

	mux, err := d.buildMux()
	if err != nil {
		return err
	}
	d.server = &http.Server{
		Handler:           mux,
		BaseContext:       func(net.Listener) context.Context { return d.streamCtx },
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.Logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	// Read the listener here, not in the goroutine: a stop that comes
	// before the goroutine runs releases the socket and clears the field.
	ln := d.sock.ln
	go func() { serveErr <- d.server.Serve(ln) }()
	d.Logger.Info("bangerd started",
		logKeyPID, os.Getpid(),
		"version", buildinfo.Version(),
		"build_stamp", buildinfo.BuildStamp(),
		logKeySocket, d.Paths.Socket,
		"config", d.Config.Path,
		"state_dir", d.Paths.StateDir)
	go d.serveUntilStopped(serveErr)
	return nil
}

// Stop asks the daemon to shut down; Wait reports the end.
func (d *Daemon) Stop() {
	if d.requestStop != nil {
		d.requestStop()
	}
}

// Wait blocks until the daemon has shut down and returns the first error
// of serving or shutting down.
func (d *Daemon) Wait() error {
	<-d.done
	return d.doneErr
}

// serveUntilStopped waits for the stop request (or a serve failure) and
// shuts everything down in order: operations roll back (their event
// streams end with the done event), streams are released, requests
// drain, subsystems stop, the store closes, the socket is removed.
func (d *Daemon) serveUntilStopped(serveErr <-chan error) {
	var errs []error
	select {
	case <-d.runCtx.Done():
	case err := <-serveErr:
		errs = append(errs, fmt.Errorf("serve %s: %w", d.Paths.Socket, err))
		d.requestStop()
	}
	d.Logger.Info("bangerd shutting down")
	opsCtx, cancel := context.WithTimeout(context.Background(), opsShutdownTimeout)
	if err := d.Ops.Shutdown(opsCtx); err != nil {
		errs = append(errs, err)
	}
	cancel()
	d.cancelStream()
	httpCtx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	if err := d.server.Shutdown(httpCtx); err != nil {
		d.Logger.Warn("requests still running at shutdown; closing them", logKeyErr, err)
		d.server.Close()
	}
	cancel()
	subCtx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	if err := d.stopSubsystems(subCtx); err != nil {
		errs = append(errs, err)
	}
	cancel()
	if err := d.Store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	d.sock.release()
	d.doneErr = errors.Join(errs...)
	if d.doneErr != nil {
		d.Logger.Error("bangerd stopped with errors", logKeyErr, d.doneErr)
	} else {
		d.Logger.Info("bangerd stopped")
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	close(d.done)
}

// parseLevel picks the log level: flag, else config, else info.
func parseLevel(flag, cfg string) (slog.Level, error) {
	s := flag
	if s == "" {
		s = cfg
	}
	if s == "" {
		return slog.LevelInfo, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToLower(s))); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// status builds the answer of GET /v1/status.
func (d *Daemon) status(ctx context.Context) (api.Status, error) {
	vms, err := d.Store.CountVMs(ctx)
	if err != nil {
		return api.Status{}, err
	}
	images, err := d.Store.CountImages(ctx)
	if err != nil {
		return api.Status{}, err
	}
	return api.Status{
		PID:        os.Getpid(),
		Version:    buildinfo.Version(),
		BuildStamp: buildinfo.BuildStamp(),
		StartedAt:  d.startedAt,
		Socket:     d.Paths.Socket,
		StateDir:   d.Paths.StateDir,
		LogFile:    d.Paths.LogFile,
		ConfigFile: d.Config.Path,
		DNSListen:  d.dnsListen,
		VMs:        vms,
		Images:     images,
		Operations: d.Ops.Running(),
	}, nil
}
