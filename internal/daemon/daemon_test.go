package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/stream"
)

// testConfig is the config of test daemons.
const testConfig = "[network]\ndns_listen = \"127.0.0.1:0\"\n"

// testPaths returns Paths under fresh temporary directories. The socket
// lives in a short directory: unix socket paths are limited to 108 bytes.
func testPaths(t *testing.T) config.Paths {
	t.Helper()
	root := t.TempDir()
	rt, err := os.MkdirTemp("", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rt) })
	state := filepath.Join(root, "state")
	data := filepath.Join(root, "data")
	// Serve DNS on a free port: tests run side by side.
	if err := os.WriteFile(filepath.Join(root, "config.toml"), []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Paths{
		ConfigFile: filepath.Join(root, "config.toml"),
		StateDir:   state,
		RuntimeDir: rt,
		Socket:     filepath.Join(rt, "bangerd.sock"),
		DataDir:    data,
		SSHDir:     filepath.Join(data, "ssh"),
		CacheDir:   filepath.Join(root, "cache"),
		DB:         filepath.Join(state, "banger.db"),
		LogFile:    filepath.Join(state, "bangerd.log"),
		ImagesDir:  filepath.Join(state, "images"),
		VMsDir:     filepath.Join(state, "vms"),
	}
}

// startDaemon starts an in-process daemon on p with extra routes and
// stops it at the end of the test.
func startDaemon(t *testing.T, p config.Paths, routes ...Route) (*Daemon, *api.Client) {
	t.Helper()
	d := New(Options{Paths: &p, LogLevel: "debug"})
	d.AddRoutes(routes...)
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		d.Stop()
		if err := d.Wait(); err != nil {
			t.Errorf("daemon stopped with error: %v", err)
		}
	})
	return d, &api.Client{Socket: p.Socket}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDaemon_VersionAndStatus(t *testing.T) {
	p := testPaths(t)
	_, c := startDaemon(t, p)
	ctx := testCtx(t)
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.PID != os.Getpid() || v.Version != buildinfo.Version() || !v.BuildStamp.Equal(buildinfo.BuildStamp()) {
		t.Errorf("Version = %+v, want pid %d version %s stamp %v", v, os.Getpid(), buildinfo.Version(), buildinfo.BuildStamp())
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.DNSListen == "" {
		t.Errorf("Status.DNSListen is empty: the DNS server does not serve")
	}
	want := api.Status{
		PID: os.Getpid(), Version: buildinfo.Version(), BuildStamp: st.BuildStamp, StartedAt: st.StartedAt,
		Socket: p.Socket, StateDir: p.StateDir, LogFile: p.LogFile, ConfigFile: p.ConfigFile, DNSListen: st.DNSListen,
	}
	if st != want {
		t.Errorf("Status = %+v\nwant     %+v", st, want)
	}
	if time.Since(st.StartedAt) > time.Minute {
		t.Errorf("StartedAt %v is not recent", st.StartedAt)
	}
	for _, f := range []string{p.DB, p.LogFile} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("daemon did not create %s: %v", f, err)
		}
	}
}

