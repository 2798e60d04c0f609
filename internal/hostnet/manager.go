package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/config"
	"banger/internal/guestcontract"
)

// Log attribute keys.
const (
	logKeyTap    = "tap"
	logKeyBridge = "bridge"
	logKeyErr    = "err"
)

// Config is the host network a Manager keeps: the bridge, the guests'
// subnet (the host takes guestcontract.Gateway(Subnet)), the instance it
// belongs to and the user that owns the taps (the one running the VMMs).
type Config struct {
	Bridge string
	Subnet netip.Prefix
	// Instance identifies the daemon (config.InstanceID of its state
	// dir); the bridge carries it as its alias (Mark), so another
	// daemon configured with the same bridge name refuses it.
	Instance string
	// Allow are destinations opened to guests although denied by default
	// (see DeniedByDefault).
	Allow    []netip.Prefix
	UID, GID int
	// GuestToGuest lets guests reach each other on the bridge (taps are
	// shared bridge ports); by default every tap is an isolated port.
	GuestToGuest bool
}

// Validate checks the names, the subnet and the ids.
func (c Config) Validate() error {
	if !ManagedName(c.Bridge) {
		return fmt.Errorf("bridge %q: must be an interface name starting with one of %q", c.Bridge, ManagedPrefixes)
	}
	if err := guestcontract.CheckSubnet(c.Subnet); err != nil {
		return err
	}
	if !ValidMark(c.Mark()) {
		return fmt.Errorf("instance %q: want %d lowercase hex digits", c.Instance, InstanceIDLen)
	}
	if c.UID < 0 || c.GID < 0 || c.UID > maxID || c.GID > maxID {
		return fmt.Errorf("tap owner %d:%d: out of range", c.UID, c.GID)
	}
	return nil
}

// MarkPrefix starts the alias banger gives its bridge, followed by the
// instance id (Config.Mark), and InstanceIDLen is the id's length.
const (
	MarkPrefix    = "banger:"
	InstanceIDLen = config.InstanceIDLen
)

var markRE = regexp.MustCompile(`^` + MarkPrefix + `[0-9a-f]{` + strconv.Itoa(InstanceIDLen) + `}$`)

// ValidMark reports whether s is a bridge mark banger makes.
func ValidMark(s string) bool { return markRE.MatchString(s) }

// Mark is the alias (IFLA_IFALIAS) the instance's bridge carries:
// "banger:" and the instance id.
func (c Config) Mark() string { return MarkPrefix + c.Instance }

// Conflicts reports why the daemon configured with cfg may not use the
// host network as st shows it, naming the config key to change: the
// subnet (or a prefix overlapping it) is routed through an interface
// other than the bridge; or the bridge exists but is not this instance's
// (another kind of link, marked by another instance, or neither marked
// nor carrying this subnet's gateway address). An unmarked bridge that
// carries exactly the gateway address is an earlier banger's: it is
// adopted and marked by Ensure. nil means no conflict.
func Conflicts(st State, cfg Config) error {
	for _, r := range st.Routes {
		if r.Dev == cfg.Bridge || !r.Dst.IsValid() || r.Dst.Bits() == 0 {
			continue // the bridge's own route, or a default route
		}
		if r.Dst.Overlaps(cfg.Subnet) {
			return fmt.Errorf("network.subnet %s overlaps %s on %s; set [network] subnet", cfg.Subnet, r.Dst, r.Dev)
		}
	}
	br, ok := st.Link(cfg.Bridge)
	switch {
	case !ok || br.Alias == cfg.Mark():
		return nil
	case br.Kind != "bridge":
		return fmt.Errorf("network.bridge %s exists as a %s, not banger's bridge; set [network] bridge", cfg.Bridge, br.Kind)
	case strings.HasPrefix(br.Alias, MarkPrefix):
		return fmt.Errorf("network.bridge %s belongs to another banger instance (%s, this one is %s: another bangerd with its own state dir?); set [network] bridge",
			cfg.Bridge, br.Alias, cfg.Mark())
	case br.Alias != "":
		return fmt.Errorf("network.bridge %s is not banger's (alias %q); set [network] bridge", cfg.Bridge, br.Alias)
	case !br.HasAddr(GatewayPrefix(cfg.Subnet)):
		return fmt.Errorf("network.bridge %s exists unmarked and without the gateway address %s (another program's, or another banger instance's?); set [network] bridge, or delete the bridge",
			cfg.Bridge, GatewayPrefix(cfg.Subnet))
	}
	return nil
}

