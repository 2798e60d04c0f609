package egress

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/hostnet"
	"banger/internal/termsafe"
)

// Firewall is the part of the host network the engine drives
// (hostnet.Manager).
type Firewall interface {
	// Police limits the egress of the guest at ip as p says (p.Open: only
	// its HTTP and HTTPS go to the proxy), or lifts the limit when p is
	// nil, forgetting the guest's passes either way.
	Police(ctx context.Context, ip netip.Addr, p *hostnet.Policed) error
	// AddPasses opens addresses to the policed guest at ip for a while,
	// returning once the firewall holds them.
	AddPasses(ctx context.Context, ip netip.Addr, passes []hostnet.Pass) error
}

// Pass lifetimes: a learned address stays open at least MinPassTTL (a
// guest may connect a little after its answer expired) and at most
// MaxPassTTL (an upstream cannot open an address for a week).
const (
	MinPassTTL = time.Minute
	MaxPassTTL = 24 * time.Hour
)

// LogSize bounds each VM's flow log.
const LogSize = 1024

// DNS query types the engine lets a policed guest ask about an allowed
// name: A, AAAA and CNAME. Every other type (TXT, NULL, ANY, ...) is
// refused, so allowed names carry no tunnel.
const (
	qtypeA     = 1
	qtypeCNAME = 5
	qtypeAAAA  = 28
)

// Engine holds the policies of running VMs, keyed by their address, and
// decides for the DNS server and the proxy. It is safe for concurrent
// use.
type Engine struct {
	fw     Firewall
	denied func(netip.Addr) bool
	log    *slog.Logger
	now    func() time.Time

	// Secrets are the configured secrets; CAs loads a VM's egress CA.
	// Set both before the proxy serves.
	Secrets *Secrets
	CAs     func(vmID string) (*CA, error)

	// fwMu orders the engine's firewall changes: a Learn of the old
	// policy never lands after an Update or Unbind reset the guest.
	fwMu sync.Mutex

	mu     sync.Mutex
	guests map[netip.Addr]*guest // bound (running) VMs
	logs   map[string]*flowLog   // by VM id; kept across stops, dropped by Forget
	cas    map[string]*CA        // by VM id, loaded on first use
}

// guest is one running VM's policy and what its DNS answers opened.
type guest struct {
	vmID    string
	pol     Policy
	learned map[netip.Addr]time.Time // address -> until
}

// New returns an engine driving fw. denied reports the addresses no
// DNS answer may open (the firewall's deny set; see hostnet.Denied).
func New(fw Firewall, denied func(netip.Addr) bool, logger *slog.Logger) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Engine{fw: fw, denied: denied, log: logger, now: time.Now,
		guests: map[netip.Addr]*guest{}, logs: map[string]*flowLog{}, cas: map[string]*CA{}}
}

// policeSpec is what the firewall does for a guest with policy p: nothing
// for an open guest without secrets; for an open guest with secrets only
// the proxy redirect; for allow and none, the limits.
func policeSpec(p Policy) *hostnet.Policed {
	if !p.Policed() && len(p.Secrets) == 0 {
		return nil
	}
	return &hostnet.Policed{Open: !p.Policed(), Grants: grants(p)}
}

// grants are the firewall grants of an allow policy's address rules.
func grants(p Policy) []hostnet.Grant {
	if p.Mode != ModeAllow {
		return nil
	}
	var out []hostnet.Grant
	for _, r := range p.Rules {
		if r.Host == "" {
			out = append(out, hostnet.Grant{Dst: r.Prefix, Lo: r.Lo, Hi: r.Hi, UDP: r.UDP})
		}
	}
	return out
}