func TestDaemon_SocketMode(t *testing.T) {
	p := testPaths(t)
	startDaemon(t, p)
	fi, err := os.Stat(p.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

func TestDaemon_ErrorCodes(t *testing.T) {
	p := testPaths(t)
	_, c := startDaemon(t, p, Route{"POST /v1/test/error/{kind}", func(w http.ResponseWriter, r *http.Request) error {
		switch r.PathValue("kind") {
		case "store-conflict":
			return fmt.Errorf("create vm web: %w", store.ErrConflict)
		case "store-notfound":
			return fmt.Errorf("get vm x: %w", &store.NotFoundError{Kind: "vm", Ref: "x"})
		case "body":
			var req struct{ Name string }
			return readJSON(r, &req)
		case "unavailable":
			return api.Errorf(api.CodeUnavailable, "qemu: %w", errors.New("not installed"))
		}
		return errors.New("disk on fire")
	}})
	ctx := testCtx(t)
	get := func(path string) error { return c.Do(ctx, http.MethodPost, path, nil, nil) }
	for _, tc := range []struct {
		name    string
		call    func() error
		want    error
		message string
	}{
		{"unknown operation", func() error { _, err := c.Operation(ctx, "op-missing"); return err }, api.ErrNotFound, "operation op-missing not found"},
		{"cancel unknown operation", func() error { return c.CancelOperation(ctx, "op-missing") }, api.ErrNotFound, "operation op-missing not found"},
		{"unknown endpoint", func() error { return get("/v1/nope") }, api.ErrNotFound, "no endpoint POST /v1/nope"},
		{"bad body", func() error {
			return c.Do(ctx, http.MethodPost, "/v1/test/error/body", map[string]int{"bogus": 1}, nil)
		}, api.ErrInvalid, `unknown field "bogus"`},
		{"empty body", func() error { return get("/v1/test/error/body") }, api.ErrInvalid, "empty request body"},
		{"store conflict", func() error { return get("/v1/test/error/store-conflict") }, api.ErrConflict, "create vm web: conflict"},
		{"store not found", func() error { return get("/v1/test/error/store-notfound") }, api.ErrNotFound, `vm "x" not found`},
		{"coded", func() error { return get("/v1/test/error/unavailable") }, api.ErrUnavailable, "qemu: not installed"},
		{"plain", func() error { return get("/v1/test/error/plain") }, api.ErrInternal, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v (code %q), want code %q", err, api.CodeOf(err), tc.want.(*api.Error).Code)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q does not contain %q", err, tc.message)
			}
		})
	}
}

// slowOpRoute starts an operation that waits in stage "boot" until
// canceled; its rollback steps report on rolled.
func slowOpRoute(d **Daemon, rolled chan<- string) Route {
	return Route{"POST /v1/test/op", func(w http.ResponseWriter, r *http.Request) error {
		op := (*d).Ops.Start("test.slow", func(ctx context.Context, op *operation.Op) (any, error) {
			op.Plan("image", "boot", "agent")
			op.Do("image", func(s *operation.Stage) error { s.Detail("cached"); return nil })
			op.OnRollback(func(ctx context.Context) error { rolled <- "disks"; return nil })
			op.Stage("boot")
			op.OnRollback(func(ctx context.Context) error {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rolled <- "vmm"
				return nil
			})
			<-ctx.Done()
			return nil, fmt.Errorf("wait for boot: %w", ctx.Err())
		})
		return writeJSON(w, http.StatusAccepted, op.Ref())
	}}
}

func eventSummary(ev api.Event) string {
	switch ev.Type {
	case api.EventStage:
		return ev.Stage.Name + ":" + string(ev.Stage.State)
	case api.EventDone:
		return "done:" + string(ev.State)
	}
	return string(ev.Type) + ":" + ev.Message
}