// Manager keeps banger's host network: it ensures the bridge, the
// firewall table and forwarding, makes each VM's tap (named after the VM)
// and binds it to the VM's lease, deletes it again, finds leaked ones and
// tears everything down. Its methods are safe for concurrent use.
//
// There is no pool of idle taps: creating a VM's tap and applying the
// firewall that binds it run at the same time, so on the sudo path a
// create pays one privileged round trip, as a pooled tap did, and a
// leaked tap always names its VM (BenchmarkNetworkStage measures it).
type Manager struct {
	cfg Config
	p   Privileged
	log *slog.Logger

	mu      sync.Mutex
	ensured bool            // Ensure succeeded and no Teardown since
	inUse   map[string]bool // taps made for a VM or adopted
	// guests binds each tap in use to its VM's lease; the firewall lets a
	// tap send only as that VM (Firewall.Guests).
	guests map[string]netip.Addr
	// policed are the guests whose egress is limited, by address; the
	// passes carry absolute expiry times (see policedGuest).
	policed   map[netip.Addr]*policedGuest
	proxyPort uint16
	dnsPort   uint16
	// fwMu serialises firewall applies, so the last apply always holds
	// every binding made before it.
	fwMu sync.Mutex
}

// New returns a Manager for cfg acting through p. It touches nothing until
// Ensure. logger may be nil.
func New(cfg Config, p Privileged, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:     cfg,
		p:       p,
		log:     logger,
		inUse:   map[string]bool{},
		guests:  map[string]netip.Addr{},
		policed: map[netip.Addr]*policedGuest{},
	}
}

// Ensure makes the bridge exist with the gateway address, marked as this
// instance's, and be up, installs the instance's nftables tables and turns
// IPv4 forwarding on. It refuses, changing nothing, when the host network
// conflicts with another (Conflicts). It is idempotent: the bridge and
// forwarding are measured first and only changed when they differ; the
// tables are replaced atomically every time (reading them back needs
// privilege, replacing them is as cheap).
//
// Taps left by an earlier daemon are not taken over here: after adopting
// the taps of running VMs, the daemon lists the rest with Orphans and
// deletes each with ReleaseTap.
func (m *Manager) Ensure(ctx context.Context) error {
	if err := m.cfg.Validate(); err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	if err := Conflicts(st, m.cfg); err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	if !bridgeReady(st, m.cfg) {
		m.log.Info("creating bridge", logKeyBridge, m.cfg.Bridge, "addr", GatewayPrefix(m.cfg.Subnet).String())
		if err := m.p.EnsureBridge(ctx, m.cfg.Bridge, m.cfg.Subnet, m.cfg.Mark()); err != nil {
			return fmt.Errorf("ensure host network: %w", err)
		}
	}
	if err := m.applyFirewall(ctx); err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	if !st.Forwarding {
		m.log.Info("enabling ipv4 forwarding")
		if err := m.p.EnableForwarding(ctx); err != nil {
			return fmt.Errorf("ensure host network: %w", err)
		}
	}
	m.mu.Lock()
	m.ensured = true
	m.mu.Unlock()
	return nil
}

// Check reads the host network and reports a conflict with another
// instance or network (Conflicts) without changing anything; the daemon
// runs it at start so a clash is an error then, not at the first VM.
func (m *Manager) Check(ctx context.Context) error {
	if err := m.cfg.Validate(); err != nil {
		return fmt.Errorf("check host network: %w", err)
	}
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("check host network: %w", err)
	}
	return Conflicts(st, m.cfg)
}

