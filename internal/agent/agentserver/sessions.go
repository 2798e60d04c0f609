package agentserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"banger/internal/agent"
	"banger/internal/atomicfile"
	"banger/internal/stream"
)

// DefaultSessionLogSize is the size at which a session's output log is
// rotated; one rotated file is kept, so at most twice this is stored.
const DefaultSessionLogSize = 8 << 20

// Sessions runs and tracks long-lived commands under the agent. Their
// output goes to a bounded, rotated log in Dir/<name>/ and to attached
// clients, who read it from the log so a slow client never stalls the
// command; metadata is kept in Dir/<name>/meta.json so the state outlives
// host connections (and is reported as lost after an agent restart).
type Sessions struct {
	dir     string
	maxLog  int64
	server  *Server
	mu      sync.Mutex
	entries map[string]*session
	counter int
}

// NewSessions keeps session state under dir (created when missing),
// rotating logs at maxLog bytes (0 means DefaultSessionLogSize), and
// loads the sessions an earlier agent process recorded there.
func NewSessions(dir string, maxLog int64) (*Sessions, error) {
	if maxLog <= 0 {
		maxLog = DefaultSessionLogSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sessions dir %s: %w", dir, err)
	}
	s := &Sessions{dir: dir, maxLog: maxLog, entries: map[string]*session{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read sessions dir %s: %w", dir, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var info agent.SessionInfo
		if json.Unmarshal(b, &info) != nil || info.Name != e.Name() {
			continue
		}
		if info.State == agent.SessionRunning {
			info.State = agent.SessionLost
		}
		ss := &session{owner: s, info: info, dir: filepath.Join(dir, info.Name), changed: make(chan struct{}), done: make(chan struct{})}
		close(ss.done)
		ss.total = info.OutputBytes
		ss.base, ss.base1 = logBases(ss.dir, ss.total)
		s.entries[info.Name] = ss
	}
	return s, nil
}

// logBases recovers the absolute offsets of the two log files from
// their sizes.
func logBases(dir string, total int64) (base, base1 int64) {
	cur, old := fileSize(filepath.Join(dir, "output.log")), fileSize(filepath.Join(dir, "output.log.1"))
	base = total - cur
	base1 = base - old
	if base1 < 0 {
		base1 = 0
	}
	return base, base1
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

type session struct {
	owner *Sessions
	dir   string

	mu      sync.Mutex
	info    agent.SessionInfo
	proc    *process
	out     *os.File // current log file
	total   int64    // absolute output offset
	base    int64    // absolute offset of output.log's first byte
	base1   int64    // absolute offset of output.log.1's first byte
	changed chan struct{}
	done    chan struct{}
}

var sessionNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// start launches a session.
func (s *Sessions) start(req agent.SessionRequest) (agent.SessionInfo, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.Name
	if name == "" {
		for {
			s.counter++
			name = "s" + strconv.Itoa(s.counter)
			if _, taken := s.entries[name]; !taken {
				break
			}
		}
	}
	if !sessionNameRE.MatchString(name) {
		return agent.SessionInfo{}, agent.CodeBadRequest, fmt.Errorf("session name %q: want letters, digits, '.', '_' or '-' (at most 64)", name)
	}
	if old, ok := s.entries[name]; ok {
		if old.snapshot().State == agent.SessionRunning {
			return agent.SessionInfo{}, agent.CodeConflict, fmt.Errorf("session %s is already running", name)
		}
		if err := s.removeLocked(name); err != nil {
			return agent.SessionInfo{}, agent.CodeInternal, err
		}
	}
	cmd, code, err := s.server.prepareCmd(req.Argv, req.Env, req.Dir, req.TTY)
	if err != nil {
		return agent.SessionInfo{}, code, err
	}
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return agent.SessionInfo{}, agent.CodeInternal, fmt.Errorf("session dir: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "output.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return agent.SessionInfo{}, agent.CodeInternal, fmt.Errorf("session log: %w", err)
	}
	_ = os.Remove(filepath.Join(dir, "output.log.1"))
	p, err := startSessionProcess(cmd, req)
	if err != nil {
		logf.Close()
		return agent.SessionInfo{}, agent.CodeInternal, err
	}
	var envNames []string
	for _, kv := range req.Env {
		k, _, _ := strings.Cut(kv, "=")
		envNames = append(envNames, k)
	}
	ss := &session{
		owner: s, dir: dir, proc: p, out: logf,
		changed: make(chan struct{}), done: make(chan struct{}),
		info: agent.SessionInfo{
			Name: name, Argv: req.Argv, Dir: cmd.Dir, EnvNames: envNames, TTY: req.TTY,
			PID: cmd.Process.Pid, State: agent.SessionRunning, StartedAt: time.Now().UTC(),
		},
	}
	s.entries[name] = ss
	ss.saveMeta()
	go ss.run()
	return ss.snapshot(), "", nil
}

// startSessionProcess starts cmd detached from any connection: its own
// process group (or session, with a PTY), stdout and stderr merged.
func startSessionProcess(cmd *exec.Cmd, req agent.SessionRequest) (*process, error) {
	if req.TTY {
		return startProcess(cmd, true, req.Cols, req.Rows)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("output pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return &process{cmd: cmd, stdin: inW, stdout: outR}, nil
}

// run copies output into the log until the command ends, then records
// its exit.
func (ss *session) run() {
	src := ss.proc.stdout
	if ss.proc.tty != nil {
		src = ss.proc.tty
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, stream.ChunkSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				ss.appendOutput(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	_ = ss.proc.cmd.Wait()
	select {
	case <-copied:
	case <-time.After(outputGrace):
		src.Close()
		<-copied
	}
	st := exitStatus(ss.proc.cmd.ProcessState)
	now := time.Now().UTC()
	ss.mu.Lock()
	ss.info.State = agent.SessionExited
	ss.info.Exit = &st
	ss.info.EndedAt = &now
	ss.out.Close()
	ss.mu.Unlock()
	ss.proc.closeAll()
	ss.saveMeta()
	close(ss.done)
	ss.notify()
}

// appendOutput writes to the log, rotating it when full.
func (ss *session) appendOutput(b []byte) {
	ss.mu.Lock()
	if ss.total-ss.base+int64(len(b)) > ss.owner.maxLog && ss.total > ss.base {
		cur := filepath.Join(ss.dir, "output.log")
		ss.out.Close()
		if err := os.Rename(cur, cur+".1"); err == nil {
			ss.base1 = ss.base
		}
		if f, err := os.OpenFile(cur, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
			ss.out = f
		}
		ss.base = ss.total
	}
	if _, err := ss.out.Write(b); err == nil {
		ss.total += int64(len(b))
		ss.info.OutputBytes = ss.total
	}
	ss.mu.Unlock()
	ss.notify()
}

// notify wakes everyone waiting for output or exit.
func (ss *session) notify() {
	ss.mu.Lock()
	close(ss.changed)
	ss.changed = make(chan struct{})
	ss.mu.Unlock()
}

// readAt reads output at absolute offset off. When off fell out of the
// kept window it moves forward to the oldest kept byte. It returns the
// offset after the bytes read and a channel closed on the next change.
func (ss *session) readAt(off int64, p []byte) (int, int64, <-chan struct{}, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	changed := ss.changed
	if off < ss.base1 {
		off = ss.base1
	}
	if off >= ss.total {
		return 0, off, changed, nil
	}
	name, pos, end := "output.log", off-ss.base, ss.total-ss.base
	if off < ss.base {
		name, pos, end = "output.log.1", off-ss.base1, ss.base-ss.base1
	}
	if int64(len(p)) > end-pos {
		p = p[:end-pos]
	}
	f, err := os.Open(filepath.Join(ss.dir, name))
	if err != nil {
		return 0, off, changed, fmt.Errorf("read session log: %w", err)
	}
	defer f.Close()
	n, err := f.ReadAt(p, pos)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, off + int64(n), changed, err
}

func (ss *session) snapshot() agent.SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	info := ss.info
	info.OutputBytes = ss.total
	return info
}

// saveMeta records the session's state in its meta.json through
// atomicfile. A failure is logged rather than returned: the live session
// goes on, and only a later agent process would read the stale state.
func (ss *session) saveMeta() {
	info := ss.snapshot()
	b, err := json.MarshalIndent(info, "", "  ")
	if err == nil {
		err = atomicfile.Write(filepath.Join(ss.dir, "meta.json"), b, 0o600)
	}
	if err != nil && ss.owner.server != nil {
		ss.owner.server.logger().Warn("save session state", "session", info.Name, "err", err)
	}
}

func (s *Sessions) get(name string) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.entries[name]
	return ss, ok
}

func (s *Sessions) removeLocked(name string) error {
	if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove session %s: %w", name, err)
	}
	delete(s.entries, name)
	return nil
}

func (s *Server) sessionRoutes(mux *http.ServeMux) {
	if s.Sessions == nil {
		return
	}
	s.Sessions.server = s
	ss := s.Sessions
	mux.HandleFunc("POST "+agent.PathSessions, func(w http.ResponseWriter, r *http.Request) {
		var req agent.SessionRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("decode session request: %w", err))
			return
		}
		info, code, err := ss.start(req)
		if err != nil {
			writeError(w, statusFor(code), code, err)
			return
		}
		writeJSON(w, http.StatusCreated, info)
	})
	mux.HandleFunc("GET "+agent.PathSessions, func(w http.ResponseWriter, r *http.Request) {
		ss.mu.Lock()
		list := make([]agent.SessionInfo, 0, len(ss.entries))
		for _, e := range ss.entries {
			list = append(list, e.snapshot())
		}
		ss.mu.Unlock()
		sort.Slice(list, func(i, j int) bool { return list[i].StartedAt.Before(list[j].StartedAt) })
		writeJSON(w, http.StatusOK, list)
	})
	withSession := func(fn func(w http.ResponseWriter, r *http.Request, e *session)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			e, ok := ss.get(r.PathValue("name"))
			if !ok {
				writeError(w, http.StatusNotFound, agent.CodeNotFound, fmt.Errorf("no session %q", r.PathValue("name")))
				return
			}
			fn(w, r, e)
		}
	}
	mux.HandleFunc("GET "+agent.PathSessions+"/{name}", withSession(func(w http.ResponseWriter, r *http.Request, e *session) {
		writeJSON(w, http.StatusOK, e.snapshot())
	}))
	mux.HandleFunc("DELETE "+agent.PathSessions+"/{name}", withSession(func(w http.ResponseWriter, r *http.Request, e *session) {
		if e.snapshot().State == agent.SessionRunning {
			writeError(w, http.StatusConflict, agent.CodeConflict, fmt.Errorf("session %s is running; stop it first", e.info.Name))
			return
		}
		ss.mu.Lock()
		err := ss.removeLocked(e.info.Name)
		ss.mu.Unlock()
		if err != nil {
			writeError(w, http.StatusInternalServerError, agent.CodeInternal, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	}))
	mux.HandleFunc("POST "+agent.PathSessions+"/{name}/signal", withSession(func(w http.ResponseWriter, r *http.Request, e *session) {
		var body agent.SignalRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("decode signal request: %w", err))
			return
		}
		sig, err := parseSignal(body.Signal)
		if err != nil {
			writeError(w, http.StatusBadRequest, agent.CodeBadRequest, err)
			return
		}
		e.mu.Lock()
		running := e.info.State == agent.SessionRunning
		if running {
			err = e.proc.signal(sig)
		}
		e.mu.Unlock()
		if !running {
			writeError(w, http.StatusConflict, agent.CodeConflict, fmt.Errorf("session %s is not running", e.info.Name))
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, agent.CodeInternal, fmt.Errorf("signal session %s: %w", e.info.Name, err))
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	}))
	mux.HandleFunc("GET "+agent.PathSessions+"/{name}/log", withSession(s.handleSessionLog))
	mux.HandleFunc("POST "+agent.PathSessions+"/{name}/attach", withSession(s.handleSessionAttach))
}

