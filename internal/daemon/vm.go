package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/api"
	"banger/internal/egress"
	"banger/internal/layout"
	"banger/internal/operation"
	"banger/internal/sshkey"
	"banger/internal/store"
	"banger/internal/stream"
	"banger/internal/vmctl"
)

// vmRoutes are the VM lifecycle and guest-access endpoints.
func (d *Daemon) vmRoutes() []Route {
	return []Route{
		{"POST " + api.PathVMs, d.handleCreateVM},
		{"GET " + api.PathVMs, d.handleListVMs},
		{"GET " + api.PathStats, d.handleStats},
		{"GET " + api.PathVM, d.handleGetVM},
		{"DELETE " + api.PathVM, d.handleDeleteVM},
		{"POST " + api.PathVMStart, d.handleStartVM},
		{"POST " + api.PathVMRestart, d.handleRestartVM},
		{"POST " + api.PathVMStop, d.handleStopVM},
		{"POST " + api.PathVMPause, d.handlePauseVM},
		{"POST " + api.PathVMResume, d.handleResumeVM},
		{"POST " + api.PathVMSuspend, d.handleSuspendVM},
		{"POST " + api.PathWarm, d.handleWarm},
		{"GET " + api.PathVMLogs, d.handleVMLogs},
		{"GET " + api.PathVMHealth, d.handleVMHealth},
		{"GET " + api.PathVMPorts, d.handleVMPorts},
		{"GET " + api.PathVMSSH, d.handleVMSSH},
		{"POST " + api.PathVMExec, d.handleVMExec},
		{"PUT " + api.PathVMFiles, d.handleVMUpload},
		{"GET " + api.PathVMFiles, d.handleVMDownload},
	}
}

// vmView renders a VM for the API: image name resolved from its id, the
// VMM PID when it runs.
func (d *Daemon) vmView(ctx context.Context, vm store.VM) api.VM {
	v := api.VM{
		ID:        vm.ID,
		Name:      vm.Name,
		State:     d.VMs.View(vm),
		ImageID:   vm.ImageID,
		VMM:       vm.VMM,
		Spec:      api.VMSpec{VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB, DiskBytes: vm.DiskBytes},
		IP:        vm.IP,
		MAC:       vm.MAC,
		DNSName:   vm.Name + ".vm",
		CID:       vm.CID,
		Dir:       filepath.Join(d.Paths.VMsDir, vm.ID),
		Console:   filepath.Join(d.Paths.VMsDir, vm.ID, layout.ConsoleLogFile),
		LastError: vm.LastError,
		CreatedAt: vm.CreatedAt,
		StartedAt: vm.StartedAt,
	}
	if p, err := egress.Decode(vm.NetPolicy); err == nil {
		v.Net = p.API()
	}
	if d.egress != nil {
		_, v.NetDenied = d.egress.Counts(vm.ID)
	}
	if img, err := d.Store.GetImage(ctx, vm.ImageID); err == nil {
		v.ImageName = img.Name
	}
	if h, ok := d.VMs.Handles(vm.ID); ok && d.VMs.Alive(vm.ID) {
		v.PID = h.PID
	}
	return v
}

// startVMOp runs fn as an operation of kind and answers with its ref.
func (d *Daemon) startVMOp(w http.ResponseWriter, kind string, fn func(ctx context.Context, op *operation.Op) (store.VM, error)) error {
	op := d.Ops.Start(kind, func(ctx context.Context, op *operation.Op) (any, error) {
		vm, err := fn(ctx, op)
		if err != nil {
			return nil, err
		}
		return d.vmView(context.WithoutCancel(ctx), vm), nil
	})
	return writeJSON(w, http.StatusAccepted, op.Ref())
}

func (d *Daemon) handleCreateVM(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateVMRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	return d.startVMOp(w, "vm.create", func(ctx context.Context, op *operation.Op) (store.VM, error) {
		return d.VMs.Create(ctx, op, req)
	})
}

func (d *Daemon) handleStartVM(w http.ResponseWriter, r *http.Request) error {
	var req api.StartVMRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	return d.startVMOp(w, "vm.start", func(ctx context.Context, op *operation.Op) (store.VM, error) {
		return d.VMs.Start(ctx, op, ref, req.Cold)
	})
}

func (d *Daemon) handleWarm(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateVMRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	op := d.Ops.Start("image.warm", func(ctx context.Context, op *operation.Op) (any, error) {
		t, err := d.VMs.Warm(ctx, op, req)
		if err != nil {
			return nil, err
		}
		return api.WarmTemplate{Image: t.Image.Name, ImageID: t.Image.ID, VMM: t.VMM,
			Spec:       api.VMSpec{VCPU: t.VCPU, MemoryMiB: t.MemoryMiB, DiskBytes: t.DiskBytes},
			StateBytes: t.StateBytes, CreatedAt: t.CreatedAt}, nil
	})
	return writeJSON(w, http.StatusAccepted, op.Ref())
}