// applyFirewall replaces banger's tables with the rules for the current
// bindings. Applies are serialised and each reads the bindings when it
// runs, so concurrent creates never leave a binding out.
func (m *Manager) applyFirewall(ctx context.Context) error {
	m.fwMu.Lock()
	defer m.fwMu.Unlock()
	m.mu.Lock()
	f := Firewall{Bridge: m.cfg.Bridge, Subnet: m.cfg.Subnet, Allow: m.cfg.Allow, ProxyPort: m.proxyPort, DNSPort: m.dnsPort}
	for tap, ip := range m.guests {
		f.Guests = append(f.Guests, Guest{Tap: tap, IP: ip})
	}
	now := time.Now()
	for ip, pg := range m.policed {
		f.Policed = append(f.Policed, pg.firewall(ip, now))
	}
	m.mu.Unlock()
	slices.SortFunc(f.Guests, func(a, b Guest) int { return strings.Compare(a.Tap, b.Tap) })
	slices.SortFunc(f.Policed, func(a, b Policed) int { return a.IP.Compare(b.IP) })
	return m.p.ApplyFirewall(ctx, f)
}

// policedGuest is a policed guest's state in the Manager: its grants and
// its passes with absolute expiry times.
type policedGuest struct {
	open   bool
	grants []Grant
	passes map[passKey]time.Time
}

type passKey struct {
	dst    netip.Addr
	lo, hi uint16
	udp    bool
}

// firewall returns the guest's entry for the ruleset at now, forgetting
// passes that have expired.
func (pg *policedGuest) firewall(ip netip.Addr, now time.Time) Policed {
	p := Policed{IP: ip, Open: pg.open, Grants: slices.Clone(pg.grants)}
	for k, exp := range pg.passes {
		ttl := exp.Sub(now).Truncate(time.Second)
		if ttl < time.Second {
			delete(pg.passes, k)
			continue
		}
		p.Passes = append(p.Passes, Pass{Dst: k.dst, Lo: k.lo, Hi: k.hi, UDP: k.udp, TTL: ttl})
	}
	slices.SortFunc(p.Passes, func(a, b Pass) int {
		if c := a.Dst.Compare(b.Dst); c != 0 {
			return c
		}
		if a.UDP != b.UDP {
			return map[bool]int{false: -1, true: 1}[a.UDP]
		}
		return int(a.Lo) - int(b.Lo)
	})
	return p
}

// Police limits the egress of the guest at ip to p's grants (and to what
// AddPasses opens later; only its HTTP and HTTPS go to the proxy when p
// is Open), or lifts the limit when p is nil. Its
// passes are forgotten either way: a new policy starts from its DNS
// answers afresh. The firewall is applied at once when the network is
// up, so a running guest gets the change; otherwise at the next Ensure
// or AcquireTap. Lifting the limit of a guest that has none applies
// nothing.
func (m *Manager) Police(ctx context.Context, ip netip.Addr, p *Policed) error {
	m.mu.Lock()
	_, was := m.policed[ip]
	if p != nil {
		m.policed[ip] = &policedGuest{open: p.Open, grants: slices.Clone(p.Grants), passes: map[passKey]time.Time{}}
	} else {
		delete(m.policed, ip)
	}
	ensured := m.ensured && (p != nil || was)
	m.mu.Unlock()
	if !ensured {
		return nil
	}
	if err := m.applyFirewall(ctx); err != nil {
		return fmt.Errorf("police %s: %w", ip, err)
	}
	return nil
}

// MaxPassesPerGuest bounds the learned passes one guest holds at once: a
// guest resolving ever new names under a wildcard rule cannot grow the
// firewall without end (its DNS answers fail until some expire).
const MaxPassesPerGuest = 4096

// AddPasses opens, for the policed guest at ip, each pass until its TTL
// runs out. A pass already open for at least half its new TTL changes
// nothing, so a guest re-resolving a name costs no firewall apply. It
// returns once the firewall holds them: the caller (the DNS answer) may
// then let the guest connect.
func (m *Manager) AddPasses(ctx context.Context, ip netip.Addr, passes []Pass) error {
	now := time.Now()
	m.mu.Lock()
	pg := m.policed[ip]
	if pg == nil {
		m.mu.Unlock()
		return fmt.Errorf("add passes for %s: not a policed guest", ip)
	}
	changed := false
	for k, exp := range pg.passes {
		if !exp.After(now) {
			delete(pg.passes, k)
		}
	}
	fresh := map[passKey]bool{}
	for _, x := range passes {
		if k := (passKey{x.Dst, x.Lo, x.Hi, x.UDP}); pg.passes[k].IsZero() {
			fresh[k] = true
		}
	}
	if len(pg.passes)+len(fresh) > MaxPassesPerGuest {
		m.mu.Unlock()
		return fmt.Errorf("add passes for %s: %d open already and %d more asked, at most %d", ip, len(pg.passes), len(fresh), MaxPassesPerGuest)
	}
	for _, x := range passes {
		ttl := min(max(x.TTL, time.Second), MaxPassTTL)
		k := passKey{x.Dst, x.Lo, x.Hi, x.UDP}
		if exp, ok := pg.passes[k]; ok && exp.Sub(now) >= ttl/2 {
			continue
		}
		pg.passes[k] = now.Add(ttl)
		changed = true
	}
	ensured := m.ensured
	m.mu.Unlock()
	if !changed || !ensured {
		return nil
	}
	if err := m.applyFirewall(ctx); err != nil {
		return fmt.Errorf("add passes for %s: %w", ip, err)
	}
	return nil
}

