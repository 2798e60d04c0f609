package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// gateQuery is one recorded Gate.AllowQuery call.
type gateQuery struct {
	Src   netip.Addr
	Name  string
	Qtype uint16
}

// gateLearn is one recorded Gate.Learn call.
type gateLearn struct {
	Src   netip.Addr
	Name  string
	Addrs []netip.Addr
	TTL   time.Duration
}

// fakeGate allows the names in allow (fully qualified, lowercase) and
// records every call; Learn returns LearnErr.
type fakeGate struct {
	allow    map[string]bool
	LearnErr error

	mu      sync.Mutex
	queries []gateQuery
	learned []gateLearn
}

var _ Gate = (*fakeGate)(nil)

// AllowQuery records the call and allows the names in g.allow.
func (g *fakeGate) AllowQuery(src netip.Addr, name string, qtype uint16) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queries = append(g.queries, gateQuery{src, name, qtype})
	return g.allow[strings.ToLower(name)]
}

// Learn records the call and returns g.LearnErr.
func (g *fakeGate) Learn(_ context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.learned = append(g.learned, gateLearn{src, name, slices.Clone(addrs), ttl})
	return g.LearnErr
}

// calls returns copies of the recorded calls.
func (g *fakeGate) calls() ([]gateQuery, []gateLearn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.queries), slices.Clone(g.learned)
}

// rr parses one resource record in zone-file form or fails the test.
func rr(t testing.TB, s string) mdns.RR {
	t.Helper()
	r, err := mdns.NewRR(s)
	if err != nil {
		t.Fatalf("NewRR(%q): %v", s, err)
	}
	return r
}

// sections are the records an upstream answers a name with.
type sections struct {
	answer, ns, extra []mdns.RR
}

// chainUpstream is a resolver on loopback answering from a fixed table of
// sections (by lowercase name) and counting the queries it gets.
type chainUpstream struct {
	addr    string
	queries atomic.Int32
}