func TestDaemon_OperationEventsCancelRollback(t *testing.T) {
	p := testPaths(t)
	rolled := make(chan string, 4)
	var d *Daemon
	d, c := startDaemon(t, p, slowOpRoute(&d, rolled))
	ctx := testCtx(t)
	var ref api.OperationRef
	if err := c.Do(ctx, http.MethodPost, "/v1/test/op", nil, &ref); err != nil {
		t.Fatalf("start op: %v", err)
	}
	events, err := c.OperationEvents(ctx, ref.ID)
	if err != nil {
		t.Fatalf("OperationEvents: %v", err)
	}
	defer events.Close()
	var got []string
	for {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("Next: %v (so far %v)", err, got)
		}
		got = append(got, eventSummary(ev))
		if got[len(got)-1] == "boot:running" {
			break
		}
	}
	if err := c.CancelOperation(ctx, ref.ID); err != nil {
		t.Fatalf("CancelOperation: %v", err)
	}
	var done api.Event
	for {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("Next after cancel: %v (so far %v)", err, got)
		}
		got = append(got, eventSummary(ev))
		if ev.Type == api.EventDone {
			done = ev
			break
		}
	}
	want := []string{
		"image:pending", "boot:pending", "agent:pending",
		"image:running", "image:running", "image:done",
		"boot:running", "boot:failed",
		"rollback:running", "rollback:done",
		"agent:skipped", "done:canceled",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events:\n got %v\nwant %v", got, want)
	}
	if !errors.Is(done.Error, api.ErrCanceled) {
		t.Errorf("done error %v, want canceled", done.Error)
	}
	if _, err := events.Next(); err != io.EOF {
		t.Errorf("Next after done = %v, want io.EOF", err)
	}
	close(rolled)
	var order []string
	for s := range rolled {
		order = append(order, s)
	}
	if strings.Join(order, ",") != "vmm,disks" {
		t.Errorf("rollback order %v, want [vmm disks]", order)
	}

	// A late subscriber over the socket replays the same history.
	var replay []string
	final, err := c.WaitOperation(ctx, ref.ID, func(ev api.Event) error {
		replay = append(replay, eventSummary(ev))
		return nil
	})
	if !errors.Is(err, api.ErrCanceled) || final.Type != api.EventDone {
		t.Errorf("WaitOperation = %v, %v; want the canceled done event", final.Type, err)
	}
	if strings.Join(replay, " ") != strings.Join(want, " ") {
		t.Errorf("replay:\n got %v\nwant %v", replay, want)
	}
	snap, err := c.Operation(ctx, ref.ID)
	if err != nil || snap.State != api.OpCanceled || len(snap.Stages) != 4 {
		t.Errorf("Operation = %+v, %v; want canceled with 4 stages", snap, err)
	}
}

func TestDaemon_ShutdownEndsOperations(t *testing.T) {
	p := testPaths(t)
	rolled := make(chan string, 4)
	d := New(Options{Paths: &p})
	d.AddRoutes(slowOpRoute(&d, rolled))
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := &api.Client{Socket: p.Socket}
	ctx := testCtx(t)
	var ref api.OperationRef
	if err := c.Do(ctx, http.MethodPost, "/v1/test/op", nil, &ref); err != nil {
		t.Fatal(err)
	}
	events, err := c.OperationEvents(ctx, ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	if err := c.StopDaemon(ctx); err != nil {
		t.Fatalf("StopDaemon: %v", err)
	}
	var last api.Event
	for {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("stream ended without done event: %v", err)
		}
		if ev.Type == api.EventDone {
			last = ev
			break
		}
	}
	if !errors.Is(last.Error, api.ErrCanceled) || !strings.Contains(last.Error.Message, "shutting down") {
		t.Errorf("done error %v, want canceled by shutdown", last.Error)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if len(rolled) != 2 {
		t.Errorf("%d rollback steps ran, want 2", len(rolled))
	}
	if _, err := os.Lstat(p.Socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still present after stop: %v", err)
	}
	// The lock is released: a new daemon starts on the same paths.
	startDaemon(t, p)
}

func TestDaemon_StaleSocketReplaced(t *testing.T) {
	p := testPaths(t)
	// A socket file nobody listens on, as left by a killed daemon.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(p.Socket); err != nil {
		t.Fatalf("stale socket not in place: %v", err)
	}
	_, c := startDaemon(t, p)
	if _, err := c.Version(testCtx(t)); err != nil {
		t.Fatalf("Version after replacing the stale socket: %v", err)
	}
	logs, _ := os.ReadFile(p.LogFile)
	if !strings.Contains(string(logs), "removed stale socket") {
		t.Errorf("log does not mention the stale socket:\n%s", logs)
	}
}