// SetProxyPort tells the firewall where the egress proxy listens on the
// gateway, so policed guests' HTTP and HTTPS reach it (0: nowhere, and
// they are dropped). It applies the firewall when the network is up.
func (m *Manager) SetProxyPort(ctx context.Context, port uint16) error {
	return m.setPort(ctx, &m.proxyPort, port)
}

// SetDNSPort tells the firewall the port banger's DNS server listens on
// at the gateway, so guests' DNS to the gateway's port 53 reaches it
// (0: port 53 itself). It applies the firewall when the network is up.
func (m *Manager) SetDNSPort(ctx context.Context, port uint16) error {
	return m.setPort(ctx, &m.dnsPort, port)
}

// setPort sets one of the firewall's ports (a field of m, guarded by
// m.mu) and applies the firewall when the network is up.
func (m *Manager) setPort(ctx context.Context, field *uint16, port uint16) error {
	m.mu.Lock()
	*field = port
	ensured := m.ensured
	m.mu.Unlock()
	if !ensured {
		return nil
	}
	return m.applyFirewall(ctx)
}

// bridgeReady reports whether the bridge exists, is up, carries exactly
// the gateway address and this instance's mark.
func bridgeReady(st State, cfg Config) bool {
	br, ok := st.Link(cfg.Bridge)
	return ok && br.Kind == "bridge" && br.Up && len(br.Addrs) == 1 && br.HasAddr(GatewayPrefix(cfg.Subnet)) &&
		br.Alias == cfg.Mark()
}

// AcquireTap makes the tap of the VM with id vmID (TapName), attached to
// the bridge, up and owned by the configured user, and binds it to the
// VM's lease ip: the firewall lets it send only with that VM's MAC and
// address. The tap is created idempotently (one left by a crash is
// repaired and reused) while the firewall is applied; both must succeed
// before it is handed out, and on failure neither the tap nor the binding
// stays. Ensure must have succeeded.
func (m *Manager) AcquireTap(ctx context.Context, vmID string, ip netip.Addr) (string, error) {
	name, err := TapName(vmID)
	if err != nil {
		return "", fmt.Errorf("acquire tap: %w", err)
	}
	m.mu.Lock()
	switch {
	case !m.ensured:
		m.mu.Unlock()
		return "", errors.New("acquire tap: host network not ensured")
	case m.inUse[name]:
		m.mu.Unlock()
		return "", fmt.Errorf("acquire tap %s: already in use (another VM's id starts with %s)", name, vmID[:TapIDLen])
	}
	m.inUse[name] = true
	m.guests[name] = ip
	m.mu.Unlock()

	// The firewall names taps by interface name, so it may bind this one
	// before it exists; no frame can enter the tap until a VMM opens it.
	tapErr := make(chan error, 1)
	go func() {
		tapErr <- m.p.EnsureTap(ctx, name, m.cfg.Bridge, m.cfg.UID, m.cfg.GID, m.cfg.GuestToGuest)
	}()
	fwErr := m.applyFirewall(ctx)
	if err := errors.Join(<-tapErr, fwErr); err != nil {
		return "", errors.Join(fmt.Errorf("acquire tap %s for %s: %w", name, ip, err), m.ReleaseTap(ctx, name))
	}
	m.log.Debug("tap made", logKeyTap, name, "ip", ip.String())
	return name, nil
}

