package egress

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
)

// mustRules parses rules or fails the test.
func mustRules(t testing.TB, ss ...string) []Rule {
	t.Helper()
	var out []Rule
	for _, s := range ss {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatalf("ParseRule(%q): %v", s, err)
		}
		out = append(out, r)
	}
	return out
}

func TestParseRule_canonical(t *testing.T) {
	tests := []struct {
		in, want string
		host     string
		prefix   string
		lo, hi   uint16
	}{
		{"example.com", "example.com", "example.com", "", 1, 65535},
		{"  Example.COM.  ", "example.com", "example.com", "", 1, 65535},
		{"example.com:443", "example.com:443", "example.com", "", 443, 443},
		{"example.com.:443", "example.com:443", "example.com", "", 443, 443},
		{"example.com:8000-8080", "example.com:8000-8080", "example.com", "", 8000, 8080},
		{"example.com:1-65535", "example.com", "example.com", "", 1, 65535},
		{"example.com:65535", "example.com:65535", "example.com", "", 65535, 65535},
		{"*.Example.com", "*.example.com", "*.example.com", "", 1, 65535},
		{"*.example.com:443", "*.example.com:443", "*.example.com", "", 443, 443},
		{"_svc.my-host.example", "_svc.my-host.example", "_svc.my-host.example", "", 1, 65535},
		{"192.0.2.7", "192.0.2.7", "", "192.0.2.7/32", 1, 65535},
		{"192.0.2.7:22", "192.0.2.7:22", "", "192.0.2.7/32", 22, 22},
		{"192.0.2.7/32:22", "192.0.2.7:22", "", "192.0.2.7/32", 22, 22},
		{"192.0.2.77/24", "192.0.2.0/24", "", "192.0.2.0/24", 1, 65535}, // masked
		{"198.51.100.0/22:5000-5001", "198.51.100.0/22:5000-5001", "", "198.51.100.0/22", 5000, 5001},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRule(tt.in)
			if err != nil {
				t.Fatalf("ParseRule: %v", err)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("String = %q, want %q", got, tt.want)
			}
			var wantPrefix netip.Prefix
			if tt.prefix != "" {
				wantPrefix = netip.MustParsePrefix(tt.prefix)
			}
			if r.Host != tt.host || r.Prefix != wantPrefix || r.Lo != tt.lo || r.Hi != tt.hi {
				t.Errorf("rule %+v, want host %q prefix %v ports %d-%d", r, tt.host, wantPrefix, tt.lo, tt.hi)
			}
			// The canonical form reads back to the same rule.
			again, err := ParseRule(r.String())
			if err != nil || again != r {
				t.Errorf("ParseRule(%q) = %+v, %v; want %+v", r.String(), again, err, r)
			}
		})
	}
}

func TestParseRule_rejects(t *testing.T) {
	tests := []struct {
		in      string
		errHave string // a part of the error, besides the input
	}{
		{"", "want a host name"},
		{"   ", "want a host name"},
		{":443", "want a host name"},
		{"example.com:0", "port"},
		{"example.com:70000", "port"},
		{"example.com:65536", "port"},
		{"example.com:9-2", "port"},
		{"example.com:0-10", "port"},
		{"example.com:", "port"},
		{"example.com:http", "port"},
		{"example.com:-5", "port"},
		{"example.com:1-", "port"},
		{"192.0.2.1:443:443", ""},
		{"2001:db8::1", ""},
		{"[2001:db8::1]:443", ""},
		{"::1", ""},
		{"2001:db8::/32", ""},
		{"::ffff:192.0.2.1", ""},
		{"*.com", "two labels"},
		{"*.com:443", "two labels"},
		{"*", "character"},
		{"*.*.example.com", "character"},
		{"a.*.example.com", "character"},
		{"foo*.example.com", "character"},
		{"exa mple.com", "character"},
		{`exa"mple.com`, "character"},
		{"example.com;rm", "character"},
		{"example.com'", "character"},
		{"exämple.com", "character"},
		{"http://example.com", ""},
		{"example.com/path", "character"},
		{"a..example.com", "bad label"},
		{".example.com", "bad label"},
		{"-a.example.com", "bad label"},
		{"a-.example.com", "bad label"},
		{strings.Repeat("a", 64) + ".example.com", "bad label"},
		{strings.Repeat("a.", 127) + "aa", "want a host name"}, // 256 characters
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRule(tt.in)
			if err == nil {
				t.Fatalf("ParseRule(%q) = %+v, want an error", tt.in, r)
			}
			if !strings.Contains(err.Error(), tt.errHave) {
				t.Errorf("error %q does not say %q", err, tt.errHave)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("error %q does not name the rule %q", err, tt.in)
			}
		})
	}
}

