package api

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Attach streams: a request carrying "Connection: Upgrade" and
// "Upgrade: banger-stream" is answered with 101 Switching Protocols, after
// which the connection carries length-prefixed frames in both directions
// (package stream: a 1-byte kind and a 4-byte big-endian length, then the
// data) until either side closes it.
const (
	UpgradeProtocol = "banger-stream"
	headerUpgrade   = "Upgrade"
	headerConn      = "Connection"
)

// IsUpgrade reports whether r asks for the banger-stream protocol.
func IsUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, headerConn, "upgrade") && headerHasToken(r.Header, headerUpgrade, UpgradeProtocol)
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Upgrade sends a request (in, if not nil, as its JSON body) asking to
// switch the connection to the banger-stream protocol. On 101 it returns
// the connection, positioned after the response; any other answer is
// returned as an *Error. ctx bounds the handshake only: once returned the
// connection lives until closed.
func (c *Client) Upgrade(ctx context.Context, method, path string, in any) (net.Conn, error) {
	req, err := newRequest(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	req.Header.Set(headerConn, "Upgrade")
	req.Header.Set(headerUpgrade, UpgradeProtocol)
	conn, err := c.DialContext(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(conn)
	resp, err := func() (*http.Response, error) {
		if err := req.Write(conn); err != nil {
			return nil, err
		}
		return http.ReadResponse(br, req)
	}()
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade %s: %w", path, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil, fmt.Errorf("upgrade %s: daemon answered %s instead of switching protocols", path, resp.Status)
		}
		return nil, ReadError(resp)
	}
	if !IsUpgradeResponse(resp) {
		conn.Close()
		return nil, fmt.Errorf("upgrade %s: daemon switched to %q, want %q", path, resp.Header.Get(headerUpgrade), UpgradeProtocol)
	}
	return NewBufferedConn(conn, br), nil
}

// IsUpgradeResponse reports whether resp accepted the banger-stream
// protocol.
func IsUpgradeResponse(resp *http.Response) bool {
	return resp.StatusCode == http.StatusSwitchingProtocols && headerHasToken(resp.Header, headerUpgrade, UpgradeProtocol)
}

// WriteUpgradeResponse writes the 101 response that accepts an upgrade.
func WriteUpgradeResponse(w *bufio.Writer) error {
	if _, err := w.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + UpgradeProtocol + "\r\n\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

// NewBufferedConn returns conn whose reads first drain r, a reader that
// already buffered bytes from conn (as after parsing an HTTP message).
func NewBufferedConn(conn net.Conn, r *bufio.Reader) net.Conn {
	if r == nil || r.Buffered() == 0 {
		return conn
	}
	return &bufferedConn{Conn: conn, r: r}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.r != nil {
		if b.r.Buffered() > 0 {
			return b.r.Read(p)
		}
		b.r = nil
	}
	return b.Conn.Read(p)
}
