// Package dns serves the `.vm` zone: NAME.vm resolves to the address of the
// running VM named NAME, so the host and other guests find a VM by name.
// Every other name is forwarded to upstream resolvers, which lets guests
// use the gateway as their only DNS server.
//
// The server is authoritative for `vm.` and keeps its records in memory;
// the daemon owns them (Set when a VM runs, Remove when it stops, Replace
// after a daemon restart).
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Zone is the domain the server answers for, fully qualified.
const Zone = "vm."

// TTL is the time to live, in seconds, of every answer in the zone and of
// negative answers: short, because records follow VMs starting and
// stopping.
const TTL = 5

// DefaultForwardTimeout bounds one exchange with one upstream.
const DefaultForwardTimeout = 2 * time.Second

// Log attribute keys.
const (
	logKeyAddr     = "addr"
	logKeyUpstream = "upstream"
	logKeyName     = "name"
)

// Server is an authoritative DNS server for the `.vm` zone that forwards
// other names upstream. It is safe for concurrent use; records may change
// while it serves.
type Server struct {
	// ForwardTimeout bounds each exchange with one upstream (UDP, and TCP
	// again after a truncated answer). Zero means DefaultForwardTimeout.
	// Set it before the first Listen.
	ForwardTimeout time.Duration
	// Limits bounds what one client can make the server do (see Limits).
	// Set it before the first Listen.
	Limits Limits
	// Gate, when set, decides which names outside the zone each client
	// may resolve, and sees every forwarded answer before the client
	// does (egress policy). Set it before the first Listen.
	Gate Gate

	upstreams []string
	logger    *slog.Logger

	mu      sync.RWMutex
	records map[string]netip.Addr // key: lowercase VM name
	serial  atomic.Uint32         // SOA serial, bumped on every change

	amu     sync.RWMutex
	allowed []netip.Prefix // sources served besides loopback

	limitsOnce sync.Once
	inflight   chan struct{} // one token per upstream forward in progress
	sources    *sourceLimiter
	dropped    atomic.Uint64 // queries dropped by the source checks

	lmu       sync.Mutex
	servers   []*mdns.Server
	addrs     []string
	closed    bool
	baseCtx   context.Context // cancelled by Close; ends in-flight forwards
	cancelAll context.CancelFunc
}

// Gate is the egress policy as the DNS server sees it (egress.Engine).
type Gate interface {
	// AllowQuery reports whether src may resolve name of type qtype
	// upstream; a refused query is answered REFUSED.
	AllowQuery(src netip.Addr, name string, qtype uint16) bool
	// Learn is given the IPv4 addresses an upstream answered for name
	// (following CNAMEs in the answer) and the shortest TTL on the way,
	// before src gets the answer; an error turns the answer into
	// SERVFAIL.
	Learn(ctx context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error
}

// New returns a server forwarding non-`.vm` names to upstreams ("host" or
// "host:port"; port 53 when absent), tried in order. With no upstreams such
// queries are REFUSED. A nil logger discards logs.
func New(upstreams []string, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ups := make([]string, 0, len(upstreams))
	for _, u := range upstreams {
		ups = append(ups, withDefaultPort(u))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		upstreams: ups,
		logger:    logger,
		records:   map[string]netip.Addr{},
		baseCtx:   ctx,
		cancelAll: cancel,
	}
	s.serial.Store(1)
	return s
}

// withDefaultPort adds port 53 to an upstream given without one.
func withDefaultPort(u string) string {
	if _, _, err := net.SplitHostPort(u); err == nil {
		return u
	}
	return net.JoinHostPort(strings.Trim(u, "[]"), "53")
}

// key turns a VM name (or "name.vm", or "name.vm.") into a record key.
func key(name string) string {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	return strings.TrimSuffix(n, ".vm")
}

// Set makes name.vm resolve to ip (an A record for IPv4, AAAA for IPv6).
func (s *Server) Set(name string, ip netip.Addr) {
	s.mu.Lock()
	s.records[key(name)] = ip.Unmap()
	s.mu.Unlock()
	s.serial.Add(1)
}

// Remove deletes name.vm; removing an unknown name does nothing.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	delete(s.records, key(name))
	s.mu.Unlock()
	s.serial.Add(1)
}

// Replace swaps all records for records (VM name -> address), as after a
// daemon restart rebuilds them from the running VMs.
func (s *Server) Replace(records map[string]netip.Addr) {
	m := make(map[string]netip.Addr, len(records))
	for n, ip := range records {
		m[key(n)] = ip.Unmap()
	}
	s.mu.Lock()
	s.records = m
	s.mu.Unlock()
	s.serial.Add(1)
}

