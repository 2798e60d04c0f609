package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/layout"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// record mirrors fakefc's Record.
type record struct {
	Kind    string          `json:"kind"`
	Method  string          `json:"method"`
	Path    string          `json:"path"`
	Body    json.RawMessage `json:"body"`
	Status  int             `json:"status"`
	Error   string          `json:"error"`
	Args    []string        `json:"args"`
	PID     int             `json:"pid"`
	Session int             `json:"session"`
	Seccomp string          `json:"seccomp"`
}

var (
	fakeOnce sync.Once
	fakeBin  string
	fakeErr  error
	swagger  string
)

// pinnedSpec is the OpenAPI document of the Firecracker release banger's
// API client follows; fakefc validates every request against it.
const pinnedSpec = "testdata/firecracker-v1.16.1.yaml"

// buildFake compiles fakefc once per test binary and locates the pinned
// OpenAPI spec it validates against.
func buildFake(t *testing.T) string {
	t.Helper()
	fakeOnce.Do(func() {
		p, err := filepath.Abs(pinnedSpec)
		if err != nil {
			fakeErr = err
			return
		}
		if _, err := os.Stat(p); err != nil {
			fakeErr = fmt.Errorf("pinned firecracker spec: %w", err)
			return
		}
		swagger = p
		dir, err := os.MkdirTemp("", "fakefc")
		if err != nil {
			fakeErr = err
			return
		}
		fakeBin = filepath.Join(dir, "firecracker")
		if b, err := exec.Command("go", "build", "-o", fakeBin, "./fakefc").CombinedOutput(); err != nil {
			fakeErr = fmt.Errorf("build fakefc: %v: %s", err, b)
		}
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return fakeBin
}

// env points fakefc at the spec and at per-test record and connection files.
type env struct {
	record, conns string
}

func setupEnv(t *testing.T) env {
	dir := t.TempDir()
	e := env{record: filepath.Join(dir, "calls.jsonl"), conns: filepath.Join(dir, "conns")}
	t.Setenv("FAKEFC_SWAGGER", swagger)
	t.Setenv("FAKEFC_RECORD", e.record)
	t.Setenv("FAKEFC_CONNS", e.conns)
	return e
}

func (e env) records(t *testing.T) []record {
	t.Helper()
	b, err := os.ReadFile(e.record)
	if err != nil {
		t.Fatal(err)
	}
	var rs []record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("record line %q: %v", sc.Text(), err)
		}
		rs = append(rs, r)
	}
	return rs
}

// calls returns the API calls and fails the test on any call the fake
// rejected.
func (e env) calls(t *testing.T) []record {
	t.Helper()
	var cs []record
	for _, r := range e.records(t) {
		if r.Kind != "call" {
			continue
		}
		if r.Status >= 400 {
			t.Errorf("fake firecracker rejected %s %s %s: %s", r.Method, r.Path, r.Body, r.Error)
		}
		cs = append(cs, r)
	}
	return cs
}

// waitNoConns waits until the fake reports no open API connections.
func (e env) waitNoConns(t *testing.T) {
	t.Helper()
	var last string
	for range 100 {
		b, _ := os.ReadFile(e.conns)
		if last = string(b); last == "0" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fake firecracker still has %s open API connection(s)", last)
}

// testCmdline has repeated keys and an order a map would not keep.
const testCmdline = "console=ttyS0 reboot=k panic=-1 root=LABEL=banger-root ro rootwait banger.overlay=LABEL=banger-overlay banger.work=LABEL=banger-work quiet quiet x=1 x=2"

func testSpec(t *testing.T) vmm.Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	touch := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return vmm.Spec{
		VMID: "01JFCTEST", Name: "fctest", VCPU: 2, MemoryMiB: 512,
		Vmlinux: touch("vmlinux"), Initrd: touch("initrd.img"), Cmdline: testCmdline,
		Drives: []vmm.Drive{
			{ID: "rootfs", Path: touch("rootfs.ext4"), ReadOnly: true},
			{ID: "overlay", Path: touch("overlay.ext4")},
			{ID: "work", Path: touch("work.ext4")},
			{ID: "config", Path: touch("config.ext4"), ReadOnly: true},
		},
		Tap: "bgtap1", MAC: "06:00:c0:00:02:05", CID: 5, Dir: dir,
	}
}