func TestRule_MatchName(t *testing.T) {
	tests := []struct {
		rule  string
		name  string
		match bool
	}{
		{"good.test", "good.test", true},
		{"good.test", "www.good.test", false},
		{"good.test", "evilgood.test", false},
		{"good.test", "good.test.evil", false},
		{"*.good.test", "www.good.test", true},
		{"*.good.test", "a.b.good.test", true},
		{"*.good.test", "good.test", false}, // a wildcard does not cover its apex
		{"*.good.test", "evilgood.test", false},
		{"*.good.test", "www.evilgood.test", false},
		{"*.good.test", "good.test.evil.test", false},
		{"*.good.test", ".good.test", true}, // never a query name; documents the suffix rule
		{"192.0.2.1", "192.0.2.1", false},   // address rules match no name
		{"192.0.2.0/24", "good.test", false},
	}
	for _, tt := range tests {
		r := mustRules(t, tt.rule)[0]
		if got := r.MatchName(tt.name); got != tt.match {
			t.Errorf("%s.MatchName(%q) = %v, want %v", tt.rule, tt.name, got, tt.match)
		}
	}
}

func TestRule_Port(t *testing.T) {
	r := mustRules(t, "good.test:80-443")[0]
	for p, want := range map[uint16]bool{79: false, 80: true, 200: true, 443: true, 444: false} {
		if got := r.Port(p); got != want {
			t.Errorf("Port(%d) = %v, want %v", p, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		entries []string
		def     string
		presets Presets
		want    Policy
		errHave string
	}{
		{name: "default open", def: ModeOpen, want: Policy{Mode: ModeOpen}},
		{name: "default none", def: ModeNone, want: Policy{Mode: ModeNone}},
		{name: "entries imply allow", entries: []string{"good.test"}, def: ModeOpen,
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "good.test")}},
		{name: "entries imply allow over none", entries: []string{"good.test:443"}, def: ModeNone,
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "good.test:443")}},
		{name: "allow without entries", mode: ModeAllow, def: ModeOpen, want: Policy{Mode: ModeAllow}},
		{name: "explicit mode beats default", mode: ModeNone, def: ModeOpen, want: Policy{Mode: ModeNone}},
		{name: "open with entries", mode: ModeOpen, entries: []string{"good.test"}, errHave: `"open" takes no allow rules`},
		{name: "none with entries", mode: ModeNone, entries: []string{"good.test"}, errHave: `"none" takes no allow rules`},
		{name: "unknown mode", mode: "permissive", errHave: `"permissive"`},
		{name: "duplicates dropped, order kept", entries: []string{"b.test", "A.test", "b.test.", "a.test:1-65535", "192.0.2.1/32", "192.0.2.1"},
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "b.test", "a.test", "192.0.2.1")}},
		{name: "builtin preset", entries: []string{"@github", "github.com"},
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "github.com", "*.github.com", "*.githubusercontent.com")}},
		{name: "user preset", entries: []string{"@corp", "x.test"}, presets: Presets{"corp": {"git.corp.test:22", "10.1.0.0/16:443"}},
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "git.corp.test:22", "10.1.0.0/16:443", "x.test")}},
		{name: "user preset replaces builtin", entries: []string{"@github"}, presets: Presets{"github": {"ghe.corp.test"}},
			want: Policy{Mode: ModeAllow, Rules: mustRules(t, "ghe.corp.test")}},
		{name: "unknown preset", entries: []string{"good.test", "@nope"}, errHave: `preset "nope"`},
		{name: "bad rule in a preset", entries: []string{"@bad"}, presets: Presets{"bad": {"*.com"}}, errHave: `preset "bad"`},
		{name: "bad rule", entries: []string{"good.test", "bad rule"}, errHave: `"bad rule"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.mode, tt.entries, tt.def, tt.presets)
			if tt.errHave != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHave) {
					t.Fatalf("Parse = %+v, %v; want an error saying %s", got, err, tt.errHave)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse_maxRules(t *testing.T) {
	var entries []string
	for i := range MaxRules + 1 {
		entries = append(entries, netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}).String())
	}
	if _, err := Parse("", entries[:MaxRules], ModeOpen, nil); err != nil {
		t.Errorf("%d rules: %v", MaxRules, err)
	}
	if _, err := Parse("", entries, ModeOpen, nil); err == nil {
		t.Errorf("%d rules accepted", len(entries))
	}
}

// policyStrings is p's mode and rules in canonical form, for comparisons.
func policyStrings(p Policy) string {
	return p.Mode + " " + strings.Join(p.API().Allow, ",")
}

func TestPolicy_Change(t *testing.T) {
	allow := Policy{Mode: ModeAllow, Rules: mustRules(t, "a.test", "b.test:443", "192.0.2.0/24")}
	tests := []struct {
		name        string
		from        Policy
		mode        string
		allow, deny []string
		want        string
		errHave     string
	}{
		{name: "no change", from: allow, want: "allow a.test,b.test:443,192.0.2.0/24"},
		{name: "add", from: allow, allow: []string{"c.test", "A.test."}, want: "allow a.test,b.test:443,192.0.2.0/24,c.test"},
		{name: "deny removes", from: allow, deny: []string{"B.test:443", "192.0.2.9/24"}, want: "allow a.test"},
		{name: "add then deny", from: allow, allow: []string{"c.test"}, deny: []string{"c.test"}, want: "allow a.test,b.test:443,192.0.2.0/24"},
		{name: "deny missing", from: allow, deny: []string{"a.test", "b.test"}, errHave: `deny "b.test": not in the allow list`},
		{name: "deny with other ports", from: allow, deny: []string{"a.test:443"}, errHave: `"a.test:443"`},
		{name: "deny preset not there", from: allow, deny: []string{"@github"}, errHave: `"github.com"`},
		{name: "allow on none switches to allow", from: Policy{Mode: ModeNone}, allow: []string{"a.test"}, want: "allow a.test"},
		{name: "allow on open switches to allow", from: Open, allow: []string{"@github"}, want: "allow github.com,*.github.com,*.githubusercontent.com"},
		{name: "explicit none keeps rules", from: allow, mode: ModeNone, want: "none a.test,b.test:443,192.0.2.0/24"},
		{name: "explicit none with allow stays none", from: allow, mode: ModeNone, allow: []string{"c.test"}, want: "none a.test,b.test:443,192.0.2.0/24,c.test"},
		{name: "back to allow", from: Policy{Mode: ModeOpen, Rules: mustRules(t, "a.test")}, mode: ModeAllow, want: "allow a.test"},
		{name: "bad mode", from: allow, mode: "all", errHave: `"all"`},
		{name: "bad rule", from: allow, allow: []string{"*.test"}, errHave: `"*.test"`},
		{name: "unknown preset", from: allow, allow: []string{"@nope"}, errHave: `"nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := policyStrings(tt.from)
			got, err := tt.from.Change(tt.mode, tt.allow, tt.deny, nil)
			if after := policyStrings(tt.from); after != before {
				t.Errorf("Change modified its receiver: %s -> %s", before, after)
			}
			if tt.errHave != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHave) {
					t.Fatalf("Change = %s, %v; want an error saying %s", policyStrings(got), err, tt.errHave)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := policyStrings(got); s != tt.want {
				t.Errorf("Change = %q, want %q", s, tt.want)
			}
		})
	}
}

