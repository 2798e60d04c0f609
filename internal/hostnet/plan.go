package hostnet

import (
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"banger/internal/config"
	"banger/internal/guestcontract"
)

// Name rules. Every interface banger creates carries one of its prefixes,
// so the privileged helper can refuse to touch anything else (eth0, a
// docker bridge, another program's tap) and leaks are recognisable.
const (
	// TapPrefix starts every tap banger creates. A VM's tap is named
	// after the VM (TapName); earlier daemons numbered pool taps
	// "bgtap0", "bgtap1", ..., which are still recognised so a running
	// VM keeps its tap across an upgrade.
	TapPrefix = "bgt"
	// TapIDLen is how many hex digits of the VM id a tap name carries:
	// the longest that fits IFNAMSIZ after the prefix.
	TapIDLen = MaxIfNameLen - len(TapPrefix)
	// MaxIfNameLen is Linux's limit on an interface name (IFNAMSIZ-1).
	MaxIfNameLen = 15
)

// ManagedPrefixes are the name prefixes of interfaces banger may create,
// change or delete: its bridge (default "banger0", or a short "bg…" name)
// and its taps.
// The config package owns the list so config validation and the network
// code agree on it.
var ManagedPrefixes = config.ManagedIfPrefixes

var (
	ifNameRE     = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)
	tapNameRE    = regexp.MustCompile(`^` + TapPrefix + `[0-9a-f]{` + strconv.Itoa(TapIDLen) + `}$`)
	legacyTapRE  = regexp.MustCompile(`^bgtap(0|[1-9][0-9]{0,9})$`)
	vmIDPrefixRE = regexp.MustCompile(`^[0-9a-f]{` + strconv.Itoa(TapIDLen) + `}`)
)

// ValidIfName reports whether name is a safe Linux interface name: 1-15
// bytes of [a-zA-Z0-9_.-], not "." or "..", not starting with '-' (so it
// can never be read as a flag).
func ValidIfName(name string) bool {
	return ifNameRE.MatchString(name) && name != "." && name != ".." && !strings.HasPrefix(name, "-")
}

