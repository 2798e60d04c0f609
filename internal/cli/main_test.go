package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/wait"
)

// Build stamps of the binaries built for these tests: the CLI and the
// current daemon share stampNew; stampOld marks a daemon from an earlier
// build. In-process Main runs with the test binary's mtime as its stamp,
// which is older than stampNew, so it never replaces those daemons.
const (
	stampNew = "4000000000"
	stampOld = "1000000000"
)

// Binaries built once by TestMain.
var bin struct {
	banger, bangerd, bangerdOld string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "banger-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bin.banger = filepath.Join(dir, "banger")
		bin.bangerd = filepath.Join(dir, "bangerd")
		bin.bangerdOld = filepath.Join(dir, "old", "bangerd")
		for _, b := range []struct{ out, pkg, stamp string }{
			{bin.banger, "banger/cmd/banger", stampNew},
			{bin.bangerd, "banger/cmd/bangerd", stampNew},
			{bin.bangerdOld, "banger/cmd/bangerd", stampOld},
		} {
			ldflags := "-X banger/internal/buildinfo.stamp=" + b.stamp + " -X banger/internal/buildinfo.version=test-" + b.stamp
			cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", b.out, b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// dnsConfig makes test daemons serve DNS on a free port.
const dnsConfig = "[network]\ndns_listen = \"127.0.0.1:0\"\n"

// env is a private banger environment for one test.
type env struct {
	stateDir, socket, config string
}

// newEnv points BANGER_* at fresh directories (the socket in a short one:
// unix socket paths are limited to 108 bytes) and stops any daemon left
// at the end of the test.
func newEnv(t *testing.T) env {
	t.Helper()
	root := t.TempDir()
	rt, err := os.MkdirTemp("", "bgc")
	if err != nil {
		t.Fatal(err)
	}
	e := env{
		stateDir: filepath.Join(root, "state"),
		socket:   filepath.Join(rt, "bangerd.sock"),
		config:   filepath.Join(root, "config.toml"),
	}
	t.Setenv("BANGER_STATE_DIR", e.stateDir)
	t.Setenv("BANGER_SOCKET", e.socket)
	t.Setenv("BANGER_CONFIG", e.config)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(root, "cache"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(root, "data"))
	t.Setenv(EnvBangerdBin, bin.bangerd)
	// Serve DNS on a free port: tests run side by side.
	e.writeConfig(t, dnsConfig)
	t.Cleanup(func() {
		e.killDaemon(t)
		os.RemoveAll(rt)
	})
	return e
}

// daemonPID returns the pid of the daemon answering on the socket, 0 if
// none.
func (e env) daemonPID(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := (&api.Client{Socket: e.socket}).Version(ctx)
	if err != nil {
		return 0
	}
	return v.PID
}

// killDaemon ends the test's daemon: it was started for this test, so it
// is ended by its pid.
func (e env) killDaemon(t *testing.T) {
	pid := e.daemonPID(t)
	if pid == 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	waitGone(t, pid)
}

// waitGone waits up to five seconds for pid to exit.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wait.Until(ctx, 25*time.Millisecond, func() (bool, error) { return !processAlive(pid), nil }); err != nil {
		t.Logf("pid %d still running: %v", pid, err)
	}
}

func (e env) writeConfig(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(e.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runBinary runs the built banger CLI with args.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.banger, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run banger %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// runMain runs Main in process.
func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code = Main(ctx, args, IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb})
	return out.String(), errb.String(), code
}

// binaryStatus runs the built `banger daemon status --json`.
func binaryStatus(t *testing.T) api.Status {
	t.Helper()
	out, errOut, code := runBinary(t, "daemon", "status", "--json")
	return statusJSON(t, out, errOut, code)
}

