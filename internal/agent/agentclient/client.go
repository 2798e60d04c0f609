// Package agentclient is the host side of the guest agent channel: the
// Client of the agent API (internal/agent) and its Dialers, Firecracker's
// hybrid vsock (CONNECT <port>) and QEMU's virtio-serial port carrying
// yamux. bangerd links it; it never links the guest server.
//
// The host never trusts the guest: every response is size-limited and every
// request is bounded by timeouts, so a broken or hostile guest can fail a
// call but cannot hang or crash the daemon.
package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/stream"
)

// Client defaults; see the Client fields.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultHeaderTimeout  = 30 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultKillGrace      = 5 * time.Second
)

// Response size limits: a guest cannot make the host read more than this
// for one JSON answer or one response header block.
const (
	maxJSONResponse  = 8 << 20
	maxErrorResponse = 64 << 10
	maxHeaderBytes   = 64 << 10
)

// APIError is a non-2xx answer from the agent.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("agent: %s (%d %s)", e.Message, e.Status, e.Code)
	}
	return fmt.Sprintf("agent: %s (%d)", e.Message, e.Status)
}

// IsCode reports whether err is an APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// Client talks to one VM's agent through a Dialer. It is safe for
// concurrent use. The tunables are read when the first request is made;
// set them before that.
type Client struct {
	dialer Dialer
	token  string

	// RequestTimeout bounds a whole non-streaming request (health, ports,
	// host keys) when the context has no earlier deadline.
	RequestTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers on every request,
	// streaming ones included.
	HeaderTimeout time.Duration
	// IdleTimeout bounds how long an upload or download may make no
	// progress before it is aborted.
	IdleTimeout time.Duration
	// KillGrace is how long Exec waits for the command to exit after
	// forwarding SIGTERM on context cancellation before it drops the
	// connection (which makes the agent SIGKILL the command's process
	// group).
	KillGrace time.Duration

	once sync.Once
	hc   *http.Client
}

// NewClient returns a client for the agent behind d authenticating with
// token. Closing the client closes d.
func NewClient(d Dialer, token string) *Client {
	return &Client{dialer: d, token: token}
}

// Close closes idle connections and the dialer.
func (c *Client) Close() error {
	if c.hc != nil {
		c.hc.CloseIdleConnections()
	}
	return c.dialer.Close()
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return c.dialer.DialContext(ctx)
			},
			ResponseHeaderTimeout:  durOr(c.HeaderTimeout, DefaultHeaderTimeout),
			MaxResponseHeaderBytes: maxHeaderBytes,
			IdleConnTimeout:        90 * time.Second,
			MaxIdleConnsPerHost:    4,
			DisableCompression:     true,
			ForceAttemptHTTP2:      false,
			WriteBufferSize:        uploadBuffer,
		}
		c.hc = &http.Client{Transport: tr}
	})
	return c.hc
}

// baseURL is the URL every request is made against; the host part is
// never resolved (the dialer decides where connections go).
const baseURL = "http://banger-agent"

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := baseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	return req, nil
}

// do sends req and turns a non-2xx answer into an *APIError.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorResponse))
	var eb agent.ErrorBody
	if err := json.Unmarshal(data, &eb); err != nil || eb.Error == "" {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &APIError{Status: resp.StatusCode, Message: msg}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
}

