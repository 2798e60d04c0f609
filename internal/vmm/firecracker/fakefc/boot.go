package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent/agentclient"
	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/vmm"
	"banger/internal/vmm/qemu"
)

// qemuArgv0 is argv[0] of the QEMU child. It is not a VMM binary name on
// purpose: the child belongs to the stand-in (it dies with it through
// Pdeathsig), so a daemon looking for stray VMMs by command line must not
// take it for a VMM of its own and kill it behind the stand-in's back.
const qemuArgv0 = "fakefc-qemu"

// qmpTimeout bounds one QMP exchange.
const qmpTimeout = 10 * time.Second

// startTimeout bounds how long InstanceStart waits for QEMU to run.
const startTimeout = 30 * time.Second

// driveCfg is one PUT /drives body, kept in the order first configured.
type driveCfg struct {
	id       string
	path     string
	readOnly bool
	root     bool
}

// guest is the QEMU child of boot mode and the host ends of its sockets.
type guest struct {
	cmd    *exec.Cmd
	dir    string // private directory holding the QMP and agent sockets
	qmp    string
	agent  string
	dialer agentclient.Dialer
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited is closed
}

// privateDir returns the directory for the QEMU sockets: <api-sock>.qemu
// beside the API socket, or a temporary directory when the sockets'
// paths would be too long to bind there.
func privateDir(apiSock string) (string, error) {
	dir := apiSock + ".qemu"
	longest := filepath.Join(dir, layout.QMPSocketFile)
	if a := filepath.Join(dir, layout.AgentSocketFile); len(a) > len(longest) {
		longest = a
	}
	if vmm.CheckSocketPath(longest) != nil {
		return os.MkdirTemp("", "fakefc-")
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("remove stale %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("make %s: %w", dir, err)
	}
	return dir, nil
}

// spec turns the configuration received over the API into the vmm.Spec
// the QEMU driver's command line is computed from. Called with f.mu held.
func (f *fake) spec(dir string) vmm.Spec {
	s := vmm.Spec{
		VMID:      f.id,
		VCPU:      1,
		MemoryMiB: 128,
		BzImage:   f.kernel,
		Initrd:    f.initrd,
		Cmdline:   f.bootArgs,
		Dir:       dir,
		Accel:     vmm.AccelTCG,
		Tap:       f.tap,
		MAC:       f.mac,
	}
	if v, ok := f.machine["vcpu_count"].(float64); ok {
		s.VCPU = int(v)
	}
	if v, ok := f.machine["mem_size_mib"].(float64); ok {
		s.MemoryMiB = int(v)
	}
	for _, d := range f.driveOrder {
		s.Drives = append(s.Drives, vmm.Drive{ID: d.id, Path: d.path, ReadOnly: d.readOnly})
	}
	return s
}

// qemuArgv is the QEMU driver's command line for s with the serial
// console moved to stdio, which is the stand-in's stdout: Firecracker
// writes the guest console there and the driver sends it to console.log.
// A serial_out_path (PUT /serial) takes the console instead, as in
// Firecracker.
func qemuArgv(s vmm.Spec, o qemu.Options, serialOut string) []string {
	argv := qemu.Cmdline(s, o)
	console := "stdio,id=console,signal=off"
	if serialOut != "" {
		console = "file,id=console,path=" + strings.ReplaceAll(serialOut, ",", ",,") + ",append=on"
	}
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-chardev" && strings.HasPrefix(argv[i+1], "file,id=console,") {
			argv[i+1] = console
		}
	}
	return argv
}

// hostKHz returns the host TSC frequency for tsc_early_khz: from
// /proc/cpuinfo, or, in a jail without /proc, from FAKEFC_HOST_KHZ (which
// the jailer stand-in sets from the host's /proc before it pivots). A TCG
// guest given no frequency often hangs calibrating its clock, so an
// unknown frequency is an error, not a silent gamble.
func hostKHz() (int, error) {
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		if khz, err := qemu.ParseCPUInfoKHz(f); err == nil && khz > 0 {
			return khz, nil
		}
	}
	if v := os.Getenv("FAKEFC_HOST_KHZ"); v != "" {
		if khz, err := strconv.Atoi(v); err == nil && khz > 0 {
			return khz, nil
		}
		return 0, fmt.Errorf("FAKEFC_HOST_KHZ=%q is not a positive number of kHz", v)
	}
	return 0, errors.New("host TSC frequency unknown: no cpu MHz in /proc/cpuinfo and FAKEFC_HOST_KHZ unset (a TCG guest would hang calibrating its clock)")
}

