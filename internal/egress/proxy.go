package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
)

// Proxy limits. A guest gets HelloTimeout to send its TLS ClientHello or
// HTTP request head, of at most MaxHello bytes; it holds at most
// MaxConnsPerGuest proxied connections at once.
const (
	HelloTimeout     = 10 * time.Second
	MaxHello         = 64 << 10
	MaxConnsPerGuest = 256
	dialTimeout      = 10 * time.Second
)

// Proxy is the transparent proxy policed guests' HTTP and HTTPS are
// redirected to by the firewall (no proxy settings in the guest, so
// there is nothing to ignore). It reads the name the guest asks for, the
// TLS SNI or the HTTP Host, without terminating anything, asks the engine
// whether the policy allows that name on that address and port, and then
// splices the connection to the original destination unchanged.
//
// It is written on net and crypto/tls rather than a proxy library:
// it never parses more than one ClientHello or request head, never
// rewrites a byte, and the libraries (goproxy and the like) are built
// for explicit proxies that terminate and re-issue requests.
type Proxy struct {
	Engine *Engine
	// OrigDst returns where a redirected connection was going; nil means
	// the kernel's answer (SO_ORIGINAL_DST).
	OrigDst func(net.Conn) (netip.AddrPort, error)
	// Dial reaches the destination; nil means a net.Dialer.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger
	// RootCAs verify the real servers of secrets' hosts; nil means the
	// host's roots.
	RootCAs *x509.CertPool

	// helloTimeout replaces HelloTimeout when set (tests).
	helloTimeout time.Duration

	mu    sync.Mutex
	conns map[netip.Addr]int
	wg    sync.WaitGroup
}

// Serve accepts connections on l until ctx ends or l fails, handling each
// in its own goroutine, and waits for them to finish after closing l.
func (p *Proxy) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer p.wg.Wait()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if acceptExhausted(err) {
				// Out of descriptors or memory (guests holding many
				// connections): wait for some to close, as net/http
				// does, rather than stop proxying for every guest.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.logger().Warn("egress proxy accept", "err", err, "retry", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("egress proxy: %w", err)
		}
		backoff = 0
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(ctx, c)
		}()
	}
}

// acceptExhausted reports whether an Accept error is a shortage of
// descriptors or memory that ends when connections close.
func acceptExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// take counts a connection from src against MaxConnsPerGuest.
func (p *Proxy) take(src netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		p.conns = map[netip.Addr]int{}
	}
	if p.conns[src] >= MaxConnsPerGuest {
		return false
	}
	p.conns[src]++
	return true
}

func (p *Proxy) give(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[src]--; p.conns[src] <= 0 {
		delete(p.conns, src)
	}
}

