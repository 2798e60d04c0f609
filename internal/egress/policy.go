// Package egress decides what a VM may reach outside the host: per-VM
// policies (open, allow-list, none), the DNS gate that answers a policed
// guest only for allowed names and opens the host firewall to the
// addresses it answered, the transparent proxy that checks the name of
// every HTTP and TLS connection against the policy, and a bounded flow
// log per VM. The firewall itself is hostnet's; this package tells it
// which guests are policed and what they may reach.
package egress

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"banger/internal/api"
)

// Modes of a policy; the values are api.NetOpen, api.NetAllow, api.NetNone.
const (
	ModeOpen  = api.NetOpen
	ModeAllow = api.NetAllow
	ModeNone  = api.NetNone
)

// MaxRules bounds the rules one policy holds.
const MaxRules = 256

// Rule is one allow-list entry: a host name (exact, or "*.domain" for
// every name under domain), or an IPv4 prefix; and the TCP ports it
// opens (1-65535 when none is written).
type Rule struct {
	Host   string       // lowercase, no trailing dot; "" for a prefix rule
	Prefix netip.Prefix // valid for a prefix rule
	Lo, Hi uint16
	// UDP makes the rule open UDP instead of TCP ("/udp" in its text):
	// QUIC, or a service such as NTP. UDP never goes through the proxy.
	UDP bool
}

// String is the rule's canonical form, the one ParseRule reads back.
func (r Rule) String() string {
	var b strings.Builder
	if r.Host != "" {
		b.WriteString(r.Host)
	} else if r.Prefix.IsSingleIP() {
		b.WriteString(r.Prefix.Addr().String())
	} else {
		b.WriteString(r.Prefix.String())
	}
	switch {
	case r.Lo == 1 && r.Hi == 65535:
	case r.Lo == r.Hi:
		b.WriteString(":" + strconv.Itoa(int(r.Lo)))
	default:
		fmt.Fprintf(&b, ":%d-%d", r.Lo, r.Hi)
	}
	if r.UDP {
		b.WriteString("/udp")
	}
	return b.String()
}

// Port reports whether the rule opens port p.
func (r Rule) Port(p uint16) bool { return p >= r.Lo && p <= r.Hi }

// MatchName reports whether the rule is a host rule covering name
// (lowercase, without a trailing dot). "*.example.com" covers every name
// under example.com, not example.com itself.
func (r Rule) MatchName(name string) bool {
	if r.Host == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(r.Host, "*."); ok {
		return strings.HasSuffix(name, "."+rest)
	}
	return name == r.Host
}

// ParseRule reads HOST, *.DOMAIN, IPV4 or CIDR, optionally followed by
// :PORT or :LOW-HIGH, then optionally by /udp (the rule opens UDP, not
// TCP) or /tcp (the default).
func ParseRule(s string) (Rule, error) {
	in := s
	s = strings.ToLower(strings.TrimSpace(s))
	r := Rule{Lo: 1, Hi: 65535}
	if rest, ok := strings.CutSuffix(s, "/udp"); ok {
		s, r.UDP = rest, true
	} else {
		s = strings.TrimSuffix(s, "/tcp")
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		lo, hi, err := parsePorts(s[i+1:])
		if err != nil {
			return Rule{}, fmt.Errorf("rule %q: %w", in, err)
		}
		r.Lo, r.Hi, s = lo, hi, s[:i]
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		if !p.Addr().Is4() {
			return Rule{}, fmt.Errorf("rule %q: only IPv4 prefixes (guests have no IPv6 route)", in)
		}
		r.Prefix = p.Masked()
		return r, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return Rule{}, fmt.Errorf("rule %q: only IPv4 addresses (guests have no IPv6 route)", in)
		}
		r.Prefix = netip.PrefixFrom(a, 32)
		return r, nil
	}
	s = strings.TrimSuffix(s, ".")
	if err := checkHost(s); err != nil {
		return Rule{}, fmt.Errorf("rule %q: %w", in, err)
	}
	r.Host = s
	return r, nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(a, 10, 16)
	h := l
	var err2 error
	if isRange {
		h, err2 = strconv.ParseUint(b, 10, 16)
	}
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return 0, 0, fmt.Errorf("port %q: want PORT or LOW-HIGH within 1-65535", s)
	}
	return uint16(l), uint16(h), nil
}

// checkHost accepts a DNS name of letters, digits, hyphens and
// underscores, after an optional leading "*." (a wildcard needs a domain
// of two labels or more; a plain name may be one label, as an intranet
// name resolved through a search domain is).
func checkHost(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if len(name) == 0 || len(name) > 253 {
		return errors.New("want a host name, *.domain, an IPv4 address or a CIDR")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("host %q: bad label %q", h, l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q: character %q not allowed", h, c)
			}
		}
	}
	if strings.HasPrefix(h, "*.") && len(labels) < 2 {
		return fmt.Errorf("host %q: a wildcard needs a domain of two labels or more", h)
	}
	return nil
}

// Policy is a VM's egress policy.
type Policy struct {
	Mode  string
	Rules []Rule
	// Secrets are the names of the [[secret]]s the VM may use: its guest
	// holds only their placeholders, the proxy puts the values in.
	Secrets []string
}

// Open is the policy of a VM that is not policed.
var Open = Policy{Mode: ModeOpen}

// Policed reports whether the host firewall polices the VM.
func (p Policy) Policed() bool { return p.Mode != ModeOpen }

// API returns the policy in its wire form.
func (p Policy) API() api.NetPolicy {
	out := api.NetPolicy{Mode: p.Mode, Secrets: slices.Clone(p.Secrets)}
	for _, r := range p.Rules {
		out.Allow = append(out.Allow, r.String())
	}
	return out
}