// startGuest boots the configured machine under QEMU TCG and returns
// once QMP reports it running. Called with f.mu held.
func (f *fake) startGuest() error {
	g, err := f.launch(nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := g.waitRunning(ctx); err != nil {
		g.stop()
		return bad("start qemu: %v", err)
	}
	f.adopt(g)
	return nil
}

// launch starts QEMU for the configured machine in a fresh private
// directory and returns without waiting for it. With incoming set, QEMU
// is started to load a migration stream from it (as fd 3, -incoming
// fd:3) and to stay stopped once loaded (-S), as the QEMU driver
// restores. Called with f.mu held.
func (f *fake) launch(incoming *os.File) (*guest, error) {
	if f.tapCount > 1 {
		return nil, bad("fakefc boots one network interface, not %d", f.tapCount)
	}
	dir, err := privateDir(f.apiSock)
	if err != nil {
		return nil, err
	}
	s := f.spec(dir)
	if err := s.Validate(); err != nil {
		os.RemoveAll(dir)
		return nil, bad("%v", err)
	}
	khz, err := hostKHz()
	if err != nil {
		os.RemoveAll(dir)
		return nil, bad("%v", err)
	}
	argv := qemuArgv(s, qemu.Options{Binary: f.qemuBin, HostKHz: khz}, f.serialOut)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Args[0] = qemuArgv0
	if incoming != nil {
		// Under -sandbox spawn=deny QEMU may not exec a helper to read
		// the stream: it inherits the open file instead.
		cmd.ExtraFiles = []*os.File{incoming}
		cmd.Args = append(cmd.Args, "-incoming", "fd:3", "-S")
	}
	// The stand-in's own stdin (what its parent gave it): left nil, exec
	// would open /dev/null, which a jail does not have.
	cmd.Stdin = os.Stdin
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	g := &guest{
		cmd:    cmd,
		dir:    dir,
		qmp:    filepath.Join(dir, layout.QMPSocketFile),
		agent:  filepath.Join(dir, layout.AgentSocketFile),
		exited: make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked QEMU ends, not the
		// process: keep this goroutine on its thread until QEMU is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		g.err = cmd.Wait()
		close(g.exited)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, bad("start qemu: %v", err)
	}
	f.record(Record{Kind: "qemu", Args: cmd.Args, PID: cmd.Process.Pid})
	return g, nil
}

// adopt makes g the stand-in's guest once it is up: the agent bridge
// dials its serial port from now on, and the stand-in exits with it.
// Called with f.mu held.
func (f *fake) adopt(g *guest) {
	g.dialer = agentclient.NewSerialDialer(g.agent)
	f.guest = g
	go f.exitWithGuest(g)
}

// waitRunning polls QMP until QEMU reports the guest running, QEMU exits
// or ctx ends.
func (g *guest) waitRunning(ctx context.Context) error {
	return g.pollStatus(ctx, "qemu not running", func(status string) (bool, error) {
		return status == "running", nil
	})
}

// pollStatus polls QMP query-status every 20 ms until check says the
// status is the one waited for (true) or a failure (an error), QEMU exits
// or ctx ends; what names the wait in the timeout error.
func (g *guest) pollStatus(ctx context.Context, what string, check func(status string) (bool, error)) error {
	var last error
	for {
		select {
		case <-g.exited:
			return fmt.Errorf("qemu exited: %v", g.err)
		default:
		}
		var st struct {
			Status string `json:"status"`
		}
		err := g.qmpDo(ctx, "query-status", &st)
		if err == nil {
			if done, err := check(st.Status); err != nil || done {
				return err
			}
			err = fmt.Errorf("status %q", st.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), last)
		case <-g.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop kills QEMU, waits for it and removes the private directory.
// Idempotent.
func (g *guest) stop() {
	select {
	case <-g.exited:
	default:
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	if g.dialer != nil {
		g.dialer.Close()
	}
	os.RemoveAll(g.dir)
}

// exitWithGuest ends the stand-in when QEMU exits on its own (the guest
// powered off, or rebooted under -no-reboot), as Firecracker exits when
// its guest does: code 0 for a guest-initiated end, 1 otherwise.
func (f *fake) exitWithGuest(g *guest) {
	<-g.exited
	code := 0
	if g.err != nil {
		code = 1
	}
	f.exit(code)
}

// exit ends the stand-in: QEMU killed and reaped, its directory removed.
func (f *fake) exit(code int) {
	f.exitOnce.Do(func() {
		f.mu.Lock()
		g := f.guest
		f.mu.Unlock()
		if g != nil {
			g.stop()
		}
		f.record(Record{Kind: "exit", Status: code})
		os.Exit(code)
	})
	select {} // another goroutine is exiting
}

// qmpDo runs one QMP command on a fresh connection and decodes its return
// value into out (when not nil).
func (g *guest) qmpDo(ctx context.Context, command string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", g.qmp)
	if err != nil {
		return fmt.Errorf("dial qmp: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	var greeting map[string]json.RawMessage
	if err := dec.Decode(&greeting); err != nil || greeting["QMP"] == nil {
		return fmt.Errorf("qmp greeting: %v", errors.Join(err, errors.New("no greeting")))
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if err := json.NewEncoder(conn).Encode(map[string]string{"execute": cmd}); err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		for {
			var reply struct {
				Return json.RawMessage `json:"return"`
				Error  *struct {
					Class string `json:"class"`
					Desc  string `json:"desc"`
				} `json:"error"`
				Event string `json:"event"`
			}
			if err := dec.Decode(&reply); err != nil {
				return fmt.Errorf("qmp %s: %w", cmd, err)
			}
			if reply.Event != "" {
				continue
			}
			if reply.Error != nil {
				return fmt.Errorf("qmp %s: %s: %s", cmd, reply.Error.Class, reply.Error.Desc)
			}
			if cmd == command && out != nil {
				if err := json.Unmarshal(reply.Return, out); err != nil {
					return fmt.Errorf("qmp %s: %w", cmd, err)
				}
			}
			break
		}
	}
	return nil
}

// qmp runs command on the running guest, as an API error when it fails.
func (g *guest) qmpAPI(command string) error {
	if err := g.qmpDo(context.Background(), command, nil); err != nil {
		return &apiError{status: 500, msg: err.Error()}
	}
	return nil
}

// vsockBridge serves Firecracker's host-initiated vsock handshake in boot
// mode: "CONNECT <port>\n" to the agent's port opens a yamux stream on
// the agent's virtio-serial port, answers "OK <host port>\n" and splices
// both ways; anything else, or a guest that does not answer, closes the
// connection as Firecracker does when nothing listens on the guest port.
func (f *fake) vsockBridge(ln net.Listener) {
	var next uint32 = 1073741824
	var mu sync.Mutex
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		mu.Lock()
		next++
		hostPort := next
		mu.Unlock()
		go f.bridge(c, hostPort)
	}
}

// bridge serves one vsock connection: the handshake, then the splice
// onto a fresh stream of the agent session.
func (f *fake) bridge(c net.Conn, hostPort uint32) {
	f.track(c, true)
	defer f.track(c, false)
	defer c.Close()
	port, err := readConnect(c)
	if err != nil || port != guestcontract.AgentVsockPort {
		return
	}
	f.mu.Lock()
	var dialer agentclient.Dialer
	if f.guest != nil {
		dialer = f.guest.dialer
	}
	f.mu.Unlock()
	if dialer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), agentclient.DefaultHandshakeTimeout)
	stream, err := dialer.DialContext(ctx)
	cancel()
	if err != nil {
		return
	}
	defer stream.Close()
	// yamux opens a stream without waiting for the peer, so a guest with
	// no agent on the port would look connected: a ping answered by the
	// guest's yamux server is the proof that something listens there.
	// Without an answer the session is dropped too, so the next CONNECT
	// starts afresh instead of behind this one's unanswered frames.
	if ys, ok := stream.(*yamux.Stream); ok && !pinged(ys.Session(), pingTimeout) {
		ys.Session().Close()
		return
	}
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(stream, c); closeWrite(stream); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, stream); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

// track adds c to, or removes it from, the open vsock connections, which
// a snapshot closes with the agent session they are spliced onto.
func (f *fake) track(c net.Conn, open bool) {
	f.bridgeMu.Lock()
	defer f.bridgeMu.Unlock()
	if !open {
		delete(f.bridges, c)
		return
	}
	if f.bridges == nil {
		f.bridges = map[net.Conn]struct{}{}
	}
	f.bridges[c] = struct{}{}
}

// hangUp closes the host's end of the agent channel: the yamux session on
// the serial port and every vsock connection spliced onto it. A fresh
// dialer takes the old one's place, so the next CONNECT opens a new
// session. It reports whether a session was open, that is whether the
// guest has a close to notice. Called with f.mu held.
func (f *fake) hangUp() bool {
	g := f.guest
	connected := false
	if c, ok := g.dialer.(interface{ Connected() bool }); ok {
		connected = c.Connected()
	}
	_ = g.dialer.Close()
	g.dialer = agentclient.NewSerialDialer(g.agent)
	f.bridgeMu.Lock()
	for c := range f.bridges {
		_ = c.Close()
	}
	f.bridgeMu.Unlock()
	return connected
}

// pingTimeout bounds the ping that shows the guest agent is there.
const pingTimeout = 2 * time.Second

// pinged reports whether sess's peer answers a ping within d.
func pinged(sess *yamux.Session, d time.Duration) bool {
	ch := make(chan error, 1)
	go func() { _, err := sess.Ping(); ch <- err }()
	select {
	case err := <-ch:
		return err == nil
	case <-time.After(d):
		return false
	}
}

// closeWrite half-closes conn when it can, else closes it.
func closeWrite(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = conn.Close()
}

// readConnect reads "CONNECT <port>\n" one byte at a time, so no byte the
// host sends after it is consumed, and returns the port.
func readConnect(c net.Conn) (uint32, error) {
	_ = c.SetReadDeadline(time.Now().Add(agentclient.DefaultHandshakeTimeout))
	defer c.SetReadDeadline(time.Time{})
	var line []byte
	var b [1]byte
	for len(line) < 64 {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return 0, err
		}
		if b[0] == '\n' {
			port, ok := strings.CutPrefix(string(line), "CONNECT ")
			if !ok {
				return 0, fmt.Errorf("malformed handshake %q", line)
			}
			p, err := strconv.ParseUint(port, 10, 32)
			return uint32(p), err
		}
		line = append(line, b[0])
	}
	return 0, errors.New("handshake line too long")
}
