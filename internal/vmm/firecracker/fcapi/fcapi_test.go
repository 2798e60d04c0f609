package fcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"banger/internal/vmm/firecracker/fcspec"
)

// specPath is the pinned OpenAPI document the client follows.
var specPath = filepath.Join("..", "testdata", "firecracker-v1.16.1.yaml")

// loadRouter loads the pinned spec through fcspec, as fakefc does.
func loadRouter(t *testing.T) routers.Router {
	t.Helper()
	r, err := fcspec.Router(specPath)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// request is one request the test server received.
type request struct {
	method, path string
	body         []byte
	invalid      error
}

// specServer serves the API on a unix socket, validating every request
// against the pinned document and answering as Firecracker would.
type specServer struct {
	router routers.Router
	fault  string // when set, every request fails with this fault_message

	mu   sync.Mutex
	reqs []request
}

func (s *specServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rq := request{method: r.Method, path: r.URL.Path, body: body}
	route, params, err := s.router.FindRoute(r)
	if err == nil {
		err = openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
			Request: r, PathParams: params, Route: route,
			Options: &openapi3filter.Options{MultiError: true, RejectWhenRequestBodyNotSpecified: true},
		})
	}
	rq.invalid = err
	s.mu.Lock()
	s.reqs = append(s.reqs, rq)
	s.mu.Unlock()
	if err != nil || s.fault != "" {
		msg := s.fault
		if msg == "" {
			msg = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "GET /":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"app_name":"Firecracker","id":"t","state":"Running","vmm_version":"1.16.1"}`)
	case "GET /version":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"firecracker_version":"1.16.1"}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func startServer(t *testing.T, s *specServer) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return New(sock)
}

// TestRequestsMatchSpec sends every request the client can make, with
// every field it can set, and checks each against the pinned document
// with unknown fields refused.
func TestRequestsMatchSpec(t *testing.T) {
	srv := &specServer{router: loadRouter(t)}
	c := startServer(t, srv)
	ctx := context.Background()
	yes, no := true, false
	calls := []struct {
		name string
		call func() error
		want string // method and path
	}{
		{"describe", func() error {
			info, err := c.DescribeInstance(ctx)
			if err == nil && (info.State != StateRunning || info.VMMVersion != "1.16.1") {
				err = fmt.Errorf("instance info %+v", info)
			}
			return err
		}, "GET /"},
		{"version", func() error {
			v, err := c.Version(ctx)
			if err == nil && v.FirecrackerVersion != "1.16.1" {
				err = fmt.Errorf("version %+v", v)
			}
			return err
		}, "GET /version"},
		{"machine minimal", func() error { return c.PutMachineConfig(ctx, MachineConfiguration{VcpuCount: 1, MemSizeMib: 128}) }, "PUT /machine-config"},
		{"machine full", func() error {
			return c.PutMachineConfig(ctx, MachineConfiguration{VcpuCount: 2, MemSizeMib: 512, Smt: &no, TrackDirtyPages: &yes, HugePages: "2M"})
		}, "PUT /machine-config"},
		{"boot source", func() error {
			return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k", InitrdPath: "/i", BootArgs: "console=ttyS0 x=1 x=1"})
		}, "PUT /boot-source"},
		{"drive", func() error {
			return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/r", IsReadOnly: &yes, CacheType: "Unsafe", IoEngine: "Sync"})
		}, "PUT /drives/rootfs"},
		{"network", func() error {
			return c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMac: "06:00:00:00:00:01"})
		}, "PUT /network-interfaces/eth0"},
		{"vsock", func() error { return c.PutVsock(ctx, Vsock{GuestCid: 3, UdsPath: "/v.sock"}) }, "PUT /vsock"},
		{"entropy", func() error { return c.PutEntropy(ctx, EntropyDevice{}) }, "PUT /entropy"},
		{"logger", func() error {
			return c.PutLogger(ctx, Logger{LogPath: "/l", Level: "Info", ShowLevel: &yes, ShowLogOrigin: &no, Module: "api_server"})
		}, "PUT /logger"},
		{"metrics", func() error { return c.PutMetrics(ctx, Metrics{MetricsPath: "/m"}) }, "PUT /metrics"},
		{"start", func() error { return c.InstanceStart(ctx) }, "PUT /actions"},
		{"ctrl-alt-del", func() error { return c.SendCtrlAltDel(ctx) }, "PUT /actions"},
		{"flush metrics", func() error { return c.Action(ctx, ActionFlushMetrics) }, "PUT /actions"},
		{"pause", func() error { return c.PatchVM(ctx, VMPaused) }, "PATCH /vm"},
		{"resume", func() error { return c.PatchVM(ctx, VMResumed) }, "PATCH /vm"},
		{"snapshot create", func() error {
			return c.CreateSnapshot(ctx, SnapshotCreateParams{SnapshotPath: "/s", MemFilePath: "/m", SnapshotType: SnapshotFull})
		}, "PUT /snapshot/create"},
		{"snapshot load", func() error {
			return c.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: "/s", MemBackend: &MemoryBackend{BackendType: BackendFile, BackendPath: "/m"}, ResumeVM: true})
		}, "PUT /snapshot/load"},
		{"snapshot load with overrides", func() error {
			return c.LoadSnapshot(ctx, SnapshotLoadParams{
				SnapshotPath: "/s", MemBackend: &MemoryBackend{BackendType: BackendFile, BackendPath: "/m"},
				TrackDirtyPages: true, ResumeVM: true,
				NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap1"}},
				VsockOverride:    &VsockOverride{UdsPath: "/v2.sock"},
			})
		}, "PUT /snapshot/load"},
	}
	for i, tc := range calls {
		if err := tc.call(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		srv.mu.Lock()
		if len(srv.reqs) != i+1 {
			t.Fatalf("%s: server saw %d requests, want %d", tc.name, len(srv.reqs), i+1)
		}
		rq := srv.reqs[i]
		srv.mu.Unlock()
		if got := rq.method + " " + rq.path; got != tc.want {
			t.Errorf("%s: sent %s, want %s", tc.name, got, tc.want)
		}
		if rq.invalid != nil {
			t.Errorf("%s: %s %s %s does not match the spec: %v", tc.name, rq.method, rq.path, rq.body, rq.invalid)
		}
	}
}

// TestUnsetFieldsOmitted: optional fields left unset are not sent, so
// Firecracker applies its defaults (and older releases never see fields
// they do not know).
func TestUnsetFieldsOmitted(t *testing.T) {
	srv := &specServer{router: loadRouter(t)}
	c := startServer(t, srv)
	ctx := context.Background()
	_ = c.PutDrive(ctx, Drive{DriveID: "d", PathOnHost: "/d"})
	_ = c.PutMachineConfig(ctx, MachineConfiguration{VcpuCount: 1, MemSizeMib: 64})
	_ = c.PutEntropy(ctx, EntropyDevice{})
	_ = c.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: "/s", MemBackend: &MemoryBackend{BackendType: BackendFile, BackendPath: "/m"}})
	want := [][]string{
		{"drive_id", "is_root_device", "path_on_host"},
		{"mem_size_mib", "vcpu_count"},
		{},
		{"mem_backend", "snapshot_path"},
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for i, rq := range srv.reqs {
		var m map[string]any
		if err := json.Unmarshal(rq.body, &m); err != nil {
			t.Fatalf("%s %s body %q: %v", rq.method, rq.path, rq.body, err)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want[i]) {
			t.Errorf("%s %s sent %v, want %v", rq.method, rq.path, keys, want[i])
		}
		if rq.invalid != nil {
			t.Errorf("%s %s: %v", rq.method, rq.path, rq.invalid)
		}
	}
}

// TestSpecRejectsUnknownFields proves the validation above can fail: a
// field the document does not define is refused.
func TestSpecRejectsUnknownFields(t *testing.T) {
	srv := &specServer{router: loadRouter(t)}
	c := startServer(t, srv)
	err := c.do(context.Background(), http.MethodPut, "/entropy", map[string]any{"rate": 1}, nil)
	var fe *Error
	if !errors.As(err, &fe) || fe.Status != http.StatusBadRequest {
		t.Fatalf("unknown field accepted: %v", err)
	}
	err = c.do(context.Background(), http.MethodPut, "/machine-config", map[string]any{"vcpu_count": 1}, nil)
	if !errors.As(err, &fe) {
		t.Fatalf("missing required field accepted: %v", err)
	}
}

// TestErrorFromFaultMessage: a refusal becomes an *Error carrying the
// method, path, status and Firecracker's fault_message.
func TestErrorFromFaultMessage(t *testing.T) {
	srv := &specServer{router: loadRouter(t), fault: "The requested operation is not supported after starting the microVM."}
	c := startServer(t, srv)
	err := c.PutBootSource(context.Background(), BootSource{KernelImagePath: "/k"})
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	if fe.Method != http.MethodPut || fe.Path != "/boot-source" || fe.Status != http.StatusBadRequest || fe.FaultMessage != srv.fault {
		t.Fatalf("error %+v", fe)
	}
	if !IsFault(err) || !strings.Contains(err.Error(), srv.fault) || !strings.Contains(err.Error(), "PUT /boot-source") {
		t.Fatalf("error text %q", err)
	}
}

// TestTransportError: no socket is a plain error, not a fault.
func TestTransportError(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	err := c.InstanceStart(context.Background())
	if err == nil || IsFault(err) {
		t.Fatalf("InstanceStart without a socket = %v", err)
	}
}