// getJSON performs a bounded GET and decodes a size-limited JSON answer.
func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	ctx, cancel := withDefaultTimeout(ctx, durOr(c.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	return c.doJSON(req, out)
}

func (c *Client) doJSON(req *http.Request, out any) error {
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := decodeLimited(resp.Body, maxJSONResponse, out); err != nil {
		return fmt.Errorf("agent %s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// decodeLimited decodes one JSON value of at most limit bytes.
func decodeLimited(r io.Reader, limit int64, out any) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("response larger than %d bytes", limit)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Health asks the agent how the guest is doing (GET /healthz).
func (c *Client) Health(ctx context.Context) (agent.Health, error) {
	var h agent.Health
	err := c.getJSON(ctx, agent.PathHealth, &h)
	return h, err
}

// Ports lists the guest's listening TCP and UDP sockets (GET /ports).
func (c *Client) Ports(ctx context.Context) ([]agent.Port, error) {
	var ps []agent.Port
	err := c.getJSON(ctx, agent.PathPorts, &ps)
	return ps, err
}

// Stats reads the guest's resource counters (GET /stats).
func (c *Client) Stats(ctx context.Context) (agent.Stats, error) {
	var st agent.Stats
	err := c.getJSON(ctx, agent.PathStats, &st)
	return st, err
}

// HostKeys returns the guest's ssh host public keys, one
// "type base64 [comment]" line each (GET /hostkeys).
func (c *Client) HostKeys(ctx context.Context) ([]string, error) {
	var keys []string
	err := c.getJSON(ctx, agent.PathHostKeys, &keys)
	return keys, err
}

// uploadBuffer is how much of a request body the transport gathers
// before it writes to the agent connection: every write there is a yamux
// frame and, on virtio-serial, a guest notification, which under
// software emulation costs far more than the copy. (BenchmarkWorkspacePrepare)
const uploadBuffer = 256 << 10

// Upload extracts a tar stream into guestDir in the guest (PUT /files),
// creating guestDir when missing and keeping each entry's mode (and its
// owner, as the agent runs as root). The stream is sent as it is read; the
// call fails when no progress is made for IdleTimeout.
func (c *Client) Upload(ctx context.Context, guestDir string, tarStream io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := newIdleTimer(durOr(c.IdleTimeout, DefaultIdleTimeout), cancel)
	defer idle.stop()
	body := io.NopCloser(&progressReader{r: tarStream, t: idle})
	req, err := c.newRequest(ctx, http.MethodPut, agent.PathFiles, url.Values{"dir": {guestDir}}, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	if err := c.doJSON(req, nil); err != nil {
		if idle.fired() {
			return fmt.Errorf("upload to %s: no progress for %s: %w", guestDir, idle.d, err)
		}
		return fmt.Errorf("upload to %s: %w", guestDir, err)
	}
	return nil
}

// Download returns a tar stream of guestPath (a file or a directory,
// recursively, modes kept), with entries named relative to guestPath's
// parent (GET /files). The caller must Close it. Reading fails when the
// guest makes no progress for IdleTimeout, and at the end of the stream
// when the guest reported an error after the transfer began.
func (c *Client) Download(ctx context.Context, guestPath string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	idle := newIdleTimer(durOr(c.IdleTimeout, DefaultIdleTimeout), cancel)
	req, err := c.newRequest(ctx, http.MethodGet, agent.PathFiles, url.Values{"path": {guestPath}}, nil)
	if err != nil {
		idle.stop()
		cancel()
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		idle.stop()
		cancel()
		return nil, fmt.Errorf("download %s: %w", guestPath, err)
	}
	return &downloadBody{resp: resp, idle: idle, cancel: cancel, path: guestPath}, nil
}

type downloadBody struct {
	resp   *http.Response
	idle   *idleTimer
	cancel context.CancelFunc
	path   string
}

func (b *downloadBody) Read(p []byte) (int, error) {
	n, err := b.resp.Body.Read(p)
	if n > 0 {
		b.idle.reset()
	}
	if errors.Is(err, io.EOF) {
		if msg := b.resp.Trailer.Get(agent.ErrorTrailer); msg != "" {
			return n, fmt.Errorf("download %s: agent: %s", b.path, msg)
		}
		return n, io.EOF
	}
	if err != nil {
		if b.idle.fired() {
			return n, fmt.Errorf("download %s: no progress for %s: %w", b.path, b.idle.d, err)
		}
		return n, fmt.Errorf("download %s: %w", b.path, err)
	}
	return n, nil
}

func (b *downloadBody) Close() error {
	b.idle.stop()
	err := b.resp.Body.Close()
	b.cancel()
	return err
}

// idleTimer calls fn when reset has not been called for d.
type idleTimer struct {
	d        time.Duration
	t        *time.Timer
	mu       sync.Mutex
	wasFired bool
}

func newIdleTimer(d time.Duration, fn func()) *idleTimer {
	it := &idleTimer{d: d}
	it.t = time.AfterFunc(d, func() {
		it.mu.Lock()
		it.wasFired = true
		it.mu.Unlock()
		fn()
	})
	return it
}

func (it *idleTimer) reset() { it.t.Reset(it.d) }
func (it *idleTimer) stop()  { it.t.Stop() }
func (it *idleTimer) fired() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.wasFired
}

type progressReader struct {
	r io.Reader
	t *idleTimer
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.t.reset()
	}
	return n, err
}

// ExecIO is the caller's side of an Exec: where stdin comes from, where
// output goes, and channels for terminal resizes ({cols, rows}) and
// signals to forward (names such as "INT" or "SIGWINCH", or numbers).
// Any field may be nil: no stdin means the command's stdin is at EOF;
// nil writers discard.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan [2]uint16
	Signal         <-chan string
}

// Exec runs a command in the guest and streams its stdio until it exits,
// returning its exit status (POST /exec upgraded to internal/stream
// frames).
//
// Cancelling ctx forwards SIGTERM to the command's process group; if the
// command has not exited KillGrace later, the connection is dropped and
// the agent SIGKILLs the process group. Exec then returns ctx's error
// (together with the exit status when the command did report one).
//
// Exec returns once the command exited and its output was written; a
// goroutine blocked reading ExecIO.Stdin (a terminal, say) is left behind
// until that Read returns, and what it reads then is discarded.
func (c *Client) Exec(ctx context.Context, req agent.ExecRequest, eio ExecIO) (agent.ExitStatus, error) {
	if len(req.Argv) == 0 {
		return agent.ExitStatus{}, errors.New("exec: empty command")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return agent.ExitStatus{}, fmt.Errorf("exec: encode request: %w", err)
	}
	hctx, hcancel := context.WithTimeout(ctx, durOr(c.HeaderTimeout, DefaultHeaderTimeout))
	defer hcancel()
	hreq, err := c.newRequest(hctx, http.MethodPost, agent.PathExec, nil, bytes.NewReader(body))
	if err != nil {
		return agent.ExitStatus{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", agent.UpgradeProtocol)
	resp, err := c.do(hreq)
	if err != nil {
		return agent.ExitStatus{}, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return agent.ExitStatus{}, fmt.Errorf("exec %s: agent answered %s instead of switching protocols", req.Argv[0], resp.Status)
	}
	defer rwc.Close()
	return runExecStream(ctx, stream.NewConn(rwc), rwc, eio, durOr(c.KillGrace, DefaultKillGrace), "exec "+req.Argv[0])
}

// runExecStream drives the client side of an exec or attach stream.
// When ctx ends it forwards SIGTERM and closes the stream grace later; a
// zero grace closes it at once without a signal (detach).
func runExecStream(ctx context.Context, sc *stream.Conn, closer io.Closer, eio ExecIO, grace time.Duration, name string) (agent.ExitStatus, error) {
	done := make(chan struct{})
	defer close(done)

	// stdin
	go func() {
		if eio.Stdin != nil {
			if _, err := sc.Pump(stream.Stdin, eio.Stdin); err != nil {
				return
			}
		}
		_ = sc.WriteFrame(stream.StdinEOF, nil)
	}()
	// resizes, signals and cancellation
	go func() {
		var killTimer <-chan time.Time
		ctxDone := ctx.Done()
		for {
			select {
			case <-done:
				return
			case sz, ok := <-eio.Resize:
				if !ok {
					eio.Resize = nil
					continue
				}
				_ = sc.WriteFrame(stream.Resize, stream.EncodeResize(sz[0], sz[1]))
			case sig, ok := <-eio.Signal:
				if !ok {
					eio.Signal = nil
					continue
				}
				_ = sc.WriteFrame(stream.Signal, []byte(sig))
			case <-ctxDone:
				ctxDone = nil
				if grace == 0 {
					closer.Close()
					return
				}
				_ = sc.WriteFrame(stream.Signal, []byte("TERM"))
				killTimer = time.After(grace)
			case <-killTimer:
				closer.Close()
				return
			}
		}
	}()

	var st agent.ExitStatus
	gotExit := false
	errExit := errors.New("exit")
	err := sc.Demux(map[stream.Kind]func(stream.Frame) error{
		stream.Stdout: stream.Sink{W: eio.Stdout}.Deliver,
		stream.Stderr: stream.Sink{W: eio.Stderr}.Deliver,
		stream.Exit: func(f stream.Frame) error {
			code, sig, err := stream.DecodeExit(f.Data)
			if err != nil {
				return err
			}
			st = agent.ExitStatus{Code: int(code), Signal: sig}
			gotExit = true
			return errExit
		},
		stream.Error: func(f stream.Frame) error {
			msg := string(f.Data)
			if len(msg) > 1024 {
				msg = msg[:1024]
			}
			return fmt.Errorf("agent: %s", msg)
		},
	})
	if gotExit {
		return st, ctx.Err()
	}
	if ctx.Err() != nil {
		return agent.ExitStatus{}, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return agent.ExitStatus{}, fmt.Errorf("%s: stream ended without an exit status: %w", name, err)
}

func newStreamConn(rwc io.ReadWriteCloser) *stream.Conn { return stream.NewConn(rwc) }

// Thaw tells a guest that runs again after a pause, suspend or restore to
// step its clock to the host's and reseed its random pool (POST /thaw).
func (c *Client) Thaw(ctx context.Context, t agent.Thaw) (agent.ThawResult, error) {
	ctx, cancel := withDefaultTimeout(ctx, durOr(c.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	body, err := json.Marshal(t)
	if err != nil {
		return agent.ThawResult{}, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, agent.PathThaw, nil, bytes.NewReader(body))
	if err != nil {
		return agent.ThawResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	var out agent.ThawResult
	err = c.doJSON(req, &out)
	return out, err
}

// Reidentify gives a guest restored from another VM's memory its own
// identity and host keys (POST /identity). Later requests must carry the
// new token: use a client made with it.
func (c *Client) Reidentify(ctx context.Context, r agent.Reidentify) error {
	ctx, cancel := withDefaultTimeout(ctx, durOr(c.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	req, err := c.newRequest(ctx, http.MethodPost, agent.PathIdentity, nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.doJSON(req, nil)
}
