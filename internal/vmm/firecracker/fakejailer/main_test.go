package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// probe is a program run inside the jail: it reports who and where it is.
const probe = `package main

import (
	"encoding/json"
	"os"
	"syscall"
)

func main() {
	var st syscall.Stat_t
	syscall.Stat("/dev/net/tun", &st)
	entries, _ := os.ReadDir("/")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	_, passwd := os.Stat("/etc/passwd")
	_, usr := os.Stat("/usr/bin")
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"uid": os.Getuid(), "gid": os.Getgid(), "args": os.Args, "env": os.Environ(),
		"root": names, "tun_uid": st.Uid, "tun_rdev": st.Rdev,
		"host_etc_visible": passwd == nil, "usr_visible": usr == nil,
	})
}
`

type report struct {
	UID, GID       int
	Args, Env      []string
	Root           []string
	TunUID         uint32 `json:"tun_uid"`
	TunRdev        uint64 `json:"tun_rdev"`
	HostEtcVisible bool   `json:"host_etc_visible"`
	UsrVisible     bool   `json:"usr_visible"`
}

// TestJail runs a probe through the stand-in jailer, as root, and checks
// what the jailed process sees: its uid and gid, the jailer's argument
// order, a root holding only the jail (no host /etc), the device nodes
// made and owned, and only FAKEFC_* variables.
func TestJail(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	build := func(out, pkg string, extra ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", out}, append(extra, pkg)...)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	jailer := filepath.Join(dir, "jailer")
	build(jailer, ".")
	src := filepath.Join(dir, "probe")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "main.go"), []byte(probe), 0o644)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n"), 0o644)
	exe := filepath.Join(dir, "firecracker")
	cmd := exec.Command("go", "build", "-o", exe, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, b)
	}
	base := filepath.Join(dir, "jails")
	os.MkdirAll(base, 0o755)
	spec := filepath.Join(dir, "spec.yaml")
	os.WriteFile(spec, []byte("swagger: \"2.0\"\n"), 0o644)

	run := exec.Command(jailer, "--id", "vm-1", "--exec-file", exe, "--uid", "65534", "--gid", "65534",
		"--chroot-base-dir", base, "--", "--api-sock", "/api.sock")
	run.Env = []string{"HOME=/root", "SECRET=x", "FAKEFC_SWAGGER=" + spec, "FAKEFC_QEMU=/usr/bin/qemu-system-x86_64"}
	out, err := run.Output()
	if err != nil {
		t.Fatalf("jailer: %v\n%s", err, out)
	}
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	if r.UID != 65534 || r.GID != 65534 {
		t.Errorf("jailed uid:gid = %d:%d, want 65534:65534", r.UID, r.GID)
	}
	wantPrefix := []string{"/firecracker", "--id", "vm-1", "--start-time-us"}
	if len(r.Args) < 10 || !reflect.DeepEqual(r.Args[:4], wantPrefix) || !reflect.DeepEqual(r.Args[len(r.Args)-2:], []string{"--api-sock", "/api.sock"}) {
		t.Errorf("argv = %q", r.Args)
	}
	if r.HostEtcVisible || !r.UsrVisible {
		t.Errorf("host /etc visible %v, /usr visible %v; root holds %q", r.HostEtcVisible, r.UsrVisible, r.Root)
	}
	if r.TunUID != 65534 || r.TunRdev != uint64(10<<8|200) {
		t.Errorf("/dev/net/tun uid %d rdev %#x", r.TunUID, r.TunRdev)
	}
	env := strings.Join(r.Env, " ")
	if strings.Contains(env, "SECRET") || strings.Contains(env, "HOME") || !strings.Contains(env, "FAKEFC_SWAGGER=/firecracker.yaml") {
		t.Errorf("jailed environment = %q", r.Env)
	}
	jail := filepath.Join(base, "firecracker", "vm-1", "root")
	if _, err := os.Stat(filepath.Join(jail, "firecracker.yaml")); err != nil {
		t.Errorf("the spec was not copied into the jail: %v", err)
	}
	// The host's mount table is untouched: the jail's mounts lived in the
	// jailed process's own namespace.
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), jail) {
		t.Errorf("the jail's mounts leaked into the host namespace")
	}
}

func TestParse_refuses(t *testing.T) {
	for _, args := range [][]string{
		{"--exec-file", "/x", "--uid", "1", "--gid", "1"},
		{"--id", "a/b", "--exec-file", "/x", "--uid", "1", "--gid", "1"},
		{"--id", strings.Repeat("a", 65), "--exec-file", "/x", "--uid", "1", "--gid", "1"},
		{"--id", "a", "--uid", "1", "--gid", "1"},
		{"--id", "a", "--exec-file", "/x", "--gid", "1"},
		{"--id", "a", "--exec-file", "/x", "--uid", "1", "--gid", "1", "--cgroup-version", "3"},
		{"--id", "a", "--exec-file", "/x", "--uid", "1", "--gid", "1", "--daemonize"},
		{"--id", "a", "--exec-file", "/x", "--uid", "1", "--gid", "1", "--cgroup", "cpu.max"},
	} {
		if _, err := parse(args); err == nil {
			t.Errorf("parse(%q) accepted", args)
		}
	}
	if _, err := limits([]string{"nproc=1"}); err == nil {
		t.Error("an unknown resource limit was accepted")
	}
	o, err := parse([]string{"--id", "a-1", "--exec-file", "/x", "--uid", "1", "--gid", "2", "--", "--api-sock", "/s"})
	if err != nil || !reflect.DeepEqual(o.extra, []string{"--api-sock", "/s"}) {
		t.Errorf("parse: %+v, %v", o, err)
	}
}