func statusJSON(t *testing.T, stdout, stderr string, code int) api.Status {
	t.Helper()
	if code != 0 {
		t.Fatalf("daemon status exited %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("decode status %q: %v", stdout, err)
	}
	return st
}

// startDirect starts a bangerd binary as a test child (reaped by the test)
// and waits for its socket.
func startDirect(t *testing.T, e env, path string) int {
	t.Helper()
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pid int
	if err := wait.Until(ctx, 25*time.Millisecond, func() (bool, error) { pid = e.daemonPID(t); return pid != 0, nil }); err != nil {
		t.Fatalf("%s did not start: %v", path, err)
	}
	return pid
}

func TestAutostart_DetachedDaemon(t *testing.T) {
	e := newEnv(t)
	st := binaryStatus(t)
	if st.PID == 0 || !processAlive(st.PID) {
		t.Fatalf("daemon pid %d not running after the CLI exited", st.PID)
	}
	if sid, err := unix.Getsid(st.PID); err != nil || sid != st.PID {
		t.Errorf("daemon session %d, %v; want its own session %d", sid, err, st.PID)
	}
	if st.Version != "test-"+stampNew || st.Socket != e.socket || st.StateDir != e.stateDir {
		t.Errorf("status %+v: want version test-%s, socket %s, state dir %s", st, stampNew, e.socket, e.stateDir)
	}
	fi, err := os.Stat(e.socket)
	if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v, %v; want a 0600 socket", fi.Mode(), err)
	}
	logs, _ := os.ReadFile(filepath.Join(e.stateDir, "bangerd.log"))
	if !strings.Contains(string(logs), `"msg":"bangerd started"`) {
		t.Errorf("daemon log lacks the start line:\n%s", logs)
	}

	// A second command reuses the running daemon.
	st2 := binaryStatus(t)
	if st2.PID != st.PID {
		t.Errorf("second status talked to pid %d, want the running %d", st2.PID, st.PID)
	}

	out, errOut, code := runBinary(t, "daemon", "stop")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("bangerd stopped (pid %d)", st.PID)) {
		t.Fatalf("daemon stop: exit %d, %q %q", code, out, errOut)
	}
	if processAlive(st.PID) {
		t.Errorf("daemon %d still running after stop", st.PID)
	}
	if _, err := os.Lstat(e.socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind after stop: %v", err)
	}
	if out, _, code := runBinary(t, "daemon", "stop"); code != 0 || !strings.Contains(out, "not running") {
		t.Errorf("stop with no daemon: exit %d, %q", code, out)
	}
}

func TestAutostart_ReplacesOlderDaemon(t *testing.T) {
	e := newEnv(t)
	oldPID := startDirect(t, e, bin.bangerdOld)
	out, errOut, code := runBinary(t, "daemon", "status", "--json")
	st := statusJSON(t, out, errOut, code)
	if st.PID == oldPID || st.Version != "test-"+stampNew {
		t.Errorf("status from pid %d version %s; want a new daemon (old pid %d) at test-%s", st.PID, st.Version, oldPID, stampNew)
	}
	if !strings.Contains(errOut, fmt.Sprintf("bangerd test-%s (pid %d) is older than this banger; restarting it", stampOld, oldPID)) {
		t.Errorf("stderr does not announce the restart: %q", errOut)
	}
	if processAlive(oldPID) {
		t.Errorf("old daemon %d still running", oldPID)
	}
}

func TestAutostart_KeepsSameOrNewerDaemon(t *testing.T) {
	e := newEnv(t)
	pid := startDirect(t, e, bin.bangerd)
	// The built CLI has the same stamp; in-process Main an older one.
	out, errOut, code := runBinary(t, "daemon", "status", "--json")
	if st := statusJSON(t, out, errOut, code); st.PID != pid || strings.Contains(errOut, "restarting") {
		t.Errorf("same-stamp CLI replaced the daemon: pid %d (was %d), stderr %q", st.PID, pid, errOut)
	}
	out, errOut, code = runMain(t, "daemon", "status", "--json")
	if st := statusJSON(t, out, errOut, code); st.PID != pid {
		t.Errorf("older CLI replaced a newer daemon: pid %d (was %d)", st.PID, pid)
	}
}

func TestAutostart_StaleSocketReplaced(t *testing.T) {
	e := newEnv(t)
	pid := startDirect(t, e, bin.bangerd)
	// kill -9 leaves the socket file behind.
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	if _, err := os.Lstat(e.socket); err != nil {
		t.Fatalf("socket file gone after SIGKILL: %v", err)
	}
	st := binaryStatus(t)
	if st.PID == pid || st.PID == 0 {
		t.Errorf("status pid %d, want a fresh daemon (killed %d)", st.PID, pid)
	}
}

func TestAutostart_InvalidConfigReported(t *testing.T) {
	e := newEnv(t)
	e.writeConfig(t, "log_level = \"info\"\n\n[network]\nbridge = \"banger0\"\ntap_pool = 3\n")
	_, errOut, code := runBinary(t, "daemon", "status")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"bangerd exited during startup", e.config + ":5", "network.tap_pool"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not contain %q", errOut, want)
		}
	}
	if e.daemonPID(t) != 0 {
		t.Error("a daemon runs despite the invalid config")
	}
}