func TestDaemon_RefusesWhenLive(t *testing.T) {
	p := testPaths(t)
	startDaemon(t, p)
	d2 := New(Options{Paths: &p})
	err := d2.Start(context.Background())
	if err == nil {
		d2.Stop()
		d2.Wait()
		t.Fatal("second daemon started on a live socket")
	}
	want := fmt.Sprintf("bangerd is already running (pid %d", os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
}

func TestDaemon_NonSocketPathRefused(t *testing.T) {
	p := testPaths(t)
	if err := os.WriteFile(p.Socket, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := New(Options{Paths: &p}).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Start = %v, want a not-a-socket error", err)
	}
}

func TestDaemon_InvalidConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"unknown key", "log_level = \"info\"\nbogus_key = 1\n", []string{":2", "bogus_key"}},
		{"bad value", "vmm = \"virtualbox\"\n", []string{":1", "vmm"}},
		{"bad file_sync", "[[file_sync]]\nhost = \"relative/path\"\nguest = \"~/x\"\n", []string{"file_sync[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPaths(t)
			if err := os.WriteFile(p.ConfigFile, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			err := New(Options{Paths: &p}).Start(context.Background())
			if err == nil {
				t.Fatal("daemon started with an invalid config")
			}
			for _, w := range append([]string{p.ConfigFile}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := os.Lstat(p.Socket); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket created despite the invalid config")
			}
		})
	}
}

func TestDaemonMain_InvalidConfigExitsNonZero(t *testing.T) {
	p := testPaths(t)
	if err := os.WriteFile(p.ConfigFile, []byte("[network]\nbrigde = \"br0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_CONFIG", p.ConfigFile)
	t.Setenv("BANGER_STATE_DIR", p.StateDir)
	t.Setenv("BANGER_SOCKET", p.Socket)
	var stderr strings.Builder
	code := Main(context.Background(), nil, io.Discard, &stderr)
	if code == 0 {
		t.Fatal("Main exited 0 with an invalid config")
	}
	if !strings.Contains(stderr.String(), p.ConfigFile+":2") || !strings.Contains(stderr.String(), "network.brigde") {
		t.Errorf("stderr %q does not name file:line and key", stderr.String())
	}
}

func TestDaemon_InvalidLogLevel(t *testing.T) {
	p := testPaths(t)
	err := New(Options{Paths: &p, LogLevel: "chatty"}).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `log level "chatty"`) {
		t.Fatalf("Start = %v, want a log level error", err)
	}
}

func TestDaemon_Logs(t *testing.T) {
	p := testPaths(t)
	d, c := startDaemon(t, p)
	ctx := testCtx(t)
	body, err := c.DaemonLogs(ctx, false)
	if err != nil {
		t.Fatalf("DaemonLogs: %v", err)
	}
	all, err := io.ReadAll(body)
	body.Close()
	if err != nil || !strings.Contains(string(all), `"msg":"bangerd started"`) {
		t.Fatalf("logs = %q, %v; want the start line", all, err)
	}

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	follow, err := c.DaemonLogs(fctx, true)
	if err != nil {
		t.Fatalf("DaemonLogs(follow): %v", err)
	}
	defer follow.Close()
	d.Logger.Info("marker for the follower")
	found := make(chan bool, 1)
	go func() {
		var seen strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := follow.Read(buf)
			seen.Write(buf[:n])
			if strings.Contains(seen.String(), "marker for the follower") {
				found <- true
				return
			}
			if err != nil {
				found <- false
				return
			}
		}
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatal("follow stream ended before the new line")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("new log line not followed within 10s")
	}
}