// Bind applies the policy of the VM vmID at ip before its tap sends
// anything: the firewall polices it (or not, for open) from then on.
func (e *Engine) Bind(ctx context.Context, vmID string, ip netip.Addr, p Policy) error {
	e.fwMu.Lock()
	defer e.fwMu.Unlock()
	e.mu.Lock()
	e.guests[ip] = &guest{vmID: vmID, pol: p, learned: map[netip.Addr]time.Time{}}
	e.flows(vmID)
	e.mu.Unlock()
	if err := e.fw.Police(ctx, ip, policeSpec(p)); err != nil {
		e.mu.Lock()
		delete(e.guests, ip)
		e.mu.Unlock()
		return fmt.Errorf("bind net policy: %w", err)
	}
	return nil
}

// Unbind forgets the VM vmID (it stopped) and lifts its policing, so its
// address can be leased to another VM with another policy. Unbinding a
// VM that is not bound does nothing.
func (e *Engine) Unbind(ctx context.Context, vmID string) error {
	e.fwMu.Lock()
	defer e.fwMu.Unlock()
	e.mu.Lock()
	var ip netip.Addr
	for a, g := range e.guests {
		if g.vmID == vmID {
			ip = a
			delete(e.guests, a)
		}
	}
	e.mu.Unlock()
	if !ip.IsValid() {
		return nil
	}
	if err := e.fw.Police(ctx, ip, nil); err != nil {
		return fmt.Errorf("unbind net policy: %w", err)
	}
	return nil
}

// Update gives the running VM vmID a new policy at once. What its DNS
// answers opened is closed: the guest resolves again under the new
// policy. A VM that is not running is left alone (its stored policy
// applies at its next start).
func (e *Engine) Update(ctx context.Context, vmID string, p Policy) error {
	e.fwMu.Lock()
	defer e.fwMu.Unlock()
	e.mu.Lock()
	var ip netip.Addr
	for a, g := range e.guests {
		if g.vmID == vmID {
			ip = a
			g.pol = p
			g.learned = map[netip.Addr]time.Time{}
		}
	}
	e.mu.Unlock()
	if !ip.IsValid() {
		return nil
	}
	if err := e.fw.Police(ctx, ip, policeSpec(p)); err != nil {
		return fmt.Errorf("update net policy: %w", err)
	}
	e.record(vmID, api.Flow{Kind: "policy", Verdict: api.FlowAllow, Reason: "policy changed to " + p.Mode})
	return nil
}

// Enforced reports whether the VM vmID runs with a policed policy.
func (e *Engine) Enforced(vmID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, g := range e.guests {
		if g.vmID == vmID {
			return g.pol.Policed()
		}
	}
	return false
}

// Forget drops the flow log of the VM vmID (it was deleted).
func (e *Engine) Forget(vmID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.logs, vmID)
	delete(e.cas, vmID)
}

// vmAt returns the VM bound at src, policed or not.
func (e *Engine) vmAt(src netip.Addr) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.guests[src.Unmap()]
	if !ok {
		return "", false
	}
	return g.vmID, true
}

// policyOf returns the VM and policy of the policed guest at src.
func (e *Engine) policyOf(src netip.Addr) (vmID string, p Policy, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.policed(src)
	if !ok {
		return "", Policy{}, false
	}
	return g.vmID, g.pol, true
}

// policed returns the guest at src when it is policed.
func (e *Engine) policed(src netip.Addr) (*guest, bool) {
	g, ok := e.guests[src.Unmap()]
	if !ok || !g.pol.Policed() {
		return nil, false
	}
	return g, true
}

// AllowQuery reports whether the DNS server may resolve name (lowercase,
// fully qualified or not) of type qtype upstream for src. Guests that
// are not policed, and the host, may resolve anything; a policed guest
// only A, AAAA and CNAME queries for names its policy allows. Refusals
// are logged as flows.
func (e *Engine) AllowQuery(src netip.Addr, name string, qtype uint16) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	vmID, pol, ok := e.policyOf(src)
	if !ok {
		return true
	}
	reason := ""
	switch {
	case !pol.resolvable(name):
		reason = "name not allowed"
	case qtype != qtypeA && qtype != qtypeAAAA && qtype != qtypeCNAME:
		reason = fmt.Sprintf("query type %d not allowed", qtype)
	}
	if reason != "" {
		e.record(vmID, api.Flow{Kind: api.FlowDNS, Verdict: api.FlowDeny, Name: name, Reason: reason})
		return false
	}
	return true
}

