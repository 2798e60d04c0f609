// Command fakefc is a stand-in for the firecracker binary, for hosts and
// tests without Firecracker or KVM. It accepts Firecracker's command-line
// flags, serves the API on --api-sock, validates every request against an
// OpenAPI spec (the pinned Firecracker v1.16.1 spec,
// internal/vmm/firecracker/testdata/firecracker-v1.16.1.yaml; unknown
// fields rejected, as Firecracker's serde structs do), enforces
// Firecracker's pre-boot/post-boot rules and records every call as a JSON
// line for the test to read. `--version` prints the Firecracker release
// it stands in for and a second line, StandInLine, by which banger knows
// the binary needs no KVM.
//
// Without FAKEFC_QEMU it boots nothing: the hybrid vsock socket answers
// the CONNECT handshake with an echo. It keeps Firecracker's snapshot state
// machine: PATCH /vm pauses and resumes a running VM, PUT /snapshot/create
// (paused only) writes a state file describing the configuration it holds
// and a sparse memory file of the machine's size, and PUT /snapshot/load
// (only on a fresh process with no boot configuration, as Firecracker
// requires) reads them back, rebinding the vsock socket at the saved path.
//
// With FAKEFC_QEMU=<qemu-system-x86_64> (boot mode) InstanceStart boots the
// configured machine for real under QEMU microvm with TCG, as a child that
// dies with the stand-in (Pdeathsig) and is killed and reaped when it
// exits: the ELF vmlinux (booted through its PVH note), initrd and
// boot_args, the drives in the order configured with their read-only
// flags, the tap with its MAC, the vCPUs and memory, the serial console
// on the stand-in's stdout as Firecracker's is. The command line is the
// QEMU driver's (internal/vmm/qemu.Cmdline), so QEMU runs under the same
// -sandbox and -no-reboot; its QMP and agent sockets live in
// <api-sock>.qemu/, made and removed by the stand-in. The vsock socket
// bridges CONNECT to the agent port into a yamux stream on the agent's
// virtio-serial port (the guest agent listens on both); other ports are
// closed. PATCH /vm maps to QMP stop and cont; SendCtrlAltDel to QMP
// system_powerdown, and the stand-in exits (code 0) when QEMU does, as
// Firecracker exits when its guest reboots under reboot=k.
//
// Snapshots in boot mode save the guest for real, as banger's QEMU driver
// does. PUT /snapshot/create (paused, Full only) first quiesces the agent
// channel: the guest runs for a moment while the stand-in hangs up its
// yamux session (and the vsock connections spliced onto it) and waits,
// bounded, for the guest to close its end of the port, so the saved guest
// holds no session with the old stand-in. The guest is stopped again and
// QEMU migrates it (RAM and device state) through a descriptor into
// mem_file_path; snapshot_path is the stand-in's JSON state file, here
// also holding the machine, kernel, initrd, boot_args, drives, network
// interface, vsock device, serial output, QEMU version and the memory
// file's size and checksum. Both are created 0600; the VM stays paused.
// PUT /snapshot/load in a fresh stand-in refuses anything else (an
// echo-mode snapshot, a Uffd backend, a missing, truncated or altered
// memory file, another QEMU build), applies network_overrides and
// vsock_override, starts QEMU with the saved machine's command line and
// -incoming fd:3 -S, waits for the load and resumes the guest when
// resume_vm says so; the vsock socket then bridges as after InstanceStart.
//
// What it proves: banger's driver, its use of the API against the pinned
// spec, the vsock CONNECT protocol, and handle and reconcile logic, with a
// real guest in boot mode; for snapshots, the API sequence of a save and
// a restore, the network and vsock overrides, and that the guest's state
// survives (under QEMU). What it does not: Firecracker's own device model,
// KVM, its seccomp filter, its timing, its snapshot format and memory-file
// layout, UFFD memory backends or diff snapshots; only a real Firecracker
// on KVM can.
//
// Environment: FAKEFC_SWAGGER (path of the OpenAPI spec, required),
// FAKEFC_QEMU (the QEMU binary; enables boot mode), FAKEFC_RECORD
// (JSON-lines record file), FAKEFC_CONNS (file holding the number of open
// API connections, rewritten on each change), FAKEFC_HOST_KHZ (the host
// TSC frequency, read where /proc/cpuinfo is missing, as in a jail).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"banger/internal/atomicfile"
	"banger/internal/vmm/firecracker/fcspec"
)

