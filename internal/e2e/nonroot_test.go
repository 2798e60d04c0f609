package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/hostcap"
	"banger/internal/testenv"
	"banger/internal/wait"
)

// The non-root tests run banger as an unprivileged user, the way the
// README sets it up: binaries installed root-owned by scripts/install.sh,
// one sudoers rule for the installed `bangerd priv`, nothing else. The
// harness is root (it makes the user, the prefix and the rule); every
// banger command runs as the user.

// nonRootCommands are the host tools the setup needs.
var nonRootCommands = []string{"useradd", "userdel", "visudo", "sudo", "setpriv", "install", "stat"}

// testUser is an unprivileged account made for one test.
type testUser struct {
	name     string
	uid, gid int
	home     string
}

// randomSuffix is a short random hex string for names of one test.
func randomSuffix(t testing.TB) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// newTestUser makes a system user with a home directory it owns
// (`useradd --system --create-home`); cleanup ends every process left
// running as that user, by PID, and removes the user and its home
// (`userdel -r`).
func newTestUser(t testing.TB) *testUser {
	t.Helper()
	name := "bangertest" + randomSuffix(t)
	if out, err := exec.Command("useradd", "--system", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	u := &testUser{name: name}
	t.Cleanup(func() {
		u.killProcesses(t)
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Errorf("userdel -r %s: %v: %s", name, err, out)
		}
	})
	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	u.uid, _ = strconv.Atoi(pw.Uid)
	u.gid, _ = strconv.Atoi(pw.Gid)
	u.home = pw.HomeDir
	if fi, err := os.Stat(u.home); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(u.uid) {
		t.Fatalf("home %s of %s: %v (not made, or not owned by the user)", u.home, name, err)
	}
	return u
}

// pids lists the processes whose real uid is the user's.
func (u *testUser) pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", d.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
				if f[1] == strconv.Itoa(u.uid) {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

// killProcesses stops what runs as the user: SIGTERM first (the daemon
// shuts down cleanly), then SIGKILL for what is left.
func (u *testUser) killProcesses(t testing.TB) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		pids := u.pids()
		for _, pid := range pids {
			syscall.Kill(pid, sig)
		}
		for _, pid := range pids {
			waitGone(pid, 10*time.Second)
		}
	}
	if left := u.pids(); len(left) > 0 {
		t.Errorf("processes of %s still running: %v", u.name, left)
	}
}

// chown gives path to the user.
func (u *testUser) chown(t testing.TB, path string) {
	t.Helper()
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
}

// command runs argv as the user (setpriv with the user's groups), inside
// ns when it is not nil.
func (u *testUser) command(ctx context.Context, ns *testenv.Netns, env []string, argv ...string) *exec.Cmd {
	full := append([]string{"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", "--"}, argv...)
	var cmd *exec.Cmd
	if ns != nil {
		cmd = ns.Command(ctx, full[0], full[1:]...)
	} else {
		cmd = exec.CommandContext(ctx, full[0], full[1:]...)
	}
	cmd.Env = env
	cmd.Dir = u.home
	return cmd
}

// baseEnv is the user's environment: nothing of the harness's (no
// BANGERD_BIN or BANGER_AGENT_BIN, so the installed layout alone must
// find the daemon and the agent).
func (u *testUser) baseEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + u.home, "USER=" + u.name, "LOGNAME=" + u.name, "LANG=C.UTF-8",
	}
}

// installPrefix installs the binaries in bin (banger, bangerd,
// banger-agent) with scripts/install.sh into a new prefix under /var/lib,
// whose parents are root's and not world-writable (unlike /tmp), and
// removes it in cleanup. It returns the prefix.
func installPrefix(t testing.TB, bin string) string {
	t.Helper()
	prefix := "/var/lib/banger-e2e-" + randomSuffix(t)
	t.Cleanup(func() { os.RemoveAll(prefix) })
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "install.sh"))
	cmd.Env = append(os.Environ(), "PREFIX="+prefix, "DESTDIR=", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install.sh PREFIX=%s: %v\n%s", prefix, err, out)
	}
	for _, p := range []string{"banger", "bangerd", "banger-agent"} {
		path := filepath.Join(prefix, "bin", p)
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 || st.Uid != 0 || st.Gid != 0 {
			t.Fatalf("installed %s: mode %v owner %d:%d, want a 0755 root:root file", path, fi.Mode(), st.Uid, st.Gid)
		}
	}
	return prefix
}