func (s *Server) lookup(name string) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ip, ok := s.records[name]
	return ip, ok
}

// AllowSources adds networks whose clients the server answers (the VM
// subnet). Loopback is always served; a query from any other source is
// dropped unanswered, so the gateway listener cannot be used as an open
// resolver or an amplifier by anything outside the guests' network.
func (s *Server) AllowSources(prefixes ...netip.Prefix) {
	s.amu.Lock()
	defer s.amu.Unlock()
	for _, p := range prefixes {
		s.allowed = append(s.allowed, p.Masked())
	}
}

// Dropped reports how many queries were dropped unanswered because their
// source is not served or sent too many.
func (s *Server) Dropped() uint64 { return s.dropped.Load() }

func (s *Server) sourceAllowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	s.amu.RLock()
	defer s.amu.RUnlock()
	for _, p := range s.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (s *Server) initLimits() {
	s.limitsOnce.Do(func() {
		s.Limits = s.Limits.withDefaults()
		s.inflight = make(chan struct{}, s.Limits.MaxInFlight)
		s.sources = newSourceLimiter(s.Limits.SourceRate, s.Limits.SourceBurst)
	})
}

// Listen serves DNS over UDP and TCP on addr ("127.0.0.1:42069", or the
// gateway at a port the kernel picks, "10.77.0.1:0"). With port 0 both
// protocols share the port the kernel picks; Addrs reports it. It returns
// once both sockets are bound and served. ctx bounds the setup only:
// serving stops at Close. It may be called for several addresses. A port
// another socket holds is an error wrapping syscall.EADDRINUSE.
func (s *Server) Listen(ctx context.Context, addr string) error {
	_, err := s.ListenAddr(ctx, addr)
	return err
}

// ListenAddr is Listen returning the address bound, with the port the
// kernel picked for port 0: guests' DNS reaches the server there, through
// the firewall's redirect of the gateway's port 53.
func (s *Server) ListenAddr(ctx context.Context, addr string) (netip.AddrPort, error) {
	bound, err := s.listen(ctx, addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap, err := netip.ParseAddrPort(bound)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns listen on %s: bound %q: %w", addr, bound, err)
	}
	return ap, nil
}

// listen binds and serves addr and returns the bound address.
func (s *Server) listen(ctx context.Context, addr string) (string, error) {
	s.lmu.Lock()
	closed := s.closed
	s.lmu.Unlock()
	if closed {
		return "", fmt.Errorf("dns listen on %s: server closed", addr)
	}
	s.initLimits()
	pc, l, err := listenPair(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("dns listen on %s: %w", addr, err)
	}
	l = &limitListener{Listener: l, sem: make(chan struct{}, s.Limits.MaxTCPConns)}
	handler := mdns.HandlerFunc(s.serve)
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	udp := &mdns.Server{PacketConn: pc, Handler: handler, NotifyStartedFunc: notify}
	tcp := &mdns.Server{
		Listener: l, Handler: handler, NotifyStartedFunc: notify,
		IdleTimeout:   func() time.Duration { return tcpIdleTimeout },
		MaxTCPQueries: 128,
	}
	errc := make(chan error, 2)
	for _, srv := range []*mdns.Server{udp, tcp} {
		go func() {
			err := srv.ActivateAndServe()
			if err != nil && !s.isClosed() {
				s.logger.Error("dns server stopped", logKeyAddr, pc.LocalAddr().String(), "err", err)
			}
			errc <- err
		}()
	}
	for n := 0; n < 2; {
		select {
		case <-started:
			n++
		case err := <-errc:
			shutdown(udp, tcp)
			return "", fmt.Errorf("dns serve on %s: %w", addr, err)
		case <-ctx.Done():
			shutdown(udp, tcp)
			return "", fmt.Errorf("dns listen on %s: %w", addr, ctx.Err())
		}
	}

	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.closed {
		shutdown(udp, tcp)
		return "", fmt.Errorf("dns listen on %s: server closed", addr)
	}
	bound := pc.LocalAddr().String()
	s.servers = append(s.servers, udp, tcp)
	s.addrs = append(s.addrs, bound)
	s.logger.Info("dns listening", logKeyAddr, bound)
	return bound, nil
}

// listenPair binds UDP and TCP on addr. For port 0, TCP takes the port UDP
// was given, retrying a few times if another socket holds it for TCP.
func listenPair(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lc net.ListenConfig
	for attempt := 0; ; attempt++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, err
		}
		l, err := lc.Listen(ctx, "tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || attempt == 4 {
			return nil, nil, err
		}
	}
}

