package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
	"banger/internal/vmm"
)

// buildJailer compiles the jailer stand-in (fakejailer), which really
// jails: a new mount namespace, pivot_root, mknod, dropped uid.
func buildJailer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "jailer")
	if b, err := exec.Command("go", "build", "-o", bin, "./fakejailer").CombinedOutput(); err != nil {
		t.Fatalf("build fakejailer: %v\n%s", err, b)
	}
	return bin
}

func inode(t *testing.T, path string) (ino uint64, uid uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino, st.Uid
}

// TestDriver_Jailed runs the fake Firecracker under the jailer stand-in,
// as root: the process runs as the jail's uid in the jail banger's
// handles name, every path the API is given is inside the jail and
// accepted, the VM's own files are hard links given to the jail's uid
// while shared ones keep their owner, the hybrid vsock socket answers at
// its host path, a save lands in the VM's state dir and a restore loads
// it through the jail, and Cleanup removes the jail and nothing else.
func TestDriver_Jailed(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildFake(t)
	setupEnv(t)
	jailer := buildJailer(t)
	s := testSpec(t)
	base, err := os.MkdirTemp("", "fcjail")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d := &Driver{Binary: bin, Jailer: &Jailer{Binary: jailer, UID: 65534, GID: 65534, BaseDir: base}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	h, err := d.Start(ctx, s)
	if err != nil {
		console, _ := os.ReadFile(filepath.Join(s.Dir, "console.log"))
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
	jail := filepath.Join(base, "firecracker", "01JFCTEST", "root")
	if h.Jail != jail || h.APISocket != filepath.Join(jail, jailAPISocket) || h.VsockSocket != filepath.Join(jail, jailVsockSocket) {
		t.Fatalf("handles %+v, want sockets in jail %s", h, jail)
	}
	if !vmm.Alive(h) {
		t.Fatal("a jailed VMM is not Alive")
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+65534\s`).Match(status) {
		t.Errorf("jailed firecracker does not run as 65534:\n%s", status)
	}

	e := env{record: filepath.Join(jail, "calls.jsonl")}
	body := map[string]map[string]any{}
	for _, c := range e.calls(t) {
		var m map[string]any
		if len(c.Body) > 0 && json.Unmarshal(c.Body, &m) == nil {
			body[c.Path] = m
		}
	}
	checks := map[string]map[string]any{
		"/boot-source":    {"kernel_image_path": "/vmlinux", "initrd_path": "/initrd", "boot_args": testCmdline},
		"/drives/rootfs":  {"path_on_host": "/drive-rootfs"},
		"/drives/overlay": {"path_on_host": "/drive-overlay"},
		"/vsock":          {"uds_path": "/vsock.sock"},
		"/logger":         {"log_path": "/vmm.log"},
		"/metrics":        {"metrics_path": "/metrics"},
	}
	for path, want := range checks {
		for k, v := range want {
			if body[path][k] != v {
				t.Errorf("PUT %s %s = %v, want %v", path, k, body[path][k], v)
			}
		}
	}
	// The VM's own disk is the same inode, given to the jail's user.
	if ino, uid := inode(t, filepath.Join(jail, "drive-overlay")); ino != must(inode(t, s.Drives[1].Path)) || uid != 65534 {
		t.Errorf("jail's overlay: inode %d uid %d; want a link to %s owned by 65534", ino, uid, s.Drives[1].Path)
	}

	c, err := net.Dial("unix", h.VsockSocket)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "CONNECT 1024\n")
	if ack, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(ack, "OK ") {
		t.Fatalf("vsock ack %q, %v", ack, err)
	}
	c.Close()

	// Save: the state lands in the caller's directory (the VM's, as a
	// suspend's does), not the jail.
	dir := filepath.Join(s.Dir, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	saved, err := d.Save(ctx, h, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := vmm.VerifyState(dir, saved); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(jail, jailSnapshotDir)); len(left) != 0 {
		t.Errorf("the save left %d files in the jail", len(left))
	}
	// Sealed: root's and read-only to the jail's group, so no jailed
	// Firecracker restoring it later can change what the next one loads.
	for _, f := range []string{StateFile, MemoryFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || st.Gid != 65534 || fi.Mode().Perm() != 0o440 {
			t.Errorf("saved %s: owner %d:%d mode %04o, want 0:65534 0440", f, st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}

	// Restore through a fresh jail.
	s.RestoreDir = dir
	h2, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h2) })
	var load map[string]any
	for _, c := range e.calls(t) {
		if c.Path == "/snapshot/load" {
			_ = json.Unmarshal(c.Body, &load)
		}
	}
	if load["snapshot_path"] != "/snapshot/vmstate" {
		t.Errorf("snapshot load %v, want the state linked into the jail", load)
	}
	if err := d.Kill(ctx, h2); err != nil {
		t.Fatal(err)
	}

	// Another VM restores the same state (a warm template, a fork): its
	// own jail, the state linked from outside its directory, its own tap.
	if err := d.Relocatable(ctx, h); err != nil {
		t.Errorf("a jailed vm's state is not relocatable: %v", err)
	}
	s3 := testSpec(t)
	s3.VMID, s3.Tap, s3.RestoreDir = "01JFCOTHER", "bgtap3", dir
	h3, err := d.Start(ctx, s3)
	if err != nil {
		t.Fatalf("restore into another vm: %v", err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h3) })
	e3 := env{record: filepath.Join(h3.Jail, "calls.jsonl")}
	load = nil
	for _, c := range e3.calls(t) {
		if c.Path == "/snapshot/load" {
			_ = json.Unmarshal(c.Body, &load)
		}
	}
	if ov, _ := load["network_overrides"].([]any); len(ov) != 1 || ov[0].(map[string]any)["host_dev_name"] != "bgtap3" {
		t.Errorf("snapshot load %v, want network_overrides naming the new vm's tap bgtap3", load)
	}
	if err := d.Kill(ctx, h3); err != nil {
		t.Fatal(err)
	}
	if err := d.Cleanup(h3); err != nil {
		t.Fatal(err)
	}
	if err := d.Cleanup(h2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(jail)); !os.IsNotExist(err) {
		t.Errorf("jail %s left after Cleanup: %v", filepath.Dir(jail), err)
	}
	for _, dr := range s.Drives {
		if _, err := os.Stat(dr.Path); err != nil {
			t.Errorf("Cleanup removed the VM's %s: %v", dr.ID, err)
		}
	}

	// A shared file the jail's user cannot read fails the start and
	// leaves no jail.
	other := t.TempDir()
	kernel := filepath.Join(other, "vmlinux")
	if err := os.WriteFile(kernel, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.RestoreDir, s.Vmlinux = "", kernel
	if _, err := d.Start(ctx, s); err == nil || !strings.Contains(err.Error(), "cannot read it") {
		t.Fatalf("Start with an unreadable shared kernel = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(jail)); !os.IsNotExist(err) {
		t.Errorf("a failed start left its jail")
	}

	// Cleanup never removes anything outside the jail base.
	if err := d.Cleanup(vmm.Handles{Jail: filepath.Join(other, "x", "root")}); err == nil {
		t.Error("Cleanup accepted a jail outside its base")
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Errorf("Cleanup touched a file outside the jail base: %v", err)
	}
}

func must[T any](v T, _ ...any) T { return v }
