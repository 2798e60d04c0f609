package agentclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent/agentmux"
)

// Dialer opens connections to one VM's agent. Implementations are safe for
// concurrent use; Close releases what the dialer holds (a multiplexed
// session) and makes later dials fail.
type Dialer interface {
	DialContext(ctx context.Context) (net.Conn, error)
	Close() error
}

// DefaultHandshakeTimeout bounds a dial (including the vsock CONNECT
// handshake or the yamux stream open) when the context has no earlier
// deadline.
const DefaultHandshakeTimeout = 5 * time.Second

// maxAckLine bounds the vsock "OK <port>\n" line.
const maxAckLine = 64

// ErrDialerClosed is returned by dials on a closed Dialer.
var ErrDialerClosed = errors.New("agent dialer closed")

// NewVsockDialer returns a Dialer for Firecracker's hybrid vsock: it
// connects to the VM's vsock unix socket, writes "CONNECT <port>\n" and
// reads the "OK <host port>\n" acknowledgement one byte at a time, so no
// guest bytes that follow the acknowledgement are consumed.
func NewVsockDialer(udsPath string, port uint32) Dialer {
	return &vsockDialer{path: udsPath, port: port}
}

type vsockDialer struct {
	path string
	port uint32

	mu     sync.Mutex
	closed bool
}

func (d *vsockDialer) DialContext(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, ErrDialerClosed
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.path)
	if err != nil {
		return nil, fmt.Errorf("dial vsock socket %s: %w", d.path, err)
	}
	if err := vsockHandshake(ctx, conn, d.port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vsock connect %s port %d: %w", d.path, d.port, err)
	}
	return conn, nil
}

func (d *vsockDialer) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// vsockHandshake speaks Firecracker's host-initiated connection protocol
// on conn, bounded by ctx.
func vsockHandshake(ctx context.Context, conn net.Conn, port uint32) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return ctxErr(ctx, fmt.Errorf("send CONNECT: %w", err))
	}
	line := make([]byte, 0, 16)
	var b [1]byte
	for {
		n, err := conn.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			if len(line) > maxAckLine {
				return fmt.Errorf("acknowledgement longer than %d bytes: %q", maxAckLine, line[:16])
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return errors.New("connection closed by the VMM (is the agent listening in the guest?)")
			}
			return fmt.Errorf("connection closed after %q", line)
		}
		if err != nil {
			return ctxErr(ctx, fmt.Errorf("read acknowledgement: %w", err))
		}
	}
	rest, ok := bytes.CutPrefix(line, []byte("OK "))
	if !ok {
		return fmt.Errorf("unexpected acknowledgement %q", line)
	}
	if _, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 32); err != nil {
		return fmt.Errorf("unexpected acknowledgement %q", line)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	return nil
}

// ctxErr prefers the context's error when it ended, so a timeout reads as
// one instead of as an I/O error on a closed deadline.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection deadline (the context's) fired a hair before
		// the context noticed.
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// NewSerialDialer returns a Dialer for a QEMU virtio-serial chardev unix
// socket carrying one yamux session, in which the host is the yamux client
// and opens one stream per connection. When the session drops (the guest
// agent restarted, the daemon restarted, the VM rebooted) the next dial
// connects again and starts a new session.
func NewSerialDialer(socketPath string) Dialer {
	return &serialDialer{path: socketPath, log: slog.New(slog.DiscardHandler)}
}

type serialDialer struct {
	path string
	log  *slog.Logger

	mu     sync.Mutex
	sess   *yamux.Session
	closed bool
}

func (d *serialDialer) DialContext(ctx context.Context) (net.Conn, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	// One retry: a session that looked alive may turn out dead only when a
	// stream is opened on it.
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		sess, err := d.session(ctx)
		if err != nil {
			return nil, err
		}
		conn, err := openStream(ctx, sess)
		if err == nil {
			return conn, nil
		}
		lastErr = err
		d.drop(sess)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("open agent stream on %s: %w", d.path, ctxErr(ctx, lastErr))
}

// openStream opens a yamux stream, giving up when ctx ends.
func openStream(ctx context.Context, sess *yamux.Session) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := sess.Open()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// session returns the live session, dialing a new one when needed.
func (d *serialDialer) session(ctx context.Context) (*yamux.Session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrDialerClosed
	}
	if d.sess != nil && !d.sess.IsClosed() {
		return d.sess, nil
	}
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.path)
	if err != nil {
		return nil, fmt.Errorf("dial serial socket %s: %w", d.path, err)
	}
	sess, err := yamux.Client(conn, agentmux.Config())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start yamux session on %s: %w", d.path, err)
	}
	d.sess = sess
	return sess, nil
}

// drop closes sess if it is still the current session.
func (d *serialDialer) drop(sess *yamux.Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == sess {
		d.sess = nil
	}
	sess.Close()
}

// Connected reports whether the dialer holds a live session, that is
// whether closing it hangs up on the guest.
func (d *serialDialer) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sess != nil && !d.sess.IsClosed()
}

func (d *serialDialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.sess != nil {
		err := d.sess.Close()
		d.sess = nil
		return err
	}
	return nil
}
