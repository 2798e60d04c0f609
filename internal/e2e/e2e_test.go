// Package e2e boots real guests end to end: the banger CLI and bangerd
// built from this tree, the default Debian image built by banger itself,
// and VMs under QEMU (TCG on hosts without usable KVM) inside a private
// network namespace that holds every bridge, tap and NAT rule of the test.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/image/imagetest"
	"banger/internal/testenv"
)

// env is one test world: binaries, a state dir, a config and the netns the
// daemon and its guests live in.
type env struct {
	t      testing.TB
	bin    string
	state  string
	ns     *testenv.Netns
	envv   []string
	socket string
}

func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// imageCache is the Debian bootstrap cache shared with the image
// package's tests (keyed by recipe hash inside), so a CI run builds the
// bootstrap once.
func imageCache(t testing.TB) string {
	d, err := imagetest.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "debian")
}

// defaultConfig is the config of every test daemon. Guests live on a
// documentation range inside the test's namespace. Warm templates are made
// only where a test asks (TestLifecycle does), so the other tests' boot
// paths and timings stay what they check.
const defaultConfig = `
vmm = "qemu"
warm_templates = "manual"
[network]
bridge = "bgtest0"
subnet = "192.0.2.0/24"
dns_listen = "127.0.0.1:42169"
dns_upstream = ["127.0.0.1:1"]
[vm_defaults]
vcpu = 2
memory_mib = 1024
disk_size = "2G"
`

// newEnv makes a test world; each edit rewrites the config text before it
// is written (a test that needs another upstream or bound).
func newEnv(t testing.TB, edits ...func(string) string) *env {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "nft", "ip", "ssh")
	if testing.Short() {
		t.Skip("end-to-end boots are not short")
	}
	e := &env{t: t}
	base, err := os.MkdirTemp("", "bge2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e.bin = filepath.Join(base, "bin")
	e.state = filepath.Join(base, "s")
	e.socket = filepath.Join(base, "bangerd.sock")
	// One link-time stamp for both binaries, as `make build` does: the CLI
	// replaces a daemon whose stamp is older than its own, and file times
	// of two separately linked binaries would make every call do that.
	ldflags := fmt.Sprintf("-X banger/internal/buildinfo.stamp=%d", time.Now().Unix())
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", e.bin+"/", "./cmd/banger", "./cmd/bangerd")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	agent := exec.Command("go", "build", "-o", filepath.Join(e.bin, "banger-agent"), "./cmd/banger-agent")
	agent.Dir = repoRoot(t)
	agent.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := agent.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	cfg := filepath.Join(base, "config.toml")
	text := defaultConfig
	for _, edit := range edits {
		text = edit(text)
	}
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	e.envv = append(os.Environ(),
		"BANGER_CONFIG="+cfg,
		"BANGER_STATE_DIR="+e.state,
		"BANGER_SOCKET="+e.socket,
		"BANGER_CACHE_DIR="+filepath.Join(base, "cache"),
		"BANGER_IMAGE_CACHE="+imageCache(t),
		"BANGERD_BIN="+filepath.Join(e.bin, "bangerd"),
		"BANGER_AGENT_BIN="+filepath.Join(e.bin, "banger-agent"),
		"XDG_DATA_HOME="+filepath.Join(base, "data"),
		"HOME="+filepath.Join(base, "home"),
	)
	os.MkdirAll(filepath.Join(base, "home"), 0o700)
	e.ns = testenv.NewNetns(t)
	// Registered after the namespace, so it runs before the namespace is
	// removed: stop the daemon, then end every VMM it left.
	t.Cleanup(e.cleanup)
	return e
}

// cleanup stops the daemon and kills any VMM still running from this
// test's state dir, by PID.
func (e *env) cleanup() {
	if pid := e.daemonPID(); pid > 0 {
		syscall.Kill(pid, syscall.SIGTERM)
		waitGone(pid, 10*time.Second)
	}
	for _, pid := range e.vmmPIDs() {
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
}

// daemonPID finds the bangerd started for this test (its socket is
// unique to the test).
func (e *env) daemonPID() int {
	for _, pid := range procsWithArg(e.state, e.socket) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(cmd)) == "bangerd" {
			return pid
		}
	}
	return 0
}

// vmmPIDs lists the VMM processes whose command line names this test's
// state dir.
func (e *env) vmmPIDs() []int {
	var out []int
	for _, pid := range procsWithArg(e.state) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.HasPrefix(strings.TrimSpace(string(cmd)), "qemu") {
			out = append(out, pid)
		}
	}
	return out
}

// procsWithArg returns the PIDs whose command line or environment
// mentions one of needles.
func procsWithArg(needles ...string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		for _, n := range needles {
			if bytes.Contains(cmdline, []byte(n)) || bytes.Contains(environ, []byte(n)) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// banger runs the CLI inside the test namespace.
func (e *env) banger(stdin string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), args...)
	return e.run(cmd, stdin)
}

// bangerHost runs the CLI in the host namespace (image builds need
// Debian's archive, which the test namespace cannot reach).
func (e *env) bangerHost(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	return e.run(exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), args...), "")
}

func (e *env) run(cmd *exec.Cmd, stdin string) result {
	e.t.Helper()
	var out, errb bytes.Buffer
	cmd.Env = e.envv
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

func (e *env) must(r result) result {
	e.t.Helper()
	if r.code != 0 {
		e.t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// ensureImage builds (or reuses from the cache) the default image with a
// daemon in the host namespace, then stops that daemon, so the daemon of
// the test proper starts inside the namespace.
func (e *env) ensureImage() {
	e.t.Helper()
	start := time.Now()
	e.must(e.bangerHost("image", "build", "debian"))
	e.t.Logf("default image ready in %s", time.Since(start).Round(time.Second))
	e.must(e.bangerHost("daemon", "stop"))
}

func (e *env) vm(ref string) map[string]any {
	e.t.Helper()
	r := e.must(e.banger("", "vm", "show", ref, "--json"))
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		e.t.Fatalf("vm show --json: %v: %s", err, r.stdout)
	}
	return v
}

func (e *env) links() string {
	out, _ := e.ns.Run(context.Background(), "ip", "-o", "link", "show")
	return string(out)
}