// Learn opens, for a policed guest at src, the IPv4 addresses an upstream
// answered for name, on the ports of the rules that allow name, until the
// answer's TTL (clamped to MinPassTTL-MaxPassTTL) runs out. Addresses in
// the deny set are not opened. It returns once the firewall holds them,
// so the guest may connect as soon as it has the answer; an error means
// the answer must not be given.
func (e *Engine) Learn(ctx context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	ttl = min(max(ttl, MinPassTTL), MaxPassTTL)
	e.fwMu.Lock()
	defer e.fwMu.Unlock()
	vmID, pol, ok := e.policyOf(src)
	if !ok {
		return nil
	}
	var passes []hostnet.Pass
	var opened, refused []string
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		if e.denied(a) {
			refused = append(refused, a.String())
			continue
		}
		for _, r := range pol.Rules {
			if pol.Mode == ModeAllow && r.MatchName(name) {
				passes = append(passes, hostnet.Pass{Dst: a, Lo: r.Lo, Hi: r.Hi, UDP: r.UDP, TTL: ttl})
			}
		}
		opened = append(opened, a.String())
	}
	if len(refused) > 0 {
		e.record(vmID, api.Flow{Kind: api.FlowDNS, Verdict: api.FlowDeny, Name: name, Addr: strings.Join(refused, " "),
			Reason: "answer in a denied range (private, link-local, the host)"})
	}
	if len(passes) > 0 {
		if err := e.fw.AddPasses(ctx, src.Unmap(), passes); err != nil {
			e.record(vmID, api.Flow{Kind: api.FlowDNS, Verdict: api.FlowDeny, Name: name, Reason: "firewall: " + err.Error()})
			return fmt.Errorf("open %s for %s: %w", name, src, err)
		}
		until := e.now().Add(ttl)
		e.mu.Lock()
		if g, ok := e.policed(src); ok && g.vmID == vmID {
			for _, p := range passes {
				if g.learned[p.Dst].Before(until) {
					g.learned[p.Dst] = until
				}
			}
		}
		e.mu.Unlock()
	}
	e.record(vmID, api.Flow{Kind: api.FlowDNS, Verdict: api.FlowAllow, Name: name, Addr: strings.Join(opened, " ")})
	return nil
}

// judge decides a proxied connection from src to dst that named name
// (SNI or Host): the policy must allow name on dst's port, and dst must
// be an address banger's DNS answered this guest (and has not expired),
// so a guest can neither name an allowed host while connecting
// elsewhere nor reach an allowed address under another name.
func (e *Engine) judge(src netip.Addr, name string, dst netip.AddrPort) (vmID, reason string, known bool) {
	e.mu.Lock()
	g, ok := e.guests[src.Unmap()]
	if ok && !g.pol.Policed() {
		// Open, proxied for its secrets: anything but the deny set, which
		// the firewall would have dropped had the proxy not taken it.
		vmID := g.vmID
		e.mu.Unlock()
		if e.denied(dst.Addr()) {
			return vmID, "destination in a denied range (private, link-local, the host)", true
		}
		return vmID, "", true
	}
	defer e.mu.Unlock()
	if !ok {
		return "", "not a policed guest", false
	}
	switch until, learned := g.learned[dst.Addr().Unmap()]; {
	case name == "":
		return g.vmID, "no name (TLS without SNI, or HTTP without Host)", true
	case !g.pol.allowsName(name, dst.Port()):
		return g.vmID, "name not allowed", true
	case !learned:
		return g.vmID, "address not resolved for this VM", true
	case e.now().After(until):
		return g.vmID, "address's DNS answer expired", true
	}
	return g.vmID, "", true
}