func TestDriver_StartStop(t *testing.T) {
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

	if !vmm.Alive(h) {
		t.Fatal("not Alive after Start")
	}
	if h.VMM != vmm.Firecracker || h.AgentTransport != vmm.TransportVsock || h.VsockSocket != filepath.Join(s.Dir, layout.VsockSocketFile) || h.Tap != s.Tap {
		t.Fatalf("handles %+v", h)
	}

	// Process: detached in its own session, seccomp on.
	rs := e.records(t)
	if rs[0].Kind != "start" {
		t.Fatalf("first record %+v", rs[0])
	}
	st := rs[0]
	if st.PID != h.PID || st.Session != h.PID {
		t.Errorf("fake pid %d session %d; want pid %d leading its own session", st.PID, st.Session, h.PID)
	}
	if st.Seccomp != "default" || slices.Contains(st.Args, "--no-seccomp") {
		t.Errorf("seccomp %q with args %v; want Firecracker's default filter", st.Seccomp, st.Args)
	}

	// Calls: all accepted, configuration before InstanceStart, which is last.
	calls := e.calls(t)
	var got []string
	for _, c := range calls {
		if c.Method != http.MethodGet {
			got = append(got, c.Method+" "+c.Path)
		}
	}
	want := []string{
		"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source",
		"PUT /drives/rootfs", "PUT /drives/overlay", "PUT /drives/work", "PUT /drives/config",
		"PUT /network-interfaces/1", "PUT /vsock", "PUT /entropy", "PUT /actions",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("calls\n got %v\nwant %v", got, want)
	}
	body := func(path string) map[string]any {
		for _, c := range calls {
			if c.Method == http.MethodPut && c.Path == path {
				var m map[string]any
				if err := json.Unmarshal(c.Body, &m); err != nil {
					t.Fatal(err)
				}
				return m
			}
		}
		t.Fatalf("no PUT %s", path)
		return nil
	}
	bs := body("/boot-source")
	if bs["boot_args"] != testCmdline {
		t.Errorf("boot_args %q, want exactly %q", bs["boot_args"], testCmdline)
	}
	if strings.Contains(fmt.Sprint(bs["boot_args"]), "nomodule") {
		t.Error("boot_args contain nomodule")
	}
	if bs["kernel_image_path"] != s.Vmlinux || bs["initrd_path"] != s.Initrd {
		t.Errorf("boot-source %v", bs)
	}
	for _, dr := range s.Drives {
		m := body("/drives/" + dr.ID)
		if m["is_root_device"] != false || m["is_read_only"] != dr.ReadOnly || m["path_on_host"] != dr.Path {
			t.Errorf("drive %s: %v", dr.ID, m)
		}
	}
	if m := body("/machine-config"); m["vcpu_count"] != 2.0 || m["mem_size_mib"] != 512.0 {
		t.Errorf("machine-config %v", m)
	}
	if m := body("/network-interfaces/1"); m["host_dev_name"] != s.Tap || m["guest_mac"] != s.MAC {
		t.Errorf("network-interface %v", m)
	}
	if m := body("/vsock"); m["uds_path"] != h.VsockSocket || m["guest_cid"] != 5.0 {
		t.Errorf("vsock %v", m)
	}
	if m := body("/actions"); m["action_type"] != "InstanceStart" {
		t.Errorf("last action %v", m)
	}
	if m := body("/logger"); m["log_path"] != h.VMMLog || m["show_level"] != true {
		t.Errorf("logger %v, want vmm.log with level words", m)
	}
	if m := body("/metrics"); m["metrics_path"] != filepath.Join(s.Dir, layout.MetricsFile) {
		t.Errorf("metrics %v", m)
	}
	if m := body("/entropy"); len(m) != 0 {
		t.Errorf("entropy %v, want an empty body", m)
	}

	// No API connection left open by the client.
	e.waitNoConns(t)

	// The hybrid vsock socket answers the CONNECT handshake.
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
	fmt.Fprintf(c, "hello\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "hello\n" {
		t.Fatalf("vsock echo %q, %v", echo, err)
	}
	c.Close()

	// Stop: Ctrl-Alt-Del ends the VMM before the timeout.
	if err := d.Stop(ctx, h, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if vmm.Alive(h) {
		t.Fatal("Alive after Stop")
	}
	rs = e.records(t)
	if last := rs[len(rs)-1]; last.Kind != "exit" {
		t.Fatalf("last record %+v; want the fake's clean exit after SendCtrlAltDel", last)
	}
	var sent bool
	for _, c := range e.calls(t) {
		sent = sent || strings.Contains(string(c.Body), "SendCtrlAltDel")
	}
	if !sent {
		t.Fatal("Stop did not send SendCtrlAltDel")
	}
	if err := d.Stop(ctx, h, time.Second); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := d.Kill(ctx, h); err != nil {
		t.Fatalf("Kill after Stop: %v", err)
	}
}

func TestDriver_Kill(t *testing.T) {
	bin := buildFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name string
		end  func(d *Driver, h vmm.Handles) error
	}{
		{"Kill", func(d *Driver, h vmm.Handles) error { return d.Kill(ctx, h) }},
		{"behind the driver's back", func(d *Driver, h vmm.Handles) error {
			if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
				return err
			}
			return vmm.WaitExit(ctx, h)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setupEnv(t)
			d := &Driver{Binary: bin}
			h, err := d.Start(ctx, testSpec(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Kill(context.Background(), h) })
			if !vmm.Alive(h) {
				t.Fatal("not Alive after Start")
			}
			if err := tt.end(d, h); err != nil {
				t.Fatal(err)
			}
			if vmm.Alive(h) {
				t.Fatal("Alive after the VMM was killed")
			}
			// A new process reusing the PID would have another start time.
			reused := h
			reused.StartTime++
			if vmm.Alive(reused) {
				t.Fatal("Alive with a different start time")
			}
			if err := d.Stop(ctx, h, time.Second); err != nil {
				t.Fatalf("Stop of a dead VM: %v", err)
			}
			if err := d.Kill(ctx, h); err != nil {
				t.Fatalf("Kill of a dead VM: %v", err)
			}
			for _, r := range e.records(t) {
				if r.Kind == "exit" {
					t.Fatal("fake exited cleanly; want it killed")
				}
			}
		})
	}
}