func shutdown(servers ...*mdns.Server) error {
	var errs []error
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

func (s *Server) isClosed() bool {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.closed
}

// Addrs returns the addresses being served, one per Listen call, with the
// actual port.
func (s *Server) Addrs() []string {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return append([]string(nil), s.addrs...)
}

// Close stops every listener and cancels in-flight forwards. Calling it
// again does nothing.
func (s *Server) Close() error {
	s.lmu.Lock()
	if s.closed {
		s.lmu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.servers, s.addrs = nil, nil
	s.lmu.Unlock()
	s.cancelAll()
	if err := shutdown(servers...); err != nil {
		return fmt.Errorf("close dns server: %w", err)
	}
	return nil
}

// serve answers one query. Queries from sources the server does not serve,
// or over their source's rate, are dropped without an answer.
func (s *Server) serve(w mdns.ResponseWriter, req *mdns.Msg) {
	overTCP := w.LocalAddr().Network() == "tcp"
	src := addrOf(w.RemoteAddr())
	// Loopback is the host itself (guests cannot send from it: the kernel
	// drops such packets arriving on a tap), so only guests are rate-limited.
	if !s.sourceAllowed(src) || !src.IsLoopback() && !s.sources.allow(src) {
		s.dropped.Add(1)
		if overTCP {
			w.Close()
		}
		return
	}
	var resp *mdns.Msg
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		resp = new(mdns.Msg).SetRcode(req, mdns.RcodeNotImplemented)
	case len(req.Question) != 1:
		resp = new(mdns.Msg).SetRcode(req, mdns.RcodeFormatError)
	case inZone(req.Question[0].Name):
		resp = s.answer(req)
	case s.Gate != nil && !s.Gate.AllowQuery(src, req.Question[0].Name, req.Question[0].Qtype):
		resp = new(mdns.Msg).SetRcode(req, mdns.RcodeRefused)
	default:
		resp = s.forward(req, overTCP)
		if s.Gate != nil && resp.Rcode == mdns.RcodeSuccess {
			resp = s.learn(src, req, resp)
		}
	}
	if !overTCP {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		s.logger.Debug("dns write reply", "err", err)
	}
}

// MaxGatedTTL caps the TTL of answers a gate saw: a client must not keep
// an address longer than the firewall keeps it open (egress.MaxPassTTL).
const MaxGatedTTL = 24 * time.Hour

// learnTimeout bounds how long an answer waits for the gate to open the
// firewall to its addresses.
const learnTimeout = 5 * time.Second

// learn hands the IPv4 addresses of an upstream answer to the gate: the
// A records of the queried name or of the CNAME chain starting at it, and
// the shortest TTL along the chain. Records about other names are removed
// from the answer, so the client learns nothing the gate did not see.
func (s *Server) learn(src netip.Addr, req, resp *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	chain := map[string]bool{strings.ToLower(q.Name): true}
	ttl := uint32(0)
	first := true
	take := func(h *mdns.RR_Header) {
		if first || h.Ttl < ttl {
			ttl, first = h.Ttl, false
		}
	}
	// CNAMEs may come in any order; follow them until the chain stops
	// growing (bounded by the answer's length).
	for range len(resp.Answer) {
		grew := false
		for _, rr := range resp.Answer {
			if c, ok := rr.(*mdns.CNAME); ok && chain[strings.ToLower(c.Hdr.Name)] && !chain[strings.ToLower(c.Target)] {
				chain[strings.ToLower(c.Target)] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var addrs []netip.Addr
	var kept []mdns.RR
	for _, rr := range resp.Answer {
		h := rr.Header()
		if !chain[strings.ToLower(h.Name)] {
			continue
		}
		// The client caches no longer than a gate's pass may last.
		h.Ttl = min(h.Ttl, uint32(MaxGatedTTL/time.Second))
		switch r := rr.(type) {
		case *mdns.A:
			if a, ok := netip.AddrFromSlice(r.A); ok {
				addrs = append(addrs, a.Unmap())
				take(h)
			}
		case *mdns.CNAME:
			take(h)
		}
		kept = append(kept, rr)
	}
	resp.Answer = kept
	// The other sections carry no addresses to the client either (glue
	// and additional records the gate never saw): only the authority's
	// SOA and NS records and the EDNS OPT stay.
	resp.Ns = slices.DeleteFunc(resp.Ns, func(rr mdns.RR) bool {
		t := rr.Header().Rrtype
		return t != mdns.TypeSOA && t != mdns.TypeNS
	})
	resp.Extra = slices.DeleteFunc(resp.Extra, func(rr mdns.RR) bool { return rr.Header().Rrtype != mdns.TypeOPT })
	ctx, cancel := context.WithTimeout(s.baseCtx, learnTimeout)
	defer cancel()
	if err := s.Gate.Learn(ctx, src, q.Name, addrs, time.Duration(ttl)*time.Second); err != nil {
		s.logger.Warn("dns answer withheld", logKeyName, q.Name, "err", err)
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	}
	return resp
}

// udpSize is the largest UDP reply sent to the client: what its EDNS
// option accepts, never more than MaxUDPSize (amplification), never less
// than the 512 bytes every client accepts.
func udpSize(req *mdns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > mdns.MinMsgSize {
		return min(int(opt.UDPSize()), MaxUDPSize)
	}
	return mdns.MinMsgSize
}

func inZone(qname string) bool {
	n := strings.ToLower(qname)
	return n == Zone || strings.HasSuffix(n, "."+Zone)
}

// soa is the zone's start of authority, returned in negative answers so
// resolvers cache them for TTL seconds only.
func (s *Server) soa() *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: Zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: TTL},
		Ns:      "ns." + Zone,
		Mbox:    "hostmaster." + Zone,
		Serial:  s.serial.Load(),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  TTL,
	}
}

// answer builds the authoritative reply for a question inside the zone.
func (s *Server) answer(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	m := new(mdns.Msg).SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = len(s.upstreams) > 0
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(1232, false)
	}
	name := strings.ToLower(q.Name)
	if name == Zone {
		if q.Qtype == mdns.TypeSOA {
			m.Answer = []mdns.RR{s.soa()}
		} else {
			m.Ns = []mdns.RR{s.soa()}
		}
		return m
	}
	ip, ok := s.lookup(strings.TrimSuffix(name, "."+Zone))
	if !ok {
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{s.soa()}
		return m
	}
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: TTL}
	}
	qany := q.Qtype == mdns.TypeANY
	switch {
	case ip.Is4() && (q.Qtype == mdns.TypeA || qany):
		m.Answer = []mdns.RR{&mdns.A{Hdr: hdr(mdns.TypeA), A: ip.AsSlice()}}
	case ip.Is6() && (q.Qtype == mdns.TypeAAAA || qany):
		m.Answer = []mdns.RR{&mdns.AAAA{Hdr: hdr(mdns.TypeAAAA), AAAA: ip.AsSlice()}}
	default:
		// The name exists but has no record of this type: NODATA.
		m.Ns = []mdns.RR{s.soa()}
	}
	return m
}

