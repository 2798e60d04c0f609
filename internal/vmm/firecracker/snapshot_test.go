package firecracker

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
)

// vmState asks the fake (GET /) for the instance state.
func vmState(t *testing.T, h vmm.Handles) string {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", h.APISocket)
	}}}
	resp, err := c.Get("http://fc/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct{ State string }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info.State
}

// TestDriver_PauseSaveRestore drives Firecracker's snapshot API through
// the fake, which validates every body against the pinned OpenAPI spec and
// keeps Firecracker's rules (snapshot only when paused, load only into a
// process with nothing configured): pause and resume, a full snapshot
// whose files VerifyState accepts, a restore that loads it (no boot
// source, no vsock device added after the load) and runs, and a corrupt
// state file that fails Start with no process left.
// TestRelocatable: only a jailed VM's state restores into another VM, and
// only with a release that takes network_overrides.
func TestRelocatable(t *testing.T) {
	for v, want := range map[string]bool{"1.8.0": false, "1.11.9": false, "1.12.0": true, "1.16.1": true, "2.0.0": true, "junk": false} {
		if got := (&Driver{}).canOverride(v); got != want {
			t.Errorf("canOverride(%q) = %v, want %v", v, got, want)
		}
	}
	ctx := context.Background()
	d := &Driver{Binary: "/nonexistent/firecracker"}
	if err := d.Relocatable(ctx, vmm.Handles{PID: 42, APISocket: "/vm/api.sock"}); err == nil || !strings.Contains(err.Error(), "jailer") {
		t.Errorf("an unjailed running vm: %v, want a pointer to the jailer", err)
	}
	if err := d.Relocatable(ctx, vmm.Handles{}); err == nil || !strings.Contains(err.Error(), "jailer") {
		t.Errorf("a driver without a jailer: %v, want a pointer to the jailer", err)
	}
}

func TestDriver_PauseSaveRestore(t *testing.T) {
	bin := buildFake(t)
	e := setupEnv(t)
	s := testSpec(t)
	d := &Driver{Binary: bin}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h) })

	if err := d.Pause(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st := vmState(t, h); st != "Paused" {
		t.Fatalf("state after Pause = %q", st)
	}
	if err := d.Resume(ctx, h); err != nil {
		t.Fatal(err)
	}
	if st := vmState(t, h); st != "Running" {
		t.Fatalf("state after Resume = %q", st)
	}

	dir := t.TempDir()
	saved, err := d.Save(ctx, h, dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := d.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if saved.VMM != vmm.Firecracker || saved.Version != want || len(saved.Files) != 2 {
		t.Fatalf("saved %+v, want firecracker %s with two files", saved, want)
	}
	if saved.Files[1].Name != MemoryFile || saved.Files[1].Size != int64(s.MemoryMiB)<<20 {
		t.Fatalf("memory file %+v, want %d MiB", saved.Files[1], s.MemoryMiB)
	}
	if err := vmm.VerifyState(dir, saved); err != nil {
		t.Fatal(err)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}

	before := len(e.calls(t))
	s.RestoreDir = dir
	h2, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Kill(context.Background(), h2) })
	if st := vmState(t, h2); st != "Running" {
		t.Fatalf("state after restore = %q", st)
	}
	var paths []string
	for _, c := range e.calls(t)[before:] {
		if c.Method != http.MethodGet {
			paths = append(paths, c.Method+" "+c.Path)
		}
	}
	got := strings.Join(paths, ", ")
	if got != "PUT /logger, PUT /metrics, PUT /snapshot/load" {
		t.Fatalf("restore calls: %s; want logger, metrics and the load only", got)
	}
	var load map[string]any
	for _, c := range e.calls(t)[before:] {
		if c.Path == "/snapshot/load" {
			if err := json.Unmarshal(c.Body, &load); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The stand-in is a release with network_overrides: the restored
	// interface is put on the spec's tap.
	wantLoad := map[string]any{
		"snapshot_path":     filepath.Join(dir, StateFile),
		"mem_backend":       map[string]any{"backend_type": "File", "backend_path": filepath.Join(dir, MemoryFile)},
		"resume_vm":         true,
		"network_overrides": []any{map[string]any{"iface_id": ifaceID, "host_dev_name": s.Tap}},
	}
	if !reflect.DeepEqual(load, wantLoad) {
		t.Fatalf("snapshot load body %v, want %v", load, wantLoad)
	}
	if err := d.Kill(ctx, h2); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(ctx, s); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("Start with a garbage state = %v", err)
	}
	for _, r := range e.records(t) {
		if r.Kind == "start" && r.PID != h.PID && r.PID != h2.PID && processAlive(r.PID) {
			t.Fatalf("fake firecracker %d outlived a failed restore", r.PID)
		}
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}