func TestDriver_CustomSeccomp(t *testing.T) {
	bin := buildFake(t)
	e := setupEnv(t)
	s := testSpec(t)
	filter := filepath.Join(s.Dir, "seccomp.bpf")
	if err := os.WriteFile(filter, []byte{0}, 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: bin, SeccompFilter: filter}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := d.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Kill(ctx, h)
	if got := e.records(t)[0].Seccomp; got != "custom:"+filter {
		t.Fatalf("seccomp %q, want custom:%s", got, filter)
	}
	e.calls(t)
}

func TestDriver_StartFailure(t *testing.T) {
	bin := buildFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name     string
		mod      func(*vmm.Spec)
		errHas   string
		started  bool
		rejected string
	}{
		{name: "missing kernel", mod: func(s *vmm.Spec) { s.Vmlinux = filepath.Join(s.Dir, "nope") }, errHas: "PUT /boot-source", started: true, rejected: "/boot-source"},
		{name: "missing drive", mod: func(s *vmm.Spec) { s.Drives[2].Path = filepath.Join(s.Dir, "gone.ext4") }, errHas: "PUT /drives/work", started: true, rejected: "/drives/work"},
		{name: "no kernel", mod: func(s *vmm.Spec) { s.Vmlinux = "" }, errHas: "no kernel"},
		{name: "cid too small", mod: func(s *vmm.Spec) { s.CID = 2 }, errHas: "cid 2"},
		{name: "socket path too long", mod: func(s *vmm.Spec) {
			s.Dir = filepath.Join(s.Dir, strings.Repeat("d", 100))
			_ = os.MkdirAll(s.Dir, 0o755)
		}, errHas: "107-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setupEnv(t)
			s := testSpec(t)
			tt.mod(&s)
			h, err := (&Driver{Binary: bin}).Start(ctx, s)
			if err == nil {
				t.Fatalf("Start succeeded: %+v", h)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("error %q lacks %q", err, tt.errHas)
			}
			rs, _ := os.ReadFile(e.record)
			if !tt.started {
				if len(rs) != 0 {
					t.Fatalf("firecracker ran: %s", rs)
				}
				return
			}
			for _, f := range []string{layout.ConsoleLogFile, layout.VMMLogFile} {
				if !strings.Contains(err.Error(), filepath.Join(s.Dir, f)) {
					t.Errorf("error %q does not name %s", err, f)
				}
			}
			recs := e.records(t)
			pid := recs[0].PID
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("firecracker pid %d left running after a failed Start", pid)
			}
			var rejected bool
			for _, r := range recs {
				rejected = rejected || r.Status >= 400 && r.Path == tt.rejected
			}
			if !rejected {
				t.Fatalf("no rejected call to %s in %s", tt.rejected, rs)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	bin := buildFake(t)
	v, err := BinaryVersion(context.Background(), bin)
	// The fake stands in for a release banger supports (1.8 or later).
	if err != nil || v.Major != 1 || v.Minor < 8 {
		t.Fatalf("BinaryVersion = %v, %v; want 1.8 or later", v, err)
	}
	tests := []struct {
		out     string
		want    Version
		wantErr bool
	}{
		{"Firecracker v1.16.2\n\nSupported snapshot data format versions: v1.0.0\n", Version{1, 16, 2}, false},
		{"Firecracker v1.7.0", Version{1, 7, 0}, false},
		{"Firecracker v2.0.0", Version{2, 0, 0}, false},
		{"Firecracker v0.25.2", Version{0, 25, 2}, false},
		{"qemu 7.2", Version{}, true},
	}
	for _, tt := range tests {
		v, err := ParseVersion(tt.out)
		if (err != nil) != tt.wantErr || v != tt.want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", tt.out, v, err, tt.want)
		}
	}
}