// statusFor is the HTTP status of an error code.
func statusFor(code string) int {
	switch code {
	case agent.CodeBadRequest, agent.CodeNoWorkingDir:
		return http.StatusBadRequest
	case agent.CodeNotFound, agent.CodeCommandNotFound:
		return http.StatusNotFound
	case agent.CodeConflict:
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// handleSessionLog streams the kept output; with follow=1 it keeps
// streaming until the session ends or the client goes away.
func (s *Server) handleSessionLog(w http.ResponseWriter, r *http.Request, e *session) {
	follow := r.URL.Query().Get("follow") == "1"
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	buf := make([]byte, stream.ChunkSize)
	var off int64
	for {
		n, next, changed, err := e.readAt(off, buf)
		if err != nil {
			return
		}
		off = next
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			_ = rc.Flush()
			continue
		}
		if !follow {
			return
		}
		select {
		case <-e.done:
			// Drain what arrived before the end.
			if n, _, _, _ := e.readAt(off, buf); n == 0 {
				return
			}
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// handleSessionAttach bridges a session and a frame stream: output from
// replay bytes before the current end, stdin, resizes and signals to the
// session. Closing the stream detaches; the session keeps running. The
// stream ends with an Exit frame when the session has exited.
func (s *Server) handleSessionAttach(w http.ResponseWriter, r *http.Request, e *session) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), agent.UpgradeProtocol) {
		writeError(w, http.StatusBadRequest, agent.CodeBadRequest, fmt.Errorf("attach needs Upgrade: %s", agent.UpgradeProtocol))
		return
	}
	replay, _ := strconv.ParseInt(r.URL.Query().Get("replay"), 10, 64)
	sc, conn, err := hijackStream(w)
	if err != nil {
		return
	}
	defer conn.Close()
	detached := make(chan struct{})
	go func() {
		defer close(detached)
		// Stdin is written on the bridge's own goroutine, so resizes and
		// signals reach a session that does not read its stdin.
		_ = stream.Bridge{
			Done: e.done,
			Stdin: func(b []byte) error {
				e.mu.Lock()
				p, running := e.proc, e.info.State == agent.SessionRunning
				e.mu.Unlock()
				if !running {
					return nil
				}
				in := p.stdin
				if p.tty != nil {
					in = p.tty
				}
				_, _ = in.Write(b)
				return nil
			},
			Resize: func(cols, rows uint16) {
				e.mu.Lock()
				if e.info.State == agent.SessionRunning && e.proc.tty != nil {
					_ = pty.Setsize(e.proc.tty, &pty.Winsize{Cols: cols, Rows: rows})
				}
				e.mu.Unlock()
			},
			Signal: func(name string) {
				sig, err := parseSignal(name)
				e.mu.Lock()
				if err == nil && e.info.State == agent.SessionRunning {
					_ = e.proc.signal(sig)
				}
				e.mu.Unlock()
			},
		}.Run(sc)
	}()
	e.mu.Lock()
	off := e.total - replay
	if replay < 0 || off < 0 {
		off = 0
	}
	e.mu.Unlock()
	buf := make([]byte, stream.ChunkSize)
	for {
		n, next, changed, err := e.readAt(off, buf)
		if err != nil {
			_ = sc.WriteFrame(stream.Error, []byte(err.Error()))
			return
		}
		off = next
		if n > 0 {
			if err := sc.WriteFrame(stream.Stdout, buf[:n]); err != nil {
				return
			}
			continue
		}
		select {
		case <-e.done:
			if n, _, _, _ := e.readAt(off, buf); n > 0 {
				continue
			}
			st := e.snapshot().Exit
			if st == nil {
				st = &agent.ExitStatus{Code: -1}
			}
			_ = sc.WriteFrame(stream.Exit, stream.EncodeExit(int32(st.Code), st.Signal))
			return
		case <-changed:
		case <-detached:
			return
		}
	}
}