func (d *Daemon) handlePauseVM(w http.ResponseWriter, r *http.Request) error {
	vm, err := d.VMs.Pause(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.vmView(r.Context(), vm))
}

func (d *Daemon) handleResumeVM(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	return d.startVMOp(w, "vm.resume", func(ctx context.Context, op *operation.Op) (store.VM, error) {
		return d.VMs.Resume(ctx, op, ref)
	})
}

func (d *Daemon) handleSuspendVM(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	return d.startVMOp(w, "vm.suspend", func(ctx context.Context, op *operation.Op) (store.VM, error) {
		return d.VMs.Suspend(ctx, op, ref)
	})
}

func (d *Daemon) handleRestartVM(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("ref")
	if _, err := d.Store.GetVM(r.Context(), ref); err != nil {
		return err
	}
	return d.startVMOp(w, "vm.restart", func(ctx context.Context, op *operation.Op) (store.VM, error) {
		return d.VMs.Restart(ctx, op, ref)
	})
}

func (d *Daemon) handleListVMs(w http.ResponseWriter, r *http.Request) error {
	d.VMs.Refresh(r.Context())
	vms, err := d.Store.ListVMs(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, d.vmView(r.Context(), vm))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetVM(w http.ResponseWriter, r *http.Request) error {
	d.VMs.Refresh(r.Context())
	vm, err := d.Store.GetVM(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.vmView(r.Context(), vm))
}

func (d *Daemon) handleStopVM(w http.ResponseWriter, r *http.Request) error {
	vm, err := d.VMs.Stop(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.vmView(r.Context(), vm))
}

func (d *Daemon) handleDeleteVM(w http.ResponseWriter, r *http.Request) error {
	var req api.DeleteVMRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	if err := d.VMs.Delete(r.Context(), r.PathValue("ref"), req.Force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// agentFor returns the agent client of a running VM, as an API error when
// the VM is not running.
func (d *Daemon) agentFor(r *http.Request) (*agentclient.Client, store.VM, error) {
	c, vm, err := d.VMs.Agent(r.Context(), r.PathValue("ref"))
	if errors.Is(err, vmctl.ErrNotRunning) {
		return nil, vm, api.WithCode(api.CodeConflict, err)
	}
	return c, vm, err
}

func (d *Daemon) handleStats(w http.ResponseWriter, r *http.Request) error {
	st, err := d.VMs.Stats(r.Context(), r.URL.Query()["vm"], vmctl.StatsInterval)
	if errors.Is(err, vmctl.ErrNotRunning) {
		return api.WithCode(api.CodeConflict, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func (d *Daemon) handleVMHealth(w http.ResponseWriter, r *http.Request) error {
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	h, err := c.Health(ctx)
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: agent health: %v", vm.Name, err)
	}
	return writeJSON(w, http.StatusOK, api.Health{
		AgentVersion: h.Version,
		BootID:       h.BootID,
		Hostname:     h.Hostname,
		Uptime:       h.Uptime.Seconds(),
		Load:         h.Load[:],
		Systemd:      h.SystemState,
		MultiUser:    h.MultiUser,
	})
}

func (d *Daemon) handleVMPorts(w http.ResponseWriter, r *http.Request) error {
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ports, err := c.Ports(ctx)
	if err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: agent ports: %v", vm.Name, err)
	}
	out := make([]api.Port, 0, len(ports))
	for _, p := range ports {
		proto := p.Proto
		if p.Family == "ipv6" {
			proto += "6"
		}
		out = append(out, api.Port{Proto: proto, Address: p.Address, Port: int(p.Port), PID: p.PID, Process: p.Process})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleVMSSH(w http.ResponseWriter, r *http.Request) error {
	vm, err := d.Store.GetVM(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	if !d.VMs.Alive(vm.ID) {
		return api.Errorf(api.CodeConflict, "vm %s is not running (start it with: banger vm start %s)", vm.Name, vm.Name)
	}
	// A VM made by `vm run -- CMD` did not wait for sshd; wait here, so
	// ssh connects rather than being refused. When it never listens,
	// ssh's own error says so.
	d.VMs.WaitSSH(r.Context(), vm)
	alias := vm.Name + ".vm"
	return writeJSON(w, http.StatusOK, api.SSHInfo{
		Name:       vm.Name,
		IP:         vm.IP,
		Alias:      alias,
		KeyPath:    d.sshKey.Private,
		KnownHosts: d.knownHosts.Path,
		Args:       sshkey.SSHArgs(d.sshKey, d.knownHosts.Path, alias, vm.IP),
	})
}

// handleVMLogs streams the guest console log; with follow=1 it keeps
// streaming new output until the client goes away or the daemon stops.
func (d *Daemon) handleVMLogs(w http.ResponseWriter, r *http.Request) error {
	vm, err := d.Store.GetVM(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	path := filepath.Join(d.Paths.VMsDir, vm.ID, layout.ConsoleLogFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return api.Errorf(api.CodeNotFound, "vm %s has no console log yet", vm.Name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	follow := r.URL.Query().Get("follow") != ""
	for {
		if _, err := io.Copy(w, f); err != nil {
			return nil
		}
		if !follow {
			return nil
		}
		_ = flush(w)
		select {
		case <-r.Context().Done():
			return nil
		case <-d.streamCtx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// handleVMExec bridges an attach stream from the CLI to an exec in the
// guest: stdin, resize and signal frames go in, stdout, stderr and the
// exit status come out. A CLI that goes away ends the command.
func (d *Daemon) handleVMExec(w http.ResponseWriter, r *http.Request) error {
	var req api.ExecRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.Argv) == 0 {
		return api.Errorf(api.CodeInvalid, "exec: no command given")
	}
	c, _, err := d.agentFor(r)
	if err != nil {
		return err
	}
	conn, err := d.Upgrade(w, r)
	if err != nil {
		return err
	}
	defer conn.Close()
	b := newFrameBridge(r.Context(), conn)
	defer b.close()
	st, err := c.Exec(b.ctx, agent.ExecRequest{Argv: req.Argv, Env: req.Env, Dir: req.Dir, TTY: req.TTY, Cols: req.Cols, Rows: req.Rows}, b.execIO())
	if err != nil && b.ctx.Err() == nil {
		b.fail(err)
		return nil
	}
	b.exit(st)
	return nil
}

// frameBridge adapts an attach stream from the CLI to an agentclient.ExecIO:
// stdin, stdin-EOF, resize and signal frames from the CLI feed the guest
// command; its output goes back as stdout and stderr frames. The bridge's
// context ends when the CLI goes away (which ends the guest command, or
// detaches from a session).
type frameBridge struct {
	sc      *stream.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	stdin   *io.PipeReader
	resize  chan [2]uint16
	signals chan string
}

func newFrameBridge(parent context.Context, conn net.Conn) *frameBridge {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stdin, stdinW := io.Pipe()
	b := &frameBridge{sc: stream.NewConn(conn), ctx: ctx, cancel: cancel, stdin: stdin,
		resize: make(chan [2]uint16, 8), signals: make(chan string, 8)}
	go func() {
		defer cancel()
		// Stdin goes through the pipe on the bridge's own goroutine, so
		// resizes and signals are not stuck behind a guest command that
		// does not read stdin.
		_ = stream.Bridge{
			Done:       ctx.Done(),
			Stdin:      func(p []byte) error { _, err := stdinW.Write(p); return err },
			CloseStdin: func() { stdinW.Close() },
			Resize: func(cols, rows uint16) {
				select {
				case b.resize <- [2]uint16{cols, rows}:
				default:
				}
			},
			Signal: func(name string) {
				select {
				case b.signals <- name:
				default:
				}
			},
			Other: func(stream.Frame) error { return nil },
		}.Run(b.sc)
	}()
	return b
}

// execIO is the guest side's view of the bridge.
func (b *frameBridge) execIO() agentclient.ExecIO {
	return agentclient.ExecIO{
		Stdin:  b.stdin,
		Stdout: b.sc.Writer(stream.Stdout),
		Stderr: b.sc.Writer(stream.Stderr),
		Resize: b.resize,
		Signal: b.signals,
	}
}

// exit ends the stream with the command's exit status.
func (b *frameBridge) exit(st agent.ExitStatus) {
	_ = b.sc.WriteFrame(stream.Exit, stream.EncodeExit(int32(st.Code), st.Signal))
}

// fail ends the stream with an error message.
func (b *frameBridge) fail(err error) { _ = b.sc.WriteFrame(stream.Error, []byte(err.Error())) }

func (b *frameBridge) close() {
	b.cancel()
	b.stdin.Close()
}

func (d *Daemon) handleVMUpload(w http.ResponseWriter, r *http.Request) error {
	dir := r.URL.Query().Get("dir")
	if dir == "" || !filepath.IsAbs(dir) {
		return api.Errorf(api.CodeInvalid, "upload: guest directory %q must be absolute", dir)
	}
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	if err := c.Upload(r.Context(), dir, r.Body); err != nil {
		return api.Errorf(api.CodeUnavailable, "vm %s: upload to %s: %v", vm.Name, dir, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (d *Daemon) handleVMDownload(w http.ResponseWriter, r *http.Request) error {
	path := r.URL.Query().Get("path")
	if path == "" || !filepath.IsAbs(path) {
		return api.Errorf(api.CodeInvalid, "download: guest path %q must be absolute", path)
	}
	c, vm, err := d.agentFor(r)
	if err != nil {
		return err
	}
	body, err := c.Download(r.Context(), path)
	if err != nil {
		if agentclient.IsCode(err, "not_found") {
			return api.Errorf(api.CodeNotFound, "vm %s: %s: no such file or directory", vm.Name, path)
		}
		return api.Errorf(api.CodeUnavailable, "vm %s: download %s: %v", vm.Name, path, err)
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	_, err = io.Copy(w, body)
	return err
}
