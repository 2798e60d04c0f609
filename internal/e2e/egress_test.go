package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"banger/internal/api"
)

// The pretend internet of TestEgress: two named hosts, a resolver and a
// UDP sink, all in documentation ranges inside the outside namespace.
const (
	goodIP     = "198.51.100.10"
	badIP      = "198.51.100.11"
	resolverIP = "198.51.100.53"
	sinkIP     = "198.51.100.2"
)

// egressWorld counts what reached the outside: HTTP(S) requests by
// listener and SNI, DNS queries by name, UDP payloads.
type egressWorld struct {
	mu      sync.Mutex
	hits    map[string]int // "good:443 sni=good.test", "bad:8080", ...
	queries map[string]int // lowercase name without the dot
	headers []http.Header  // of every request, in order
	udp     chan string
	caPEM   []byte
}

func (w *egressWorld) count(m map[string]int, k string) {
	w.mu.Lock()
	m[k]++
	w.mu.Unlock()
}

// hitsOn sums the hits of who's listeners ("good" or "bad"), every port.
func (w *egressWorld) hitsOn(who string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for k, v := range w.hits {
		if strings.HasPrefix(k, who+":") {
			n += v
		}
	}
	return n
}

// lastHeaders returns the headers of the last request any listener saw.
func (w *egressWorld) lastHeaders() http.Header {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.headers) == 0 {
		return nil
	}
	return w.headers[len(w.headers)-1]
}

// hit returns the hits of one listener key, e.g. "good:443 sni=good.test".
func (w *egressWorld) hit(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[key]
}

// snapshot copies the hit counts.
func (w *egressWorld) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.hits))
	for k, v := range w.hits {
		out[k] = v
	}
	return out
}

func (w *egressWorld) queried(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queries[name]
}

// egressOutside starts the pretend internet: a resolver answering
// good.test and bad.test (and a TXT record for good.test), HTTPS on 443
// with a test CA for good.test, bad.test and other.test, HTTP on 80 and
// 8080, and a UDP sink.
func (e *env) egressOutside(t *testing.T) *egressWorld {
	t.Helper()
	o := e.outsideNS(t, goodIP, badIP, resolverIP, sinkIP)
	w := &egressWorld{hits: map[string]int{}, queries: map[string]int{}}
	ca, leaf := testCerts(t, "good.test", "bad.test", "other.test")
	w.caPEM = ca

	dnsHandler := mdns.HandlerFunc(func(rw mdns.ResponseWriter, req *mdns.Msg) {
		q := req.Question[0]
		name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
		w.count(w.queries, name)
		m := new(mdns.Msg).SetReply(req)
		ip := map[string]string{"good.test": goodIP, "bad.test": badIP, "other.test": goodIP}[name]
		switch {
		case ip == "":
			m.Rcode = mdns.RcodeNameError
		case q.Qtype == mdns.TypeA:
			m.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 300}, A: net.ParseIP(ip)}}
		case q.Qtype == mdns.TypeTXT:
			m.Answer = []mdns.RR{&mdns.TXT{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 300}, Txt: []string{"tunnel-data"}}}
		}
		rw.WriteMsg(m)
	})
	var pc net.PacketConn
	if err := o.Do(func() (err error) { pc, err = net.ListenPacket("udp4", resolverIP+":53"); return err }); err != nil {
		t.Fatal(err)
	}
	dsrv := &mdns.Server{PacketConn: pc, Handler: dnsHandler}
	go dsrv.ActivateAndServe()
	t.Cleanup(func() { dsrv.Shutdown() })

	serve := func(addr, who string, tlsOn bool) {
		var l net.Listener
		if err := o.Do(func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			k := who + ":" + port
			if r.TLS != nil {
				k += " sni=" + r.TLS.ServerName
			}
			w.count(w.hits, k)
			w.mu.Lock()
			w.headers = append(w.headers, r.Header.Clone())
			w.mu.Unlock()
			fmt.Fprint(rw, who)
		})}
		if tlsOn {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{leaf}}
			l = tls.NewListener(l, srv.TLSConfig)
		}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
	}
	for ip, who := range map[string]string{goodIP: "good", badIP: "bad"} {
		serve(ip+":443", who, true)
		serve(ip+":80", who, false)
		serve(ip+":8080", who, false)
	}
	w.udp = udpSink(t, o, sinkIP+":7777")
	return w
}

