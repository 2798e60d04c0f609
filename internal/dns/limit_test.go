package dns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/time/rate"
)

// fakeWriter is an mdns.ResponseWriter for a client at remote, recording
// what the server sends.
type fakeWriter struct {
	remote net.Addr
	msgs   []*mdns.Msg
	closed bool
}

func (w *fakeWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}
}
func (w *fakeWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error  { w.msgs = append(w.msgs, m); return nil }
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { w.closed = true; return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

func guestAddr(last byte) net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, last), Port: 40000}
}

// TestServer_dropsSourcesNotServed: a query from outside the VM subnet (the
// gateway listener reached from the LAN, or a spoofed source) gets no
// answer at all, so the server is neither an open resolver nor an amplifier.
func TestServer_dropsSourcesNotServed(t *testing.T) {
	s := New(nil, nil)
	s.initLimits()
	s.Set("a", netip.MustParseAddr("192.0.2.9"))
	s.AllowSources(netip.MustParsePrefix("192.0.2.0/24"))
	q := new(mdns.Msg).SetQuestion("a.vm.", mdns.TypeA)

	for _, tt := range []struct {
		from   net.Addr
		answer bool
	}{
		{guestAddr(7), true},
		{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, true},
		{&net.UDPAddr{IP: net.IPv6loopback, Port: 1}, true},
		{&net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 1}, false},
		{&net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, false},
	} {
		w := &fakeWriter{remote: tt.from}
		s.serve(w, q)
		if got := len(w.msgs) == 1; got != tt.answer {
			t.Errorf("query from %v: answered %v, want %v", tt.from, got, tt.answer)
		}
	}
	if s.Dropped() != 2 {
		t.Errorf("Dropped() = %d, want 2", s.Dropped())
	}
}

// TestServer_rateLimitsEachGuest: a guest flooding the server is cut to its
// burst, and another guest is still answered.
func TestServer_rateLimitsEachGuest(t *testing.T) {
	s := New(nil, nil)
	s.Limits = Limits{SourceRate: rate.Every(time.Hour), SourceBurst: 5}
	s.initLimits()
	s.Set("a", netip.MustParseAddr("192.0.2.9"))
	s.AllowSources(netip.MustParsePrefix("192.0.2.0/24"))
	q := new(mdns.Msg).SetQuestion("a.vm.", mdns.TypeA)

	flooder := &fakeWriter{remote: guestAddr(7)}
	for range 50 {
		s.serve(flooder, q)
	}
	if len(flooder.msgs) != 5 {
		t.Errorf("flooding guest got %d answers of 50, want its burst of 5", len(flooder.msgs))
	}
	other := &fakeWriter{remote: guestAddr(8)}
	s.serve(other, q)
	if len(other.msgs) != 1 {
		t.Error("a second guest was not answered while the first flooded")
	}
	// The host (loopback) is never limited.
	host := &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}
	for range 50 {
		s.serve(host, q)
	}
	if len(host.msgs) != 50 {
		t.Errorf("host got %d answers of 50", len(host.msgs))
	}
}

// TestSourceLimiter_spoofedSourcesShareOneBucket: past maxSources distinct
// addresses, new ones share a single limiter, so cycling through spoofed
// addresses buys no extra queries and the table stays bounded.
func TestSourceLimiter_spoofedSourcesShareOneBucket(t *testing.T) {
	l := newSourceLimiter(rate.Every(time.Hour), 1)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	allowed := 0
	for i := range maxSources + 500 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if l.allow(a) {
			allowed++
		}
	}
	if len(l.sources) != maxSources {
		t.Errorf("table holds %d sources, want the bound %d", len(l.sources), maxSources)
	}
	if allowed != maxSources+1 {
		t.Errorf("%d queries allowed, want %d (one per tracked source, one for all the rest)", allowed, maxSources+1)
	}
	// Idle sources are forgotten.
	now = now.Add(2 * sourceIdle)
	l.allow(netip.MustParseAddr("10.9.9.9"))
	if len(l.sources) != 1 {
		t.Errorf("after the idle sweep the table holds %d sources, want 1", len(l.sources))
	}
}

