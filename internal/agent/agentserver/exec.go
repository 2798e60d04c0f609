package agentserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/stream"
)

// outputGrace is how long the agent keeps copying output after the command
// exited, for descendants that still hold its stdout/stderr.
const outputGrace = 2 * time.Second

// maxRequestBody bounds JSON request bodies the agent accepts.
const maxRequestBody = 1 << 20

// process is a started command and the host-facing ends of its stdio.
type process struct {
	cmd    *exec.Cmd
	tty    *os.File // PTY master, nil in pipe mode
	stdin  *os.File // pipe mode
	stdout *os.File // pipe mode
	stderr *os.File // pipe mode
}

// mergeEnv overlays extra KEY=VALUE entries onto base.
func mergeEnv(base, extra []string) ([]string, error) {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+len(extra))
	add := func(kv string) error {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("environment entry %q: want KEY=VALUE", kv)
		}
		if i, seen := idx[k]; seen {
			out[i] = kv
			return nil
		}
		idx[k] = len(out)
		out = append(out, kv)
		return nil
	}
	for _, kv := range base {
		if err := add(kv); err != nil {
			return nil, err
		}
	}
	for _, kv := range extra {
		if err := add(kv); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// errCommandNotFound marks a command that does not resolve.
var errCommandNotFound = errors.New("command not found")

// lookPath resolves name in the PATH of env (not the agent's own).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		fi, err := os.Stat(name)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s: %w", name, errCommandNotFound)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(envValue(env, "PATH")) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, errCommandNotFound)
}

// prepareCmd validates req and builds the command without starting it.
// The returned code classifies a failure.
func (s *Server) prepareCmd(argv, extraEnv []string, dir string, tty bool) (*exec.Cmd, string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, agent.CodeBadRequest, errors.New("empty command")
	}
	base := s.Env
	if base == nil {
		base = DefaultEnv()
	}
	if ie := s.identityEnv.Load(); ie != nil {
		merged, err := mergeEnv(base, *ie)
		if err != nil {
			return nil, agent.CodeBadRequest, fmt.Errorf("identity environment: %w", err)
		}
		base = merged
	}
	env, err := mergeEnv(base, extraEnv)
	if err != nil {
		return nil, agent.CodeBadRequest, err
	}
	if tty && envValue(env, "TERM") == "" {
		env = append(env, "TERM=xterm-256color")
	}
	if dir == "" {
		dir = s.HomeDir
		if dir == "" {
			dir = "/root"
		}
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, agent.CodeNoWorkingDir, fmt.Errorf("working directory %s does not exist", dir)
	}
	path, err := lookPath(argv[0], env)
	if err != nil {
		return nil, agent.CodeCommandNotFound, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: dir}
	return cmd, "", nil
}

// start starts cmd with pipes or a PTY of the given size.
func startProcess(cmd *exec.Cmd, tty bool, cols, rows uint16) (*process, error) {
	if tty {
		if cols == 0 || rows == 0 {
			cols, rows = 80, 24
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		master, err := pty.StartWithAttrs(cmd, &pty.Winsize{Cols: cols, Rows: rows}, cmd.SysProcAttr)
		if err != nil {
			return nil, fmt.Errorf("start %s with a pty: %w", cmd.Path, err)
		}
		return &process{cmd: cmd, tty: master}, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	inR.Close()
	outW.Close()
	errW.Close()
	return &process{cmd: cmd, stdin: inW, stdout: outR, stderr: errR}, nil
}

// signal delivers sig to the command's process group.
func (p *process) signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// parseSignal accepts "TERM", "SIGTERM", "sigterm" or "15".
func parseSignal(s string) (syscall.Signal, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("unknown signal %q", s)
	}
	return sig, nil
}

// exitStatus converts a finished command's state.
func exitStatus(ps *os.ProcessState) agent.ExitStatus {
	if ps == nil {
		return agent.ExitStatus{Code: -1}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return agent.ExitStatus{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return agent.ExitStatus{Code: ps.ExitCode()}
}

// hijackStream switches an HTTP request to the frame protocol.
func hijackStream(w http.ResponseWriter) (*stream.Conn, io.Closer, error) {
	rc := http.NewResponseController(w)
	conn, brw, err := rc.Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("hijack: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw.Writer, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", agent.UpgradeProtocol)
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("write upgrade response: %w", err)
	}
	return stream.NewConn(struct {
		io.Reader
		io.Writer
	}{brw.Reader, conn}), conn, nil
}

func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), agent.UpgradeProtocol) {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("exec needs Upgrade: %s", agent.UpgradeProtocol))
		return
	}
	var req agent.ExecRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("decode exec request: %w", err))
		return
	}
	cmd, code, err := s.prepareCmd(req.Argv, req.Env, req.Dir, req.TTY)
	if err != nil {
		status := http.StatusBadRequest
		if code == agent.CodeCommandNotFound {
			status = http.StatusNotFound
		}
		writeError(w, status, code, err)
		return
	}
	p, err := startProcess(cmd, req.TTY, req.Cols, req.Rows)
	if err != nil {
		writeError(w, http.StatusInternalServerError, agent.CodeInternal, err)
		return
	}
	sc, conn, err := hijackStream(w)
	if err != nil {
		_ = p.signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
		p.closeAll()
		s.logger().Warn("exec upgrade failed", "err", err)
		return
	}
	st := runProcessStream(sc, conn, p)
	s.logger().Debug("exec finished", "argv0", req.Argv[0], "code", st.Code, "signal", st.Signal)
}