// flowLog is one VM's bounded flow log and counters.
type flowLog struct {
	ring            []api.Flow
	next            uint64 // Seq of the next flow
	allowed, denied uint64
}

// flows returns vmID's log, making it. e.mu must be held.
func (e *Engine) flows(vmID string) *flowLog {
	l := e.logs[vmID]
	if l == nil {
		l = &flowLog{next: 1}
		e.logs[vmID] = l
	}
	return l
}

// record appends f to the log of vmID.
func (e *Engine) record(vmID string, f api.Flow) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.flows(vmID)
	// Names and reasons can be the guest's (an HTTP Host of up to
	// MaxHello bytes): the log keeps a bounded prefix of each.
	f.Name, f.Addr, f.Reason = termsafe.Truncate(f.Name, MaxFlowText), termsafe.Truncate(f.Addr, MaxFlowText), termsafe.Truncate(f.Reason, MaxFlowText)
	f.Seq, f.Time = l.next, e.now().UTC()
	l.next++
	switch f.Verdict {
	case api.FlowAllow:
		l.allowed++
	case api.FlowDeny:
		l.denied++
	}
	if len(l.ring) == LogSize {
		copy(l.ring, l.ring[1:])
		l.ring = l.ring[:LogSize-1]
	}
	l.ring = append(l.ring, f)
	// Debug, not info: a guest decides how often this happens, and the
	// flow log, bounded, is where a user reads it.
	if f.Verdict == api.FlowDeny {
		e.log.Debug("egress denied", "vm", vmID, "kind", f.Kind, "name", f.Name, "addr", f.Addr, "reason", f.Reason)
	}
}

// MaxFlowText bounds each text field of a flow, in bytes.
const MaxFlowText = 512

// Counts returns how many flows of the VM vmID were allowed and denied.
func (e *Engine) Counts(vmID string) (allowed, denied uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.logs[vmID]; l != nil {
		return l.allowed, l.denied
	}
	return 0, 0
}

// Log returns the flows of the VM vmID with Seq > after, oldest first.
func (e *Engine) Log(vmID string, after uint64) api.NetLog {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.logs[vmID]
	if l == nil {
		return api.NetLog{Flows: []api.Flow{}, Next: after}
	}
	out := api.NetLog{Flows: []api.Flow{}, Next: max(after, l.next-1)}
	if len(l.ring) > 0 && l.ring[0].Seq > after+1 {
		out.Lost = l.ring[0].Seq - after - 1
	}
	for _, f := range l.ring {
		if f.Seq > after {
			out.Flows = append(out.Flows, f)
		}
	}
	return out
}

// refusedRepeat is how long identical refused packets (same guest,
// destination, protocol and port) make one flow: a retrying client or a
// flood fills the log with one line, not hundreds.
const refusedRepeat = 10 * time.Second

// Refused records a packet the firewall dropped for a policed guest (from
// hostnet's refused-packet log).
func (e *Engine) Refused(r hostnet.Refused) {
	vmID, ok := e.vmAt(r.Src)
	if !ok {
		return
	}
	e.mu.Lock()
	l := e.flows(vmID)
	if n := len(l.ring); n > 0 {
		last := l.ring[n-1]
		if last.Kind == api.FlowIP && last.Addr == r.Dst.String() && last.Port == int(r.Port) &&
			strings.HasPrefix(last.Reason, r.Proto+" ") && e.now().Sub(last.Time) < refusedRepeat {
			e.mu.Unlock()
			return
		}
	}
	e.mu.Unlock()
	e.record(vmID, api.Flow{Kind: api.FlowIP, Verdict: api.FlowDeny, Addr: r.Dst.String(), Port: int(r.Port),
		Reason: r.Proto + " dropped by the firewall"})
}