func TestPolicy_Change_maxRules(t *testing.T) {
	var entries []string
	for i := range MaxRules {
		entries = append(entries, netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}).String())
	}
	p, err := Parse(ModeAllow, entries, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Change("", []string{"one.more.test"}, nil, nil); err == nil {
		t.Errorf("Change to %d rules accepted", MaxRules+1)
	}
}

func TestPolicy_EncodeDecode(t *testing.T) {
	for _, p := range []Policy{
		Open,
		{Mode: ModeNone},
		{Mode: ModeAllow},
		{Mode: ModeAllow, Rules: mustRules(t, "a.test:443", "*.b.test", "192.0.2.0/24:22-23", "198.51.100.1")},
		{Mode: ModeOpen, Rules: mustRules(t, "a.test")}, // rules kept across a switch to open
	} {
		s := p.Encode()
		got, err := Decode(s)
		if err != nil {
			t.Errorf("Decode(%s): %v", s, err)
			continue
		}
		if diff := cmp.Diff(p, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("Decode(Encode(p)) (-want +got):\n%s", diff)
		}
	}
	got, err := Decode("")
	if err != nil || got.Mode != ModeOpen || len(got.Rules) != 0 || got.Policed() {
		t.Errorf(`Decode("") = %+v, %v; want Open`, got, err)
	}
	for _, bad := range []string{"{", `{"mode":"all"}`, `{"mode":""}`, `{"mode":"allow","allow":["*.com"]}`} {
		if p, err := Decode(bad); err == nil {
			t.Errorf("Decode(%s) = %+v, want an error", bad, p)
		}
	}
}

func TestPolicy_API(t *testing.T) {
	p := Policy{Mode: ModeAllow, Rules: mustRules(t, "A.test:443", "192.0.2.1/32")}
	want := api.NetPolicy{Mode: api.NetAllow, Allow: []string{"a.test:443", "192.0.2.1"}}
	if diff := cmp.Diff(want, p.API()); diff != "" {
		t.Errorf("API (-want +got):\n%s", diff)
	}
	if !p.Policed() || !(Policy{Mode: ModeNone}).Policed() || Open.Policed() {
		t.Error("Policed: want allow and none policed, open not")
	}
}