func (p *process) closeAll() {
	for _, f := range []*os.File{p.tty, p.stdin, p.stdout, p.stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// runProcessStream bridges a started process and a frame stream until the
// process exits (or is killed because the peer went away), sends the Exit
// frame and closes conn.
func runProcessStream(sc *stream.Conn, conn io.Closer, p *process) agent.ExitStatus {
	var (
		mu     sync.Mutex
		exited bool
	)
	procDone := make(chan struct{})

	// Output.
	var outWG sync.WaitGroup
	copyOut := func(kind stream.Kind, f *os.File) {
		defer outWG.Done()
		_, _ = sc.Pump(kind, f)
	}
	if p.tty != nil {
		outWG.Add(1)
		go copyOut(stream.Stdout, p.tty)
	} else {
		outWG.Add(2)
		go copyOut(stream.Stdout, p.stdout)
		go copyOut(stream.Stderr, p.stderr)
	}

	// Frames from the peer. Stdin is written on the bridge's own
	// goroutine, so signals and resizes are not stuck behind a command
	// that does not read stdin.
	go func() {
		br := stream.Bridge{
			Done: procDone,
			Resize: func(cols, rows uint16) {
				if p.tty != nil {
					_ = pty.Setsize(p.tty, &pty.Winsize{Cols: cols, Rows: rows})
				}
			},
			Signal: func(name string) {
				sig, err := parseSignal(name)
				if err != nil {
					return
				}
				mu.Lock()
				if !exited {
					_ = p.signal(sig)
				}
				mu.Unlock()
			},
		}
		if p.tty != nil {
			br.Stdin = func(b []byte) error { _, err := p.tty.Write(b); return err }
		} else {
			br.Stdin = func(b []byte) error { _, err := p.stdin.Write(b); return err }
			br.CloseStdin = func() { p.stdin.Close() }
		}
		_ = br.Run(sc)
		// The peer is gone (or the stream is over): make sure the command
		// does not outlive its only audience.
		mu.Lock()
		if !exited {
			_ = p.signal(syscall.SIGKILL)
		}
		mu.Unlock()
	}()

	_ = p.cmd.Wait()
	mu.Lock()
	exited = true
	mu.Unlock()
	close(procDone)
	st := exitStatus(p.cmd.ProcessState)

	outDone := make(chan struct{})
	go func() { outWG.Wait(); close(outDone) }()
	select {
	case <-outDone:
	case <-time.After(outputGrace):
		if p.tty != nil {
			p.tty.Close()
		} else {
			p.stdout.Close()
			p.stderr.Close()
		}
		<-outDone
	}
	_ = sc.WriteFrame(stream.Exit, stream.EncodeExit(int32(st.Code), st.Signal))
	conn.Close()
	p.closeAll()
	return st
}