// ManagedName reports whether name is a valid interface name carrying one
// of banger's prefixes, i.e. one banger may create, change or delete.
func ManagedName(name string) bool {
	if !ValidIfName(name) {
		return false
	}
	for _, p := range ManagedPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// TapName returns the name of the tap of the VM with id vmID: TapPrefix
// and the id's first TapIDLen hex digits ("bgt3f2a9c01d4e7"). A leaked
// tap thus names its VM, and the daemon that owns the VM is the one
// that may reclaim it. vmID must start with TapIDLen lowercase hex
// digits (store ids are 32).
func TapName(vmID string) (string, error) {
	if !vmIDPrefixRE.MatchString(vmID) {
		return "", fmt.Errorf("tap name for vm id %q: want at least %d lowercase hex digits", vmID, TapIDLen)
	}
	return TapPrefix + vmID[:TapIDLen], nil
}

// TapVMID returns the VM id prefix a tap name made by TapName carries;
// ok is false for anything else, legacy pool names included.
func TapVMID(name string) (idPrefix string, ok bool) {
	if !tapNameRE.MatchString(name) {
		return "", false
	}
	return name[len(TapPrefix):], true
}

// ValidTapName reports whether name is a tap name banger makes: one named
// after its VM, or a numbered pool tap of an earlier daemon.
func ValidTapName(name string) bool {
	return tapNameRE.MatchString(name) || (legacyTapRE.MatchString(name) && len(name) <= MaxIfNameLen)
}

// GatewayPrefix returns the gateway address with the subnet's length, the
// form it takes on the bridge (10.77.0.1/24).
func GatewayPrefix(subnet netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(guestcontract.Gateway(subnet), subnet.Bits())
}

// MACForIP returns the guest MAC for a guest address: 06:b6 followed by
// the four IPv4 bytes. 0x06 sets the locally-administered bit and clears
// the multicast bit, so the address is unicast and never collides with a
// vendor's; it is deterministic so a guest keeps its MAC across restarts.
// It returns nil for an address that is not IPv4.
func MACForIP(ip netip.Addr) net.HardwareAddr {
	if !ip.Is4() && !ip.Is4In6() {
		return nil
	}
	b := ip.Unmap().As4()
	return net.HardwareAddr{0x06, 0xb6, b[0], b[1], b[2], b[3]}
}

// Firewall describes banger's nftables table: which bridge the guests sit
// behind and their subnet. The gateway is guestcontract.Gateway(Subnet).
type Firewall struct {
	Bridge string
	Subnet netip.Prefix
	// Allow are destinations the user opened for guests although they are
	// denied by default ([network] allow in config).
	Allow []netip.Prefix
	// HostNets are the host's own addresses and the networks it routes
	// other than through its default route; guests may not reach them.
	// Direct.ApplyFirewall fills them in from the kernel.
	HostNets []netip.Prefix
	// Guests bind each VM's tap to its lease: what enters the bridge from
	// a tap may carry only that VM's MAC and address as its source.
	Guests []Guest
	// Policed are the guests whose egress is limited to their grants and
	// passes; their HTTP and HTTPS go to the proxy on ProxyPort.
	Policed []Policed
	// ProxyPort is the port of banger's egress proxy on the gateway; 0
	// when it is not listening, and then policed guests' HTTP and HTTPS
	// are dropped.
	ProxyPort uint16
	// DNSPort is the unprivileged port banger's DNS server listens on at
	// the gateway: guests' DNS to the gateway's port 53 (udp and tcp) is
	// redirected to it, so a daemon that may not bind port 53 still
	// serves them. 0 redirects nothing: guests' DNS then reaches port 53
	// itself.
	DNSPort uint16
}

// Policed is a guest whose egress the firewall limits (api.NetAllow or
// api.NetNone): it reaches its Grants (the user's address rules, which
// bypass the proxy and the deny set), its Passes (addresses banger's DNS
// answered it for allowed names, until they expire) and, on ports 80 and
// 443, only the proxy. Everything else it sends out is dropped.
//
// An Open guest is only proxied: its HTTP and HTTPS go to the proxy (which
// holds its secrets) but nothing else it sends is limited.
type Policed struct {
	IP     netip.Addr
	Open   bool
	Grants []Grant
	Passes []Pass
}

// Grant opens ports Lo-Hi of the addresses in Dst, TCP (or UDP).
type Grant struct {
	Dst    netip.Prefix
	Lo, Hi uint16
	UDP    bool
}

// Pass opens ports Lo-Hi of Dst, TCP (or UDP), for TTL (whole seconds,
// at least 1).
type Pass struct {
	Dst    netip.Addr
	Lo, Hi uint16
	UDP    bool
	TTL    time.Duration
}

// proto is the nft name of a grant's or pass's protocol.
func proto(udp bool) string {
	if udp {
		return "udp"
	}
	return "tcp"
}

// RefusedLogGroup is the NFLOG group the firewall sends policed guests'
// refused packets to, and RefusedLogRate the packets per second it sends
// at most (for all guests together).
const (
	RefusedLogGroup = 47873
	RefusedLogRate  = 50
)

// ProxiedPorts are the TCP ports of policed guests that go to the proxy.
var ProxiedPorts = []uint16{80, 443}

// MaxPassTTL bounds how long one learned pass lasts.
const MaxPassTTL = 7 * 24 * time.Hour

// Guest is one VM's tap and leased address; its MAC is MACForIP(IP).
type Guest struct {
	Tap string
	IP  netip.Addr
}

// DeniedByDefault are the destinations no guest reaches unless the user
// allows them: "this network", RFC 1918 private ranges, CGNAT, loopback,
// link-local (with the cloud metadata service at 169.254.169.254),
// benchmarking, multicast and reserved space, and broadcast. The guests'
// own subnet is in it too, as are the host's addresses and other networks
// (Firewall.HostNets).
var DeniedByDefault = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// mergePrefixes returns the IPv4 prefixes of ps, masked, sorted, without
// any that another one contains (nftables refuses overlapping elements
// in an interval set).
func mergePrefixes(ps ...[]netip.Prefix) []netip.Prefix {
	var all []netip.Prefix
	for _, l := range ps {
		for _, p := range l {
			if p.IsValid() && p.Addr().Is4() {
				all = append(all, p.Masked())
			}
		}
	}
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var out []netip.Prefix
	for _, p := range all {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue // inside the previous (shorter or equal) prefix
		}
		out = append(out, p)
	}
	return out
}