func TestAutostart_LogLevelPassedToDaemon(t *testing.T) {
	e := newEnv(t)
	if _, errOut, code := runMain(t, "--log-level", "debug", "daemon", "status"); code != 0 {
		t.Fatalf("daemon status: exit %d: %s", code, errOut)
	}
	logs, _ := os.ReadFile(filepath.Join(e.stateDir, "bangerd.log"))
	if !strings.Contains(string(logs), `"level":"DEBUG"`) {
		t.Errorf("no debug lines in the daemon log with --log-level debug:\n%s", logs)
	}
}

func TestMain_Version(t *testing.T) {
	newEnv(t)
	out, _, code := runMain(t, "version", "--json")
	var v versionOutput
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || v.Daemon != nil {
		t.Fatalf("version --json without daemon: exit %d, %q", code, out)
	}
	runMain(t, "daemon", "status")
	out, _, _ = runMain(t, "version")
	if !strings.Contains(out, "bangerd test-"+stampNew) {
		t.Errorf("version with a daemon: %q", out)
	}
}

func TestMain_VMFlagsFromResolvedDefaults(t *testing.T) {
	e := newEnv(t)
	e.writeConfig(t, "default_image = \"trixie\"\n[vm_defaults]\nvcpu = 3\nmemory_mib = 1024\ndisk_size = \"10G\"\n"+dnsConfig)
	for _, sub := range []string{"create", "run"} {
		out, _, code := runMain(t, "vm", sub, "--help")
		if code != 0 {
			t.Fatalf("vm %s --help: exit %d", sub, code)
		}
		// Column widths depend on the longest flag, so match any spacing.
		for _, want := range []string{
			`--vcpu int\s+virtual CPUs \(config\) \(default 3\)`,
			`--memory int\s+memory in MiB \(config\) \(default 1024\)`,
			`\(config\) \(default "10G"\)`,
			`--image string\s+image to boot \(default "trixie"\)`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("vm %s --help lacks %q:\n%s", sub, want, out)
			}
		}
	}
	// There is no image "trixie": the create fails after the spec line.
	_, errOut, code := runMain(t, "vm", "create", "--memory", "2048")
	if code != 1 || !strings.HasPrefix(errOut, "spec: 3 vcpu · 2048 MiB · 10G disk\n") || !strings.Contains(errOut, "trixie") {
		t.Errorf("vm create: exit %d, stderr %q; want the spec line first, then an error about the image", code, errOut)
	}
}

func TestMain_UsageAndValidationErrors(t *testing.T) {
	newEnv(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vm", "run", "uname"}, 2, "put the command after --"},
		{[]string{"vm", "create", "--vcpu", "x"}, 2, `invalid argument "x" for "--vcpu"`},
		{[]string{"vm", "create", "--vcpu", "0"}, 1, "--vcpu must be between 1 and 32, got 0"},
		{[]string{"vm", "create", "--memory", "128"}, 1, "--memory must be at least 256 MiB, got 128 MiB"},
		{[]string{"vm", "create", "--disk-size", "512M"}, 1, "--disk-size must be at least 1G, got 512M"},
		{[]string{"vm", "create", "--disk-size", "12Q"}, 1, "--disk-size"},
		{[]string{"vm", "create", "--name", "Bad_Name"}, 1, "Bad_Name"},
		{[]string{"daemon", "status", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"nosuch"}, 1, `unknown command "nosuch"`},
	} {
		_, errOut, code := runMain(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("banger %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}
}

func TestMain_Doctor(t *testing.T) {
	e := newEnv(t)
	out, errOut, code := runMain(t, "doctor", "--json")
	var rep struct {
		Checks []struct{ Name, Status string }
		OK     bool
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s%s", err, out, errOut)
	}
	if len(rep.Checks) < 5 || (code == 0) != rep.OK {
		t.Errorf("doctor: exit %d with ok=%v and %d checks", code, rep.OK, len(rep.Checks))
	}
	e.writeConfig(t, "vmm = \"bhyve\"\n")
	out, _, code = runMain(t, "doctor")
	if code != 1 || !strings.HasPrefix(out, "fail config") || !strings.Contains(out, e.config+":1") {
		t.Errorf("doctor with a bad config: exit %d\n%s", code, out)
	}
}

func TestMain_DaemonLogs(t *testing.T) {
	newEnv(t)
	runMain(t, "daemon", "status")
	out, errOut, code := runMain(t, "daemon", "logs")
	if code != 0 || !strings.Contains(out, " INFO  bangerd started ") {
		t.Errorf("daemon logs: exit %d, %q %q", code, out, errOut)
	}
	out, _, _ = runMain(t, "daemon", "logs", "--json")
	if !strings.Contains(out, `"msg":"bangerd started"`) {
		t.Errorf("daemon logs --json is not the raw log: %q", out)
	}
}