// allowsName reports whether an allow policy has a host rule covering
// name that opens port.
func (p Policy) allowsName(name string, port uint16) bool {
	if p.Mode != ModeAllow {
		return false
	}
	for _, r := range p.Rules {
		if !r.UDP && r.MatchName(name) && r.Port(port) {
			return true
		}
	}
	return false
}

// resolvable reports whether the policy lets the guest resolve name.
func (p Policy) resolvable(name string) bool {
	if p.Mode == ModeOpen {
		return true
	}
	return p.Mode == ModeAllow && slices.ContainsFunc(p.Rules, func(r Rule) bool { return r.MatchName(name) })
}

// Presets resolves @NAME entries of an allow list to their rules.
type Presets map[string][]string

// BuiltinPresets are the presets every config has; the user's [network]
// presets add to them and may replace them.
var BuiltinPresets = Presets{
	"github":     {"github.com", "*.github.com", "*.githubusercontent.com"},
	"model-apis": {"api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com"},
}

// Parse builds a policy from a mode and allow entries (rules or @PRESET).
// An empty mode with entries means allow; with none, def. Duplicate rules
// are dropped; order is kept.
func Parse(mode string, entries []string, def string, presets Presets) (Policy, error) {
	if mode == "" {
		mode = def
		if len(entries) > 0 {
			mode = ModeAllow
		}
	}
	switch mode {
	case ModeOpen, ModeNone:
		if len(entries) > 0 {
			return Policy{}, fmt.Errorf("net mode %q takes no allow rules (use %q)", mode, ModeAllow)
		}
		return Policy{Mode: mode}, nil
	case ModeAllow:
	default:
		return Policy{}, fmt.Errorf("net mode %q: want %s, %s or %s", mode, ModeOpen, ModeAllow, ModeNone)
	}
	p := Policy{Mode: mode}
	rules, err := expand(entries, presets)
	if err != nil {
		return Policy{}, err
	}
	p.Rules = rules
	return p, nil
}

// expand parses entries, expanding presets, without duplicates.
func expand(entries []string, presets Presets) ([]Rule, error) {
	var out []Rule
	seen := map[string]bool{}
	add := func(s string) error {
		r, err := ParseRule(s)
		if err != nil {
			return err
		}
		if k := r.String(); !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
		return nil
	}
	for _, e := range entries {
		if name, ok := strings.CutPrefix(strings.TrimSpace(e), "@"); ok {
			rules, ok := presets[name]
			if !ok {
				rules, ok = BuiltinPresets[name]
			}
			if !ok {
				return nil, fmt.Errorf("preset %q: not defined (built in: github, model-apis; add more under [network.presets])", name)
			}
			for _, s := range rules {
				if err := add(s); err != nil {
					return nil, fmt.Errorf("preset %q: %w", name, err)
				}
			}
			continue
		}
		if err := add(e); err != nil {
			return nil, err
		}
	}
	if len(out) > MaxRules {
		return nil, fmt.Errorf("%d allow rules: at most %d", len(out), MaxRules)
	}
	return out, nil
}

// Change applies an edit: a new mode (when not empty), then added and
// removed entries. Removing a rule that is not there is an error naming
// it, so a typo is not mistaken for a closed door.
func (p Policy) Change(mode string, allow, deny []string, presets Presets) (Policy, error) {
	out := Policy{Mode: p.Mode, Rules: slices.Clone(p.Rules), Secrets: slices.Clone(p.Secrets)}
	if mode != "" {
		out.Mode = mode
	}
	if len(allow) > 0 && mode == "" && out.Mode != ModeAllow {
		out.Mode = ModeAllow
	}
	add, err := expand(allow, presets)
	if err != nil {
		return Policy{}, err
	}
	del, err := expand(deny, presets)
	if err != nil {
		return Policy{}, err
	}
	for _, r := range add {
		if !slices.ContainsFunc(out.Rules, func(x Rule) bool { return x.String() == r.String() }) {
			out.Rules = append(out.Rules, r)
		}
	}
	for _, r := range del {
		i := slices.IndexFunc(out.Rules, func(x Rule) bool { return x.String() == r.String() })
		if i < 0 {
			return Policy{}, fmt.Errorf("deny %q: not in the allow list", r.String())
		}
		out.Rules = slices.Delete(out.Rules, i, i+1)
	}
	if len(out.Rules) > MaxRules {
		return Policy{}, fmt.Errorf("%d allow rules: at most %d", len(out.Rules), MaxRules)
	}
	switch out.Mode {
	case ModeOpen, ModeAllow, ModeNone:
	default:
		return Policy{}, fmt.Errorf("net mode %q: want %s, %s or %s", out.Mode, ModeOpen, ModeAllow, ModeNone)
	}
	// Rules stay while the mode is open or none, for a later switch back
	// to allow; only an allow policy uses them.
	return out, nil
}

// Encode is the policy's stored form: the JSON of its wire form.
func (p Policy) Encode() string {
	b, _ := json.Marshal(p.API()) // strings only; cannot fail
	return string(b)
}

// Decode reads what Encode wrote; "" (a VM made before policies) is Open.
func Decode(s string) (Policy, error) {
	if s == "" {
		return Open, nil
	}
	var a api.NetPolicy
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return Policy{}, fmt.Errorf("stored net policy: %w", err)
	}
	rules, err := expand(a.Allow, nil)
	if err != nil {
		return Policy{}, fmt.Errorf("stored net policy: %w", err)
	}
	p := Policy{Mode: a.Mode, Rules: rules, Secrets: a.Secrets}
	if _, err := p.Change("", nil, nil, nil); err != nil {
		return Policy{}, fmt.Errorf("stored net policy: %w", err)
	}
	return p, nil
}