func nftElements(ps []netip.Prefix) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// Validate checks the bridge name, the subnet and the guests: banger tap
// names, each once, with an address of the subnet other than the gateway.
func (f Firewall) Validate() error {
	if !ManagedName(f.Bridge) {
		return fmt.Errorf("bridge %q: not a banger interface name", f.Bridge)
	}
	if err := guestcontract.CheckSubnet(f.Subnet); err != nil {
		return err
	}
	seen := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for _, g := range f.Guests {
		switch {
		case !ValidTapName(g.Tap):
			return fmt.Errorf("guest tap %q: not a banger tap name", g.Tap)
		case seen[g.Tap]:
			return fmt.Errorf("guest tap %s: bound twice", g.Tap)
		case !g.IP.Is4() || !f.Subnet.Contains(g.IP) || g.IP == guestcontract.Gateway(f.Subnet):
			return fmt.Errorf("guest tap %s: address %s is not a guest address of %s", g.Tap, g.IP, f.Subnet)
		case ips[g.IP]:
			return fmt.Errorf("guest tap %s: address %s bound to two taps", g.Tap, g.IP)
		}
		seen[g.Tap], ips[g.IP] = true, true
	}
	policed := map[netip.Addr]bool{}
	for _, p := range f.Policed {
		switch {
		case !p.IP.Is4() || !f.Subnet.Contains(p.IP) || p.IP == guestcontract.Gateway(f.Subnet):
			return fmt.Errorf("policed guest %s: not a guest address of %s", p.IP, f.Subnet)
		case policed[p.IP]:
			return fmt.Errorf("policed guest %s: listed twice", p.IP)
		}
		policed[p.IP] = true
		for _, g := range p.Grants {
			if !g.Dst.IsValid() || !g.Dst.Addr().Is4() || g.Dst.Masked() != g.Dst || g.Lo == 0 || g.Hi < g.Lo {
				return fmt.Errorf("policed guest %s: bad grant %s:%d-%d", p.IP, g.Dst, g.Lo, g.Hi)
			}
		}
		for _, x := range p.Passes {
			if !x.Dst.Is4() || x.Lo == 0 || x.Hi < x.Lo || x.TTL < time.Second || x.TTL > MaxPassTTL {
				return fmt.Errorf("policed guest %s: bad pass %s:%d-%d for %s", p.IP, x.Dst, x.Lo, x.Hi, x.TTL)
			}
		}
	}
	return nil
}

// The nftables tables banger owns: routing and NAT in the inet table,
// what may enter the bridge from a guest's tap in the bridge table. Both
// are named after the daemon's bridge (TableName), so daemons with
// different bridges on one host never touch each other's rules.
// Everything one daemon does to the host firewall lives in its two
// tables, so removing them removes all of its rules and touches nobody
// else's.
const (
	TableFamily       = "inet"
	BridgeTableFamily = "bridge"
	// DefaultTableName is the tables' name for the default bridge
	// (config.DefaultBridge), the name every install before per-instance
	// tables used, so an existing install keeps its table.
	DefaultTableName = "banger"
)

