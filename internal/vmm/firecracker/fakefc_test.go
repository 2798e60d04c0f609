package firecracker

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFake_Rejects checks that the fake firecracker rejects what the real
// one would, so that "every call accepted" in the driver tests means
// something.
func TestFake_Rejects(t *testing.T) {
	bin := buildFake(t)
	setupEnv(t)
	dir, err := os.MkdirTemp("", "ff")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	cmd := exec.Command(bin, "--api-sock", sock, "--id", "t")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	for range 200 {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	steps := []struct {
		name, method, path, body string
		want                     int
	}{
		{"start before boot source", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400},
		{"unknown field", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"hugepages":true}`, 400},
		{"missing required field", "PUT", "/machine-config", `{"vcpu_count":1}`, 400},
		{"wrong type", "PUT", "/machine-config", `{"vcpu_count":"one","mem_size_mib":128}`, 400},
		{"vcpu above maximum", "PUT", "/machine-config", `{"vcpu_count":64,"mem_size_mib":128}`, 400},
		{"bad enum", "PUT", "/actions", `{"action_type":"Reboot"}`, 400},
		{"unknown path", "PUT", "/hotplug/cpu", `{}`, 400},
		{"missing kernel file", "PUT", "/boot-source", `{"kernel_image_path":"/nonexistent"}`, 400},
		{"drive id mismatch", "PUT", "/drives/a", `{"drive_id":"b","path_on_host":"` + kernel + `","is_root_device":false,"is_read_only":true}`, 400},
		{"drive missing field", "PUT", "/drives/a", `{"drive_id":"a","path_on_host":"` + kernel + `","is_read_only":true}`, 400},
		{"post-boot call before boot", "PATCH", "/vm", `{"state":"Paused"}`, 400},
		{"valid machine config", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 204},
		{"valid boot source", "PUT", "/boot-source", `{"kernel_image_path":"` + kernel + `","boot_args":"console=ttyS0"}`, 204},
		{"start", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 204},
		{"start twice", "PUT", "/actions", `{"action_type":"InstanceStart"}`, 400},
		{"machine config after start", "PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, 400},
		{"boot source after start", "PUT", "/boot-source", `{"kernel_image_path":"` + kernel + `"}`, 400},
		{"drive after start", "PUT", "/drives/a", `{"drive_id":"a","path_on_host":"` + kernel + `","is_root_device":false,"is_read_only":true}`, 400},
		{"instance info", "GET", "/", ``, 200},
	}
	for _, st := range steps {
		req, _ := http.NewRequest(st.method, "http://localhost"+st.path, strings.NewReader(st.body))
		if st.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != st.want {
			t.Errorf("%s: %s %s = %d, want %d", st.name, st.method, st.path, resp.StatusCode, st.want)
		}
	}
}
