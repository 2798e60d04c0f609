package egress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The proxy tests play a policed guest at loopback: the test connects
// from 127.0.0.1, which the engine has bound as the guest "vm".
var loopback = netip.MustParseAddr("127.0.0.1")

// tlsName and plainName are the names the test guest may reach; the
// httptest certificate covers tlsName and *.example.com.
const (
	tlsName   = "example.com"
	plainName = "plain.test"
)

// newProxyEngine returns an engine whose policed guest "vm" at 127.0.0.1
// may reach tlsName and plainName on every port, and has learned
// 127.0.0.1 for both (as banger's DNS answering them would have it).
func newProxyEngine(t testing.TB) *Engine {
	t.Helper()
	e, _, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", loopback, mustPolicy(t, ModeAllow, tlsName, plainName))
	for _, name := range []string{tlsName, plainName} {
		if err := e.Learn(context.Background(), loopback, name, []netip.Addr{loopback}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// startProxy serves p on a loopback port until the test ends, checking
// then that Serve returns nil, and returns the port's address.
func startProxy(t testing.TB, p *Proxy) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// to is an OrigDst that sends every connection to dst.
func to(dst netip.AddrPort) func(net.Conn) (netip.AddrPort, error) {
	return func(net.Conn) (netip.AddrPort, error) { return dst, nil }
}

// countingServer is an httptest server that counts the connections it
// accepts, so a test can tell whether the proxy ever reached it.
type countingServer struct {
	*httptest.Server
	accepted atomic.Int64
	syncs    int64
}

// startCounting starts h as an HTTPS (tlsOn) or HTTP server.
func startCounting(t testing.TB, h http.Handler, tlsOn bool) *countingServer {
	t.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepted.Add(1)
		}
	}
	if tlsOn {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// addrPort is the server's listening address.
func (s *countingServer) addrPort() netip.AddrPort {
	return netip.MustParseAddrPort(s.Listener.Addr().String())
}

// pool trusts the server's certificate.
func (s *countingServer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

// reached returns how many connections the server accepted besides its
// own sync requests. It first makes a request on a new connection: the
// server accepts in order, so once that request is answered every
// connection made before it has been counted.
func (s *countingServer) reached(t testing.TB) int64 {
	t.Helper()
	tr := s.Client().Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(s.URL + "/sync")
	if err != nil {
		t.Fatalf("sync request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.syncs++
	return s.accepted.Load() - s.syncs
}

// helloHandler answers "hello NAME" with the Host it was asked for.
var helloHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "hello %s", r.Host)
})

// httpsClient returns a client that reaches every URL through the proxy
// at proxyAddr, trusting pool, one connection per request.
func httpsClient(proxyAddr string, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches url with c and returns the body.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

// dialProxy connects to the proxy at addr from 127.0.0.1.
func dialProxy(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// closedWithoutReply reads c to its end and fails unless the proxy
// closed it without sending a byte.
func closedWithoutReply(t testing.TB, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if len(b) != 0 {
		t.Errorf("got %q, want the connection closed without a reply", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("connection still open: %v", err)
	}
}

// mark returns the Seq after which the next flows of vmID come.
func mark(e *Engine, vmID string) uint64 { return e.Log(vmID, 0).Next }

func TestProxy_TLS(t *testing.T) {
	srv := startCounting(t, helloHandler, true)
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(srv.addrPort())})
	c := httpsClient(addr, srv.pool())

	t.Run("allowed SNI", func(t *testing.T) {
		m := mark(e, "vm")
		body, err := get(c, "https://"+tlsName+"/")
		if err != nil || body != "hello "+tlsName {
			t.Fatalf("GET: %q, %v", body, err)
		}
		if n := srv.reached(t); n != 1 {
			t.Errorf("server accepted %d connections, want 1", n)
		}
		l := e.Log("vm", m)
		if len(l.Flows) != 1 {
			t.Fatalf("flows %+v, want one", l.Flows)
		}
		f := l.Flows[0]
		if f.Verdict != "allow" || f.Kind != "tls" || f.Name != tlsName || f.Addr != "127.0.0.1" || f.Port != int(srv.addrPort().Port()) || f.Reason != "" {
			t.Errorf("flow %+v, want an allowed tls flow to %s at %s", f, tlsName, srv.addrPort())
		}
	})

	t.Run("SNI not allowed", func(t *testing.T) {
		before, m := srv.reached(t), mark(e, "vm")
		// The server's certificate covers the name: only the proxy can
		// stop the handshake.
		if body, err := get(c, "https://evil.example.com/"); err == nil {
			t.Fatalf("GET evil.example.com through the proxy: %q", body)
		}
		if n := srv.reached(t); n != before {
			t.Errorf("server reached %d times, want no new connection", n-before)
		}
		want := []string{"deny tls evil.example.com 127.0.0.1 name not allowed"}
		if diff := cmp.Diff(want, flowsSince(e, "vm", m)); diff != "" {
			t.Errorf("flows (-want +got):\n%s", diff)
		}
	})

	t.Run("no SNI", func(t *testing.T) {
		before, m := srv.reached(t), mark(e, "vm")
		conn := dialProxy(t, addr)
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // no ServerName: no SNI
		if err := tc.Handshake(); err == nil {
			t.Fatal("handshake without SNI succeeded")
		}
		if n := srv.reached(t); n != before {
			t.Errorf("server reached %d times, want no new connection", n-before)
		}
		want := []string{"deny tls 127.0.0.1 no name (TLS without SNI, or HTTP without Host)"}
		if diff := cmp.Diff(want, flowsSince(e, "vm", m)); diff != "" {
			t.Errorf("flows (-want +got):\n%s", diff)
		}
	})

	t.Run("SNI with trailing dot and capitals", func(t *testing.T) {
		conn := dialProxy(t, addr)
		tc := tls.Client(conn, &tls.Config{ServerName: "Example.COM.", InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
	})
}

// TestProxy_TLS_unresolvedAddress: an allowed name to an address banger's
// DNS never answered the guest (it resolved the name elsewhere, or made
// the address up) is refused.
func TestProxy_TLS_unresolvedAddress(t *testing.T) {
	srv := startCounting(t, helloHandler, true)
	e := newProxyEngine(t)
	other := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), srv.addrPort().Port())
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(other)})
	m := mark(e, "vm")
	if body, err := get(httpsClient(addr, srv.pool()), "https://"+tlsName+"/"); err == nil {
		t.Fatalf("GET: %q", body)
	}
	want := []string{"deny tls example.com 127.0.0.3 address not resolved for this VM"}
	if diff := cmp.Diff(want, flowsSince(e, "vm", m)); diff != "" {
		t.Errorf("flows (-want +got):\n%s", diff)
	}
	if n := srv.reached(t); n != 0 {
		t.Errorf("server reached %d times", n)
	}
}

// rawExchange sends req to the proxy at addr and returns everything it
// answers until it closes the connection.
func rawExchange(t testing.TB, addr, req string) string {
	t.Helper()
	c := dialProxy(t, addr)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Logf("read: %v", err)
	}
	return string(b)
}

func TestProxy_HTTP(t *testing.T) {
	srv := startCounting(t, helloHandler, false)
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(srv.addrPort())})
	const forbidden = "HTTP/1.1 403 Forbidden\r\n"
	tests := []struct {
		name     string
		req      string
		wantHave string // in the reply
		flow     string
		reached  int64
	}{
		{"allowed Host", "GET / HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
			"hello plain.test", "allow http plain.test 127.0.0.1", 1},
		{"allowed Host with port, dot and capitals", "GET / HTTP/1.1\r\nHost: Plain.Test.:8080\r\nConnection: close\r\n\r\n",
			"hello Plain.Test.:8080", "allow http plain.test 127.0.0.1", 1},
		{"Host not allowed", "GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
			forbidden, "deny http evil.test 127.0.0.1 name not allowed", 0},
		{"absolute URI wins over Host", "GET http://evil.test/ HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
			forbidden, "deny http evil.test 127.0.0.1 name not allowed", 0},
		{"suffix trick", "GET / HTTP/1.1\r\nHost: evilplain.test\r\n\r\n",
			forbidden, "deny http evilplain.test 127.0.0.1 name not allowed", 0},
		{"no Host", "GET / HTTP/1.0\r\n\r\n",
			forbidden, "deny http 127.0.0.1 no name (TLS without SNI, or HTTP without Host)", 0},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: plain.test\r\nHost: evil.test\r\n\r\n",
			"", "deny proxy 127.0.0.1 neither TLS nor an HTTP request", 0},
		{"garbage", "\x00\x01\x02\x03 garbage\r\n\r\n",
			"", "deny proxy 127.0.0.1 neither TLS nor an HTTP request", 0},
		{"TLS record that is no ClientHello", "\x16\x03\x01\x00\x05hello",
			"", "deny tls 127.0.0.1 malformed TLS ClientHello", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, m := srv.reached(t), mark(e, "vm")
			got := rawExchange(t, addr, tt.req)
			if tt.wantHave == "" && got != "" || !strings.Contains(got, tt.wantHave) {
				t.Errorf("reply %q, want %q in it", got, tt.wantHave)
			}
			if diff := cmp.Diff([]string{tt.flow}, flowsSince(e, "vm", m)); diff != "" {
				t.Errorf("flows (-want +got):\n%s", diff)
			}
			if n := srv.reached(t) - before; n != tt.reached {
				t.Errorf("server reached %d times, want %d", n, tt.reached)
			}
		})
	}

	// The refusal is a well-formed response that says why.
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(
		rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusForbidden || string(body) != "banger egress policy: name not allowed\n" {
		t.Errorf("403 reply: status %d body %q (%v)", resp.StatusCode, body, err)
	}
}