// testCerts makes a CA (returned as PEM) and a leaf for names signed by it.
func testCerts(t *testing.T, names ...string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "egress test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestEgress plays a guest under an allow-list policy trying every way
// out: names it may not resolve, TXT tunnels, allowed addresses under
// other names, no SNI, other addresses under allowed names, UDP; then the
// policy changes at runtime, to add a name and to none.
func TestEgress(t *testing.T) {
	// The secret's value: bangerd reads it from its environment; it must
	// reach good.test and nowhere else, the guest least of all.
	secret := fmt.Sprintf("real-%d-value", time.Now().UnixNano())
	e := newEnv(t, func(c string) string {
		c = strings.Replace(c, `dns_upstream = ["127.0.0.1:1"]`, `dns_upstream = ["`+resolverIP+`:53"]`, 1)
		return c + `
[[secret]]
name = "api"
from_env = "BANGER_TEST_API_KEY"
hosts = ["good.test"]
header = "x-api-key: {}"
file = "~/.api-key"

[[secret]]
name = "other"
from_env = "BANGER_TEST_OTHER_KEY"
hosts = ["bad.test"]
`
	})
	e.ensureImage()
	world := e.egressOutside(t)
	hostile := buildHostile(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, world.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// bangerd verifies the real servers against the test CA (it trusts
	// SSL_CERT_FILE as any Go program does) and finds the secrets in its
	// environment (the CLI starts it with its own).
	e.envv = append(e.envv, "SSL_CERT_FILE="+caFile, "BANGER_TEST_API_KEY="+secret, "BANGER_TEST_OTHER_KEY=other-"+secret)

	e.must(e.banger("", "vm", "create", "--name", "p", "--net", "allow", "--allow", "good.test", "--secret", "api", "--secret", "other"))
	e.must(e.banger("", "vm", "cp", hostile, "p:/root/"))
	e.must(e.banger("", "vm", "cp", caFile, "p:/root/"))
	if net := e.vm("p")["net"].(map[string]any); net["mode"] != "allow" || fmt.Sprint(net["allow"]) != "[good.test]" || fmt.Sprint(net["secrets"]) != "[api other]" {
		t.Fatalf("vm show net = %v", net)
	}
	sh := func(script string) result {
		return e.banger("", "vm", "exec", "p", "--", "bash", "-c", script)
	}
	// The guest trusts the pretend internet's CA too, next to banger's:
	// connections the proxy does not terminate show the real certificate.
	e.must(sh("cat /root/ca.pem >> /etc/ssl/certs/ca-certificates.crt"))
	curl := func(args string) result {
		return sh("curl -sSf --max-time 8 " + args)
	}
	// refused runs a curl that must fail; a dropped SYN fails by timeout,
	// so it gets less time than one that must succeed.
	refused := func(t *testing.T, args string) {
		t.Helper()
		if r := sh("curl -sSf --max-time 3 " + args); r.code == 0 {
			t.Errorf("curl %s: reached %q", args, r.stdout)
		}
	}
	const gw = "192.0.2.1:53"

	t.Run("an allowed name is reached over https, http and another port", func(t *testing.T) {
		for url, want := range map[string]string{
			"https://good.test/": "good", "http://good.test/": "good", "http://good.test:8080/": "good",
		} {
			if r := curl(url); r.code != 0 || r.stdout != want {
				t.Errorf("curl %s: exit %d, %q, stderr %q", url, r.code, r.stdout, r.stderr)
			}
		}
		if n := world.hit("good:443 sni=good.test"); n != 1 {
			t.Errorf("good.test:443 saw %d requests with SNI good.test, want 1", n)
		}
	})

	t.Run("a name outside the policy is refused at DNS and never asked upstream", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "exec", "p", "--", "/root/hostile", "dns-query", gw, "A", "bad.test"))
		if got := strings.TrimSpace(r.stdout); got != "REFUSED" {
			t.Errorf("A bad.test: %q, want REFUSED", got)
		}
		r = e.must(e.banger("", "vm", "exec", "p", "--", "/root/hostile", "dns-query", gw, "TXT", "good.test"))
		if got := strings.TrimSpace(r.stdout); got != "REFUSED" {
			t.Errorf("TXT good.test (a tunnel): %q, want REFUSED", got)
		}
		if n := world.queried("bad.test"); n != 0 {
			t.Errorf("the upstream was asked about bad.test %d times", n)
		}
	})

	t.Run("addresses and names outside the policy are refused", func(t *testing.T) {
		before := world.snapshot()
		for _, args := range []string{
			"--resolve bad.test:443:" + badIP + " https://bad.test/",      // a name not allowed, by address
			"--resolve good.test:443:" + badIP + " https://good.test/",    // an allowed name at an address not answered
			"--resolve other.test:443:" + goodIP + " https://other.test/", // an answered address under another name
			"-k https://" + goodIP + "/",                                  // no SNI at all
			"-H 'Host: bad.test' http://" + goodIP + "/",                  // plain HTTP naming another host
			"http://" + badIP + ":8080/",                                  // a port that is not proxied
			"--connect-to good.test:8080:" + badIP + ":8080 http://good.test:8080/",
		} {
			refused(t, args)
		}
		if after := world.snapshot(); !maps.Equal(before, after) {
			t.Errorf("the outside saw requests: before %v, after %v", before, after)
		}
	})

	t.Run("the flow log shows allowed and denied flows", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "net", "log", "p", "--json"))
		var log api.NetLog
		if err := json.Unmarshal([]byte(r.stdout), &log); err != nil {
			t.Fatalf("net log --json: %v: %q", err, r.stdout)
		}
		seen := map[string]bool{}
		for _, f := range log.Flows {
			seen[f.Kind+" "+f.Verdict+" "+f.Name] = true
			if f.Kind == api.FlowIP {
				seen[fmt.Sprintf("ip %s %s:%d", f.Verdict, f.Addr, f.Port)] = true
			}
		}
		for _, want := range []string{
			"dns allow good.test", "dns deny bad.test", "tls allow good.test", "tls deny other.test",
			"tls deny ", "http deny bad.test", "http allow good.test", "tls deny good.test",
			"ip deny " + badIP + ":8080", // the firewall's own drop, from its log
		} {
			if !seen[want] {
				t.Errorf("flow log lacks %q; has %v", want, seen)
			}
		}
		var st api.NetStatus
		r = e.must(e.banger("", "vm", "net", "p", "--json"))
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !st.Enforced || st.Denied == 0 {
			t.Errorf("vm net p = %+v, %v", st, err)
		}
		if n, _ := e.vm("p")["net_denied"].(float64); uint64(n) != st.Denied {
			t.Errorf("vm show net_denied = %v, want %d", e.vm("p")["net_denied"], st.Denied)
		}
	})

	t.Run("secrets reach their host and never the guest", func(t *testing.T) {
		// The guest holds placeholders, in its environment and the file.
		r := e.must(sh(`echo "$API|$OTHER|$(cat ~/.api-key)"`))
		if got := strings.TrimSpace(r.stdout); got != "banger-secret-api|banger-secret-other|banger-secret-api" {
			t.Errorf("guest placeholders: %q", got)
		}
		// curl (system bundle), a Go client (SSL_CERT_FILE), and clients
		// that read only NODE_EXTRA_CA_CERTS or REQUESTS_CA_BUNDLE all
		// trust the proxy; the server gets the value in the named header
		// and, where the guest put the placeholder, in its place.
		for _, cmd := range []string{
			`curl -sSf --max-time 8 -H "Authorization: Bearer $API" https://good.test/`,
			`/root/hostile https-get https://good.test/`,
			`curl -sSf --max-time 8 --cacert "$NODE_EXTRA_CA_CERTS" https://good.test/`,
			`curl -sSf --max-time 8 --cacert "$REQUESTS_CA_BUNDLE" https://good.test/`,
		} {
			r := sh(cmd)
			if r.code != 0 || r.stdout != "good" {
				t.Errorf("%s: exit %d, %q, %q", cmd, r.code, r.stdout, r.stderr)
				continue
			}
			if h := world.lastHeaders(); h.Get("X-Api-Key") != secret {
				t.Errorf("%s: the server got x-api-key %q, want the secret", cmd, h.Get("X-Api-Key"))
			}
		}
		if h := world.lastHeaders(); h == nil {
			t.Fatal("no request reached the server")
		}
		// The other secret's placeholder sent to good.test stays a
		// placeholder.
		e.must(curl(`-H "Authorization: Bearer $OTHER" https://good.test/`))
		if got := world.lastHeaders().Get("Authorization"); got != "Bearer banger-secret-other" {
			t.Errorf("another secret's placeholder reached good.test as %q", got)
		}
		// One terminated connection carries no request for another host.
		refused(t, `--resolve good.test:443:`+goodIP+` -H "Host: bad.test" https://good.test/`)
		// Nothing in the guest holds the value: environment of every
		// process, the files banger writes, the trust stores.
		// The pattern matches the value without holding it, so the
		// command line (which the daemon may log) does not carry it.
		pattern := secret[:len(secret)-1] + "[" + secret[len(secret)-1:] + "]"
		r = sh(`cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c -- '` + pattern + `'; ` +
			`grep -rl -- '` + pattern + `' /etc /root /run /tmp /usr/local 2>/dev/null | head -5; true`)
		if strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("the guest holds the secret: %q", r.stdout)
		}
		// Nor does anything banger keeps on the host: store, logs, VM dirs.
		if out, _ := exec.Command("grep", "-rl", "--", secret, e.state).CombinedOutput(); len(out) > 0 {
			t.Errorf("the host's banger state holds the secret: %s", out)
		}
	})

	t.Run("a name allowed at runtime opens", func(t *testing.T) {
		e.must(e.banger("", "vm", "net", "p", "allow", "bad.test"))
		if r := curl("https://bad.test/"); r.code != 0 || r.stdout != "bad" {
			t.Errorf("curl https://bad.test/ after allow: exit %d, %q, %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("none reaches nothing", func(t *testing.T) {
		e.must(e.banger("", "vm", "net", "p", "mode", "none"))
		before := world.hitsOn("good")
		for _, args := range []string{"https://good.test/", "--resolve good.test:443:" + goodIP + " https://good.test/", "http://" + goodIP + ":8080/"} {
			refused(t, args)
		}
		if n := world.hitsOn("good") - before; n != 0 {
			t.Errorf("good.test saw %d requests under none", n)
		}
	})

	t.Run("udp is refused unless a rule opens it", func(t *testing.T) {
		send := func(payload string) {
			e.must(sh("echo -n " + payload + " > /dev/udp/" + sinkIP + "/7777"))
		}
		send("policed")
		e.must(e.banger("", "vm", "net", "p", "allow", sinkIP+":7777/udp"))
		send("granted")
		// Frames from one tap arrive in order: once "granted" is in, the
		// policed one has arrived before it or been dropped.
		select {
		case m := <-world.udp:
			if m != "granted" {
				t.Errorf("the outside received %q first, want only the datagram a rule opened", m)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the datagram a /udp rule opened never arrived")
		}
		// The dropped one is in the flow log (the firewall's log reaches
		// bangerd asynchronously: wait for it, bounded).
		for deadline := time.Now().Add(10 * time.Second); ; {
			var log api.NetLog
			r := e.must(e.banger("", "vm", "net", "log", "p", "--json"))
			if err := json.Unmarshal([]byte(r.stdout), &log); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(log.Flows, func(f api.Flow) bool {
				return f.Kind == api.FlowIP && f.Addr == sinkIP && f.Port == 7777 && strings.HasPrefix(f.Reason, "udp")
			}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no udp flow to %s:7777 in the log: %+v", sinkIP, log.Flows)
			}
		}
	})
}
