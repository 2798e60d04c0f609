package hostnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"banger/internal/guestcontract"
)

// maxID is the largest uid or gid accepted; 2^32-1 is (uid_t)-1, "no
// change", and never a real owner.
const maxID = 1<<32 - 2

// privTimeout bounds one privileged operation.
const privTimeout = time.Minute

// Exit codes of `bangerd priv`.
const (
	privOK     = 0
	privFailed = 1 // the operation itself failed
	privUsage  = 2 // the request was rejected before anything ran
)

// PrivMain is `bangerd priv OP ARGS...` (args excludes "priv"): the side
// of Sudo that runs as root. It validates every argument strictly,
// rejecting anything that is not exactly what banger sends, then performs
// the operation with Direct. It returns the exit code: 0 done, 1 the
// operation failed, 2 the request was rejected.
func PrivMain(args []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), privTimeout)
	defer cancel()
	return privMain(ctx, args, os.Stderr, Direct{})
}

// privMain is PrivMain with its executor and error stream injected.
func privMain(ctx context.Context, args []string, stderr io.Writer, p Privileged) int {
	req, err := ParsePriv(args)
	if err != nil {
		fmt.Fprintf(stderr, "bangerd priv: %v\n", err)
		return privUsage
	}
	if err := req.Do(ctx, p); err != nil {
		fmt.Fprintf(stderr, "bangerd priv: %v\n", err)
		return privFailed
	}
	return privOK
}

// PrivRequest is one validated `bangerd priv` request.
type PrivRequest struct {
	Op       string
	Name     string         // link name (ensure-bridge, ensure-tap, delete-link)
	Mark     string         // ensure-bridge: the instance's mark (Config.Mark)
	Bridge   string         // ensure-tap, apply-firewall, remove-firewall (names the tables)
	Subnet   netip.Prefix   // ensure-bridge, apply-firewall
	UID, GID int            // ensure-tap
	Shared   bool           // ensure-tap: a port guests share (not isolated)
	Allow    []netip.Prefix // apply-firewall
	Guests   []Guest        // apply-firewall
	Port     uint16         // apply-firewall: the proxy port, 0 for none
	Policed  []Policed      // apply-firewall
	DNSPort  uint16         // apply-firewall: the DNS server's port, 0 for none
}

// ErrPrivUsage marks a rejected `bangerd priv` request.
var ErrPrivUsage = errors.New("rejected")

func usage(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrPrivUsage, fmt.Sprintf(format, a...))
}

// ParsePriv validates a `bangerd priv` argv (without "priv"). Interface
// names must be banger's (ManagedName; taps exactly TapName(N)), subnets
// canonical IPv4 network prefixes within CheckSubnet's bounds, uid and gid
// canonical decimal numbers; the argument count must be exact. The
// nftables tables are named after the validated bridge (TableName), never
// taken from argv. Errors wrap ErrPrivUsage.
func ParsePriv(args []string) (PrivRequest, error) {
	if len(args) == 0 {
		return PrivRequest{}, usage("missing operation; one of %s, %s, %s, %s, %s, %s",
			OpEnsureBridge, OpEnsureTap, OpDeleteLink, OpApplyFirewall, OpRemoveFirewall, OpEnableForwarding)
	}
	op, rest := args[0], args[1:]
	want := map[string]int{
		OpEnsureBridge: 3, OpEnsureTap: 5, OpDeleteLink: 1,
		OpApplyFirewall: 7, OpRemoveFirewall: 1, OpEnableForwarding: 0,
	}
	n, ok := want[op]
	if !ok {
		return PrivRequest{}, usage("unknown operation %q", op)
	}
	if len(rest) != n {
		return PrivRequest{}, usage("%s takes %d arguments, got %d", op, n, len(rest))
	}
	req := PrivRequest{Op: op}
	var err error
	switch op {
	case OpEnsureBridge:
		if req.Name, err = parseManaged("bridge", rest[0]); err != nil {
			return PrivRequest{}, err
		}
		if req.Subnet, err = parseSubnet(rest[1]); err != nil {
			return PrivRequest{}, err
		}
		if !ValidMark(rest[2]) {
			return PrivRequest{}, usage("mark %q: want %s followed by %d hex digits", rest[2], MarkPrefix, InstanceIDLen)
		}
		req.Mark = rest[2]
	case OpEnsureTap:
		if !ValidTapName(rest[0]) {
			return PrivRequest{}, usage("tap %q: must be %s followed by %d hex digits of a VM id", rest[0], TapPrefix, TapIDLen)
		}
		req.Name = rest[0]
		if req.Bridge, err = parseManaged("bridge", rest[1]); err != nil {
			return PrivRequest{}, err
		}
		if req.UID, err = parseID("uid", rest[2]); err != nil {
			return PrivRequest{}, err
		}
		if req.GID, err = parseID("gid", rest[3]); err != nil {
			return PrivRequest{}, err
		}
		switch rest[4] {
		case portIsolated:
		case portShared:
			req.Shared = true
		default:
			return PrivRequest{}, usage("port mode %q: want %s or %s", rest[4], portIsolated, portShared)
		}
	case OpDeleteLink:
		if req.Name, err = parseManaged("link", rest[0]); err != nil {
			return PrivRequest{}, err
		}
	case OpApplyFirewall:
		if req.Bridge, err = parseManaged("bridge", rest[0]); err != nil {
			return PrivRequest{}, err
		}
		if req.Subnet, err = parseSubnet(rest[1]); err != nil {
			return PrivRequest{}, err
		}
		if req.Allow, err = parseAllow(rest[2]); err != nil {
			return PrivRequest{}, err
		}
		if req.Guests, err = parseGuests(rest[3]); err != nil {
			return PrivRequest{}, err
		}
		if req.Port, err = parsePort("proxy port", rest[4]); err != nil {
			return PrivRequest{}, err
		}
		if req.Policed, err = parsePoliced(rest[5]); err != nil {
			return PrivRequest{}, err
		}
		if req.DNSPort, err = parsePort("dns port", rest[6]); err != nil {
			return PrivRequest{}, err
		}
		f := Firewall{Bridge: req.Bridge, Subnet: req.Subnet, Guests: req.Guests, Policed: req.Policed}
		if err := f.Validate(); err != nil {
			return PrivRequest{}, usage("%v", err)
		}
	case OpRemoveFirewall:
		if req.Bridge, err = parseManaged("bridge", rest[0]); err != nil {
			return PrivRequest{}, err
		}
	}
	return req, nil
}

