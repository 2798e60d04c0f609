// Command fakefc is a stand-in for the firecracker binary in tests. It
// accepts Firecracker's command-line flags, serves the API on --api-sock,
// validates every request against the OpenAPI spec shipped with
// firecracker-go-sdk (unknown fields rejected, as Firecracker's serde
// structs do), enforces Firecracker's pre-boot/post-boot rules, binds the
// hybrid vsock socket and answers its CONNECT handshake with an echo, and
// records every call as a JSON line for the test to read. It also keeps
// Firecracker's snapshot state machine: PATCH /vm pauses and resumes a
// running VM, PUT /snapshot/create (paused only) writes a state file
// describing the configuration it holds and a sparse memory file of the
// machine's size, and PUT /snapshot/load (only on a fresh process with no
// boot configuration, as Firecracker requires) reads them back, rebinding
// the vsock socket at the saved path. It proves the calls, their order and
// bodies; it does not prove that real guest memory or device state
// survives, which only a real Firecracker on KVM can.
//
// Environment: FAKEFC_SWAGGER (path of the SDK's client/swagger.yaml,
// required), FAKEFC_RECORD (JSON-lines record file), FAKEFC_CONNS (file
// holding the number of open API connections, rewritten on each change).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"go.yaml.in/yaml/v4"

	"banger/internal/atomicfile"
)

// Version is what --version prints, in Firecracker's format.
const Version = "Firecracker v1.8.0"

// Record is one line of the record file.
type Record struct {
	Kind   string          `json:"kind"` // "start", "call", "exit"
	Method string          `json:"method,omitempty"`
	Path   string          `json:"path,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
	Status int             `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
	// start only
	Args    []string `json:"args,omitempty"`
	PID     int      `json:"pid,omitempty"`
	Session int      `json:"session,omitempty"`
	Seccomp string   `json:"seccomp,omitempty"`
}

type fake struct {
	router routers.Router
	id     string

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

	connMu    sync.Mutex
	conns     int
	connsPath string
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
	version := fs.Bool("version", false, "")
	// Firecracker spells flags with two dashes; Go's flag package takes both.
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *version {
		fmt.Println(Version)
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
	f := &fake{router: router, id: *id, drives: map[string]bool{}, connsPath: os.Getenv("FAKEFC_CONNS")}
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
	srv := &http.Server{Handler: f, ConnState: f.connState}
	return srv.Serve(ln)
}

// loadRouter reads the swagger 2.0 spec, converts it to OpenAPI 3 and
// closes every object schema that lists properties, because Firecracker
// rejects unknown fields.
func loadRouter(path string) (routers.Router, error) {
	if path == "" {
		return nil, errors.New("FAKEFC_SWAGGER is not set")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	js, err := json.Marshal(stringKeys(raw))
	if err != nil {
		return nil, fmt.Errorf("convert %s to json: %w", path, err)
	}
	var doc2 openapi2.T
	if err := json.Unmarshal(js, &doc2); err != nil {
		return nil, fmt.Errorf("load swagger %s: %w", path, err)
	}
	doc3, err := openapi2conv.ToV3(&doc2)
	if err != nil {
		return nil, fmt.Errorf("convert swagger %s: %w", path, err)
	}
	doc3.Servers = openapi3.Servers{{URL: "/"}}
	no := false
	for _, s := range doc3.Components.Schemas {
		if s.Value != nil && len(s.Value.Properties) > 0 {
			s.Value.AdditionalProperties = openapi3.AdditionalProperties{Has: &no}
		}
	}
	if err := doc3.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate converted spec: %w", err)
	}
	return legacy.NewRouter(doc3)
}

// stringKeys turns YAML maps with non-string keys (response codes such as
// 204) into JSON-compatible maps.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = stringKeys(x)
		}
		return m
	case map[string]any:
		for k, x := range v {
			v[k] = stringKeys(x)
		}
		return v
	case []any:
		for i, x := range v {
			v[i] = stringKeys(x)
		}
		return v
	}
	return v
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
	if err := f.apply(key, params, m); err != nil {
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
		mc := map[string]any{"vcpu_count": 1, "mem_size_mib": 128, "smt": false}
		for k, v := range f.machine {
			mc[k] = v
		}
		return http.StatusOK, mc, nil
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
}

