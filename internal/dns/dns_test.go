package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// bigCount is how many A records the fake upstream returns for
// big.example., more than fit in a 512-byte UDP reply.
const bigCount = 60

// hugeCount is how many A records huge.example. has: more than fit in
// MaxUDPSize bytes.
const hugeCount = 200

// fakeUpstream is a resolver on loopback answering example.com. and
// big.example.; it truncates UDP replies the way real servers do and
// counts queries per protocol.
type fakeUpstream struct {
	addr     string
	udp, tcp atomic.Int32
}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	// The same port for UDP and TCP; listenPair retries when another
	// program holds the TCP side of the port the kernel picked.
	pc, l, err := listenPair(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		tcp := w.LocalAddr().Network() == "tcp"
		if tcp {
			u.tcp.Add(1)
		} else {
			u.udp.Add(1)
		}
		m := new(mdns.Msg).SetReply(r)
		q := r.Question[0]
		switch strings.ToLower(q.Name) {
		case "example.com.":
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 10)})
		case "big.example.":
			for i := range bigCount {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, byte(i))})
			}
		case "huge.example.":
			for i := range hugeCount {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, byte(i))})
			}
		case "broken.example.":
			m.Rcode = mdns.RcodeServerFailure
		default:
			m.Rcode = mdns.RcodeNameError
		}
		if !tcp {
			size := mdns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			if size > 512 {
				size = 512 // keep big.example. truncated over UDP whatever the client offers
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

// deadUDPAddr returns a loopback address where nothing listens: queries
// get an ICMP port unreachable at once.
func deadUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// blackholeAddr returns a loopback address whose socket reads queries and
// never answers, like an unreachable resolver.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func startServer(t *testing.T, upstreams []string) *Server {
	t.Helper()
	s := New(upstreams, nil)
	s.ForwardTimeout = 500 * time.Millisecond
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func query(t *testing.T, net, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg).SetQuestion(name, qtype)
	c := &mdns.Client{Net: net, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], net, err)
	}
	return resp
}

// answerIPs returns the A/AAAA addresses of a reply.
func answerIPs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, rr.A.String())
		case *mdns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

func TestServer_zone(t *testing.T) {
	s := startServer(t, nil)
	s.Set("t1", netip.MustParseAddr("10.77.0.2"))
	s.Set("v6", netip.MustParseAddr("fd00::5"))
	s.Set("gone", netip.MustParseAddr("10.77.0.3"))
	s.Remove("gone")
	addr := s.Addrs()[0]
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		ips    []string
		hasSOA bool
	}{
		{"t1.vm.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.77.0.2"}, false},
		{"T1.Vm.", mdns.TypeA, mdns.RcodeSuccess, []string{"10.77.0.2"}, false},
		{"t1.vm.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, true}, // NODATA
		{"t1.vm.", mdns.TypeMX, mdns.RcodeSuccess, nil, true},
		{"v6.vm.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"fd00::5"}, false},
		{"v6.vm.", mdns.TypeA, mdns.RcodeSuccess, nil, true},
		{"gone.vm.", mdns.TypeA, mdns.RcodeNameError, nil, true},
		{"nope.vm.", mdns.TypeA, mdns.RcodeNameError, nil, true},
		{"x.t1.vm.", mdns.TypeA, mdns.RcodeNameError, nil, true},
		{"vm.", mdns.TypeA, mdns.RcodeSuccess, nil, true},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name+"/"+mdns.TypeToString[tt.qtype], func(t *testing.T) {
				resp := query(t, proto, addr, tt.name, tt.qtype)
				if resp.Rcode != tt.rcode || !resp.Authoritative {
					t.Errorf("rcode %s aa %v; want %s aa true", mdns.RcodeToString[resp.Rcode], resp.Authoritative, mdns.RcodeToString[tt.rcode])
				}
				if got := answerIPs(resp); fmt.Sprint(got) != fmt.Sprint(tt.ips) {
					t.Errorf("answers %v, want %v", got, tt.ips)
				}
				for _, rr := range resp.Answer {
					if rr.Header().Ttl != TTL || rr.Header().Name != tt.name {
						t.Errorf("answer %v: want ttl %d and the asked name %q", rr, TTL, tt.name)
					}
				}
				if gotSOA := len(resp.Ns) == 1 && resp.Ns[0].Header().Rrtype == mdns.TypeSOA; gotSOA != tt.hasSOA {
					t.Errorf("authority %v, want SOA: %v", resp.Ns, tt.hasSOA)
				}
			})
		}
	}
}

