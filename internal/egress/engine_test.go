package egress

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
	"banger/internal/hostnet"
)

// policeCall is one recorded Firewall.Police call; Spec is nil when the
// call lifted the guest's limits.
type policeCall struct {
	IP   netip.Addr
	Spec *hostnet.Policed
}

// passCall is one recorded Firewall.AddPasses call.
type passCall struct {
	IP     netip.Addr
	Passes []hostnet.Pass
}

// fakeFirewall records what the engine asks of the firewall; PoliceErr
// and PassErr, when set, make the calls fail.
type fakeFirewall struct {
	mu        sync.Mutex
	police    []policeCall
	passes    []passCall
	PoliceErr error
	PassErr   error
}

var _ Firewall = (*fakeFirewall)(nil)

// Police records the call and returns PoliceErr.
func (f *fakeFirewall) Police(_ context.Context, ip netip.Addr, p *hostnet.Policed) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var spec *hostnet.Policed
	if p != nil {
		c := *p
		c.Grants, c.Passes = slices.Clone(p.Grants), slices.Clone(p.Passes)
		spec = &c
	}
	f.police = append(f.police, policeCall{ip, spec})
	return f.PoliceErr
}

// AddPasses records the call and returns PassErr.
func (f *fakeFirewall) AddPasses(_ context.Context, ip netip.Addr, passes []hostnet.Pass) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passes = append(f.passes, passCall{ip, slices.Clone(passes)})
	return f.PassErr
}

// policeCalls returns the Police calls so far.
func (f *fakeFirewall) policeCalls() []policeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.police)
}

// passCalls returns the AddPasses calls so far.
func (f *fakeFirewall) passCalls() []passCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.passes)
}

// testClock is a settable clock for Engine.now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

// now returns the clock's time.
func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// advance moves the clock forward by d.
func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// deniedTest is the deny set of the engine tests: 10.0.0.0/8 (standing
// in for the private ranges and the host) and 192.0.2.66.
func deniedTest(a netip.Addr) bool {
	return netip.MustParsePrefix("10.0.0.0/8").Contains(a) || a == netip.MustParseAddr("192.0.2.66")
}

// newTestEngine returns an engine on a fake firewall and a test clock.
func newTestEngine(t testing.TB, denied func(netip.Addr) bool) (*Engine, *fakeFirewall, *testClock) {
	t.Helper()
	fw := &fakeFirewall{}
	if denied == nil {
		denied = func(netip.Addr) bool { return false }
	}
	clk := &testClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := New(fw, denied, nil)
	e.now = clk.now
	return e, fw, clk
}