// TestServer_boundedForwards: with a black-hole upstream every forward holds
// a socket for its whole timeout. Past MaxInFlight, queries must fail at
// once instead of each holding another socket and goroutine (the flood that
// once took bangerd to EMFILE).
func TestServer_boundedForwards(t *testing.T) {
	s := New([]string{blackholeAddr(t)}, nil)
	s.ForwardTimeout = 10 * time.Second
	s.Limits = Limits{MaxInFlight: 4}
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	conn, err := net.Dial("udp", s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 40
	for i := range n {
		m := new(mdns.Msg).SetQuestion("flood.example.", mdns.TypeA)
		m.Id = uint16(i + 1)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// Every query past the four in flight is answered SERVFAIL well before
	// the 10 s forward timeout.
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	servfail := 0
	buf := make([]byte, 2048)
	for servfail < n-4 {
		k, err := conn.Read(buf)
		if err != nil {
			break
		}
		m := new(mdns.Msg)
		if m.Unpack(buf[:k]) == nil && m.Rcode == mdns.RcodeServerFailure {
			servfail++
		}
	}
	if servfail < n-4 {
		t.Fatalf("%d of %d queries failed fast; want %d (the rest hold the 4 forward slots)", servfail, n, n-4)
	}
}

// TestServer_capsUDPSize: a client advertising a 64 KiB EDNS buffer still
// gets at most MaxUDPSize bytes over UDP (and the truncation bit), so a
// spoofed query cannot turn into a large reflected reply.
func TestServer_capsUDPSize(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, []string{up.addr})
	m := new(mdns.Msg).SetQuestion("huge.example.", mdns.TypeA)
	m.SetEdns0(65535, false)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65536)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp := new(mdns.Msg)
	if err := resp.Unpack(buf[:k]); err != nil {
		t.Fatal(err)
	}
	if k > MaxUDPSize || !resp.Truncated {
		t.Errorf("UDP reply of %d bytes (tc=%v) to a 65535-byte EDNS query; want <= %d and truncated", k, resp.Truncated, MaxUDPSize)
	}
	// Over TCP the whole answer still arrives.
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	full, _, err := c.Exchange(new(mdns.Msg).SetQuestion("huge.example.", mdns.TypeA), s.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Answer) != hugeCount {
		t.Errorf("huge.example over tcp: %d answers, want %d", len(full.Answer), hugeCount)
	}
}

// TestServer_boundedTCPConns: idle TCP connections past MaxTCPConns are
// closed at once instead of each holding a descriptor; once they go, a
// client is served again.
func TestServer_boundedTCPConns(t *testing.T) {
	s := New(nil, nil)
	s.Limits = Limits{MaxTCPConns: 3}
	s.Set("a", netip.MustParseAddr("192.0.2.9"))
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	addr := s.Addrs()[0]

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Read every connection at once, with one deadline shorter than the
	// server's own read timeout, so only the limit can have closed one.
	readBy := time.Now().Add(500 * time.Millisecond)
	eof := make(chan bool, len(conns))
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(readBy)
			_, err := c.Read(make([]byte, 1))
			eof <- err == io.EOF
		}()
	}
	closedByServer := 0
	for range conns {
		if <-eof {
			closedByServer++
		}
	}
	if closedByServer != 7 {
		t.Errorf("server closed %d of 10 idle connections at once, want 7 (bound 3)", closedByServer)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// The slots free up as the held connections close: poll until a TCP
	// query is answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := &mdns.Client{Net: "tcp", Timeout: time.Second}
		resp, _, err := c.Exchange(new(mdns.Msg).SetQuestion("a.vm.", mdns.TypeA), addr)
		if err == nil && len(resp.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TCP answer after the held connections closed: %v", err)
		}
	}
}