func TestServer_setRemoveReplace(t *testing.T) {
	s := startServer(t, nil)
	addr := s.Addrs()[0]
	ip := func(proto, name string) string {
		resp := query(t, proto, addr, name, mdns.TypeA)
		if resp.Rcode == mdns.RcodeNameError {
			return "NXDOMAIN"
		}
		return strings.Join(answerIPs(resp), ",")
	}
	for _, proto := range []string{"udp", "tcp"} {
		s.Set("a", netip.MustParseAddr("10.0.0.1"))
		if got := ip(proto, "a.vm."); got != "10.0.0.1" {
			t.Errorf("%s after Set: %s", proto, got)
		}
		s.Set("A.vm", netip.MustParseAddr("10.0.0.9")) // same record, other spelling
		if got := ip(proto, "a.vm."); got != "10.0.0.9" {
			t.Errorf("%s after re-Set: %s", proto, got)
		}
		s.Remove("a")
		if got := ip(proto, "a.vm."); got != "NXDOMAIN" {
			t.Errorf("%s after Remove: %s", proto, got)
		}
		s.Set("old", netip.MustParseAddr("10.0.0.2"))
		s.Replace(map[string]netip.Addr{"b": netip.MustParseAddr("10.0.0.3"), "c": netip.MustParseAddr("10.0.0.4")})
		for name, want := range map[string]string{"old.vm.": "NXDOMAIN", "b.vm.": "10.0.0.3", "c.vm.": "10.0.0.4"} {
			if got := ip(proto, name); got != want {
				t.Errorf("%s after Replace: %s = %s, want %s", proto, name, got, want)
			}
		}
		s.Replace(nil)
	}
}

func TestServer_forward(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, []string{up.addr})
	addr := s.Addrs()[0]
	for _, proto := range []string{"udp", "tcp"} {
		resp := query(t, proto, addr, "example.com.", mdns.TypeA)
		if resp.Rcode != mdns.RcodeSuccess || resp.Authoritative || fmt.Sprint(answerIPs(resp)) != "[192.0.2.10]" {
			t.Errorf("%s example.com: rcode %s aa %v answers %v", proto, mdns.RcodeToString[resp.Rcode], resp.Authoritative, answerIPs(resp))
		}
		resp = query(t, proto, addr, "missing.example.", mdns.TypeA)
		if resp.Rcode != mdns.RcodeNameError {
			t.Errorf("%s missing.example: rcode %s, want the upstream's NXDOMAIN", proto, mdns.RcodeToString[resp.Rcode])
		}
	}

	// big.example. does not fit in UDP: the upstream truncates it, the
	// server retries over TCP and a TCP client gets every record.
	tcpBefore := up.tcp.Load()
	m := new(mdns.Msg).SetQuestion("big.example.", mdns.TypeA)
	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Answer) != bigCount || resp.Truncated {
		t.Errorf("big.example over tcp: %d answers (tc=%v), want %d", len(resp.Answer), resp.Truncated, bigCount)
	}
	if up.tcp.Load() == tcpBefore {
		t.Error("upstream saw no TCP query")
	}
	// A UDP client asking for it gets a truncated reply and may retry.
	udpBefore, tcpBefore := up.udp.Load(), up.tcp.Load()
	resp = query(t, "udp", addr, "big.example.", mdns.TypeA)
	if !resp.Truncated || len(resp.Answer) >= bigCount {
		t.Errorf("big.example over udp: tc=%v with %d answers, want a truncated reply", resp.Truncated, len(resp.Answer))
	}
	if up.udp.Load() == udpBefore || up.tcp.Load() == tcpBefore {
		t.Errorf("upstream udp %d->%d tcp %d->%d: want a UDP query then a TCP retry", udpBefore, up.udp.Load(), tcpBefore, up.tcp.Load())
	}
}

func TestServer_upstreamFailures(t *testing.T) {
	up := startUpstream(t)
	tests := []struct {
		name      string
		upstreams []string
		qname     string
		rcode     int
		ips       string
	}{
		{"no upstreams", nil, "example.com.", mdns.RcodeRefused, "[]"},
		{"upstream down", []string{deadUDPAddr(t)}, "example.com.", mdns.RcodeServerFailure, "[]"},
		{"upstream silent", []string{blackholeAddr(t)}, "example.com.", mdns.RcodeServerFailure, "[]"},
		{"all down", []string{deadUDPAddr(t), blackholeAddr(t)}, "example.com.", mdns.RcodeServerFailure, "[]"},
		{"first silent, second answers", []string{blackholeAddr(t), up.addr}, "example.com.", mdns.RcodeSuccess, "[192.0.2.10]"},
		{"every upstream SERVFAIL", []string{up.addr, up.addr}, "broken.example.", mdns.RcodeServerFailure, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.upstreams)
			// The client waits 5s; the server gives up on each upstream after
			// 500ms, so a SERVFAIL (not a client timeout) is the expected end.
			resp := query(t, "udp", s.Addrs()[0], tt.qname, mdns.TypeA)
			if resp.Rcode != tt.rcode || fmt.Sprint(answerIPs(resp)) != tt.ips {
				t.Errorf("rcode %s answers %v; want %s %s", mdns.RcodeToString[resp.Rcode], answerIPs(resp), mdns.RcodeToString[tt.rcode], tt.ips)
			}
		})
	}
}

