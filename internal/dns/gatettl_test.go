package dns

import (
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestServer_gateCapsTTL: a gated answer is cached no longer than a pass
// may last, whatever TTL the upstream gave.
func TestServer_gateCapsTTL(t *testing.T) {
	up := startChainUpstream(t, map[string]sections{
		"long.allowed.test.": {answer: []mdns.RR{rr(t, "long.allowed.test. 2000000 IN A 198.51.100.7")}},
	})
	g := &fakeGate{allow: map[string]bool{"long.allowed.test.": true}}
	s := startGatedServer(t, up.addr, g)
	resp := query(t, "udp", s.Addrs()[0], "long.allowed.test.", mdns.TypeA)
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Ttl != uint32(MaxGatedTTL/time.Second) {
		t.Fatalf("answer %v, want one record with TTL %d", resp.Answer, uint32(MaxGatedTTL/time.Second))
	}
}
