package agentclient

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agenttest"
	"banger/internal/stream"
)

// hostileAgent serves every connection with script, after reading the
// request headers.
func hostileAgent(t *testing.T, script func(c net.Conn, req *http.Request)) *Client {
	t.Helper()
	path := filepath.Join(agenttest.ShortTempDir(t), "h.sock")
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
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				script(c, req)
			}()
		}
	}()
	c := NewClient(agenttest.UnixDialer{Path: path}, agenttest.Token)
	c.HeaderTimeout = 300 * time.Millisecond
	c.RequestTimeout = 2 * time.Second
	c.IdleTimeout = 300 * time.Millisecond
	c.KillGrace = 200 * time.Millisecond
	t.Cleanup(func() { c.Close() })
	return c
}

// endless is an io.Reader that never ends.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

func TestClient_HostileAgent(t *testing.T) {
	okHeaders := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
	tests := []struct {
		name    string
		script  func(c net.Conn, req *http.Request)
		call    func(ctx context.Context, c *Client) error
		wantErr string
	}{
		{
			name:    "never answers",
			script:  func(c net.Conn, _ *http.Request) { time.Sleep(5 * time.Second) },
			call:    func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			wantErr: "timeout awaiting response headers",
		},
		{
			name:    "garbage status line",
			script:  func(c net.Conn, _ *http.Request) { io.WriteString(c, "\x00\x01garbage\r\n\r\n") },
			call:    func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			wantErr: "malformed HTTP",
		},
		{
			name: "endless header",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Junk: ")
				io.Copy(c, endless('a'))
			},
			call:    func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			wantErr: "header",
		},
		{
			name: "endless JSON body",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, okHeaders)
				io.Copy(c, endless('['))
			},
			call:    func(ctx context.Context, c *Client) error { _, err := c.Ports(ctx); return err },
			wantErr: "response larger than",
		},
		{
			name: "malformed JSON",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"version")
			},
			call:    func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			wantErr: "decode response",
		},
		{
			name: "body stalls after headers",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, okHeaders+"{")
				time.Sleep(5 * time.Second)
			},
			call:    func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			wantErr: "deadline exceeded",
		},
		{
			name: "huge error body",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 500 Oops\r\n\r\n")
				io.Copy(c, endless('e'))
			},
			call:    func(ctx context.Context, c *Client) error { _, err := c.HostKeys(ctx); return err },
			wantErr: "(500)",
		},
		{
			name: "download stalls",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n")
				time.Sleep(5 * time.Second)
			},
			call: func(ctx context.Context, c *Client) error {
				rc, err := c.Download(ctx, "/x")
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			},
			wantErr: "no progress for 300ms",
		},
		{
			name: "upload never read",
			script: func(c net.Conn, _ *http.Request) {
				time.Sleep(5 * time.Second)
			},
			call: func(ctx context.Context, c *Client) error {
				return c.Upload(ctx, "/x", io.LimitReader(endless(0), 1<<30))
			},
			wantErr: "no progress for 300ms",
		},
		{
			name: "download error trailer",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTrailer: X-Banger-Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Banger-Error: disk on fire\r\n\r\n")
			},
			call: func(ctx context.Context, c *Client) error {
				rc, err := c.Download(ctx, "/x")
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(io.Discard, rc)
				return err
			},
			wantErr: "agent: disk on fire",
		},
		{
			name: "exec: oversized frame",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream/1\r\n\r\n")
				c.Write([]byte{byte(stream.Stdout), 0x7f, 0xff, 0xff, 0xff})
				io.Copy(c, endless('x'))
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "frame too large",
		},
		{
			name: "exec: stream closes without exit",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream/1\r\n\r\n")
				sc := stream.NewConn(c)
				sc.WriteFrame(stream.Stdout, []byte("partial"))
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "stream ended without an exit status",
		},
		{
			name: "exec: unknown frame kind",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream/1\r\n\r\n")
				stream.NewConn(c).WriteFrame(stream.Kind(42), nil)
				time.Sleep(time.Second)
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "unexpected kind(42) frame",
		},
		{
			name: "exec: agent error frame",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream/1\r\n\r\n")
				stream.NewConn(c).WriteFrame(stream.Error, []byte("spawn failed"))
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "agent: spawn failed",
		},
		{
			name: "exec: 200 instead of 101",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
			},
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "instead of switching protocols",
		},
		{
			name: "exec: silent after upgrade, caller gives up",
			script: func(c net.Conn, _ *http.Request) {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: banger-stream/1\r\n\r\n")
				io.Copy(io.Discard, c) // swallow everything, answer nothing
			},
			call: func(ctx context.Context, c *Client) error {
				ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_, err := c.Exec(ctx, agent.ExecRequest{Argv: []string{"x"}}, ExecIO{})
				return err
			},
			wantErr: "deadline exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hostileAgent(t, tt.script)
			start := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- tt.call(context.Background(), c) }()
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("call still blocked after %s", time.Since(start))
			}
		})
	}
}
