package egress

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
)

// mitm serves a guest's TLS connection to one of its secrets' hosts: it
// terminates TLS with a certificate from the VM's own CA (the guest
// trusts it; nobody else does), forwards each HTTP request to the real
// server over TLS verified against the host's roots, and on the way puts
// the secrets' values in: in place of their placeholders in headers, and
// in the header a secret names. A request whose Host is not the name the
// guest gave in SNI is refused, so one connection cannot carry requests
// for another host. head holds what was read from c to judge it.
//
// It is built on net/http and httputil.ReverseProxy (Rewrite mode: no
// X-Forwarded-* headers, hop-by-hop headers dropped) because that is
// exactly an HTTP/1.1 reverse proxy and needs no more.
func (p *Proxy) mitm(ctx context.Context, c net.Conn, head []byte, vmID, sni string, dst netip.AddrPort, match, others []Secret, flow api.Flow) {
	e := p.Engine
	ca, err := e.ca(vmID)
	var leaf *tls.Certificate
	if err == nil {
		leaf, err = ca.Leaf(sni)
	}
	if err != nil {
		flow.Reason = "egress CA: " + err.Error()
		e.record(vmID, withVerdict(flow, api.FlowDeny))
		return
	}
	tc := tls.Server(&replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(head), c)}, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	tc.SetDeadline(time.Now().Add(p.hello()))
	if err := tc.HandshakeContext(ctx); err != nil {
		flow.Reason = "TLS with the guest: " + err.Error()
		e.record(vmID, withVerdict(flow, api.FlowDeny))
		return
	}
	tc.SetDeadline(time.Time{})

	dial := p.dialer()
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, "tcp", dst.String())
		},
		TLSClientConfig:     &tls.Config{ServerName: sni, RootCAs: p.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: dialTimeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}
	defer transport.CloseIdleConnections()
	names := make([]string, len(match))
	for i, s := range match {
		names[i] = s.Name
	}
	flow.Reason = "secrets " + strings.Join(names, ", ")
	e.record(vmID, withVerdict(flow, api.FlowAllow))

	var valueErr error
	rp := &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			valueErr = nil
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = pr.In.Host
			pr.Out.Host = pr.In.Host
			for _, s := range match {
				v, err := e.Secrets.Value(pr.In.Context(), s.Name)
				if err != nil {
					valueErr = err
					continue
				}
				replaceInHeaders(pr.Out.Header, s.Placeholder(), v)
				if s.HeaderName != "" {
					pr.Out.Header.Set(s.HeaderName, strings.ReplaceAll(s.HeaderTemplate, "{}", v))
				}
			}
			for _, s := range others {
				if headersHold(pr.Out.Header, s.Placeholder()) {
					e.record(vmID, api.Flow{Kind: api.FlowTLS, Verdict: api.FlowDeny, Name: sni, Addr: dst.Addr().String(), Port: int(dst.Port()),
						Reason: fmt.Sprintf("placeholder of secret %s sent to a host it may not go to: left as is", s.Name)})
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			reason := "upstream: " + err.Error()
			if valueErr != nil {
				reason = valueErr.Error()
			}
			e.record(vmID, api.Flow{Kind: api.FlowTLS, Verdict: api.FlowDeny, Name: sni, Addr: dst.Addr().String(), Port: int(dst.Port()), Reason: reason})
			http.Error(w, "banger egress proxy: "+reason, http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host := hostOnly(r.Host); host != sni {
			e.record(vmID, api.Flow{Kind: api.FlowHTTP, Verdict: api.FlowDeny, Name: host, Addr: dst.Addr().String(), Port: int(dst.Port()),
				Reason: "Host differs from the TLS server name " + sni})
			http.Error(w, "banger egress proxy: Host must be "+sni, http.StatusMisdirectedRequest)
			return
		}
		rp.ServeHTTP(w, r)
	})
	l := &oneConnListener{c: tc, done: make(chan struct{})}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: log.New(io.Discard, "", 0), BaseContext: func(net.Listener) context.Context { return ctx }}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	srv.Serve(l)
}

// hostOnly is a Host header without its port, lowercase.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// replaceInHeaders puts v in place of every placeholder in h's values.
func replaceInHeaders(h http.Header, placeholder, v string) {
	for k, vs := range h {
		for i, x := range vs {
			if strings.Contains(x, placeholder) {
				h[k][i] = strings.ReplaceAll(x, placeholder, v)
			}
		}
	}
}

// headersHold reports whether any of h's values holds s.
func headersHold(h http.Header, s string) bool {
	for _, vs := range h {
		for _, x := range vs {
			if strings.Contains(x, s) {
				return true
			}
		}
	}
	return false
}

// replayConn reads r (what was already read, then the connection) and
// writes to the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// oneConnListener hands out one connection, then blocks until it is
// closed and reports the listener closed, so http.Server.Serve serves
// exactly that connection and returns.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	used bool
	mu   sync.Mutex
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	used := l.used
	l.used = true
	l.mu.Unlock()
	if !used {
		return &closeNotifyConn{Conn: l.c, onClose: func() { l.once.Do(func() { close(l.done) }) }}, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotifyConn struct {
	net.Conn
	onClose func()
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.onClose()
	return err
}