// handle judges and then splices one connection.
func (p *Proxy) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	src := addrPortOf(c.RemoteAddr()).Addr()
	if !p.take(src) {
		return
	}
	defer p.give(src)
	origDst := p.OrigDst
	if origDst == nil {
		origDst = originalDst
	}
	dst, err := origDst(c)
	if err != nil || dst == addrPortOf(c.LocalAddr()) {
		// A guest connecting to the proxy's own port has no destination.
		p.deny(src, api.Flow{Kind: api.FlowProxy, Reason: "no original destination"})
		return
	}
	c.SetReadDeadline(time.Now().Add(p.hello()))
	head := &bytes.Buffer{}
	in := bufio.NewReader(io.TeeReader(io.LimitReader(c, MaxHello), head))
	kind, name, err := sniff(in)
	c.SetReadDeadline(time.Time{})
	flow := api.Flow{Kind: kind, Name: name, Addr: dst.Addr().String(), Port: int(dst.Port())}
	if err != nil {
		flow.Reason = err.Error()
		p.deny(src, flow)
		return
	}
	vmID, reason, known := p.Engine.judge(src, name, dst)
	if !known {
		return // not a policed guest: nothing to log against
	}
	if reason != "" {
		flow.Reason = reason
		p.Engine.record(vmID, withVerdict(flow, api.FlowDeny))
		if kind == api.FlowHTTP {
			fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n",
				len(reason)+len("banger egress policy: ")+1, "banger egress policy: "+reason)
		}
		return
	}
	if vmID, match, others := p.Engine.secretsOf(src, name); kind == api.FlowTLS && len(match) > 0 {
		p.mitm(ctx, c, head.Bytes(), vmID, name, dst, match, others, flow)
		return
	} else if kind == api.FlowHTTP {
		for _, s := range append(match, others...) {
			if bytes.Contains(head.Bytes(), []byte(s.Placeholder())) {
				p.Engine.record(vmID, api.Flow{Kind: kind, Verdict: api.FlowDeny, Name: name, Addr: flow.Addr, Port: flow.Port,
					Reason: fmt.Sprintf("placeholder of secret %s sent over plain HTTP: left as is", s.Name)})
			}
		}
	}
	dial := p.dialer()
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	up, err := dial(dctx, "tcp", dst.String())
	cancel()
	if err != nil {
		flow.Reason = "dial: " + err.Error()
		p.Engine.record(vmID, withVerdict(flow, api.FlowDeny))
		return
	}
	defer up.Close()
	p.Engine.record(vmID, withVerdict(flow, api.FlowAllow))
	// What was read to judge the connection goes first, then the rest.
	if _, err := up.Write(head.Bytes()); err != nil {
		return
	}
	splice(ctx, c, up)
}

// dialer is Dial, or a net.Dialer's.
func (p *Proxy) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial
	}
	return (&net.Dialer{Timeout: dialTimeout}).DialContext
}

// hello is how long a guest has to send its ClientHello or request head.
func (p *Proxy) hello() time.Duration {
	if p.helloTimeout > 0 {
		return p.helloTimeout
	}
	return HelloTimeout
}

func withVerdict(f api.Flow, v string) api.Flow {
	f.Verdict = v
	return f
}

// deny logs a refused connection against the guest at src, when it is
// one the engine knows.
func (p *Proxy) deny(src netip.Addr, f api.Flow) {
	if vmID, ok := p.Engine.vmAt(src); ok {
		p.Engine.record(vmID, withVerdict(f, api.FlowDeny))
	}
}

// errAbort stops the TLS handshake once the ClientHello has been read.
var errAbort = errors.New("client hello read")

// sniff reads the start of a connection: a TLS ClientHello (its SNI) or
// an HTTP request head (its Host, without the port). It consumes from in;
// the caller replays what was read.
func sniff(in *bufio.Reader) (kind, name string, err error) {
	first, err := in.Peek(1)
	if err != nil {
		return api.FlowProxy, "", fmt.Errorf("nothing sent: %w", err)
	}
	if first[0] == 0x16 { // TLS handshake record
		var sni string
		got := false
		srv := tls.Server(readOnlyConn{r: in}, &tls.Config{
			GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
				sni, got = h.ServerName, true
				return nil, errAbort
			},
		})
		srv.Handshake()
		if !got {
			return api.FlowTLS, "", errors.New("malformed TLS ClientHello")
		}
		return api.FlowTLS, strings.TrimSuffix(strings.ToLower(sni), "."), nil
	}
	req, err := http.ReadRequest(in)
	if err != nil {
		return api.FlowProxy, "", errors.New("neither TLS nor an HTTP request")
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return api.FlowHTTP, strings.TrimSuffix(strings.ToLower(host), "."), nil
}

// readOnlyConn is a net.Conn that reads from r and drops writes: enough
// for crypto/tls to parse a ClientHello without answering it.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)      { return len(p), nil }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return nil }
func (readOnlyConn) RemoteAddr() net.Addr             { return nil }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }

// splice copies both ways until both directions end, passing each
// half-close on, or until ctx ends.
func splice(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