// TestProxy_notAGuest: a connection from an address no VM is bound at is
// closed unanswered, whatever it asks for, and logs nothing.
func TestProxy_notAGuest(t *testing.T) {
	srv := startCounting(t, helloHandler, false)
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(srv.addrPort())})
	m := mark(e, "vm")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
	closedWithoutReply(t, c)
	if n := srv.reached(t); n != 0 {
		t.Errorf("server reached %d times", n)
	}
	if flows := flowsSince(e, "vm", m); len(flows) != 0 {
		t.Errorf("flows logged for another source: %v", flows)
	}
}

// TestProxy_noOriginalDestination: without OrigDst the kernel is asked;
// a connection that was not redirected has no destination (or its own
// port) and is refused.
func TestProxy_noOriginalDestination(t *testing.T) {
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e})
	m := mark(e, "vm")
	c := dialProxy(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
	closedWithoutReply(t, c)
	if diff := cmp.Diff([]string{"deny proxy no original destination"}, flowsSince(e, "vm", m)); diff != "" {
		t.Errorf("flows (-want +got):\n%s", diff)
	}
}

// TestProxy_helloTimeout: a guest that opens a connection and sends
// nothing, or half a hello, is cut off once the hello time is up.
func TestProxy_helloTimeout(t *testing.T) {
	srv := startCounting(t, helloHandler, false)
	e := newProxyEngine(t)
	const hello = 200 * time.Millisecond
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(srv.addrPort()), helloTimeout: hello})
	for _, tt := range []struct {
		name, send, flow string
	}{
		{"silent", "", "deny proxy 127.0.0.1 nothing sent: "},
		{"half a ClientHello", "\x16\x03\x01\x02\x00\x01", "deny tls 127.0.0.1 malformed TLS ClientHello"},
		{"half a request head", "GET / HTTP/1.1\r\nHost: plain.test\r\n", "deny proxy 127.0.0.1 neither TLS nor an HTTP request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := mark(e, "vm")
			start := time.Now()
			c := dialProxy(t, addr)
			io.WriteString(c, tt.send)
			closedWithoutReply(t, c)
			if d := time.Since(start); d < hello {
				t.Errorf("closed after %v, before the hello time", d)
			}
			flows := flowsSince(e, "vm", m)
			if len(flows) != 1 || !strings.HasPrefix(flows[0], tt.flow) {
				t.Errorf("flows %q, want one starting %q", flows, tt.flow)
			}
		})
	}
	if n := srv.reached(t); n != 0 {
		t.Errorf("server reached %d times", n)
	}
}