var postBootOnly = map[string]bool{
	"PATCH /drives/{drive_id}":             true,
	"PATCH /network-interfaces/{iface_id}": true,
	"PATCH /vm":                            true,
	"PUT /snapshot/create":                 true,
}

func mustExist(what string, v any) error {
	p, _ := v.(string)
	if _, err := os.Stat(p); err != nil {
		return bad("%s %q: %v", what, p, err)
	}
	return nil
}

func (f *fake) apply(key string, params map[string]string, m map[string]any) error {
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
		if args, _ := m["boot_args"].(string); len(args) > 2048 {
			return bad("kernel command line is %d bytes, over 2048", len(args))
		}
		f.bootSrc = true
	case "PUT /drives/{drive_id}":
		if m["drive_id"] != params["drive_id"] {
			return bad("drive id in path %q and body %v differ", params["drive_id"], m["drive_id"])
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
	case "PUT /network-interfaces/{iface_id}":
		if m["iface_id"] != params["iface_id"] {
			return bad("iface id in path %q and body %v differ", params["iface_id"], m["iface_id"])
		}
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
		if cid, _ := m["guest_cid"].(float64); cid < 3 {
			return bad("invalid guest cid %v", cid)
		}
		p, _ := m["uds_path"].(string)
		if f.vsockLn != nil {
			f.vsockLn.Close()
		}
		ln, err := net.Listen("unix", p)
		if err != nil {
			return bad("cannot bind vsock uds_path: %v", err)
		}
		f.vsockPath, f.vsockLn = p, ln
		go serveVsock(ln)
	case "PATCH /vm":
		switch m["state"] {
		case "Paused":
			f.paused = true
		case "Resumed":
			f.paused = false
		default:
			return bad("unknown vm state %v", m["state"])
		}
	case "PUT /snapshot/create":
		if !f.paused {
			return bad("create snapshot is allowed only when the microVM is paused")
		}
		return f.createSnapshot(m)
	case "PUT /snapshot/load":
		if f.bootSrc || f.machine != nil || len(f.drives) > 0 || f.vsockLn != nil {
			return bad("loading a microVM snapshot not allowed after configuring boot-specific resources")
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
			f.booted = true
		case "SendCtrlAltDel":
			if !f.booted {
				return bad("the microVM is not running")
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
type snapshotFile struct {
	Marker    string          `json:"fakefc_snapshot"`
	Machine   map[string]any  `json:"machine"`
	Drives    map[string]bool `json:"drives"`
	VsockPath string          `json:"vsock_path"`
}

func (f *fake) createSnapshot(m map[string]any) error {
	snap, _ := m["snapshot_path"].(string)
	mem, _ := m["mem_file_path"].(string)
	if t, ok := m["snapshot_type"]; ok && t != "Full" {
		return bad("fakefc writes only Full snapshots, not %v", t)
	}
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

func (f *fake) loadSnapshot(m map[string]any) error {
	snap, _ := m["snapshot_path"].(string)
	mem, _ := m["mem_file_path"].(string)
	b, err := os.ReadFile(snap)
	if err != nil {
		return bad("cannot open the snapshot file: %v", err)
	}
	var sf snapshotFile
	if err := json.Unmarshal(b, &sf); err != nil || sf.Marker != Version {
		return bad("cannot deserialize the microVM state: %v", errors.Join(err, errors.New("not a snapshot of this firecracker")))
	}
	mib, _ := sf.Machine["mem_size_mib"].(float64)
	fi, err := os.Stat(mem)
	if err != nil {
		return bad("cannot open the memory file: %v", err)
	}
	if fi.Size() != int64(mib)<<20 {
		return bad("memory file is %d bytes, the snapshot's machine has %v MiB", fi.Size(), mib)
	}
	ln, err := net.Listen("unix", sf.VsockPath)
	if err != nil {
		return bad("cannot bind the saved vsock uds_path: %v", err)
	}
	f.vsockPath, f.vsockLn = sf.VsockPath, ln
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