func TestDaemon_UpgradeStream(t *testing.T) {
	p := testPaths(t)
	var d *Daemon
	d, c := startDaemon(t, p, Route{"POST /v1/test/echo", func(w http.ResponseWriter, r *http.Request) error {
		var req struct{ Prefix string }
		if err := readJSON(r, &req); err != nil {
			return err
		}
		conn, err := d.Upgrade(w, r)
		if err != nil {
			return err
		}
		defer conn.Close()
		sc := stream.NewConn(conn)
		for {
			f, err := sc.ReadFrame()
			if err != nil {
				return nil
			}
			switch f.Kind {
			case stream.Stdin:
				sc.WriteFrame(stream.Stdout, append([]byte(req.Prefix), f.Data...))
			case stream.StdinEOF:
				return sc.WriteFrame(stream.Exit, stream.EncodeExit(7, ""))
			}
		}
	}})
	ctx := testCtx(t)

	// Without the upgrade headers the endpoint refuses with a code.
	if err := c.Do(ctx, http.MethodPost, "/v1/test/echo", map[string]string{"Prefix": "x"}, nil); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("plain request = %v, want invalid", err)
	}
	conn, err := c.Upgrade(ctx, http.MethodPost, "/v1/test/echo", map[string]string{"Prefix": "echo: "})
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	defer conn.Close()
	sc := stream.NewConn(conn)
	if err := sc.WriteFrame(stream.Stdin, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	f, err := sc.ReadFrame()
	if err != nil || f.Kind != stream.Stdout || string(f.Data) != "echo: hello" {
		t.Fatalf("ReadFrame = %v %q, %v; want stdout \"echo: hello\"", f.Kind, f.Data, err)
	}
	if err := sc.WriteFrame(stream.StdinEOF, nil); err != nil {
		t.Fatal(err)
	}
	f, err = sc.ReadFrame()
	if err != nil || f.Kind != stream.Exit {
		t.Fatalf("ReadFrame = %v, %v; want exit", f.Kind, err)
	}
	if code, _, err := stream.DecodeExit(f.Data); err != nil || code != 7 {
		t.Errorf("exit %d, %v; want 7", code, err)
	}
	// An upgrade to a missing endpoint comes back as a coded error.
	if _, err := c.Upgrade(ctx, http.MethodGet, "/v1/test/none", nil); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Upgrade(missing) = %v, want not found", err)
	}
}

func TestClient_DialFailureSaysWhatToDo(t *testing.T) {
	p := testPaths(t)
	c := &api.Client{Socket: p.Socket}
	_, err := c.Version(testCtx(t))
	var de *api.DialError
	if !errors.As(err, &de) || !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("Version with no daemon = %v, want a DialError", err)
	}
	for _, w := range []string{p.Socket, "banger daemon status"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// A request that names its caller (an MCP tool) is logged at info with
// the caller, so the daemon log holds every call an agent made.
func TestDaemon_LogsNamedCallers(t *testing.T) {
	p := testPaths(t)
	_, c := startDaemon(t, p)
	ctx := testCtx(t)
	if _, err := c.Version(api.WithCaller(ctx, "mcp vm_list")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"caller":"mcp vm_list"`) {
			if !strings.Contains(line, `"level":"INFO"`) || !strings.Contains(line, `"path":"/v1/version"`) {
				t.Errorf("caller logged as %s", line)
			}
			return
		}
	}
	t.Fatalf("no log line names the caller:\n%s", b)
}

// ssh_key = "~/..." is what the README documents; the daemon expands it
// against $HOME (it refused to start with it before).
func TestDaemon_SSHKeyUnderHome(t *testing.T) {
	p := testPaths(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	for _, f := range []string{"banger", "banger.pub"} {
		if err := os.WriteFile(filepath.Join(home, ".ssh", f), []byte("key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A top-level key goes before the first table.
	if err := os.WriteFile(p.ConfigFile, []byte(`ssh_key = "~/.ssh/banger"`+"\n"+testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := startDaemon(t, p)
	if d.sshKey.Private != filepath.Join(home, ".ssh", "banger") {
		t.Errorf("daemon uses key %q", d.sshKey.Private)
	}
}
