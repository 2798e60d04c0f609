package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/config"
)

// secretPaths is a local HTTPS server recording the headers it gets, and
// a proxy for a guest given secret "api" for tlsName; the guest's client
// trusts only the VM's CA.
type secretPaths struct {
	srv     *countingServer
	client  *http.Client
	e       *Engine
	mu      sync.Mutex
	headers []http.Header
}

const benchSecret = "the-real-value-0123456789"

func newSecretPaths(t testing.TB, keepAlive bool) *secretPaths {
	t.Helper()
	t.Setenv("BANGER_TEST_SECRET", benchSecret)
	p := &secretPaths{}
	big := make([]byte, benchBig)
	p.srv = startCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.headers = append(p.headers, r.Header.Clone())
		p.mu.Unlock()
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		io.WriteString(w, "ok")
	}), true)
	e, _, _ := newTestEngine(t, nil)
	pol := mustPolicy(t, ModeAllow, tlsName)
	pol.Secrets = []string{"api", "other"}
	mustBind(t, e, "vm", loopback, pol)
	if err := e.Learn(context.Background(), loopback, tlsName, []netip.Addr{loopback}, time.Hour); err != nil {
		t.Fatal(err)
	}
	secrets, err := NewSecrets([]config.Secret{
		{Name: "api", FromEnv: "BANGER_TEST_SECRET", Hosts: []string{tlsName}, Header: "x-api-key: {}"},
		{Name: "other", FromEnv: "BANGER_TEST_SECRET", Hosts: []string{"elsewhere.test"}},
	}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.Secrets = secrets
	dir := t.TempDir()
	ca, err := EnsureCA(dir, "vm")
	if err != nil {
		t.Fatal(err)
	}
	e.CAs = func(string) (*CA, error) { return LoadCA(dir) }
	p.e = e
	proxyAddr := startProxy(t, &Proxy{Engine: e, OrigDst: to(p.srv.addrPort()), RootCAs: p.srv.pool()})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: !keepAlive,
		MaxConnsPerHost:   1,
	}
	t.Cleanup(tr.CloseIdleConnections)
	p.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return p
}

func (p *secretPaths) last() http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.headers) == 0 {
		return nil
	}
	return p.headers[len(p.headers)-1]
}

// TestProxy_secrets: the guest's TLS to a secret's host is terminated
// with the VM's CA (the guest trusts nothing else here), the server gets
// the value in the header and in place of the placeholder, another
// secret's placeholder stays one, and a request for another Host on the
// same connection is refused.
func TestProxy_secrets(t *testing.T) {
	p := newSecretPaths(t, true)
	req, _ := http.NewRequest("GET", "https://"+tlsName+"/small", nil)
	req.Header.Set("Authorization", "Bearer "+Placeholder("api"))
	req.Header.Set("X-Other", Placeholder("other"))
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("body %q", body)
	}
	h := p.last()
	if h.Get("X-Api-Key") != benchSecret || h.Get("Authorization") != "Bearer "+benchSecret || h.Get("X-Other") != Placeholder("other") {
		t.Errorf("server got %v", h)
	}
	if h.Get("X-Forwarded-For") != "" {
		t.Errorf("the proxy told the server the guest's address: %v", h)
	}
	// Same connection, another Host: 421, and the server never sees it.
	before := len(p.headers)
	req, _ = http.NewRequest("GET", "https://"+tlsName+"/small", nil)
	req.Host = "elsewhere.test"
	resp, err = p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || len(p.headers) != before {
		t.Errorf("Host elsewhere.test: %d, server saw %d more", resp.StatusCode, len(p.headers)-before)
	}
	var kinds []string
	for _, f := range p.e.Log("vm", 0).Flows {
		kinds = append(kinds, f.Kind+" "+f.Verdict+" "+f.Reason)
		if strings.Contains(f.Reason, benchSecret) || strings.Contains(f.Name, benchSecret) {
			t.Errorf("a flow holds the value: %+v", f)
		}
	}
	for _, want := range []string{"tls allow secrets api", "tls deny placeholder of secret other", "http deny Host differs"} {
		if !slices.ContainsFunc(kinds, func(k string) bool { return strings.HasPrefix(k, want) }) {
			t.Errorf("flow log lacks %q: %q", want, kinds)
		}
	}
}
