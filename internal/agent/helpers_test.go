package agent

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
)

const testToken = "s3cret-token"

// unixDialer dials a plain unix socket: the simplest transport.
type unixDialer struct{ path string }

func (d unixDialer) DialContext(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", d.path)
}
func (unixDialer) Close() error { return nil }

var _ Dialer = unixDialer{}

// shortTempDir returns a temp dir with a short path (unix socket paths are
// limited to 108 bytes).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// chanListener is a net.Listener fed with connections by the test.
type chanListener struct {
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "chan", Net: "unix"} }

func testServer(t *testing.T) *Server {
	t.Helper()
	return &Server{Token: testToken, Version: "test-1", HomeDir: t.TempDir()}
}

// serveUnix serves srv on a unix socket and returns its path.
func serveUnix(t *testing.T, srv *Server) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "agent.sock")
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

// fakeFirecracker listens on a unix socket like Firecracker's vsock
// device: it reads "CONNECT <port>\n" byte by byte, answers "OK <n>\n" and
// hands the connection to the guest listener for that port.
func fakeFirecracker(t *testing.T, guest map[uint32]*chanListener) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "v.sock")
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
				if _, err := fmtSscanf(string(line), "CONNECT %d", &port); err != nil {
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

// yamuxGuest accepts serial connections on a unix socket (the QEMU
// chardev) and serves srv over a yamux server session on each, one at a
// time, like the guest agent on its virtio-serial port. Sessions are
// reported on the returned channel so tests can drop them.
func yamuxGuest(t *testing.T, srv *Server) (string, <-chan *yamux.Session) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "serial.sock")
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
			sess, err := yamux.Server(c, YamuxConfig())
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

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func fmtSscanf(s, format string, args ...any) (int, error) { return fmt.Sscanf(s, format, args...) }
