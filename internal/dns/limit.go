package dns

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The server answers guests, and guests are hostile: a guest may flood it
// with queries (from one address or many spoofed ones), ask for huge UDP
// answers to amplify traffic, or open TCP connections until the daemon runs
// out of file descriptors. These limits bound what any guest can make the
// daemon hold, whatever it sends. The defaults leave a normal guest (a
// package manager resolving a few hundred names) far below every bound.
const (
	// DefaultMaxInFlight bounds the forwards to upstream resolvers in
	// progress at once, over all clients. Each holds one socket; past the
	// bound a query is answered SERVFAIL at once instead of waiting.
	DefaultMaxInFlight = 64
	// DefaultSourceRate is the sustained queries per second one client
	// address may send; DefaultSourceBurst is how many it may send at once.
	// Queries over the limit are dropped unanswered (an answer is what an
	// amplification attack wants).
	DefaultSourceRate  = 50
	DefaultSourceBurst = 100
	// MaxUDPSize caps the UDP answer size whatever EDNS size a client
	// advertises: 1232 bytes, the DNS Flag Day 2020 figure, fits one
	// packet on every path and limits amplification.
	MaxUDPSize = 1232
	// DefaultMaxTCPConns bounds the TCP connections served at once per
	// listener; further connections are closed as soon as accepted.
	DefaultMaxTCPConns = 32
	// tcpIdleTimeout closes a TCP connection that sends nothing.
	tcpIdleTimeout = 5 * time.Second
	// maxSources bounds the per-source limiter table. Past it, unknown
	// sources share one limiter, so spoofing many addresses buys nothing.
	maxSources = 1024
	// sourceIdle is how long a source's limiter is kept after its last
	// query.
	sourceIdle = time.Minute
)

// Limits bounds the work one client can make the server do. The zero value
// of a field means its default.
type Limits struct {
	MaxInFlight int        // concurrent upstream forwards (DefaultMaxInFlight)
	SourceRate  rate.Limit // queries per second per source (DefaultSourceRate)
	SourceBurst int        // burst per source (DefaultSourceBurst)
	MaxTCPConns int        // concurrent TCP connections per listener (DefaultMaxTCPConns)
}

func (l Limits) withDefaults() Limits {
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.SourceRate <= 0 {
		l.SourceRate = DefaultSourceRate
	}
	if l.SourceBurst <= 0 {
		l.SourceBurst = DefaultSourceBurst
	}
	if l.MaxTCPConns <= 0 {
		l.MaxTCPConns = DefaultMaxTCPConns
	}
	return l
}

// sourceLimiter keeps one token bucket per client address.
type sourceLimiter struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu       sync.Mutex
	sources  map[netip.Addr]*sourceEntry
	overflow *rate.Limiter // shared by sources past maxSources
	swept    time.Time
}

type sourceEntry struct {
	lim  *rate.Limiter
	last time.Time
}

func newSourceLimiter(r rate.Limit, burst int) *sourceLimiter {
	return &sourceLimiter{
		rate:     r,
		burst:    burst,
		now:      time.Now,
		sources:  map[netip.Addr]*sourceEntry{},
		overflow: rate.NewLimiter(r, burst),
	}
}

// allow reports whether src may have one more query answered now.
func (l *sourceLimiter) allow(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Sub(l.swept) > sourceIdle {
		for a, e := range l.sources {
			if now.Sub(e.last) > sourceIdle {
				delete(l.sources, a)
			}
		}
		l.swept = now
	}
	e, ok := l.sources[src]
	if !ok {
		if len(l.sources) >= maxSources {
			return l.overflow.AllowN(now, 1)
		}
		e = &sourceEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.sources[src] = e
	}
	e.last = now
	return e.lim.AllowN(now, 1)
}

// addrOf returns the IP of a client's net.Addr, unmapped.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// limitListener bounds the connections accepted and not yet closed.
// Unlike golang.org/x/net/netutil.LimitListener, which stops calling Accept
// while full (so a flood of connections waits in the kernel backlog and the
// legitimate client behind it waits too), this one accepts and closes the
// excess at once: a connection flood costs the daemon no descriptor beyond
// the bound and every client learns immediately.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			// Full: refuse this connection now rather than hold its fd.
			c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
