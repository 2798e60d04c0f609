// Package agenttest holds the test doubles of the agent channel shared by
// the client and server tests: a unix-socket dialer, a fake Firecracker
// vsock device, a yamux guest like the serial transport, and short temp
// dirs for unix sockets. It is imported by tests only.
package agenttest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent/agentmux"
)

// Server is what the doubles serve: agentserver.Server in practice.
type Server interface {
	Serve(ctx context.Context, l net.Listener) error
}

// Token is the bearer token of test servers and clients.
const Token = "s3cret-token"

// UnixDialer dials a plain unix socket: the simplest transport.
type UnixDialer struct{ Path string }

// DialContext dials the socket.
func (d UnixDialer) DialContext(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", d.Path)
}

// Close does nothing: a UnixDialer holds nothing.
func (UnixDialer) Close() error { return nil }

// ShortTempDir returns a temp dir with a short path (unix socket paths are
// limited to 108 bytes).
func ShortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// ChanListener is a net.Listener fed with connections by the test.
type ChanListener struct {
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// NewChanListener returns an open ChanListener.
func NewChanListener() *ChanListener {
	return &ChanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept returns the next connection the test feeds, or net.ErrClosed.
func (l *ChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close makes Accept fail; idempotent.
func (l *ChanListener) Close() error { l.once.Do(func() { close(l.closed) }); return nil }

// Addr returns a placeholder address.
func (l *ChanListener) Addr() net.Addr { return &net.UnixAddr{Name: "chan", Net: "unix"} }

// ServeUnix serves srv on a unix socket and returns its path.
func ServeUnix(t *testing.T, srv Server) string {
	t.Helper()
	path := filepath.Join(ShortTempDir(t), "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// FakeFirecracker listens on a unix socket like Firecracker's vsock
// device: it reads "CONNECT <port>\n" byte by byte, answers "OK <n>\n" and
// hands the connection to the guest listener for that port.
func FakeFirecracker(t *testing.T, guest map[uint32]*ChanListener) string {
	t.Helper()
	path := filepath.Join(ShortTempDir(t), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				var line []byte
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						c.Close()
						return
					}
					if b[0] == '\n' {
						break
					}
					line = append(line, b[0])
				}
				var port uint32
				if _, err := fmt.Sscanf(string(line), "CONNECT %d", &port); err != nil {
					c.Close()
					return
				}
				gl, ok := guest[port]
				if !ok {
					c.Close() // nothing listens: Firecracker closes
					return
				}
				if _, err := c.Write([]byte("OK 1073741824\n")); err != nil {
					c.Close()
					return
				}
				select {
				case gl.ch <- c:
				case <-gl.closed:
					c.Close()
				}
			}()
		}
	}()
	return path
}

// YamuxGuest accepts serial connections on a unix socket (the QEMU
// chardev) and serves srv over a yamux server session on each, one at a
// time, like the guest agent on its virtio-serial port. Sessions are
// reported on the returned channel so tests can drop them.
func YamuxGuest(t *testing.T, srv Server) (string, <-chan *yamux.Session) {
	t.Helper()
	path := filepath.Join(ShortTempDir(t), "serial.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	sessions := make(chan *yamux.Session, 8)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			sess, err := yamux.Server(c, agentmux.Config())
			if err != nil {
				c.Close()
				continue
			}
			sessions <- sess
			go func() { _ = srv.Serve(ctx, sess) }()
		}
	}()
	return path, sessions
}

// CtxTimeout returns a context cancelled after d or at the end of the test.
func CtxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