// Do performs the request with p.
func (r PrivRequest) Do(ctx context.Context, p Privileged) error {
	switch r.Op {
	case OpEnsureBridge:
		return p.EnsureBridge(ctx, r.Name, r.Subnet, r.Mark)
	case OpEnsureTap:
		return p.EnsureTap(ctx, r.Name, r.Bridge, r.UID, r.GID, r.Shared)
	case OpDeleteLink:
		return p.DeleteLink(ctx, r.Name)
	case OpApplyFirewall:
		return p.ApplyFirewall(ctx, Firewall{Bridge: r.Bridge, Subnet: r.Subnet, Allow: r.Allow, Guests: r.Guests,
			ProxyPort: r.Port, Policed: r.Policed, DNSPort: r.DNSPort})
	case OpRemoveFirewall:
		return p.RemoveFirewall(ctx, r.Bridge)
	case OpEnableForwarding:
		return p.EnableForwarding(ctx)
	}
	return usage("unknown operation %q", r.Op)
}

// maxAllow bounds the allow list one request may carry.
const maxAllow = 256

// FormatAllow is the apply-firewall argument for an allow list: canonical
// IPv4 prefixes joined by commas, or "-" for none.
func FormatAllow(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Masked().String()
	}
	return strings.Join(parts, ",")
}

// parseAllow accepts what FormatAllow makes, and nothing else: each
// element a canonical IPv4 network prefix.
func parseAllow(s string) ([]netip.Prefix, error) {
	if s == "-" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxAllow {
		return nil, usage("allow list: %d prefixes, at most %d", len(parts), maxAllow)
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, part := range parts {
		p, err := netip.ParsePrefix(part)
		if err != nil || !p.Addr().Is4() || p.Masked() != p || p.String() != part {
			return nil, usage("allow %q: want a canonical IPv4 network prefix such as 192.168.1.0/24", part)
		}
		out = append(out, p)
	}
	return out, nil
}

// The ensure-tap port modes: an isolated bridge port (the default) or one
// guests share.
const (
	portIsolated = "isolated"
	portShared   = "shared"
)

// PortMode is the ensure-tap argument for a tap's bridge port.
func PortMode(shared bool) string {
	if shared {
		return portShared
	}
	return portIsolated
}

// maxGuests bounds the guests one request may carry (a /16 holds fewer
// guests than this).
const maxGuests = 1 << 16

// FormatGuests is the apply-firewall argument for the guests: TAP=IP
// pairs joined by commas, or "-" for none. The MAC is not passed: it is
// MACForIP(IP), so the helper derives it rather than trusting one.
func FormatGuests(gs []Guest) string {
	if len(gs) == 0 {
		return "-"
	}
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = g.Tap + "=" + g.IP.String()
	}
	return strings.Join(parts, ",")
}

// parseGuests accepts what FormatGuests makes, and nothing else: banger
// tap names and canonical IPv4 addresses.
func parseGuests(s string) ([]Guest, error) {
	if s == "-" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxGuests {
		return nil, usage("guest list: %d guests, at most %d", len(parts), maxGuests)
	}
	out := make([]Guest, 0, len(parts))
	for _, part := range parts {
		tap, ip, ok := strings.Cut(part, "=")
		a, err := netip.ParseAddr(ip)
		if !ok || !ValidTapName(tap) || err != nil || !a.Is4() || a.String() != ip {
			return nil, usage("guest %q: want TAP=IPV4 such as %s0123456789ab=10.77.0.2", part, TapPrefix)
		}
		out = append(out, Guest{Tap: tap, IP: a})
	}
	return out, nil
}