// TestProxy_connLimit: a guest holding MaxConnsPerGuest connections gets
// its next one closed at once.
func TestProxy_connLimit(t *testing.T) {
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(netip.MustParseAddrPort("127.0.0.1:9")), helloTimeout: time.Hour})
	closed := make(chan int, MaxConnsPerGuest+1)
	var conns []net.Conn
	for i := range MaxConnsPerGuest + 1 {
		c := dialProxy(t, addr)
		c.SetDeadline(time.Time{})
		conns = append(conns, c)
		go func() {
			io.Copy(io.Discard, c)
			closed <- i
		}()
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("no connection of %d closed", MaxConnsPerGuest+1)
	}
	for _, c := range conns {
		c.Close()
	}
}

// echoHalf is the upstream of the splice test: it echoes what it reads
// until EOF, then writes trailer and closes.
func echoHalf(t testing.TB, trailer string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
		io.WriteString(c, trailer)
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// TestProxy_splice: every byte goes through unchanged both ways, the
// request head the proxy read first included, and each side's
// half-close reaches the other while the other direction still flows.
func TestProxy_splice(t *testing.T) {
	const trailer = "bye after your EOF"
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(echoHalf(t, trailer))})
	c := dialProxy(t, addr)
	head := "POST /echo HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 1048576\r\n\r\n"
	data := make([]byte, 1<<20)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, head)
		if err == nil {
			_, err = c.Write(data)
		}
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	want := append(append([]byte(head), data...), trailer...)
	if !bytes.Equal(got, want) {
		t.Errorf("got %d bytes back, want %d (head, 1 MiB, trailer); equal prefix %d", len(got), len(want), commonPrefix(got, want))
	}
}

