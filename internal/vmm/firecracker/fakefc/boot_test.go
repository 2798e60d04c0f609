package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/testenv"
	"banger/internal/vmm"
	"banger/internal/wait"
)

// pinnedSpec is the Firecracker API spec the stand-in serves.
func pinnedSpec(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "testdata", "firecracker-v1.16.1.yaml")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// buildStandIn compiles this package as "firecracker" into a temp dir.
func buildStandIn(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "firecracker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	return bin
}

// standIn is one running stand-in process and its API client.
type standIn struct {
	cmd    *exec.Cmd
	sock   string
	vsock  string
	client *http.Client
	exited chan struct{}

	mu      sync.Mutex
	console bytes.Buffer // the stand-in's stdout and stderr
}

func startStandIn(t *testing.T, bin string, env ...string) *standIn {
	t.Helper()
	dir, err := os.MkdirTemp("", "fakefc") // short: socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &standIn{sock: filepath.Join(dir, "api.sock"), vsock: filepath.Join(dir, "v.sock"), exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--api-sock", s.sock, "--id", "boot-test")
	s.cmd.Env = append(os.Environ(), env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		b := make([]byte, 4096)
		for {
			n, err := pr.Read(b)
			s.mu.Lock()
			s.console.Write(b[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { _ = s.cmd.Wait(); <-consoleDone; close(s.exited) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("stand-in output:\n%s", s.output())
		}
	})
	s.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s.sock)
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The socket file appears at bind, before listen: wait until it
	// accepts a connection.
	if err := wait.Until(ctx, 10*time.Millisecond, func() (bool, error) {
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	}); err != nil {
		t.Fatalf("api socket: %v\n%s", err, s.output())
	}
	return s
}

func (s *standIn) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.console.String()
}

func (s *standIn) call(t *testing.T, method, path, body string, want int) string {
	t.Helper()
	req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return string(b)
}

// qemuChild returns the PID of the stand-in's QEMU child, 0 when none.
func qemuChild(t *testing.T, parent int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(parent) && f[0] != "Z" {
			if argv, _ := vmm.ProcCmdline(pid); len(argv) > 0 && argv[0] == qemuArgv0 {
				return pid
			}
		}
	}
	return 0
}

func gone(pid int) bool {
	err := syscall.Kill(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return true
	}
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

// connect speaks the vsock handshake and reports whether the stand-in
// answered OK (false: it closed the connection).
func connect(t *testing.T, path string, port uint32) (net.Conn, bool) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %d\n", port)
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		c.Close()
		return nil, false
	}
	if !strings.HasPrefix(string(b[:n]), "OK ") {
		t.Fatalf("handshake answer %q", b[:n])
	}
	return c, true
}

// TestBoot boots Debian's cloud kernel (the ELF vmlinux banger extracts,
// through its PVH note) under the stand-in in boot mode, without a root
// filesystem: the kernel's panic on the console proves the boot and the
// console path. Then pause and resume go through QMP (a Diff snapshot is
// refused, a Full one taken while paused), CONNECT to a port
// with nothing behind it is closed, a SIGKILL of the stand-in ends QEMU
// (Pdeathsig), and a guest that reboots ends QEMU and the stand-in with
// exit code 0, its private directory removed.
func TestBoot(t *testing.T) {
	testenv.RequireCommand(t, "qemu-system-x86_64")
	if testing.Short() && !testenv.InCI() {
		t.Skip("-short outside CI: boots a guest under QEMU (the suite runs without -short; with CI=true it always runs)")
	}
	qemuBin, _ := exec.LookPath("qemu-system-x86_64")
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	if err := image.ExtractVmlinux(imagetest.DebianKernel(t), vmlinux); err != nil {
		t.Fatal(err)
	}
	bin := buildStandIn(t)
	env := []string{"FAKEFC_QEMU=" + qemuBin, "FAKEFC_SWAGGER=" + pinnedSpec(t)}
	boot := func(t *testing.T, s *standIn, panicArg string) {
		s.call(t, "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256}`, 204)
		s.call(t, "PUT", "/boot-source", `{"kernel_image_path":"`+vmlinux+`","boot_args":"console=ttyS0 reboot=k `+panicArg+`"}`, 204)
		s.call(t, "PUT", "/entropy", `{}`, 204)
		s.call(t, "PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+s.vsock+`"}`, 204)
		start := time.Now()
		s.call(t, "PUT", "/actions", `{"action_type":"InstanceStart"}`, 204)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := wait.Until(ctx, 100*time.Millisecond, func() (bool, error) {
			return strings.Contains(s.output(), "Kernel panic"), nil
		}); err != nil {
			t.Fatalf("no kernel panic on the console: %v", err)
		}
		if !strings.Contains(s.output(), "Linux version") {
			t.Fatal("no kernel banner on the console")
		}
		t.Logf("kernel booted to its panic in %s", time.Since(start).Round(100*time.Millisecond))
	}

	t.Run("pause, connect, sigkill", func(t *testing.T) {
		s := startStandIn(t, bin, env...)
		boot(t, s, "panic=0")
		child := qemuChild(t, s.cmd.Process.Pid)
		if child == 0 {
			t.Fatal("no qemu child")
		}
		if _, err := os.Stat(s.sock + ".qemu"); err != nil {
			t.Fatalf("private dir: %v", err)
		}
		s.call(t, "PATCH", "/vm", `{"state":"Paused"}`, 204)
		if out := s.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Paused"`) {
			t.Fatalf("state after pause: %s", out)
		}
		// A Diff snapshot is refused; a Full one leaves the guest paused
		// and resumable (TestBootSnapshot loads one).
		snap := filepath.Join(filepath.Dir(s.sock), "snap")
		body := `{"snapshot_path":"` + snap + `","mem_file_path":"` + snap + `.mem"`
		if msg := fault(t, s.call(t, "PUT", "/snapshot/create", body+`,"snapshot_type":"Diff"}`, 400)); !strings.Contains(msg, "only Full") {
			t.Errorf("Diff snapshot refused with %q", msg)
		}
		s.call(t, "PUT", "/snapshot/create", body+`}`, 204)
		if out := s.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Paused"`) {
			t.Fatalf("state after a snapshot: %s", out)
		}
		s.call(t, "PATCH", "/vm", `{"state":"Resumed"}`, 204)
		if out := s.call(t, "GET", "/", "", 200); !strings.Contains(out, `"Running"`) {
			t.Fatalf("state after resuming: %s", out)
		}
		for _, port := range []uint32{guestcontract.AgentVsockPort, 52} {
			if c, ok := connect(t, s.vsock, port); ok {
				c.Close()
				t.Fatalf("CONNECT %d answered OK with no agent in the guest", port)
			}
		}
		if err := s.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := wait.Until(ctx, 20*time.Millisecond, func() (bool, error) { return gone(child), nil }); err != nil {
			t.Fatalf("qemu pid %d outlived a SIGKILL of the stand-in: %v", child, err)
		}
	})

	t.Run("guest reboot ends the stand-in", func(t *testing.T) {
		s := startStandIn(t, bin, env...)
		boot(t, s, "panic=-1")
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("stand-in still runs after its guest rebooted")
		}
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
		if _, err := os.Stat(s.sock + ".qemu"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("private dir left behind: %v", err)
		}
	})
}