func parseManaged(what, s string) (string, error) {
	if !ValidIfName(s) {
		return "", usage("%s %q: not an interface name (1-15 of a-z A-Z 0-9 _ . -, not starting with -)", what, s)
	}
	if !ManagedName(s) {
		return "", usage("%s %q: not a banger interface (names start with %q)", what, s, ManagedPrefixes)
	}
	return s, nil
}

func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.String() != s {
		return netip.Prefix{}, usage("subnet %q: not a canonical prefix such as 10.77.0.0/24", s)
	}
	if err := guestcontract.CheckSubnet(p); err != nil {
		return netip.Prefix{}, usage("%v", err)
	}
	return p, nil
}

// parsePort accepts a canonical decimal port number 0-65535.
func parsePort(what, s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || strconv.FormatUint(v, 10) != s {
		return 0, usage("%s %q: want a number 0-65535", what, s)
	}
	return uint16(v), nil
}

func parseID(what, s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || strconv.FormatUint(v, 10) != s || v > maxID {
		return 0, usage("%s %q: not a numeric id", what, s)
	}
	return int(v), nil
}

// maxPolicedElems bounds the grants and passes one request may carry.
const maxPolicedElems = 1 << 16

// FormatPoliced is the apply-firewall argument for the policed guests,
// "-" for none: IP=ELEMS joined by commas, where ELEMS joins with "+"
// "o" (an open guest, only proxied), grants gPREFIX:LO-HI and passes
// pADDR:LO-HI:SECONDS, each with "/udp" appended when it opens UDP.
func FormatPoliced(ps []Policed) string {
	if len(ps) == 0 {
		return "-"
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		var elems []string
		if p.Open {
			elems = append(elems, "o")
		}
		for _, g := range p.Grants {
			elems = append(elems, fmt.Sprintf("g%s:%d-%d%s", g.Dst, g.Lo, g.Hi, udpSuffix(g.UDP)))
		}
		for _, x := range p.Passes {
			elems = append(elems, fmt.Sprintf("p%s:%d-%d:%d%s", x.Dst, x.Lo, x.Hi, int(x.TTL/time.Second), udpSuffix(x.UDP)))
		}
		parts[i] = p.IP.String() + "=" + strings.Join(elems, "+")
	}
	return strings.Join(parts, ",")
}

// parsePoliced accepts what FormatPoliced makes, and nothing else.
func parsePoliced(s string) ([]Policed, error) {
	if s == "-" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxGuests {
		return nil, usage("policed list: %d guests, at most %d", len(parts), maxGuests)
	}
	total := 0
	out := make([]Policed, 0, len(parts))
	for _, part := range parts {
		ip, elems, ok := strings.Cut(part, "=")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil || !a.Is4() || a.String() != ip {
			return nil, usage("policed guest %q: want IPV4=ELEMS", part)
		}
		p := Policed{IP: a}
		if elems != "" {
			for _, e := range strings.Split(elems, "+") {
				if total++; total > maxPolicedElems {
					return nil, usage("policed list: more than %d grants and passes", maxPolicedElems)
				}
				if err := parsePolicedElem(&p, e); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePolicedElem(p *Policed, e string) error {
	bad := usage("policed element %q: want o, gPREFIX:LO-HI or pADDR:LO-HI:SECONDS", e)
	if e == "o" && !p.Open && len(p.Grants)+len(p.Passes) == 0 {
		p.Open = true
		return nil
	}
	if len(e) < 2 {
		return bad
	}
	body, udp := strings.CutSuffix(e[1:], "/udp")
	fields := strings.Split(body, ":")
	ports := func(s string) (uint16, uint16, bool) {
		a, b, ok := strings.Cut(s, "-")
		lo, err1 := strconv.ParseUint(a, 10, 16)
		hi, err2 := strconv.ParseUint(b, 10, 16)
		ok = ok && err1 == nil && err2 == nil && lo >= 1 && hi >= lo &&
			strconv.FormatUint(lo, 10) == a && strconv.FormatUint(hi, 10) == b
		return uint16(lo), uint16(hi), ok
	}
	switch e[0] {
	case 'g':
		if len(fields) != 2 {
			return bad
		}
		pre, err := netip.ParsePrefix(fields[0])
		lo, hi, ok := ports(fields[1])
		if err != nil || !ok || !pre.Addr().Is4() || pre.Masked() != pre || pre.String() != fields[0] {
			return bad
		}
		p.Grants = append(p.Grants, Grant{Dst: pre, Lo: lo, Hi: hi, UDP: udp})
	case 'p':
		if len(fields) != 3 {
			return bad
		}
		a, err := netip.ParseAddr(fields[0])
		lo, hi, ok := ports(fields[1])
		secs, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err != nil || err2 != nil || !ok || !a.Is4() || a.String() != fields[0] ||
			strconv.FormatUint(secs, 10) != fields[2] || secs == 0 || time.Duration(secs)*time.Second > MaxPassTTL {
			return bad
		}
		p.Passes = append(p.Passes, Pass{Dst: a, Lo: lo, Hi: hi, UDP: udp, TTL: time.Duration(secs) * time.Second})
	default:
		return bad
	}
	return nil
}

func udpSuffix(udp bool) string {
	if udp {
		return "/udp"
	}
	return ""
}