// TestDriver_StartRecordsHandlesAtSpawn: the handles reach OnSpawn while
// Start still waits for the API socket, so a daemon killed during that
// wait leaves a record of the process. The stand-in binary never opens
// its API socket.
func TestDriver_StartRecordsHandlesAtSpawn(t *testing.T) {
	s := testSpec(t)
	fake := filepath.Join(s.Dir, "firecracker-never-ready")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &Driver{Binary: fake, StartTimeout: time.Minute}
	h, errc := vmmtest.StartUntilSpawn(t, ctx, d, s)
	spawned := make(chan vmm.Handles, 1)
	if h.VMM != vmm.Firecracker || h.APISocket != filepath.Join(s.Dir, layout.APISocketFile) || h.AgentTransport != vmm.TransportVsock || h.VMMLog != filepath.Join(s.Dir, layout.VMMLogFile) {
		t.Errorf("handles %+v", h)
	}
	// The daemon gives up (cancel): Start ends the process it spawned.
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("Start succeeded against a VMM that never answered")
	}
	if ok, _ := vmm.Check(h); ok {
		t.Fatal("the VMM outlived a failed Start")
	}

	// The start timeout ends the wait too.
	d.StartTimeout = 200 * time.Millisecond
	s.OnSpawn = func(h vmm.Handles) error { spawned <- h; return nil }
	if _, err := d.Start(context.Background(), s); err == nil || !strings.Contains(err.Error(), "wait for api socket") {
		t.Fatalf("Start against a VMM that never answers = %v", err)
	}
	if ok, _ := vmm.Check(<-spawned); ok {
		t.Fatal("the VMM outlived a start timeout")
	}

	// An OnSpawn error fails Start and ends the process.
	s.OnSpawn = func(h vmm.Handles) error { spawned <- h; return os.ErrPermission }
	if _, err := d.Start(context.Background(), s); err == nil || !strings.Contains(err.Error(), "permission") {
		t.Fatalf("Start with a failing OnSpawn = %v", err)
	}
	if ok, _ := vmm.Check(<-spawned); ok {
		t.Fatal("the VMM outlived a failed OnSpawn")
	}
}

// TestDriver_StartExitedVMM: a VMM that exits before its API socket
// answers fails Start at once, naming its logs.
func TestDriver_StartExitedVMM(t *testing.T) {
	s := testSpec(t)
	fake := filepath.Join(s.Dir, "firecracker-exits")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho bad flags >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: fake, StartTimeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := d.Start(ctx, s)
	if err == nil || !strings.Contains(err.Error(), "exited during start") || !strings.Contains(err.Error(), layout.ConsoleLogFile) {
		t.Fatalf("Start of a VMM that exits = %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(s.Dir, layout.ConsoleLogFile))
	if !strings.Contains(string(b), "bad flags") {
		t.Fatalf("console.log %q lacks the VMM's stderr", b)
	}
}