// ReleaseTap unbinds a tap from its VM once the VMM has exited and
// deletes it. Releasing a tap already gone is a no-op, so ReleaseTap is
// idempotent. It also accepts banger taps the Manager does not know
// (orphans reclaimed at daemon start, numbered pool taps of an earlier
// daemon).
func (m *Manager) ReleaseTap(ctx context.Context, name string) error {
	if !ValidTapName(name) {
		return fmt.Errorf("release tap %q: not a banger tap name", name)
	}
	m.mu.Lock()
	_, bound := m.guests[name]
	delete(m.guests, name)
	m.mu.Unlock()
	var errs []error
	if bound {
		// The binding goes first, so a tap of that name made later
		// starts from the new VM's binding only. A failed apply leaves a
		// stale binding for a tap nobody sends on; the next apply drops
		// it.
		if err := m.applyFirewall(ctx); err != nil {
			m.log.Warn("unbind released tap", logKeyTap, name, logKeyErr, err)
		}
	}
	if err := m.p.DeleteLink(ctx, name); err != nil {
		errs = append(errs, err)
	}
	m.mu.Lock()
	delete(m.inUse, name)
	m.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release tap %s: %w", name, err)
	}
	return nil
}

// InUse returns the taps handed out or adopted, sorted.
func (m *Manager) InUse() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.inUse))
	for n := range m.inUse {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Adopt marks the taps of VMs found running at daemon start as in use, so
// they are not reported as orphans, binds each to
// its VM's lease and applies the firewall with those bindings (when there
// are any). Names that are not banger tap names are ignored.
func (m *Manager) Adopt(ctx context.Context, guests map[string]netip.Addr) error {
	m.mu.Lock()
	for n, ip := range guests {
		if !ValidTapName(n) {
			continue
		}
		m.inUse[n] = true
		m.guests[n] = ip
	}
	n := len(m.guests)
	m.mu.Unlock()
	if n == 0 {
		return nil
	}
	if err := m.applyFirewall(ctx); err != nil {
		return fmt.Errorf("adopt taps: %w", err)
	}
	return nil
}

// Orphans lists the banger taps on the host that are neither made nor
// adopted by this Manager and that mine accepts (nil accepts all): leaks,
// sorted by name. A tap named after a VM belongs to the daemon that has
// that VM, so a daemon passes a mine that asks its own store and leaves
// another daemon's taps alone.
func (m *Manager) Orphans(ctx context.Context, mine func(tap string) bool) ([]string, error) {
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("find orphan taps: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, l := range st.Links {
		n := l.Name
		if l.Kind != "tuntap" || !ValidTapName(n) || m.inUse[n] {
			continue
		}
		if mine != nil && !mine(n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// Teardown removes everything Ensure made: the taps left on the bridge,
// the instance's nftables tables and the bridge. Another instance's taps
// (on another bridge) and tables are left alone, as is a bridge another
// instance has marked. It refuses while a tap is in use. IPv4 forwarding
// is left on (other software may rely on it). A later Ensure builds the
// network again.
func (m *Manager) Teardown(ctx context.Context) error {
	m.mu.Lock()
	if len(m.inUse) > 0 {
		in := make([]string, 0, len(m.inUse))
		for n := range m.inUse {
			in = append(in, n)
		}
		slices.Sort(in)
		m.mu.Unlock()
		return fmt.Errorf("tear down host network: taps in use: %s", strings.Join(in, ", "))
	}
	m.ensured = false
	m.mu.Unlock()

	st, err := m.p.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("tear down host network: %w", err)
	}
	var errs []error
	for _, l := range st.Links {
		if l.Kind == "tuntap" && ValidTapName(l.Name) && l.Master == m.cfg.Bridge {
			if err := m.p.DeleteLink(ctx, l.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := m.p.RemoveFirewall(ctx, m.cfg.Bridge); err != nil {
		errs = append(errs, err)
	}
	if br, ok := st.Link(m.cfg.Bridge); ok && br.Alias != "" && br.Alias != m.cfg.Mark() {
		m.log.Warn("bridge of another instance left alone", logKeyBridge, m.cfg.Bridge, "mark", br.Alias)
	} else if err := m.p.DeleteLink(ctx, m.cfg.Bridge); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down host network: %w", err)
	}
	return nil
}

// Close releases nothing on the host: the taps, the bridge and the table
// stay for the next daemon; Teardown removes them. It exists so the
// daemon can treat the Manager like its other subsystems.
func (m *Manager) Close() error { return nil }