// TestProxy_spliceServerCloses: the server half-closes first; the guest
// still sends, and the server gets all of it.
func TestProxy_spliceServerCloses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	greeting := bytes.Repeat([]byte("server speaks first "), 50000)
	received := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- nil
			return
		}
		defer c.Close()
		c.Write(greeting)
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		received <- b
	}()
	e := newProxyEngine(t)
	addr := startProxy(t, &Proxy{Engine: e, OrigDst: to(netip.MustParseAddrPort(l.Addr().String()))})
	c := dialProxy(t, addr)
	head := "GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n"
	io.WriteString(c, head)
	got, err := io.ReadAll(c) // ends at the server's half-close
	if err != nil || !bytes.Equal(got, greeting) {
		t.Fatalf("read %d bytes (%v), want the %d-byte greeting then EOF", len(got), err, len(greeting))
	}
	rest := bytes.Repeat([]byte("guest still talks "), 60000)
	if _, err := c.Write(rest); err != nil {
		t.Fatalf("write after the server's half-close: %v", err)
	}
	c.CloseWrite()
	if b := <-received; !bytes.Equal(b, append([]byte(head), rest...)) {
		t.Errorf("server received %d bytes, want %d", len(b), len(head)+len(rest))
	}
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// flakyListener fails its first Accepts with errs, then accepts.
type flakyListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

// Accept returns the next queued error, or a connection.
func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestProxy_Serve_exhausted: running out of descriptors (guests holding
// connections) pauses accepting; it does not stop the proxy.
func TestProxy_Serve_exhausted(t *testing.T) {
	srv := startCounting(t, helloHandler, false)
	e := newProxyEngine(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	l := &flakyListener{Listener: inner, errs: []error{emfile, emfile}}
	p := &Proxy{Engine: e, OrigDst: to(srv.addrPort())}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx, l) }()
	got := rawExchange(t, inner.Addr().String(), "GET / HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n")
	if !strings.Contains(got, "hello plain.test") {
		t.Errorf("after EMFILE: reply %q", got)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve: %v", err)
	}

	// Any other error ends Serve with it.
	l = &flakyListener{Listener: inner, errs: []error{errors.New("broken listener")}}
	if err := (&Proxy{Engine: e}).Serve(context.Background(), l); err == nil || !strings.Contains(err.Error(), "broken listener") {
		t.Errorf("Serve = %v, want the listener's error", err)
	}
	inner.Close()
}

// TestProxy_Serve_waits: Serve returns only once its connections are
// done, and ending its context ends spliced connections.
func TestProxy_Serve_waits(t *testing.T) {
	srv := startCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hold the connection until the client goes
	}), false)
	e := newProxyEngine(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- (&Proxy{Engine: e, OrigDst: to(srv.addrPort())}).Serve(ctx, l) }()
	c := dialProxy(t, l.Addr().String())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil { // the splice is up
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("after Serve returned: %v, want the connection closed", err)
	}
}