// mustPolicy parses an allow list (or a bare mode) or fails the test.
func mustPolicy(t testing.TB, mode string, entries ...string) Policy {
	t.Helper()
	p, err := Parse(mode, entries, ModeOpen, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mustBind binds vmID at ip with p or fails the test.
func mustBind(t testing.TB, e *Engine, vmID string, ip netip.Addr, p Policy) {
	t.Helper()
	if err := e.Bind(context.Background(), vmID, ip, p); err != nil {
		t.Fatalf("Bind %s: %v", vmID, err)
	}
}

// addrs parses addresses.
func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// flowsOf returns the flows of vmID as flowsSince does, from the start.
func flowsOf(e *Engine, vmID string) []string { return flowsSince(e, vmID, 0) }

// flowsSince returns the flows of vmID after seq after as "verdict kind
// name addr reason" lines (empty fields left out), oldest first.
func flowsSince(e *Engine, vmID string, after uint64) []string {
	var out []string
	for _, f := range e.Log(vmID, after).Flows {
		fields := slices.DeleteFunc([]string{f.Verdict, f.Kind, f.Name, f.Addr, f.Reason}, func(s string) bool { return s == "" })
		out = append(out, strings.Join(fields, " "))
	}
	return out
}

// guestIP and guest2IP are the addresses of the engine tests' guests.
var (
	guestIP  = netip.MustParseAddr("10.77.0.2")
	guest2IP = netip.MustParseAddr("10.77.0.3")
)

func TestEngine_Bind(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	mustBind(t, e, "open", guestIP, Open)
	mustBind(t, e, "allow", guest2IP, mustPolicy(t, ModeAllow, "a.test:443", "192.0.2.0/24:22", "*.b.test", "198.51.100.7"))
	mustBind(t, e, "none", netip.MustParseAddr("10.77.0.4"), mustPolicy(t, ModeNone))
	want := []policeCall{
		{guestIP, nil},
		{guest2IP, &hostnet.Policed{Grants: []hostnet.Grant{
			{Dst: netip.MustParsePrefix("192.0.2.0/24"), Lo: 22, Hi: 22},
			{Dst: netip.MustParsePrefix("198.51.100.7/32"), Lo: 1, Hi: 65535},
		}}},
		{netip.MustParseAddr("10.77.0.4"), &hostnet.Policed{}},
	}
	if diff := cmp.Diff(want, fw.policeCalls(), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Police calls (-want +got):\n%s", diff)
	}
	for vm, want := range map[string]bool{"open": false, "allow": true, "none": true, "unknown": false} {
		if got := e.Enforced(vm); got != want {
			t.Errorf("Enforced(%s) = %v, want %v", vm, got, want)
		}
	}
}

func TestEngine_Bind_firewallFails(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	fw.PoliceErr = errors.New("nft: boom")
	err := e.Bind(context.Background(), "vm", guestIP, mustPolicy(t, ModeNone))
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Bind = %v, want the firewall's error", err)
	}
	// The guest is not left half bound: nothing treats it as policed.
	if e.Enforced("vm") {
		t.Error("Enforced after a failed Bind")
	}
	if !e.AllowQuery(guestIP, "anything.test", qtypeTXT) {
		t.Error("AllowQuery polices a guest whose Bind failed")
	}
}

// qtypeTXT is the DNS type of TXT records, a tunnel's favourite.
const qtypeTXT = 16

func TestEngine_AllowQuery(t *testing.T) {
	e, _, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test:443", "*.b.test", "192.0.2.1"))
	mustBind(t, e, "none", guest2IP, mustPolicy(t, ModeNone))
	mustBind(t, e, "open", netip.MustParseAddr("10.77.0.9"), Open)
	tests := []struct {
		src   string
		name  string
		qtype uint16
		want  bool
	}{
		{"127.0.0.1", "anything.test.", qtypeTXT, true}, // the host
		{"10.77.0.9", "anything.test.", qtypeTXT, true}, // an open guest
		{"10.77.0.50", "anything.test.", 255, true},     // not a bound guest
		{"10.77.0.2", "a.test.", qtypeA, true},
		{"10.77.0.2", "A.Test.", qtypeAAAA, true},
		{"10.77.0.2", "a.test", qtypeCNAME, true},
		{"::ffff:10.77.0.2", "a.test.", qtypeA, true},
		{"10.77.0.2", "www.b.test.", qtypeA, true},
		{"10.77.0.2", "a.test.", qtypeTXT, false},
		{"10.77.0.2", "a.test.", 255, false}, // ANY
		{"10.77.0.2", "a.test.", 10, false},  // NULL
		{"10.77.0.2", "b.test.", qtypeA, false},
		{"10.77.0.2", "evil.test.", qtypeA, false},
		{"10.77.0.2", "a.test.evil.test.", qtypeA, false},
		{"10.77.0.2", "1.2.0.192.in-addr.arpa.", 12, false},
		{"::ffff:10.77.0.2", "evil.test.", qtypeA, false},
		{"10.77.0.3", "a.test.", qtypeA, false}, // none
	}
	for _, tt := range tests {
		if got := e.AllowQuery(netip.MustParseAddr(tt.src), tt.name, tt.qtype); got != tt.want {
			t.Errorf("AllowQuery(%s, %s, %d) = %v, want %v", tt.src, tt.name, tt.qtype, got, tt.want)
		}
	}
	wantVM := []string{
		"deny dns a.test query type 16 not allowed",
		"deny dns a.test query type 255 not allowed",
		"deny dns a.test query type 10 not allowed",
		"deny dns b.test name not allowed",
		"deny dns evil.test name not allowed",
		"deny dns a.test.evil.test name not allowed",
		"deny dns 1.2.0.192.in-addr.arpa name not allowed",
		"deny dns evil.test name not allowed",
	}
	if diff := cmp.Diff(wantVM, flowsOf(e, "vm")); diff != "" {
		t.Errorf("vm flows (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"deny dns a.test name not allowed"}, flowsOf(e, "none")); diff != "" {
		t.Errorf("none flows (-want +got):\n%s", diff)
	}
	if a, d := e.Counts("vm"); a != 0 || d != uint64(len(wantVM)) {
		t.Errorf("Counts(vm) = %d, %d; want 0, %d", a, d, len(wantVM))
	}
	if a, d := e.Counts("open"); a != 0 || d != 0 {
		t.Errorf("Counts(open) = %d, %d; want nothing logged", a, d)
	}
}

func TestEngine_Learn(t *testing.T) {
	e, fw, _ := newTestEngine(t, deniedTest)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test:443", "a.test:80-81", "other.test", "192.0.2.0/24:22"))
	ctx := context.Background()
	err := e.Learn(ctx, guestIP, "A.test.", addrs("198.51.100.1", "10.1.2.3", "::ffff:198.51.100.2", "2001:db8::1", "192.0.2.66"), 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pass := func(a string, lo, hi uint16, ttl time.Duration) hostnet.Pass {
		return hostnet.Pass{Dst: netip.MustParseAddr(a), Lo: lo, Hi: hi, TTL: ttl}
	}
	want := []passCall{{guestIP, []hostnet.Pass{
		pass("198.51.100.1", 443, 443, 5*time.Minute),
		pass("198.51.100.1", 80, 81, 5*time.Minute),
		pass("198.51.100.2", 443, 443, 5*time.Minute),
		pass("198.51.100.2", 80, 81, 5*time.Minute),
	}}}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(want, fw.passCalls(), cmpAddr); diff != "" {
		t.Errorf("AddPasses (-want +got):\n%s", diff)
	}
	wantFlows := []string{
		"deny dns a.test 10.1.2.3 192.0.2.66 answer in a denied range (private, link-local, the host)",
		"allow dns a.test 198.51.100.1 198.51.100.2",
	}
	if diff := cmp.Diff(wantFlows, flowsOf(e, "vm")); diff != "" {
		t.Errorf("flows (-want +got):\n%s", diff)
	}
	if a, d := e.Counts("vm"); a != 1 || d != 1 {
		t.Errorf("Counts = %d, %d; want 1, 1", a, d)
	}
	// What was learned is what the proxy accepts; the denied answers
	// are not.
	for dst, wantReason := range map[string]string{
		"198.51.100.1:443": "",
		"198.51.100.2:80":  "",
		"10.1.2.3:443":     "address not resolved for this VM",
		"192.0.2.66:443":   "address not resolved for this VM",
	} {
		if _, reason, _ := e.judge(guestIP, "a.test", netip.MustParseAddrPort(dst)); reason != wantReason {
			t.Errorf("judge a.test -> %s: %q, want %q", dst, reason, wantReason)
		}
	}

	// An answer of denied addresses only opens nothing.
	before := len(fw.passCalls())
	if err := e.Learn(ctx, guestIP, "a.test", addrs("10.9.9.9"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := len(fw.passCalls()); n != before {
		t.Errorf("AddPasses called for denied addresses only")
	}
}

func TestEngine_Learn_ttl(t *testing.T) {
	for _, tt := range []struct {
		ttl, want time.Duration
	}{
		{0, MinPassTTL},
		{time.Second, MinPassTTL},
		{-time.Hour, MinPassTTL},
		{5 * time.Minute, 5 * time.Minute},
		{MaxPassTTL, MaxPassTTL},
		{7 * 24 * time.Hour, MaxPassTTL},
		{1 << 62, MaxPassTTL},
	} {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			e, fw, clk := newTestEngine(t, nil)
			mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test"))
			if err := e.Learn(context.Background(), guestIP, "a.test", addrs("198.51.100.1"), tt.ttl); err != nil {
				t.Fatal(err)
			}
			calls := fw.passCalls()
			if len(calls) != 1 || len(calls[0].Passes) != 1 || calls[0].Passes[0].TTL != tt.want {
				t.Fatalf("AddPasses %+v, want one pass for %v", calls, tt.want)
			}
			// The proxy accepts the address for exactly that long.
			dst := netip.MustParseAddrPort("198.51.100.1:443")
			clk.advance(tt.want)
			if _, reason, _ := e.judge(guestIP, "a.test", dst); reason != "" {
				t.Errorf("at the TTL: %q, want allowed", reason)
			}
			clk.advance(time.Second)
			if _, reason, _ := e.judge(guestIP, "a.test", dst); reason != "address's DNS answer expired" {
				t.Errorf("past the TTL: %q, want expired", reason)
			}
		})
	}
}

func TestEngine_Learn_keepsLongest(t *testing.T) {
	e, _, clk := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test", "b.test"))
	ctx := context.Background()
	if err := e.Learn(ctx, guestIP, "a.test", addrs("198.51.100.1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	// A shorter answer later does not cut the longer pass short.
	if err := e.Learn(ctx, guestIP, "b.test", addrs("198.51.100.1"), MinPassTTL); err != nil {
		t.Fatal(err)
	}
	clk.advance(30 * time.Minute)
	if _, reason, _ := e.judge(guestIP, "b.test", netip.MustParseAddrPort("198.51.100.1:443")); reason != "" {
		t.Errorf("after 30m: %q, want still learned", reason)
	}
}

func TestEngine_Learn_firewallFails(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test"))
	fw.PassErr = errors.New("nft: no room")
	err := e.Learn(context.Background(), guestIP, "a.test", addrs("198.51.100.1"), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "no room") || !strings.Contains(err.Error(), "a.test") {
		t.Fatalf("Learn = %v, want an error naming the name and the firewall's error", err)
	}
	if _, reason, _ := e.judge(guestIP, "a.test", netip.MustParseAddrPort("198.51.100.1:443")); reason != "address not resolved for this VM" {
		t.Errorf("judge after a failed Learn: %q, want the address unknown", reason)
	}
	if diff := cmp.Diff([]string{"deny dns a.test firewall: nft: no room"}, flowsOf(e, "vm")); diff != "" {
		t.Errorf("flows (-want +got):\n%s", diff)
	}
}

func TestEngine_Learn_notPoliced(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	mustBind(t, e, "open", guestIP, Open)
	for _, src := range []string{"10.77.0.2", "127.0.0.1", "10.77.0.99"} {
		if err := e.Learn(context.Background(), netip.MustParseAddr(src), "a.test", addrs("198.51.100.1"), time.Hour); err != nil {
			t.Errorf("Learn for %s: %v", src, err)
		}
	}
	if n := len(fw.passCalls()); n != 0 {
		t.Errorf("%d AddPasses calls for guests that are not policed", n)
	}
	if flows := flowsOf(e, "open"); len(flows) != 0 {
		t.Errorf("flows logged for an open guest: %v", flows)
	}
}

func TestEngine_judge(t *testing.T) {
	e, _, clk := newTestEngine(t, deniedTest)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test:443", "*.b.test:8000-8080", "c.test"))
	mustBind(t, e, "vm2", guest2IP, mustPolicy(t, ModeAllow, "a.test:443", "c.test"))
	mustBind(t, e, "open", netip.MustParseAddr("10.77.0.9"), Open)
	ctx := context.Background()
	for _, l := range []struct {
		src, name, addr string
	}{
		{"10.77.0.2", "a.test", "198.51.100.1"},
		{"10.77.0.2", "www.b.test", "198.51.100.2"},
		{"10.77.0.3", "c.test", "198.51.100.3"},
	} {
		if err := e.Learn(ctx, netip.MustParseAddr(l.src), l.name, addrs(l.addr), MinPassTTL); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		src, name, dst string
		vmID, reason   string
		known          bool
	}{
		{"10.77.0.2", "a.test", "198.51.100.1:443", "vm", "", true},
		{"::ffff:10.77.0.2", "a.test", "[::ffff:198.51.100.1]:443", "vm", "", true},
		{"10.77.0.2", "www.b.test", "198.51.100.2:8080", "vm", "", true},
		// An allowed name may use any address the guest learned.
		{"10.77.0.2", "x.b.test", "198.51.100.1:8000", "vm", "", true},
		{"10.77.0.2", "a.test", "198.51.100.9:443", "vm", "address not resolved for this VM", true},
		// Another VM's answers are not this one's.
		{"10.77.0.2", "c.test", "198.51.100.3:443", "vm", "address not resolved for this VM", true},
		{"10.77.0.2", "evil.test", "198.51.100.1:443", "vm", "name not allowed", true},
		{"10.77.0.2", "b.test", "198.51.100.2:8000", "vm", "name not allowed", true},
		{"10.77.0.2", "a.test", "198.51.100.1:80", "vm", "name not allowed", true},
		{"10.77.0.2", "www.b.test", "198.51.100.2:443", "vm", "name not allowed", true},
		{"10.77.0.2", "www.b.test", "198.51.100.2:8081", "vm", "name not allowed", true},
		{"10.77.0.2", "", "198.51.100.1:443", "vm", "no name (TLS without SNI, or HTTP without Host)", true},
		{"10.77.0.3", "c.test", "198.51.100.3:443", "vm2", "", true},
		// An open guest is proxied only for its secrets: anything but the
		// deny set.
		{"10.77.0.9", "a.test", "198.51.100.1:443", "open", "", true},
		{"10.77.0.9", "", "198.51.100.200:443", "open", "", true},
		{"10.77.0.9", "a.test", "10.1.1.1:443", "open", "destination in a denied range (private, link-local, the host)", true},
		{"127.0.0.1", "a.test", "198.51.100.1:443", "", "not a policed guest", false},
		{"10.77.0.50", "a.test", "198.51.100.1:443", "", "not a policed guest", false},
	}
	for _, tt := range tests {
		vmID, reason, known := e.judge(netip.MustParseAddr(tt.src), tt.name, netip.MustParseAddrPort(tt.dst))
		if vmID != tt.vmID || reason != tt.reason || known != tt.known {
			t.Errorf("judge(%s, %q, %s) = %q, %q, %v; want %q, %q, %v", tt.src, tt.name, tt.dst, vmID, reason, known, tt.vmID, tt.reason, tt.known)
		}
	}
	clk.advance(MinPassTTL + time.Second)
	if _, reason, _ := e.judge(guestIP, "a.test", netip.MustParseAddrPort("198.51.100.1:443")); reason != "address's DNS answer expired" {
		t.Errorf("after the pass expired: %q", reason)
	}
	// Learning the name again opens it again.
	if err := e.Learn(ctx, guestIP, "a.test", addrs("198.51.100.1"), MinPassTTL); err != nil {
		t.Fatal(err)
	}
	if _, reason, _ := e.judge(guestIP, "a.test", netip.MustParseAddrPort("198.51.100.1:443")); reason != "" {
		t.Errorf("after learning again: %q", reason)
	}
}

func TestEngine_Update(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeAllow, "a.test", "b.test"))
	ctx := context.Background()
	if err := e.Learn(ctx, guestIP, "a.test", addrs("198.51.100.1"), time.Hour); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort("198.51.100.1:443")
	if err := e.Update(ctx, "vm", mustPolicy(t, ModeAllow, "a.test", "192.0.2.0/24:22")); err != nil {
		t.Fatal(err)
	}
	last := fw.policeCalls()[len(fw.policeCalls())-1]
	wantCall := policeCall{guestIP, &hostnet.Policed{Grants: []hostnet.Grant{{Dst: netip.MustParsePrefix("192.0.2.0/24"), Lo: 22, Hi: 22}}}}
	if diff := cmp.Diff(wantCall, last, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Police (-want +got):\n%s", diff)
	}
	// What the old policy learned is forgotten, even for a name the new
	// one still allows: the guest resolves again.
	if _, reason, _ := e.judge(guestIP, "a.test", dst); reason != "address not resolved for this VM" {
		t.Errorf("after Update: %q", reason)
	}
	if e.AllowQuery(guestIP, "b.test", qtypeA) {
		t.Error("b.test still resolvable after Update removed it")
	}
	flows := flowsOf(e, "vm")
	if len(flows) < 2 || flows[1] != "allow policy policy changed to allow" {
		t.Errorf("flows %q, want a policy change logged", flows)
	}

	// To open: no longer policed at all.
	if err := e.Update(ctx, "vm", Open); err != nil {
		t.Fatal(err)
	}
	if last := fw.policeCalls()[len(fw.policeCalls())-1]; last.Spec != nil || last.IP != guestIP {
		t.Errorf("Police %+v, want policing lifted", last)
	}
	if e.Enforced("vm") || !e.AllowQuery(guestIP, "evil.test", qtypeTXT) {
		t.Error("open guest still policed")
	}

	// A VM that is not running is left alone.
	n := len(fw.policeCalls())
	if err := e.Update(ctx, "stopped", mustPolicy(t, ModeNone)); err != nil {
		t.Fatal(err)
	}
	if len(fw.policeCalls()) != n {
		t.Error("Update of a VM that is not running touched the firewall")
	}
}

func TestEngine_Unbind(t *testing.T) {
	e, fw, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeNone))
	ctx := context.Background()
	e.AllowQuery(guestIP, "x.test", qtypeA) // one flow
	if err := e.Unbind(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	last := fw.policeCalls()[len(fw.policeCalls())-1]
	if last.Spec != nil || last.IP != guestIP {
		t.Errorf("Police %+v, want policing of %s lifted", last, guestIP)
	}
	if e.Enforced("vm") || !e.AllowQuery(guestIP, "x.test", qtypeA) {
		t.Error("still policed after Unbind")
	}
	// The log outlives the run, until Forget.
	if _, d := e.Counts("vm"); d != 1 {
		t.Errorf("Counts after Unbind: %d denied, want 1", d)
	}
	n := len(fw.policeCalls())
	if err := e.Unbind(ctx, "vm"); err != nil || len(fw.policeCalls()) != n {
		t.Errorf("second Unbind: %v, firewall calls %d -> %d; want nothing done", err, n, len(fw.policeCalls()))
	}
	e.Forget("vm")
	if a, d := e.Counts("vm"); a != 0 || d != 0 || len(e.Log("vm", 0).Flows) != 0 {
		t.Error("log kept after Forget")
	}
}

func TestEngine_Log(t *testing.T) {
	e, _, _ := newTestEngine(t, nil)
	mustBind(t, e, "vm", guestIP, mustPolicy(t, ModeNone))
	const extra = 10
	total := uint64(LogSize + extra)
	for i := range total {
		e.AllowQuery(guestIP, fmt.Sprintf("n%d.test", i+1), qtypeA)
	}
	if _, d := e.Counts("vm"); d != total {
		t.Errorf("Counts: %d denied, want %d (the counters outlive the ring)", d, total)
	}
	tests := []struct {
		after            uint64
		n                int
		first, next      uint64
		lost             uint64
		firstName        string
		descriptionOfRun string
	}{
		{0, LogSize, extra + 1, total, extra, "n11.test", "from the start: the first ten fell out"},
		{5, LogSize, extra + 1, total, extra - 5, "n11.test", "after 5"},
		{extra, LogSize, extra + 1, total, 0, "n11.test", "just the ring"},
		{total - 3, 3, total - 2, total, 0, fmt.Sprintf("n%d.test", total-2), "the last three"},
		{total, 0, 0, total, 0, "", "up to date"},
		{total + 7, 0, 0, total + 7, 0, "", "ahead of the log"},
	}
	for _, tt := range tests {
		l := e.Log("vm", tt.after)
		if len(l.Flows) != tt.n || l.Next != tt.next || l.Lost != tt.lost {
			t.Errorf("%s: Log(after %d) = %d flows next %d lost %d; want %d, %d, %d", tt.descriptionOfRun, tt.after, len(l.Flows), l.Next, l.Lost, tt.n, tt.next, tt.lost)
			continue
		}
		if tt.n > 0 && (l.Flows[0].Seq != tt.first || l.Flows[0].Name != tt.firstName) {
			t.Errorf("%s: first flow %+v, want seq %d %s", tt.descriptionOfRun, l.Flows[0], tt.first, tt.firstName)
		}
		for i := 1; i < len(l.Flows); i++ {
			if l.Flows[i].Seq != l.Flows[i-1].Seq+1 {
				t.Fatalf("%s: seq %d after %d", tt.descriptionOfRun, l.Flows[i].Seq, l.Flows[i-1].Seq)
			}
		}
	}
	// Paging with Next misses nothing and repeats nothing.
	e.AllowQuery(guestIP, "late.test", qtypeA)
	l := e.Log("vm", total)
	if len(l.Flows) != 1 || l.Flows[0].Name != "late.test" || l.Next != total+1 || l.Lost != 0 {
		t.Errorf("next page %+v", l)
	}
	if l := e.Log("unknown", 3); l.Flows == nil || len(l.Flows) != 0 || l.Next != 3 {
		t.Errorf("Log(unknown) = %+v, want an empty page (non-nil, for JSON) at 3", l)
	}
	f := e.Log("vm", total).Flows[0]
	if f.Kind != api.FlowDNS || f.Verdict != api.FlowDeny || f.Time.IsZero() || f.Time.Location() != time.UTC {
		t.Errorf("flow %+v: want a dns deny with a UTC time", f)
	}
}

// TestEngine_concurrent runs every entry point at once under -race.
func TestEngine_concurrent(t *testing.T) {
	e, _, _ := newTestEngine(t, nil)
	ctx := context.Background()
	pol := mustPolicy(t, ModeAllow, "a.test")
	var wg sync.WaitGroup
	for w := range 4 {
		ip := netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + w)})
		vm := fmt.Sprintf("vm%d", w)
		wg.Go(func() {
			for i := range 200 {
				switch i % 7 {
				case 0:
					e.Bind(ctx, vm, ip, pol)
				case 1:
					e.AllowQuery(ip, "b.test", qtypeA)
				case 2:
					e.Learn(ctx, ip, "a.test", addrs("198.51.100.1"), time.Minute)
				case 3:
					e.judge(ip, "a.test", netip.MustParseAddrPort("198.51.100.1:443"))
				case 4:
					e.Update(ctx, vm, pol)
				case 5:
					e.Log(vm, uint64(i))
					e.Counts(vm)
					e.Enforced(vm)
				case 6:
					e.Unbind(ctx, vm)
				}
			}
		})
	}
	wg.Wait()
}