// Version is the first line --version prints, in Firecracker's format:
// the release whose API (the pinned spec) the stand-in serves.
const Version = "Firecracker v1.16.1"

// StandInLine is the second line of --version. hostcap looks for it: a
// stand-in boots its guests under QEMU TCG and so needs no KVM, unlike a
// real Firecracker.
const StandInLine = "stand-in: boots under QEMU TCG, needs no KVM"

// Record is one line of the record file.
type Record struct {
	Kind   string          `json:"kind"` // "start", "call", "qemu", "exit"
	Method string          `json:"method,omitempty"`
	Path   string          `json:"path,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
	// start and qemu only
	Args    []string `json:"args,omitempty"`
	PID     int      `json:"pid,omitempty"`
	Session int      `json:"session,omitempty"`
	Seccomp string   `json:"seccomp,omitempty"`
}

type fake struct {
	router  routers.Router
	id      string
	apiSock string
	qemuBin string // boot mode when set

	exitOnce sync.Once

	recMu sync.Mutex
	rec   *os.File

	mu        sync.Mutex
	booted    bool
	bootSrc   bool
	machine   map[string]any
	logger    bool
	metrics   bool
	drives    map[string]bool // id -> is_root_device
	vsockPath string
	vsockLn   net.Listener
	paused    bool

	// Boot configuration, kept for boot mode.
	kernel, initrd, bootArgs string
	driveOrder               []driveCfg
	tap, mac, ifaceID        string
	tapCount                 int
	cid                      float64
	serialOut                string // PUT /serial serial_out_path; "" = stdout
	guest                    *guest

	connMu    sync.Mutex
	conns     int
	connsPath string

	// Open vsock connections of the agent bridge (boot mode).
	bridgeMu sync.Mutex
	bridges  map[net.Conn]struct{}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakefc:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "")
	id := fs.String("id", "anonymous-instance", "")
	seccompFilter := fs.String("seccomp-filter", "", "")
	noSeccomp := fs.Bool("no-seccomp", false, "")
	_ = fs.String("log-path", "", "")
	_ = fs.String("level", "", "")
	_ = fs.String("config-file", "", "")
	_ = fs.String("metrics-path", "", "")
	_ = fs.Bool("boot-timer", false, "")
	_ = fs.Bool("show-level", false, "")
	_ = fs.Bool("show-log-origin", false, "")
	_ = fs.Uint64("http-api-max-payload-size", 51200, "")
	_ = fs.Uint64("mmds-size-limit", 51200, "")
	// Passed by the jailer when it execs Firecracker.
	_ = fs.Uint64("start-time-us", 0, "")
	_ = fs.Uint64("start-time-cpu-us", 0, "")
	_ = fs.Uint64("parent-cpu-time-us", 0, "")
	version := fs.Bool("version", false, "")
	// Firecracker spells flags with two dashes; Go's flag package takes both.
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *version {
		fmt.Println(Version)
		fmt.Println(StandInLine)
		return nil
	}
	if *noSeccomp && *seccompFilter != "" {
		return errors.New("--no-seccomp and --seccomp-filter are mutually exclusive")
	}
	seccomp := "default"
	if *noSeccomp {
		seccomp = "none"
	} else if *seccompFilter != "" {
		if _, err := os.Stat(*seccompFilter); err != nil {
			return fmt.Errorf("seccomp filter: %w", err)
		}
		seccomp = "custom:" + *seccompFilter
	}
	router, err := loadRouter(os.Getenv("FAKEFC_SWAGGER"))
	if err != nil {
		return err
	}
	f := &fake{router: router, id: *id, apiSock: *apiSock, qemuBin: os.Getenv("FAKEFC_QEMU"), drives: map[string]bool{}, connsPath: os.Getenv("FAKEFC_CONNS")}
	if p := os.Getenv("FAKEFC_RECORD"); p != "" {
		if f.rec, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return err
		}
	}
	sid, _ := unix.Getsid(0)
	f.record(Record{Kind: "start", Args: os.Args, PID: os.Getpid(), Session: sid, Seccomp: seccomp})

	ln, err := net.Listen("unix", *apiSock)
	if err != nil {
		return fmt.Errorf("bind api socket: %w", err)
	}
	f.writeConns()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		f.exit(128 + int(sig.(syscall.Signal)))
	}()
	srv := &http.Server{Handler: f, ConnState: f.connState}
	err = srv.Serve(ln)
	f.mu.Lock()
	g := f.guest
	f.mu.Unlock()
	if g != nil {
		g.stop()
	}
	return err
}

// loadRouter loads the spec at path (FAKEFC_SWAGGER) through fcspec.
func loadRouter(path string) (routers.Router, error) {
	if path == "" {
		return nil, errors.New("FAKEFC_SWAGGER is not set")
	}
	return fcspec.Router(path)
}

func (f *fake) record(r Record) {
	if f.rec == nil {
		return
	}
	f.recMu.Lock()
	defer f.recMu.Unlock()
	b, _ := json.Marshal(r)
	_, _ = f.rec.Write(append(b, '\n'))
}

func (f *fake) connState(_ net.Conn, st http.ConnState) {
	f.connMu.Lock()
	switch st {
	case http.StateNew:
		f.conns++
	case http.StateClosed, http.StateHijacked:
		f.conns--
	}
	f.connMu.Unlock()
	f.writeConns()
}

func (f *fake) writeConns() {
	if f.connsPath == "" {
		return
	}
	f.connMu.Lock()
	defer f.connMu.Unlock()
	if err := atomicfile.Write(f.connsPath, []byte(strconv.Itoa(f.conns)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "fakefc: connection count:", err)
	}
}

type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func bad(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	status, resp, err := f.handle(r, body)
	rec := Record{Kind: "call", Method: r.Method, Path: r.URL.Path, Status: status}
	if json.Valid(body) {
		rec.Body = body
	}
	if err != nil {
		rec.Error = err.Error()
	}
	f.record(rec)
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"fault_message": err.Error()})
		return
	}
	if resp == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
	if status == http.StatusNoContent {
		return
	}
}

// handle validates r against the spec and the state machine, applies it and
// returns the status and response body.
func (f *fake) handle(r *http.Request, body []byte) (int, any, error) {
	route, params, err := f.router.FindRoute(r)
	if err != nil {
		return http.StatusBadRequest, nil, fmt.Errorf("no route for %s %s: %v", r.Method, r.URL.Path, err)
	}
	in := &openapi3filter.RequestValidationInput{
		Request: r, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true, RejectWhenRequestBodyNotSpecified: true},
	}
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		return http.StatusBadRequest, nil, fmt.Errorf("invalid request: %v", err)
	}
	var m map[string]any
	if len(body) > 0 {
		_ = json.Unmarshal(body, &m)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.Method + " " + route.Path
	if err := f.apply(r.Context(), key, params, m); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return ae.status, nil, err
		}
		return http.StatusBadRequest, nil, err
	}
	switch key {
	case "GET /":
		state := "Not started"
		if f.booted {
			state = "Running"
		}
		if f.paused {
			state = "Paused"
		}
		return http.StatusOK, map[string]any{"id": f.id, "state": state, "vmm_version": strings.TrimPrefix(Version, "Firecracker v"), "app_name": "Firecracker"}, nil
	case "GET /version":
		return http.StatusOK, map[string]any{"firecracker_version": strings.TrimPrefix(Version, "Firecracker v")}, nil
	case "GET /machine-config":
		return http.StatusOK, f.machineConfig(), nil
	case "GET /vm/config":
		return http.StatusOK, f.vmConfig(), nil
	}
	if r.Method == http.MethodGet {
		return http.StatusBadRequest, nil, bad("fakefc does not serve %s", key)
	}
	return http.StatusNoContent, nil, nil
}

var preBootOnly = map[string]bool{
	"PUT /machine-config":                true,
	"PATCH /machine-config":              true,
	"PUT /boot-source":                   true,
	"PUT /drives/{drive_id}":             true,
	"PUT /network-interfaces/{iface_id}": true,
	"PUT /vsock":                         true,
	"PUT /logger":                        true,
	"PUT /metrics":                       true,
	"PUT /mmds/config":                   true,
	"PUT /balloon":                       true,
	"PUT /snapshot/load":                 true,
	"PUT /entropy":                       true,
	"PUT /serial":                        true,
	"PUT /cpu-config":                    true,
	"PUT /pmem/{id}":                     true,
	"PUT /hotplug/memory":                true,
}

var postBootOnly = map[string]bool{
	"PATCH /drives/{drive_id}":             true,
	"PATCH /network-interfaces/{iface_id}": true,
	"PATCH /vm":                            true,
	"PUT /snapshot/create":                 true,
	"PATCH /pmem/{id}":                     true,
	"PATCH /balloon":                       true,
	"PATCH /balloon/statistics":            true,
	"PATCH /hotplug/memory":                true,
}

func mustExist(what string, v any) error {
	p, _ := v.(string)
	if _, err := os.Stat(p); err != nil {
		return bad("%s %q: %v", what, p, err)
	}
	return nil
}

// apply checks the request against the state machine and carries it out.
// ctx is the request's: it bounds what waits on QEMU (a snapshot).
// Called with f.mu held.
func (f *fake) apply(ctx context.Context, key string, params map[string]string, m map[string]any) error {
	if preBootOnly[key] && f.booted {
		return bad("the requested operation is not supported after starting the microVM: %s", key)
	}
	if postBootOnly[key] && !f.booted {
		return bad("the requested operation is not supported before starting the microVM: %s", key)
	}
	switch key {
	case "PUT /machine-config":
		vcpu, _ := m["vcpu_count"].(float64)
		if smt, _ := m["smt"].(bool); smt && vcpu > 1 && int(vcpu)%2 == 1 {
			return bad("the vCPU number is invalid: it must be 1 or even when SMT is on")
		}
		f.machine = m
	case "PUT /boot-source":
		if err := mustExist("kernel_image_path", m["kernel_image_path"]); err != nil {
			return err
		}
		if p, ok := m["initrd_path"]; ok && p != "" {
			if err := mustExist("initrd_path", p); err != nil {
				return err
			}
		}
		args, ok := m["boot_args"].(string)
		if len(args) > 2048 {
			return bad("kernel command line is %d bytes, over 2048", len(args))
		}
		if !ok {
			args = defaultBootArgs
		}
		f.kernel, _ = m["kernel_image_path"].(string)
		f.initrd, _ = m["initrd_path"].(string)
		f.bootArgs = args
		f.bootSrc = true
	case "PUT /drives/{drive_id}":
		if m["drive_id"] != params["drive_id"] {
			return bad("drive id in path %q and body %v differ", params["drive_id"], m["drive_id"])
		}
		if _, ok := m["socket"]; ok {
			return bad("fakefc does not emulate vhost-user-block drives")
		}
		if err := mustExist("path_on_host", m["path_on_host"]); err != nil {
			return err
		}
		root, _ := m["is_root_device"].(bool)
		if root {
			for id, r := range f.drives {
				if r && id != params["drive_id"] {
					return bad("a root block device already exists")
				}
			}
		}
		f.drives[params["drive_id"]] = root
		d := driveCfg{id: params["drive_id"], root: root}
		d.path, _ = m["path_on_host"].(string)
		d.readOnly, _ = m["is_read_only"].(bool)
		f.putDrive(d)
	case "PUT /serial":
		f.serialOut, _ = m["serial_out_path"].(string)
	case "PUT /network-interfaces/{iface_id}":
		if m["iface_id"] != params["iface_id"] {
			return bad("iface id in path %q and body %v differ", params["iface_id"], m["iface_id"])
		}
		f.tapCount++
		f.tap, _ = m["host_dev_name"].(string)
		f.ifaceID = params["iface_id"]
		f.mac, _ = m["guest_mac"].(string)
	case "PUT /logger":
		if f.logger {
			return bad("the logger was already initialized")
		}
		if err := mustExist("log_path", m["log_path"]); err != nil {
			return err
		}
		f.logger = true
	case "PUT /metrics":
		if f.metrics {
			return bad("reinitialization of metrics not allowed")
		}
		if err := mustExist("metrics_path", m["metrics_path"]); err != nil {
			return err
		}
		f.metrics = true
	case "PUT /vsock":
		cid, _ := m["guest_cid"].(float64)
		if cid < 3 {
			return bad("invalid guest cid %v", cid)
		}
		f.cid = cid
		p, _ := m["uds_path"].(string)
		if f.vsockLn != nil {
			f.vsockLn.Close()
		}
		ln, err := net.Listen("unix", p)
		if err != nil {
			return bad("cannot bind vsock uds_path: %v", err)
		}
		f.vsockPath, f.vsockLn = p, ln
		if f.qemuBin != "" {
			go f.vsockBridge(ln)
		} else {
			go serveVsock(ln)
		}
	case "PATCH /vm":
		switch m["state"] {
		case "Paused":
			if f.guest != nil {
				if err := f.guest.qmpAPI("stop"); err != nil {
					return err
				}
			}
			f.paused = true
		case "Resumed":
			if f.guest != nil {
				if err := f.guest.qmpAPI("cont"); err != nil {
					return err
				}
			}
			f.paused = false
		default:
			return bad("unknown vm state %v", m["state"])
		}
	case "PUT /snapshot/create":
		if !f.paused {
			return bad("create snapshot is allowed only when the microVM is paused")
		}
		if t, ok := m["snapshot_type"]; ok && t != "Full" {
			return bad("fakefc writes only Full snapshots, not %v", t)
		}
		if f.guest != nil {
			return f.createBootSnapshot(ctx, m)
		}
		return f.createSnapshot(m)
	case "PUT /snapshot/load":
		if f.bootSrc || f.machine != nil || len(f.drives) > 0 || f.vsockLn != nil {
			return bad("loading a microVM snapshot not allowed after configuring boot-specific resources")
		}
		if f.qemuBin != "" {
			return f.loadBootSnapshot(ctx, m)
		}
		return f.loadSnapshot(m)
	case "PUT /actions":
		switch m["action_type"] {
		case "InstanceStart":
			if f.booted {
				return bad("the microVM is already running")
			}
			if !f.bootSrc {
				return bad("cannot start microvm without kernel configuration")
			}
			if f.qemuBin != "" {
				if err := f.startGuest(); err != nil {
					return err
				}
			}
			f.booted = true
		case "SendCtrlAltDel":
			if !f.booted {
				return bad("the microVM is not running")
			}
			if f.guest != nil {
				// The guest shuts down; QEMU exits under -no-reboot,
				// and the stand-in with it (exitWithGuest).
				return f.guest.qmpAPI("system_powerdown")
			}
			// The guest shuts down; Firecracker exits shortly after.
			go func() {
				time.Sleep(50 * time.Millisecond)
				f.record(Record{Kind: "exit"})
				os.Exit(0)
			}()
		case "FlushMetrics":
			if !f.metrics {
				return bad("metrics not initialized")
			}
		}
	}
	return nil
}

// snapshotFile is what fakefc writes as snapshot_path: enough of the
// configuration to restore, and a marker so anything else is refused.
// Boot is set only by a stand-in in boot mode, whose mem_file_path holds
// the guest's QEMU migration stream.
type snapshotFile struct {
	Marker    string          `json:"fakefc_snapshot"`
	Machine   map[string]any  `json:"machine"`
	Drives    map[string]bool `json:"drives"`
	VsockPath string          `json:"vsock_path"`
	Boot      *bootSnapshot   `json:"boot_mode,omitempty"`
}

// createSnapshot is PUT /snapshot/create in echo mode: a state file of the
// configuration and a sparse memory file of the machine's size.
func (f *fake) createSnapshot(m map[string]any) error {
	snap, _ := m["snapshot_path"].(string)
	mem, _ := m["mem_file_path"].(string)
	b, err := json.Marshal(snapshotFile{Marker: Version, Machine: f.machine, Drives: f.drives, VsockPath: f.vsockPath})
	if err != nil {
		return err
	}
	if err := os.WriteFile(snap, b, 0o600); err != nil {
		return bad("cannot create the snapshot file: %v", err)
	}
	mib, _ := f.machine["mem_size_mib"].(float64)
	mf, err := os.OpenFile(mem, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return bad("cannot create the memory file: %v", err)
	}
	defer mf.Close()
	if _, err := mf.WriteString("fakefc memory"); err != nil {
		return bad("cannot write the memory file: %v", err)
	}
	if err := mf.Truncate(int64(mib) << 20); err != nil {
		return bad("cannot size the memory file: %v", err)
	}
	return nil
}

// memFile returns the memory file a PUT /snapshot/load names, through
// mem_file_path or a File mem_backend.
func memFile(m map[string]any) (string, error) {
	mem, _ := m["mem_file_path"].(string)
	if be, ok := m["mem_backend"].(map[string]any); ok {
		if mem != "" {
			return "", bad("mem_file_path and mem_backend are mutually exclusive")
		}
		if be["backend_type"] != "File" {
			return "", bad("fakefc loads memory from files only, not %v", be["backend_type"])
		}
		mem, _ = be["backend_path"].(string)
	}
	if mem == "" {
		return "", bad("one of mem_file_path and mem_backend is required")
	}
	return mem, nil
}

// readSnapshot reads and checks the marker of the snapshot file at snap.
func readSnapshot(snap string) (snapshotFile, error) {
	var sf snapshotFile
	b, err := os.ReadFile(snap)
	if err != nil {
		return sf, bad("cannot open the snapshot file: %v", err)
	}
	if err := json.Unmarshal(b, &sf); err != nil {
		return sf, bad("cannot deserialize the microVM state in %s: not a snapshot of this firecracker: %v", snap, err)
	}
	if sf.Marker != Version {
		return sf, bad("cannot deserialize the microVM state in %s: not a snapshot of this firecracker (marker %q)", snap, sf.Marker)
	}
	return sf, nil
}

// openSnapshot reads the paths of a PUT /snapshot/load body and the
// snapshot file it names: the opening both load modes share.
func openSnapshot(m map[string]any) (snap, mem string, sf snapshotFile, err error) {
	snap, _ = m["snapshot_path"].(string)
	if mem, err = memFile(m); err != nil {
		return snap, mem, sf, err
	}
	sf, err = readSnapshot(snap)
	return snap, mem, sf, err
}

// loadSnapshot is PUT /snapshot/load in echo mode: it checks what
// createSnapshot wrote and takes its configuration, rebinding the vsock
// socket (at vsock_override's path when given) to the echo server.
func (f *fake) loadSnapshot(m map[string]any) error {
	snap, mem, sf, err := openSnapshot(m)
	if err != nil {
		return err
	}
	if sf.Boot != nil {
		return bad("snapshot file %s holds a boot-mode guest: only a stand-in with FAKEFC_QEMU set can load it", snap)
	}
	mib, _ := sf.Machine["mem_size_mib"].(float64)
	fi, err := os.Stat(mem)
	if err != nil {
		return bad("cannot open the memory file: %v", err)
	}
	if fi.Size() != int64(mib)<<20 {
		return bad("memory file is %d bytes, the snapshot's machine has %v MiB", fi.Size(), mib)
	}
	vsockPath := sf.VsockPath
	if o, ok := m["vsock_override"].(map[string]any); ok {
		vsockPath, _ = o["uds_path"].(string)
	}
	ln, err := net.Listen("unix", vsockPath)
	if err != nil {
		return bad("cannot bind the saved vsock uds_path: %v", err)
	}
	f.vsockPath, f.vsockLn = vsockPath, ln
	go serveVsock(ln)
	f.machine, f.drives, f.bootSrc, f.booted = sf.Machine, sf.Drives, true, true
	resume, _ := m["resume_vm"].(bool)
	f.paused = !resume
	return nil
}

// serveVsock answers Firecracker's host-initiated hybrid vsock handshake:
// "CONNECT <port>\n" gets "OK <host port>\n", then the connection echoes.
func serveVsock(ln net.Listener) {
	next := uint32(1073741824)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		next++
		go func(c net.Conn, hostPort uint32) {
			defer c.Close()
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			port, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
			if _, err := strconv.ParseUint(port, 10, 32); !ok || err != nil {
				return // Firecracker closes on a malformed handshake
			}
			fmt.Fprintf(c, "OK %d\n", hostPort)
			_, _ = io.Copy(c, br)
		}(c, next)
	}
}

// defaultBootArgs is Firecracker's kernel command line when PUT
// /boot-source gives none.
const defaultBootArgs = "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce"

// putDrive records d in the order drives were first configured; a drive
// configured again keeps its place, as in Firecracker.
func (f *fake) putDrive(d driveCfg) {
	for i, old := range f.driveOrder {
		if old.id == d.id {
			f.driveOrder[i] = d
			return
		}
	}
	f.driveOrder = append(f.driveOrder, d)
}

// machineConfig is the machine configuration with Firecracker's defaults
// filled in.
func (f *fake) machineConfig() map[string]any {
	mc := map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": false}
	for k, v := range f.machine {
		mc[k] = v
	}
	return mc
}

// vmConfig answers GET /vm/config with what the stand-in holds.
func (f *fake) vmConfig() map[string]any {
	c := map[string]any{"machine-config": f.machineConfig()}
	if f.bootSrc {
		bs := map[string]any{"kernel_image_path": f.kernel, "boot_args": f.bootArgs}
		if f.initrd != "" {
			bs["initrd_path"] = f.initrd
		}
		c["boot-source"] = bs
	}
	drives := []any{}
	for _, d := range f.driveOrder {
		drives = append(drives, map[string]any{"drive_id": d.id, "path_on_host": d.path, "is_read_only": d.readOnly, "is_root_device": d.root})
	}
	c["drives"] = drives
	if f.tap != "" {
		iface := map[string]any{"iface_id": f.ifaceID, "host_dev_name": f.tap}
		if f.mac != "" {
			iface["guest_mac"] = f.mac
		}
		c["network-interfaces"] = []any{iface}
	}
	if f.vsockPath != "" {
		c["vsock"] = map[string]any{"uds_path": f.vsockPath, "guest_cid": f.cid}
	}
	return c
}