// forward relays a question outside the zone to the upstreams in order:
// UDP first, TCP when the answer is truncated (or when the client asked over
// TCP). The first upstream that answers with anything but SERVFAIL or
// REFUSED wins; when none does the reply is SERVFAIL.
func (s *Server) forward(req *mdns.Msg, overTCP bool) *mdns.Msg {
	if len(s.upstreams) == 0 {
		return new(mdns.Msg).SetRcode(req, mdns.RcodeRefused)
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		// Every forward slot is taken (a flood, or a dead upstream holding
		// each for its timeout): fail this query now rather than queue it.
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	}
	timeout := s.ForwardTimeout
	if timeout <= 0 {
		timeout = DefaultForwardTimeout
	}
	out := req.Copy()
	out.Id = mdns.Id() // a fresh id per hop, so upstream replies cannot be guessed from ours
	var last *mdns.Msg
	for _, up := range s.upstreams {
		resp, err := s.exchange(out, up, overTCP, timeout)
		if err != nil {
			s.logger.Debug("dns forward failed", logKeyUpstream, up, logKeyName, req.Question[0].Name, "err", err)
			continue
		}
		resp.Id = req.Id
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			continue
		}
		return resp
	}
	if last != nil {
		last.Rcode = mdns.RcodeServerFailure
		return last
	}
	return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
}

// exchange sends m to one upstream, retrying over TCP after a truncated
// UDP answer.
func (s *Server) exchange(m *mdns.Msg, upstream string, overTCP bool, timeout time.Duration) (*mdns.Msg, error) {
	if !overTCP {
		ctx, cancel := context.WithTimeout(s.baseCtx, timeout)
		c := &mdns.Client{Net: "udp", Timeout: timeout, UDPSize: mdns.DefaultMsgSize}
		resp, _, err := c.ExchangeContext(ctx, m, upstream)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("udp %s: %w", upstream, err)
		}
		if !resp.Truncated {
			return resp, nil
		}
	}
	ctx, cancel := context.WithTimeout(s.baseCtx, timeout)
	defer cancel()
	c := &mdns.Client{Net: "tcp", Timeout: timeout}
	resp, _, err := c.ExchangeContext(ctx, m, upstream)
	if err != nil {
		return nil, fmt.Errorf("tcp %s: %w", upstream, err)
	}
	return resp, nil
}