// TestServer_concurrent changes records while clients query: every reply
// must be either NXDOMAIN or the one address the name ever has.
func TestServer_concurrent(t *testing.T) {
	s := startServer(t, nil)
	addr := s.Addrs()[0]
	ctx, cancel := context.WithCancel(context.Background())
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("n%d", i%4)
			switch i % 3 {
			case 0:
				s.Set(name, netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 4)}))
			case 1:
				s.Remove(name)
			default:
				s.Replace(map[string]netip.Addr{name: netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 4)})})
			}
		}
	})
	var readers sync.WaitGroup
	errs := make(chan error, 64)
	for r := range 4 {
		readers.Go(func() {
			c := &mdns.Client{Net: []string{"udp", "tcp"}[r%2], Timeout: 5 * time.Second}
			for i := range 50 {
				n := (i + r) % 4
				resp, _, err := c.Exchange(new(mdns.Msg).SetQuestion(fmt.Sprintf("n%d.vm.", n), mdns.TypeA), addr)
				if err != nil {
					errs <- err
					return
				}
				got := answerIPs(resp)
				ok := resp.Rcode == mdns.RcodeNameError && len(got) == 0 ||
					resp.Rcode == mdns.RcodeSuccess && fmt.Sprint(got) == fmt.Sprintf("[10.0.0.%d]", n)
				if !ok {
					errs <- fmt.Errorf("n%d.vm: rcode %s answers %v", n, mdns.RcodeToString[resp.Rcode], got)
				}
			}
		})
	}
	readers.Wait()
	cancel()
	writers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestServer_listen(t *testing.T) {
	s := New(nil, nil)
	defer s.Close()
	ctx := context.Background()
	// Several addresses: 127.0.0.2 is loopback on Linux too.
	for _, a := range []string{"127.0.0.1:0", "127.0.0.2:0"} {
		if err := s.Listen(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	s.Set("t1", netip.MustParseAddr("10.77.0.2"))
	addrs := s.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("Addrs = %v, want 2", addrs)
	}
	for _, a := range addrs {
		if strings.HasSuffix(a, ":0") {
			t.Errorf("Addrs reports %s, want the bound port", a)
		}
		for _, proto := range []string{"udp", "tcp"} {
			if got := answerIPs(query(t, proto, a, "t1.vm.", mdns.TypeA)); fmt.Sprint(got) != "[10.77.0.2]" {
				t.Errorf("%s %s: %v", proto, a, got)
			}
		}
	}

	// An address in use: the error names it and says so (the daemon
	// turns it into "network.dns_listen ... is in use").
	err := s.Listen(ctx, addrs[0])
	if err == nil || !strings.Contains(err.Error(), addrs[0]) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on a used address: %v, want an EADDRINUSE error naming %s", err, addrs[0])
	}
	// ListenAddr reports the port the kernel picked.
	ap, err := s.ListenAddr(ctx, "127.0.0.3:0")
	if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.3") || ap.Port() == 0 {
		t.Errorf("ListenAddr(127.0.0.3:0) = %v, %v; want the bound port", ap, err)
	} else if got := answerIPs(query(t, "udp", ap.String(), "t1.vm.", mdns.TypeA)); fmt.Sprint(got) != "[10.77.0.2]" {
		t.Errorf("udp %s: %v", ap, got)
	}
	if err := s.Listen(ctx, "not-an-address"); err == nil || !strings.Contains(err.Error(), "not-an-address") {
		t.Errorf("Listen on a bad address: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Listen(ctx, "127.0.0.1:0"); err == nil {
		t.Error("Listen after Close succeeded")
	}
	c := &mdns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(new(mdns.Msg).SetQuestion("t1.vm.", mdns.TypeA), addrs[0]); err == nil {
		t.Error("query after Close answered")
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{"t1": "t1", "T1": "t1", "t1.vm": "t1", "t1.vm.": "t1", "T1.VM.": "t1"} {
		if got := key(in); got != want {
			t.Errorf("key(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1": "192.0.2.1:53", "192.0.2.1:5353": "192.0.2.1:5353", "2001:db8::1": "[2001:db8::1]:53", "[2001:db8::1]:54": "[2001:db8::1]:54"} {
		if got := withDefaultPort(in); got != want {
			t.Errorf("withDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkServer_queryUDP measures one authoritative A query round trip
// over loopback UDP, client included.
func BenchmarkServer_queryUDP(b *testing.B) {
	s := New(nil, nil)
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("t1", netip.MustParseAddr("10.77.0.2"))
	c := &mdns.Client{Net: "udp", Timeout: 5 * time.Second}
	conn, err := c.Dial(s.Addrs()[0])
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	m := new(mdns.Msg).SetQuestion("t1.vm.", mdns.TypeA)
	for b.Loop() {
		resp, _, err := c.ExchangeWithConn(m, conn)
		if err != nil || len(resp.Answer) != 1 {
			b.Fatalf("answer %v, %v", resp, err)
		}
	}
}