// allowSudo writes /etc/sudoers.d/banger-e2e-<random> (0440, checked
// with `visudo -cf` before it is put in place) granting u exactly
// `bangerd priv *` of the prefix, as the README says; cleanup removes it.
func allowSudo(t testing.TB, u *testUser, prefix string) {
	t.Helper()
	rule := fmt.Sprintf("%s ALL=(root) NOPASSWD: %s priv *\n", u.name, filepath.Join(prefix, "bin", "bangerd"))
	// sudo ignores files in sudoers.d whose name has a dot: the draft is
	// never read before it is checked and renamed.
	final := "/etc/sudoers.d/banger-e2e-" + randomSuffix(t)
	draft := final + ".new"
	t.Cleanup(func() { os.Remove(draft); os.Remove(final) })
	if err := os.WriteFile(draft, []byte(rule), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(draft, 0o440); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("visudo", "-cf", draft).CombinedOutput(); err != nil {
		t.Fatalf("visudo -cf %s: %v: %s", draft, err, out)
	}
	if err := os.Rename(draft, final); err != nil {
		t.Fatal(err)
	}
}

// userWritable asks, as u, whether path is writable (test -w): the
// access check doctor makes as that user, which the harness cannot make
// as root.
func userWritable(t testing.TB, u *testUser, path string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := u.command(ctx, nil, u.baseEnv(), "test", "-w", path).Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("test -w %s as %s: %v", path, u.name, err)
	}
	return err == nil
}

// asUser returns the real probes with Writable answered for u.
func asUser(t testing.TB, u *testUser) hostcap.Probes {
	p := hostcap.Real()
	owner := p.Owner
	p.Owner = func(path string) (hostcap.PathOwner, error) {
		o, err := owner(path)
		if err != nil || o.Mode&fs.ModeSymlink != 0 {
			return o, err
		}
		o.Writable = userWritable(t, u, path)
		return o, nil
	}
	return p
}