// startChainUpstream serves answers over UDP and TCP; other names get
// NXDOMAIN.
func startChainUpstream(t *testing.T, answers map[string]sections) *chainUpstream {
	t.Helper()
	u := &chainUpstream{}
	pc, l, err := listenPair(context.Background(), "127.0.0.1:0") // the same port for both
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.queries.Add(1)
		m := new(mdns.Msg).SetReply(r)
		a, ok := answers[strings.ToLower(r.Question[0].Name)]
		if !ok {
			m.Rcode = mdns.RcodeNameError
		}
		for _, x := range a.answer {
			m.Answer = append(m.Answer, mdns.Copy(x))
		}
		for _, x := range a.ns {
			m.Ns = append(m.Ns, mdns.Copy(x))
		}
		for _, x := range a.extra {
			m.Extra = append(m.Extra, mdns.Copy(x))
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

// startGatedServer starts a server forwarding to upstream with gate g.
func startGatedServer(t *testing.T, upstream string, g Gate) *Server {
	t.Helper()
	s := New([]string{upstream}, nil)
	s.ForwardTimeout = 2 * time.Second
	s.Gate = g
	if err := s.Listen(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// chainAnswers is the upstream table of the gate tests: www.allowed.test
// is a CNAME chain given out of order, through cdn.allowed.test to
// edge.cdn.test and its two addresses, padded with records about names
// off the chain in every section.
func chainAnswers(t *testing.T) map[string]sections {
	return map[string]sections{
		"www.allowed.test.": {
			answer: []mdns.RR{
				rr(t, "evil.test. 10 IN A 203.0.113.66"),
				rr(t, "edge.cdn.test. 300 IN A 192.0.2.2"),
				rr(t, "cdn.allowed.test. 120 IN CNAME edge.cdn.test."),
				rr(t, "side.test. 5 IN CNAME edge.cdn.test."),
				rr(t, "edge.cdn.test. 300 IN A 192.0.2.1"),
				rr(t, "www.allowed.test. 600 IN CNAME cdn.allowed.test."),
			},
			ns: []mdns.RR{
				rr(t, "allowed.test. 3600 IN NS ns1.allowed.test."),
				rr(t, "ns9.evil.test. 3600 IN A 203.0.113.78"),
			},
			extra: []mdns.RR{rr(t, "glue.evil.test. 30 IN A 203.0.113.77")},
		},
		"plain.allowed.test.": {answer: []mdns.RR{rr(t, "plain.allowed.test. 3600 IN A 198.51.100.5")}},
		"nodata.allowed.test.": {ns: []mdns.RR{
			rr(t, "allowed.test. 300 IN SOA ns1.allowed.test. hostmaster.allowed.test. 1 3600 600 86400 300"),
		}},
		"refused.test.": {answer: []mdns.RR{rr(t, "refused.test. 60 IN A 198.51.100.6")}},
	}
}

// rrStrings is the records of a section as sorted strings.
func rrStrings(rrs []mdns.RR) []string {
	var out []string
	for _, r := range rrs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

func TestServer_gateLearnsChain(t *testing.T) {
	up := startChainUpstream(t, chainAnswers(t))
	g := &fakeGate{allow: map[string]bool{"www.allowed.test.": true, "plain.allowed.test.": true, "nodata.allowed.test.": true}}
	s := startGatedServer(t, up.addr, g)
	addr := s.Addrs()[0]
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			_, before := g.calls()
			resp := query(t, proto, addr, "WWW.Allowed.Test.", mdns.TypeA)
			if resp.Rcode != mdns.RcodeSuccess {
				t.Fatalf("rcode %s", mdns.RcodeToString[resp.Rcode])
			}
			_, learned := g.calls()
			if len(learned) != len(before)+1 {
				t.Fatalf("%d Learn calls, want one", len(learned)-len(before))
			}
			l := learned[len(learned)-1]
			got := slices.Clone(l.Addrs)
			slices.SortFunc(got, netip.Addr.Compare)
			want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
			if !slices.Equal(got, want) || l.TTL != 120*time.Second || l.Src != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("Learn(%s, %s, %v, %v), want the chain's addresses %v and its shortest TTL 2m0s, from 127.0.0.1", l.Src, l.Name, l.Addrs, l.TTL, want)
			}
			if !strings.EqualFold(l.Name, "www.allowed.test.") {
				t.Errorf("Learn for %q, want the queried name", l.Name)
			}
			wantAnswer := rrStrings([]mdns.RR{
				rr(t, "edge.cdn.test. 300 IN A 192.0.2.2"),
				rr(t, "cdn.allowed.test. 120 IN CNAME edge.cdn.test."),
				rr(t, "edge.cdn.test. 300 IN A 192.0.2.1"),
				rr(t, "www.allowed.test. 600 IN CNAME cdn.allowed.test."),
			})
			if got := rrStrings(resp.Answer); !slices.Equal(got, wantAnswer) {
				t.Errorf("answer\n%s\nwant (the chain only)\n%s", strings.Join(got, "\n"), strings.Join(wantAnswer, "\n"))
			}
			for _, x := range resp.Extra {
				if x.Header().Rrtype != mdns.TypeOPT {
					t.Errorf("additional record %v reached the client: the gate never saw it", x)
				}
			}
			if got := rrStrings(resp.Ns); len(got) != 1 || !strings.Contains(got[0], "NS\tns1.allowed.test.") {
				t.Errorf("authority %q, want only the NS record (no address the gate never saw)", got)
			}
		})
	}

	// A plain answer: its own TTL.
	resp := query(t, "udp", addr, "plain.allowed.test.", mdns.TypeA)
	_, learned := g.calls()
	l := learned[len(learned)-1]
	if fmt.Sprint(answerIPs(resp)) != "[198.51.100.5]" || fmt.Sprint(l.Addrs) != "[198.51.100.5]" || l.TTL != time.Hour {
		t.Errorf("plain: answer %v, Learn %v %v", answerIPs(resp), l.Addrs, l.TTL)
	}

	// NODATA: nothing to open, and the SOA stays for negative caching.
	resp = query(t, "udp", addr, "nodata.allowed.test.", mdns.TypeA)
	_, learned = g.calls()
	l = learned[len(learned)-1]
	if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 0 || len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != mdns.TypeSOA {
		t.Errorf("nodata: rcode %s answer %v authority %v, want NODATA with the SOA", mdns.RcodeToString[resp.Rcode], resp.Answer, resp.Ns)
	}
	if l.Name != "nodata.allowed.test." || len(l.Addrs) != 0 {
		t.Errorf("nodata: Learn(%s, %v), want no addresses", l.Name, l.Addrs)
	}
}

func TestServer_gateRefuses(t *testing.T) {
	up := startChainUpstream(t, chainAnswers(t))
	g := &fakeGate{allow: map[string]bool{"www.allowed.test.": true}}
	s := startGatedServer(t, up.addr, g)
	addr := s.Addrs()[0]
	for _, proto := range []string{"udp", "tcp"} {
		resp := query(t, proto, addr, "refused.test.", mdns.TypeA)
		if resp.Rcode != mdns.RcodeRefused || len(resp.Answer) != 0 {
			t.Errorf("%s: rcode %s answers %v, want REFUSED and nothing", proto, mdns.RcodeToString[resp.Rcode], resp.Answer)
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("upstream got %d queries for a refused name", n)
	}
	queries, learned := g.calls()
	if len(learned) != 0 {
		t.Errorf("Learn called for a refused name: %+v", learned)
	}
	want := gateQuery{netip.MustParseAddr("127.0.0.1"), "refused.test.", mdns.TypeA}
	if len(queries) != 2 || queries[0] != want || queries[1] != want {
		t.Errorf("AllowQuery calls %+v, want two of %+v", queries, want)
	}
	// The query type reaches the gate: a TXT query for an allowed name
	// is the gate's to refuse.
	query(t, "udp", addr, "www.allowed.test.", mdns.TypeTXT)
	queries, _ = g.calls()
	if last := queries[len(queries)-1]; last.Qtype != mdns.TypeTXT || last.Name != "www.allowed.test." {
		t.Errorf("AllowQuery got %+v, want the TXT query", last)
	}
}

func TestServer_gateLearnFails(t *testing.T) {
	up := startChainUpstream(t, chainAnswers(t))
	g := &fakeGate{allow: map[string]bool{"www.allowed.test.": true}, LearnErr: errors.New("firewall full")}
	s := startGatedServer(t, up.addr, g)
	for _, proto := range []string{"udp", "tcp"} {
		resp := query(t, proto, s.Addrs()[0], "www.allowed.test.", mdns.TypeA)
		if resp.Rcode != mdns.RcodeServerFailure || len(resp.Answer) != 0 || len(resp.Extra) != 0 {
			t.Errorf("%s: rcode %s answer %v extra %v, want SERVFAIL and no records", proto, mdns.RcodeToString[resp.Rcode], resp.Answer, resp.Extra)
		}
	}
	if _, learned := g.calls(); len(learned) != 2 {
		t.Errorf("%d Learn calls, want 2", len(learned))
	}
}

// TestServer_gateUpstreamNegative: a negative upstream answer opens
// nothing and reaches the client as it is.
func TestServer_gateUpstreamNegative(t *testing.T) {
	up := startChainUpstream(t, chainAnswers(t))
	g := &fakeGate{allow: map[string]bool{"missing.allowed.test.": true}}
	s := startGatedServer(t, up.addr, g)
	resp := query(t, "udp", s.Addrs()[0], "missing.allowed.test.", mdns.TypeA)
	if resp.Rcode != mdns.RcodeNameError {
		t.Errorf("rcode %s, want the upstream's NXDOMAIN", mdns.RcodeToString[resp.Rcode])
	}
	if _, learned := g.calls(); len(learned) != 0 {
		t.Errorf("Learn called for NXDOMAIN: %+v", learned)
	}
}

func TestServer_gateSkipsZone(t *testing.T) {
	up := startChainUpstream(t, chainAnswers(t))
	g := &fakeGate{} // refuses everything
	s := startGatedServer(t, up.addr, g)
	s.Set("t1", netip.MustParseAddr("10.77.0.2"))
	addr := s.Addrs()[0]
	for _, proto := range []string{"udp", "tcp"} {
		if got := answerIPs(query(t, proto, addr, "t1.vm.", mdns.TypeA)); fmt.Sprint(got) != "[10.77.0.2]" {
			t.Errorf("%s t1.vm: %v", proto, got)
		}
		if resp := query(t, proto, addr, "nope.vm.", mdns.TypeTXT); resp.Rcode != mdns.RcodeNameError {
			t.Errorf("%s nope.vm: rcode %s, want the zone's NXDOMAIN", proto, mdns.RcodeToString[resp.Rcode])
		}
		if resp := query(t, proto, addr, "vm.", mdns.TypeSOA); resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 1 {
			t.Errorf("%s vm. SOA: rcode %s answers %v", proto, mdns.RcodeToString[resp.Rcode], resp.Answer)
		}
	}
	if queries, learned := g.calls(); len(queries) != 0 || len(learned) != 0 {
		t.Errorf("the gate was consulted for the zone: %+v %+v", queries, learned)
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("upstream got %d queries for the zone", n)
	}
}
