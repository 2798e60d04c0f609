package egress

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// benchBig is the size of the download of the throughput benchmark.
const benchBig = 16 << 20

// benchPaths is a local HTTPS server and two clients for it, one direct
// and one through the proxy, for a policed guest allowed to reach it.
type benchPaths struct {
	srv             *countingServer
	direct, proxied *http.Client
}

// newBenchPaths starts the server (/small answers "ok", /big benchBig
// bytes) and the proxy; keepAlive makes each client hold one connection
// across requests.
func newBenchPaths(b *testing.B, keepAlive bool) *benchPaths {
	b.Helper()
	big := make([]byte, benchBig)
	srv := startCounting(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		io.WriteString(w, "ok")
	}), true)
	proxyAddr := startProxy(b, &Proxy{Engine: newProxyEngine(b), OrigDst: to(srv.addrPort())})
	client := func(addr string) *http.Client {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: srv.pool()},
			DisableKeepAlives: !keepAlive,
			MaxConnsPerHost:   1,
		}
		b.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	return &benchPaths{srv: srv, direct: client(srv.Listener.Addr().String()), proxied: client(proxyAddr)}
}

// fetch GETs https://example.com+path with c, reads the whole body and
// returns how long that took; it fails b unless the body has want bytes.
func fetch(b *testing.B, c *http.Client, path string, want int64) time.Duration {
	start := time.Now()
	resp, err := c.Get("https://" + tlsName + path)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != want {
		b.Fatalf("GET %s: %d bytes, %v; want %d", path, n, err, want)
	}
	return time.Since(start)
}

// BenchmarkProxy compares, within one run, HTTPS to a local server
// direct and through the proxy. Each iteration does both (in alternating
// order), so ns/op and MB/s count both paths together; the per-path
// figures and their ratio (proxied time over direct time) are the
// reported metrics.
//
//   - latency: a new TCP connection, a TLS handshake and one small GET.
//   - throughput: a 16 MiB GET over a connection established beforehand.
func BenchmarkProxy(b *testing.B) {
	b.Run("latency", func(b *testing.B) {
		p := newBenchPaths(b, false)
		fetch(b, p.direct, "/small", 2) // warm both paths up
		fetch(b, p.proxied, "/small", 2)
		var direct, proxied time.Duration
		n := 0
		for b.Loop() {
			if n%2 == 0 {
				direct += fetch(b, p.direct, "/small", 2)
				proxied += fetch(b, p.proxied, "/small", 2)
			} else {
				proxied += fetch(b, p.proxied, "/small", 2)
				direct += fetch(b, p.direct, "/small", 2)
			}
			n++
		}
		b.ReportMetric(float64(direct.Microseconds())/float64(n), "direct-us/op")
		b.ReportMetric(float64(proxied.Microseconds())/float64(n), "proxied-us/op")
		b.ReportMetric(float64(proxied)/float64(direct), "proxied/direct")
	})
	b.Run("throughput", func(b *testing.B) {
		p := newBenchPaths(b, true)
		// One connection each, established before the clock starts.
		fetch(b, p.direct, "/small", 2)
		fetch(b, p.proxied, "/small", 2)
		b.SetBytes(2 * benchBig)
		var direct, proxied time.Duration
		n := 0
		for b.Loop() {
			if n%2 == 0 {
				direct += fetch(b, p.direct, "/big", benchBig)
				proxied += fetch(b, p.proxied, "/big", benchBig)
			} else {
				proxied += fetch(b, p.proxied, "/big", benchBig)
				direct += fetch(b, p.direct, "/big", benchBig)
			}
			n++
		}
		mbps := func(d time.Duration) float64 { return float64(n) * benchBig / 1e6 / d.Seconds() }
		b.ReportMetric(mbps(direct), "direct-MB/s")
		b.ReportMetric(mbps(proxied), "proxied-MB/s")
		b.ReportMetric(float64(proxied)/float64(direct), "proxied/direct")
		if got := p.srv.accepted.Load(); got != 2 {
			b.Fatalf("server accepted %d connections, want 2 (one per path, kept alive)", got)
		}
	})
}

// BenchmarkSecretProxy measures the path of a secret's host, where the
// proxy terminates the guest's TLS and opens its own to the server: a
// new connection and one small GET, and a 16 MiB GET over a connection
// held open, against the same server direct, in one run.
func BenchmarkSecretProxy(b *testing.B) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
		path      string
		size      int64
	}{{"latency", false, "/small", 2}, {"throughput", true, "/big", benchBig}} {
		b.Run(tc.name, func(b *testing.B) {
			p := newSecretPaths(b, tc.keepAlive)
			direct := newBenchPaths(b, tc.keepAlive).direct
			// The secret proxy's server is another instance: time the
			// direct path against it too.
			direct.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", p.srv.Listener.Addr().String())
			}
			direct.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: p.srv.pool()}
			fetch(b, direct, "/small", 2)
			fetch(b, p.client, "/small", 2)
			if tc.keepAlive {
				b.SetBytes(2 * tc.size)
			}
			var d, m time.Duration
			n := 0
			for b.Loop() {
				if n%2 == 0 {
					d += fetch(b, direct, tc.path, tc.size)
					m += fetch(b, p.client, tc.path, tc.size)
				} else {
					m += fetch(b, p.client, tc.path, tc.size)
					d += fetch(b, direct, tc.path, tc.size)
				}
				n++
			}
			b.ReportMetric(float64(m)/float64(d), "secret/direct")
			// Every request through the proxy (and the warm-up) carried it.
			p.mu.Lock()
			got := 0
			for _, h := range p.headers {
				if h.Get("X-Api-Key") == benchSecret {
					got++
				}
			}
			p.mu.Unlock()
			if got != n+1 {
				b.Fatalf("the server got the secret %d times, want %d", got, n+1)
			}
		})
	}
}