// TestNonRootSetup checks the setup the non-root end-to-end test relies
// on, without booting anything: install.sh makes a prefix doctor's
// sudo-rule check accepts for the user, and the sudoers rule lets the
// user run the installed `bangerd priv` as root and nothing else.
// Stand-in binaries are installed: only their path and ownership matter.
func TestNonRootSetup(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, nonRootCommands...)
	bin := t.TempDir()
	for _, p := range []string{"banger", "bangerd", "banger-agent"} {
		script := "#!/bin/sh\necho \"" + p + " uid=$(id -u) $*\"\n"
		if err := os.WriteFile(filepath.Join(bin, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	u := newTestUser(t)
	prefix := installPrefix(t, bin)
	allowSudo(t, u, prefix)
	bangerd := filepath.Join(prefix, "bin", "bangerd")

	if problems := hostcap.RootOnlyChain(asUser(t, u), bangerd); len(problems) != 0 {
		t.Errorf("doctor's check refuses the installed %s for %s: %q", bangerd, u.name, problems)
	}
	// The same check refuses a copy the user owns.
	own := filepath.Join(u.home, "bangerd")
	if err := os.WriteFile(own, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u.chown(t, own)
	if problems := hostcap.RootOnlyChain(asUser(t, u), own); len(problems) == 0 {
		t.Errorf("doctor's check accepts %s, owned by %s", own, u.name)
	}

	sudo := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := u.command(ctx, nil, u.baseEnv(), append([]string{"sudo", "-n"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := sudo(bangerd, "priv", "ensure-bridge", "bgx0", "192.0.2.0/24")
	if err != nil || out != "bangerd uid=0 priv ensure-bridge bgx0 192.0.2.0/24" {
		t.Errorf("sudo -n %s priv ... as %s = %q, %v; want it run as root", bangerd, u.name, out, err)
	}
	for _, argv := range [][]string{{"true"}, {bangerd, "daemon"}, {filepath.Join(prefix, "bin", "banger"), "priv", "x"}, {own, "priv", "x"}} {
		if out, err := sudo(argv...); err == nil {
			t.Errorf("sudo -n %q as %s succeeded (%q): the rule grants more than `bangerd priv`", argv, u.name, out)
		}
	}
}

// nonRoot is banger as the test user: the installed binaries, a state
// dir, config and socket in the user's home, and the test's namespace.
type nonRoot struct {
	e      *env
	u      *testUser
	bin    string
	state  string
	socket string
	envv   []string
}

// newNonRoot sets up u to run the binaries installed in prefix with the
// test config, everything owned by u.
func newNonRoot(t testing.TB, e *env, u *testUser, prefix string) *nonRoot {
	t.Helper()
	n := &nonRoot{e: e, u: u, bin: filepath.Join(prefix, "bin"),
		state: filepath.Join(u.home, "state"), socket: filepath.Join(u.home, "bangerd.sock")}
	cfg := filepath.Join(u.home, "config.toml")
	if err := os.WriteFile(cfg, []byte(defaultConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	u.chown(t, cfg)
	n.envv = append(u.baseEnv(),
		"BANGER_CONFIG="+cfg,
		"BANGER_STATE_DIR="+n.state,
		"BANGER_SOCKET="+n.socket,
		"BANGER_CACHE_DIR="+filepath.Join(u.home, "cache"),
		"XDG_DATA_HOME="+filepath.Join(u.home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(u.home, "config"),
	)
	if os.Getenv("CI") != "" {
		n.envv = append(n.envv, "CI="+os.Getenv("CI"))
	}
	return n
}

// banger runs the installed CLI as the user inside the test namespace.
func (n *nonRoot) banger(args ...string) result {
	n.e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := n.u.command(ctx, n.e.ns, n.envv, append([]string{filepath.Join(n.bin, "banger")}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		n.e.t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

// git runs git as the user in dir (host namespace; no network).
func (n *nonRoot) git(t testing.TB, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := append(n.u.baseEnv(), "GIT_AUTHOR_NAME=dev", "GIT_AUTHOR_EMAIL=dev@example.com",
		"GIT_COMMITTER_NAME=dev", "GIT_COMMITTER_EMAIL=dev@example.com", "GIT_CONFIG_NOSYSTEM=1")
	if out, err := n.u.command(ctx, nil, env, append([]string{"git", "-C", dir}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("git %v as %s: %v\n%s", args, n.u.name, err, out)
	}
}

// uidOf returns the real uid of pid.
func uidOf(pid int) int {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Uid:" {
			uid, _ := strconv.Atoi(f[1])
			return uid
		}
	}
	return -1
}

// TestNonRoot runs a VM's whole life as an unprivileged user with the
// installed binaries and the README's sudoers rule: doctor accepts the
// rule, the VMM runs as the user, guest DNS, exec, ssh and a workspace
// of the user's repository work, and delete leaves no tap or process.
func TestNonRoot(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, nonRootCommands...)
	testenv.RequireCommand(t, "git")
	e := newEnv(t)
	e.ensureImage()
	u := newTestUser(t)
	prefix := installPrefix(t, e.bin)
	allowSudo(t, u, prefix)
	n := newNonRoot(t, e, u, prefix)
	// Runs first: the user's daemon and VMMs end while the prefix and the
	// sudoers rule they use still exist.
	t.Cleanup(func() { u.killProcesses(t) })
	// A VMM that is not root opens /dev/net/tun for its tap. udev makes it
	// 0666 on most hosts; where it is not (no udev), doctor's tun check
	// fails with the fix, which the test applies for its run and undoes.
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode&0o006 != 0o006 {
		r := n.banger("doctor", "--json")
		if !strings.Contains(r.stdout, "cannot open /dev/net/tun read-write") {
			t.Errorf("doctor did not report /dev/net/tun (mode %04o) as unusable:\n%s", mode, r.stdout)
		}
		if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod("/dev/net/tun", mode) })
	}

	// The root harness hands its image over as an archive (building one
	// as the user would need subordinate ids and the host network).
	archive := filepath.Join(u.home, "image.tar")
	e.must(e.bangerHost("image", "export", config.DefaultImageName, "-o", archive))
	e.must(e.bangerHost("daemon", "stop"))
	u.chown(t, archive)

	mustN := func(t testing.TB, r result) result {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("as %s: exit %d\nstdout: %s\nstderr: %s", u.name, r.code, r.stdout, r.stderr)
		}
		return r
	}

	t.Run("doctor accepts the installed sudo rule", func(t *testing.T) {
		r := n.banger("doctor", "--json")
		var rep struct {
			Checks []struct{ Name, Status, Detail, Fix string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("doctor --json (exit %d): %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
		}
		seen := map[string]bool{}
		for _, c := range rep.Checks {
			if c.Name == "sudo rule" || c.Name == "privilege" || c.Name == "tun" {
				seen[c.Name] = true
				if c.Status != "ok" {
					t.Errorf("doctor check %q = %s: %s (fix: %s)", c.Name, c.Status, c.Detail, c.Fix)
				}
				if c.Name == "sudo rule" && !strings.Contains(c.Detail, filepath.Join(prefix, "bin", "bangerd")) {
					t.Errorf("sudo rule check names %q, want the installed bangerd", c.Detail)
				}
			}
		}
		if !seen["sudo rule"] || !seen["privilege"] || !seen["tun"] {
			t.Fatalf("doctor has no sudo rule or privilege check: %+v", rep.Checks)
		}
		// The daemon the CLI started is the installed one, as the user.
		var daemon int
		for _, pid := range procsWithArg(n.state, n.socket) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "bangerd" {
				daemon = pid
			}
		}
		if daemon == 0 {
			t.Fatal("no bangerd of the user running")
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", daemon)); exe != filepath.Join(prefix, "bin", "bangerd") {
			t.Errorf("the user's daemon runs %s, want the installed bangerd", exe)
		}
		if uid := uidOf(daemon); uid != u.uid {
			t.Errorf("the daemon runs as uid %d, want %d", uid, u.uid)
		}
	})

	mustN(t, n.banger("image", "import", archive, "--name", config.DefaultImageName))

	const name = "nr1"
	mustN(t, n.banger("vm", "create", "--name", name))
	show := func() map[string]any {
		t.Helper()
		r := mustN(t, n.banger("vm", "show", name, "--json"))
		var v map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("vm show --json: %v: %s", err, r.stdout)
		}
		return v
	}
	v := show()
	ip, _ := v["ip"].(string)
	pid := int(v["pid"].(float64))
	id, _ := v["id"].(string)

	t.Run("the VMM runs as the user", func(t *testing.T) {
		if uid := uidOf(pid); uid != u.uid {
			t.Errorf("vmm pid %d runs as uid %d, want %d", pid, uid, u.uid)
		}
		if len(id) < 12 || !strings.Contains(e.links(), ": bgt"+id[:12]+":") {
			t.Errorf("vm %s (id %q) has no tap named after it:\n%s", name, id, e.links())
		}
	})

	t.Run("exec", func(t *testing.T) {
		r := mustN(t, n.banger("vm", "exec", name, "--", "cat", "/etc/hostname"))
		if strings.TrimSpace(r.stdout) != name {
			t.Errorf("guest hostname = %q, want %s", r.stdout, name)
		}
	})

	t.Run("guest DNS through the gateway", func(t *testing.T) {
		if got := e.lookupVM(name); len(got) != 1 || got[0] != ip {
			t.Errorf("host query %s.vm = %v, want %s", name, got, ip)
		}
		r := mustN(t, n.banger("vm", "exec", name, "--", "getent", "hosts", name+".vm"))
		if !strings.Contains(r.stdout, ip) {
			t.Errorf("guest resolves %s.vm to %q, want %s", name, r.stdout, ip)
		}
	})

	t.Run("ssh", func(t *testing.T) {
		mustN(t, n.banger("vm", "ssh", name, "--", "true"))
	})

	t.Run("workspace of the user's repository", func(t *testing.T) {
		repo := filepath.Join(u.home, "repo")
		if err := os.Mkdir(repo, 0o755); err != nil {
			t.Fatal(err)
		}
		u.chown(t, repo)
		n.git(t, repo, "init", "-q", "-b", "main")
		readme := filepath.Join(repo, "README")
		if err := os.WriteFile(readme, []byte("from a user\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		u.chown(t, readme)
		n.git(t, repo, "add", ".")
		n.git(t, repo, "commit", "-q", "-m", "first")
		mustN(t, n.banger("vm", "workspace", "prepare", name, "--path", repo))
		r := mustN(t, n.banger("vm", "exec", name, "-w", "/root/repo", "--", "sh", "-c", "cat README; git log --format=%s"))
		if r.stdout != "from a user\nfirst\n" {
			t.Errorf("guest repo: %q", r.stdout)
		}
	})

	t.Run("delete leaves nothing", func(t *testing.T) {
		mustN(t, n.banger("vm", "delete", name))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := wait.Until(ctx, 100*time.Millisecond, func() (bool, error) { return !processRunning(pid), nil }); err != nil {
			t.Errorf("vmm pid %d still running after delete: %v", pid, err)
		}
		if taps := tapLinks.FindAllString(e.links(), -1); len(taps) != 0 {
			t.Errorf("taps left after delete: %q", taps)
		}
		if got := e.lookupVM(name); len(got) != 0 {
			t.Errorf("%s.vm still resolves to %v", name, got)
		}
		mustN(t, n.banger("daemon", "stop"))
		ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel2()
		if err := wait.Until(ctx2, 100*time.Millisecond, func() (bool, error) { return len(u.pids()) == 0, nil }); err != nil {
			t.Errorf("processes of %s left after daemon stop: %v", u.name, u.pids())
		}
	})
}