// TableName returns the name of the nftables tables (inet and bridge) of
// the daemon whose bridge is bridge: DefaultTableName for the default
// bridge, else "banger_" and the bridge name, with the characters an nft
// identifier may not hold escaped so two bridge names never share a
// table ('_' becomes "__", '-' "_d", '.' "_p"). bridge must be a valid
// interface name (ValidIfName); the result then is a valid nft
// identifier, so the privileged helper derives it from the validated
// bridge and never takes a table name of its own.
func TableName(bridge string) string {
	if bridge == config.DefaultBridge {
		return DefaultTableName
	}
	var b strings.Builder
	b.WriteString(DefaultTableName + "_")
	for _, r := range bridge {
		switch r {
		case '_':
			b.WriteString("__")
		case '-':
			b.WriteString("_d")
		case '.':
			b.WriteString("_p")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// RefusedLogGroupFor returns the NFLOG group the firewall of the daemon
// whose bridge is bridge logs refused packets to: RefusedLogGroup for the
// default bridge, else one of the 4096 groups after it chosen by the
// bridge name, so two daemons on one host each bind their own group
// (a group has one listener).
func RefusedLogGroupFor(bridge string) uint16 {
	if bridge == config.DefaultBridge {
		return RefusedLogGroup
	}
	h := fnv.New32a()
	h.Write([]byte(bridge))
	return RefusedLogGroup + 1 + uint16(h.Sum32()%4096)
}

// Ruleset returns the nft script that atomically replaces the daemon's
// tables (TableName(f.Bridge)) with the rules for f (nft -f applies a
// script as one transaction). The first two lines make the replacement
// idempotent: create the table if it is missing, then delete it, then
// define it afresh. Every rule names the bridge or the subnet, so the
// tables of another daemon with another bridge see none of its traffic.
//
// The rules:
//   - prerouting (nat): guests' DNS to the gateway's port 53, udp and
//     tcp, goes to the DNS server's unprivileged port (f.DNSPort); a
//     policed guest's HTTP and HTTPS to anywhere but the gateway go to
//     the egress proxy (f.ProxyPort).
//   - postrouting: masquerade guest traffic leaving by any interface but
//     the bridge, so guests reach the outside world as the host.
//   - forward: guests may go out to the internet, not to the destinations
//     of the deny set (DeniedByDefault, the guests' subnet, the host's
//     addresses and its networks other than the default route) unless
//     the allow set (the user's exceptions) names them; replies come
//     back; nothing else is forwarded to or from the bridge (no spoofed
//     sources, no inbound connections, no IPv6).
//   - input: from the bridge, only DNS (udp and tcp 53, or the DNS
//     server's port they are redirected to) to the gateway and replies
//     to connections the host opened (ssh, the agent) reach the host;
//     every other host address and port is dropped, guests being
//     untrusted.
//   - bridge prerouting (the bridge-family table), before any forwarding
//     or local delivery and whether or not br_netfilter is loaded: a
//     frame from one of this daemon's taps (the taps set: those bound to
//     its VMs) must carry its VM's MAC as source; IPv4 must carry its
//     VM's address as source; ARP must name its VM's MAC and address as
//     sender (no claiming the gateway's or another guest's address);
//     every other ethertype (IPv6 included) is dropped. Frames from any
//     other interface, another daemon's taps included, are left to their
//     owner's table: the hook sees every bridge's frames, and not every
//     kernel can match the bridge itself (meta ibrname). A tap is bound
//     before it is made and unbound only after its VMM has exited, so a
//     VM's tap never sends unchecked. Taps are also isolated bridge ports
//     (see Direct.EnsureTap), so no frame goes from one guest to another.
//
// Accepting in banger's table does not override a drop in another table on
// the same hook (a host firewall with a forward drop policy still drops
// guest traffic); a drop here is final.
func Ruleset(f Firewall) string {
	gw := guestcontract.Gateway(f.Subnet)
	br := strconv.Quote(f.Bridge)
	table := TableName(f.Bridge)
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s\n", TableFamily, table)
	fmt.Fprintf(&b, "delete table %s %s\n", TableFamily, table)
	fmt.Fprintf(&b, "table %s %s {\n", TableFamily, table)
	deny := mergePrefixes(DeniedByDefault, []netip.Prefix{f.Subnet}, f.HostNets)
	fmt.Fprintf(&b, "\tset deny {\n\t\ttype ipv4_addr; flags interval;\n\t\telements = { %s }\n\t}\n", nftElements(deny))
	allow := mergePrefixes(f.Allow)
	if len(allow) > 0 {
		fmt.Fprintf(&b, "\tset allow {\n\t\ttype ipv4_addr; flags interval;\n\t\telements = { %s }\n\t}\n", nftElements(allow))
	}
	policed := len(f.Policed) > 0
	proxy := policed && f.ProxyPort != 0
	if policed {
		writePolicedSets(&b, f.Policed)
	}
	if f.DNSPort != 0 || proxy {
		fmt.Fprintf(&b, "\tchain prerouting {\n")
		fmt.Fprintf(&b, "\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
		if f.DNSPort != 0 {
			for _, l4 := range []string{"udp", "tcp"} {
				fmt.Fprintf(&b, "\t\tiifname %s ip saddr %s ip daddr %s %s dport 53 dnat ip to %s:%d\n",
					br, f.Subnet, gw, l4, gw, f.DNSPort)
			}
		}
		if proxy {
			fmt.Fprintf(&b, "\t\tiifname %s ip saddr @proxied ip daddr != %s tcp dport %s ip saddr . ip daddr . meta l4proto . th dport != @grant dnat ip to %s:%d\n",
				br, gw, nftPorts(ProxiedPorts), gw, f.ProxyPort)
		}
		fmt.Fprintf(&b, "\t}\n")
	}
	if policed {
		proxied := nftPorts(ProxiedPorts)
		fmt.Fprintf(&b, "\tchain policed {\n")
		fmt.Fprintf(&b, "\t\tct state established,related accept\n")
		fmt.Fprintf(&b, "\t\tip saddr . ip daddr . meta l4proto . th dport @grant accept\n")
		fmt.Fprintf(&b, "\t\tip daddr @deny goto refused\n")
		fmt.Fprintf(&b, "\t\ttcp dport %s goto refused\n", proxied)
		fmt.Fprintf(&b, "\t\tip saddr . ip daddr . meta l4proto . th dport @pass accept\n")
		fmt.Fprintf(&b, "\t\tgoto refused\n")
		fmt.Fprintf(&b, "\t}\n")
		// What a policed guest sends and may not is logged to bangerd
		// (NFLOG), at a bounded rate so a flood costs the host little.
		fmt.Fprintf(&b, "\tchain refused {\n")
		fmt.Fprintf(&b, "\t\tlimit rate %d/second burst %d packets log group %d\n", RefusedLogRate, 2*RefusedLogRate, RefusedLogGroupFor(f.Bridge))
		fmt.Fprintf(&b, "\t\tdrop\n")
		fmt.Fprintf(&b, "\t}\n")
	}
	fmt.Fprintf(&b, "\tchain postrouting {\n")
	fmt.Fprintf(&b, "\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&b, "\t\tip saddr %s oifname != %s masquerade\n", f.Subnet, br)
	fmt.Fprintf(&b, "\t}\n")
	fmt.Fprintf(&b, "\tchain forward {\n")
	fmt.Fprintf(&b, "\t\ttype filter hook forward priority filter; policy accept;\n")
	if policed {
		fmt.Fprintf(&b, "\t\tiifname %s ip saddr @policed jump policed\n", br)
	}
	if len(allow) > 0 {
		fmt.Fprintf(&b, "\t\tiifname %s oifname != %s ip saddr %s ip daddr @allow accept\n", br, br, f.Subnet)
	}
	fmt.Fprintf(&b, "\t\tiifname %s ip daddr @deny drop\n", br)
	fmt.Fprintf(&b, "\t\tiifname %s oifname != %s ip saddr %s accept\n", br, br, f.Subnet)
	fmt.Fprintf(&b, "\t\toifname %s ip daddr %s ct state established,related accept\n", br, f.Subnet)
	fmt.Fprintf(&b, "\t\tiifname %s drop\n", br)
	fmt.Fprintf(&b, "\t\toifname %s drop\n", br)
	fmt.Fprintf(&b, "\t}\n")
	fmt.Fprintf(&b, "\tchain input {\n")
	fmt.Fprintf(&b, "\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %s ct state established,related accept\n", br)
	dnsPort := uint16(53)
	if f.DNSPort != 0 {
		dnsPort = f.DNSPort // what prerouting redirected port 53 to
	}
	fmt.Fprintf(&b, "\t\tiifname %s ip saddr %s ip daddr %s udp dport %d accept\n", br, f.Subnet, gw, dnsPort)
	fmt.Fprintf(&b, "\t\tiifname %s ip saddr %s ip daddr %s tcp dport %d accept\n", br, f.Subnet, gw, dnsPort)
	if proxy {
		fmt.Fprintf(&b, "\t\tiifname %s ip saddr @proxied ip daddr %s tcp dport %d accept\n", br, gw, f.ProxyPort)
	}
	fmt.Fprintf(&b, "\t\tiifname %s drop\n", br)
	fmt.Fprintf(&b, "\t}\n")
	fmt.Fprintf(&b, "}\n")
	writeBridgeTable(&b, table, f.Guests)
	return b.String()
}

// writePolicedSets declares the sets of the policed guests: whose HTTP
// and HTTPS go to the proxy, who is policed, their grants (intervals, permanent) and their passes
// (intervals with a timeout each, so a learned address closes again by
// itself when its DNS answer expires).
func writePolicedSets(b *strings.Builder, ps []Policed) {
	var proxied, ips, grants, passes []string
	for _, p := range ps {
		proxied = append(proxied, p.IP.String())
		if p.Open {
			continue
		}
		ips = append(ips, p.IP.String())
		for _, g := range p.Grants {
			grants = append(grants, fmt.Sprintf("%s . %s . %s . %s", p.IP, g.Dst, proto(g.UDP), portRange(g.Lo, g.Hi)))
		}
		for _, x := range p.Passes {
			passes = append(passes, fmt.Sprintf("%s . %s . %s . %s timeout %ds", p.IP, x.Dst, proto(x.UDP), portRange(x.Lo, x.Hi), int(x.TTL/time.Second)))
		}
	}
	set := func(name, typ, flags string, elems []string) {
		fmt.Fprintf(b, "\tset %s {\n\t\ttype %s;", name, typ)
		if flags != "" {
			fmt.Fprintf(b, " flags %s;", flags)
		}
		b.WriteString("\n")
		if len(elems) > 0 {
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		b.WriteString("\t}\n")
	}
	const concat = "ipv4_addr . ipv4_addr . inet_proto . inet_service"
	set("proxied", "ipv4_addr", "", proxied)
	set("policed", "ipv4_addr", "", ips)
	set("grant", concat, "interval", grants)
	set("pass", concat, "interval, timeout", passes)
}

func portRange(lo, hi uint16) string {
	if lo == hi {
		return strconv.Itoa(int(lo))
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

func nftPorts(ps []uint16) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = strconv.Itoa(int(p))
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

// writeBridgeTable adds the bridge-family table that binds each tap to
// its VM's lease (see Ruleset).
func writeBridgeTable(b *strings.Builder, table string, guests []Guest) {
	gs := slices.Clone(guests)
	slices.SortFunc(gs, func(x, y Guest) int { return strings.Compare(x.Tap, y.Tap) })
	fmt.Fprintf(b, "table %s %s\n", BridgeTableFamily, table)
	fmt.Fprintf(b, "delete table %s %s\n", BridgeTableFamily, table)
	fmt.Fprintf(b, "table %s %s {\n", BridgeTableFamily, table)
	taps := make([]string, len(gs))
	leases := make([]string, len(gs))
	macs := make([]string, len(gs))
	for i, g := range gs {
		mac := MACForIP(g.IP).String()
		taps[i] = strconv.Quote(g.Tap)
		leases[i] = fmt.Sprintf("%q . %s . %s", g.Tap, mac, g.IP)
		macs[i] = fmt.Sprintf("%q . %s", g.Tap, mac)
	}
	set := func(name, typ string, elems []string) {
		fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", name, typ)
		if len(elems) > 0 {
			fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		fmt.Fprintf(b, "\t}\n")
	}
	set("taps", "ifname", taps)
	set("macs", "ifname . ether_addr", macs)
	set("leases", "ifname . ether_addr . ipv4_addr", leases)
	fmt.Fprintf(b, "\tchain prerouting {\n")
	fmt.Fprintf(b, "\t\ttype filter hook prerouting priority filter; policy accept;\n")
	fmt.Fprintf(b, "\t\tiifname != @taps accept\n")
	fmt.Fprintf(b, "\t\tiifname . ether saddr != @macs drop\n")
	fmt.Fprintf(b, "\t\tether type arp iifname . arp saddr ether . arp saddr ip != @leases drop\n")
	fmt.Fprintf(b, "\t\tether type ip iifname . ether saddr . ip saddr != @leases drop\n")
	fmt.Fprintf(b, "\t\tether type != { arp, ip } drop\n")
	fmt.Fprintf(b, "\t}\n")
	fmt.Fprintf(b, "}\n")
}

// RemoveRuleset returns the nft script that deletes the tables of the
// daemon whose bridge is bridge (TableName), succeeding whether or not
// they exist.
func RemoveRuleset(bridge string) string {
	t := TableName(bridge)
	return fmt.Sprintf("table %s %s\ndelete table %s %s\ntable %s %s\ndelete table %s %s\n",
		TableFamily, t, TableFamily, t, BridgeTableFamily, t, BridgeTableFamily, t)
}
