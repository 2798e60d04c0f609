package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"banger/internal/guestcontract"
)

// Log attribute keys.
const (
	logKeyTap    = "tap"
	logKeyBridge = "bridge"
	logKeyErr    = "err"
)

// refillRetry is how long the background refill waits after a failure
// before trying again (a new Acquire or Release also wakes it).
const refillRetry = 5 * time.Second

// Config is the host network a Manager keeps: the bridge, the guests'
// subnet (the host takes guestcontract.Gateway(Subnet)), how many idle taps to keep
// ready, and the user that owns the taps (the one running the VMMs).
type Config struct {
	Bridge string
	Subnet netip.Prefix
	// Allow are destinations opened to guests although denied by default
	// (see DeniedByDefault).
	Allow    []netip.Prefix
	PoolSize int
	UID, GID int
	// GuestToGuest lets guests reach each other on the bridge (taps are
	// shared bridge ports); by default every tap is an isolated port.
	GuestToGuest bool
}

// Validate checks the names, the subnet, the pool size and the ids.
func (c Config) Validate() error {
	if !ManagedName(c.Bridge) {
		return fmt.Errorf("bridge %q: must be an interface name starting with one of %q", c.Bridge, ManagedPrefixes)
	}
	if err := guestcontract.CheckSubnet(c.Subnet); err != nil {
		return err
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("tap pool size %d: must not be negative", c.PoolSize)
	}
	if c.UID < 0 || c.GID < 0 || c.UID > maxID || c.GID > maxID {
		return fmt.Errorf("tap owner %d:%d: out of range", c.UID, c.GID)
	}
	return nil
}

// Manager keeps banger's host network: it ensures the bridge, the
// firewall table and forwarding, hands out taps from a warm pool that a
// background goroutine refills, takes them back, finds leaked ones and
// tears everything down. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	p   Privileged
	log *slog.Logger

	mu      sync.Mutex
	ensured bool            // Ensure succeeded and no Teardown since
	closed  bool            // Close was called
	pool    []string        // idle taps, ready to hand out, oldest first
	inUse   map[string]bool // taps handed out or adopted
	// guests binds each tap in use to its VM's lease; the firewall lets a
	// tap send only as that VM (Firewall.Guests).
	guests map[string]netip.Addr
	// policed are the guests whose egress is limited, by address; the
	// passes carry absolute expiry times (see policedGuest).
	policed   map[netip.Addr]*policedGuest
	proxyPort uint16
	// fwMu serialises firewall applies, so the last apply always holds
	// every binding made before it.
	fwMu     sync.Mutex
	creating map[string]bool // names reserved while being created or reset
	// refilling counts new pool taps being created, resetting released
	// taps being reset for the pool; both count toward PoolSize. A release
	// wins over a refill in flight (an existing tap is cheaper than a new
	// one); a refill that finds the pool filled meanwhile deletes its tap.
	refilling int
	resetting int
	kick      chan struct{} // wakes the refill loop; buffered, size 1
	stop      context.CancelFunc
	done      chan struct{} // closed when the refill loop exits
}

// New returns a Manager for cfg acting through p. It touches nothing until
// Ensure. logger may be nil.
func New(cfg Config, p Privileged, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:      cfg,
		p:        p,
		log:      logger,
		inUse:    map[string]bool{},
		guests:   map[string]netip.Addr{},
		policed:  map[netip.Addr]*policedGuest{},
		creating: map[string]bool{},
		kick:     make(chan struct{}, 1),
	}
}

// Ensure makes the bridge exist with the gateway address and be up,
// installs banger's nftables table and turns IPv4 forwarding on, then
// starts filling the tap pool in the background. It is idempotent: the
// bridge and forwarding are measured first and only changed when they
// differ; the table is replaced atomically every time (reading it back
// needs privilege, replacing it is as cheap).
//
// Taps left by an earlier daemon are not taken over here: after adopting
// the taps of running VMs, the daemon lists the rest with Orphans and
// hands each to ReleaseTap, which pools or deletes it.
func (m *Manager) Ensure(ctx context.Context) error {
	if err := m.cfg.Validate(); err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return errors.New("ensure host network: manager closed")
	}
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return fmt.Errorf("ensure host network: %w", err)
	}
	if !bridgeReady(st, m.cfg) {
		m.log.Info("creating bridge", logKeyBridge, m.cfg.Bridge, "addr", GatewayPrefix(m.cfg.Subnet).String())
		if err := m.p.EnsureBridge(ctx, m.cfg.Bridge, m.cfg.Subnet); err != nil {
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
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("ensure host network: manager closed")
	}
	m.ensured = true
	if m.stop == nil {
		loopCtx, cancel := context.WithCancel(context.Background())
		m.stop, m.done = cancel, make(chan struct{})
		go m.refillLoop(loopCtx, m.done)
	}
	m.wake()
	return nil
}

// applyFirewall replaces banger's tables with the rules for the current
// bindings. Applies are serialised and each reads the bindings when it
// runs, so concurrent creates never leave a binding out.
func (m *Manager) applyFirewall(ctx context.Context) error {
	m.fwMu.Lock()
	defer m.fwMu.Unlock()
	m.mu.Lock()
	f := Firewall{Bridge: m.cfg.Bridge, Subnet: m.cfg.Subnet, Allow: m.cfg.Allow, ProxyPort: m.proxyPort}
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
	m.mu.Lock()
	m.proxyPort = port
	ensured := m.ensured
	m.mu.Unlock()
	if !ensured {
		return nil
	}
	return m.applyFirewall(ctx)
}

// bridgeReady reports whether the bridge exists, is up and carries
// exactly the gateway address.
func bridgeReady(st State, cfg Config) bool {
	br, ok := st.Link(cfg.Bridge)
	return ok && br.Kind == "bridge" && br.Up && len(br.Addrs) == 1 && br.HasAddr(GatewayPrefix(cfg.Subnet))
}

// tapReady reports whether tap name exists, owned as configured, attached
// to the bridge and up.
func tapReady(st State, cfg Config, name string) bool {
	l, ok := st.Link(name)
	return ok && l.Kind == "tuntap" && l.Up && l.Master == cfg.Bridge && l.Owner == cfg.UID && l.Group == cfg.GID
}

// wake nudges the refill loop without blocking. Callers hold m.mu or not;
// it does not matter.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// refillLoop keeps the pool at PoolSize until ctx ends.
func (m *Manager) refillLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	for {
		var retry <-chan time.Time
		if err := m.fill(ctx); err != nil && ctx.Err() == nil {
			// Nobody waits on the background refill: log, and retry
			// later. AcquireTap still creates taps on demand.
			m.log.Warn("refill tap pool", logKeyErr, err)
			retry = time.After(refillRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-retry:
		}
	}
}

// fill creates taps until the pool (counting taps being created) holds
// PoolSize.
func (m *Manager) fill(ctx context.Context) error {
	for ctx.Err() == nil {
		m.mu.Lock()
		full := !m.ensured || len(m.pool)+m.refilling+m.resetting >= m.cfg.PoolSize
		if !full {
			m.refilling++
		}
		m.mu.Unlock()
		if full {
			return nil
		}
		name, err := m.createTap(ctx)
		m.mu.Lock()
		m.refilling--
		surplus := err == nil && len(m.pool)+m.resetting >= m.cfg.PoolSize
		if err == nil && !surplus {
			m.pool = append(m.pool, name)
		}
		m.mu.Unlock()
		if err != nil {
			return err
		}
		if surplus {
			if err := m.p.DeleteLink(ctx, name); err != nil {
				return fmt.Errorf("delete surplus tap %s: %w", name, err)
			}
			continue
		}
		m.log.Debug("tap pooled", logKeyTap, name)
	}
	return nil
}

// createTap picks the lowest free tap name (free of the pool, the taps in
// use, those being created and every link on the host), reserves it and
// creates the tap.
func (m *Manager) createTap(ctx context.Context) (string, error) {
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return "", fmt.Errorf("create tap: %w", err)
	}
	m.mu.Lock()
	taken := map[string]bool{}
	for _, l := range st.Links {
		taken[l.Name] = true
	}
	for _, n := range m.pool {
		taken[n] = true
	}
	for n := range m.inUse {
		taken[n] = true
	}
	for n := range m.creating {
		taken[n] = true
	}
	name := NextTapName(taken)
	m.creating[name] = true
	m.mu.Unlock()

	err = m.p.EnsureTap(ctx, name, m.cfg.Bridge, m.cfg.UID, m.cfg.GID, m.cfg.GuestToGuest)
	m.mu.Lock()
	delete(m.creating, name)
	m.mu.Unlock()
	if err != nil {
		return "", fmt.Errorf("create tap: %w", err)
	}
	return name, nil
}

// AcquireTap hands out a tap attached to the bridge, up and owned by the
// configured user, bound to the VM leased ip: the firewall lets it send
// only with that VM's MAC and address. The tap is an idle one from the
// pool (checked to still be so, and repaired when not) or, when the pool
// is empty, one created now; the refill loop then tops the pool up.
// Ensure must have succeeded.
func (m *Manager) AcquireTap(ctx context.Context, ip netip.Addr) (string, error) {
	name, err := m.acquireTap(ctx)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	m.guests[name] = ip
	m.mu.Unlock()
	if err := m.applyFirewall(ctx); err != nil {
		m.mu.Lock()
		delete(m.guests, name)
		m.mu.Unlock()
		return "", errors.Join(fmt.Errorf("bind tap %s to %s: %w", name, ip, err), m.ReleaseTap(ctx, name))
	}
	return name, nil
}

func (m *Manager) acquireTap(ctx context.Context) (string, error) {
	m.mu.Lock()
	if !m.ensured {
		m.mu.Unlock()
		return "", errors.New("acquire tap: host network not ensured")
	}
	var name string
	if len(m.pool) > 0 {
		name, m.pool = m.pool[0], m.pool[1:]
		m.inUse[name] = true
	}
	m.mu.Unlock()
	m.wake()

	if name == "" {
		created, err := m.createTap(ctx)
		if err != nil {
			return "", fmt.Errorf("acquire tap: %w", err)
		}
		m.mu.Lock()
		m.inUse[created] = true
		m.mu.Unlock()
		m.wake()
		return created, nil
	}

	// A pooled tap may have been changed or removed behind our back.
	st, err := m.p.Inspect(ctx)
	if err == nil && !tapReady(st, m.cfg, name) {
		err = m.p.EnsureTap(ctx, name, m.cfg.Bridge, m.cfg.UID, m.cfg.GID, m.cfg.GuestToGuest)
	}
	if err != nil {
		m.mu.Lock()
		delete(m.inUse, name)
		m.mu.Unlock()
		return "", fmt.Errorf("acquire tap %s: %w", name, err)
	}
	return name, nil
}

// ReleaseTap takes a tap back once its VMM has exited: it returns to the
// pool if the pool has room (re-attached and up, recreated if it vanished)
// and is deleted otherwise, or when it cannot be reset. Releasing a pooled tap, or a tap already gone
// with no room in the pool, is a no-op, so ReleaseTap is idempotent. It
// also accepts banger taps the Manager does not know (orphans reclaimed at
// daemon start).
func (m *Manager) ReleaseTap(ctx context.Context, name string) error {
	if !ValidTapName(name) {
		return fmt.Errorf("release tap %q: not a banger tap name", name)
	}
	m.mu.Lock()
	if slices.Contains(m.pool, name) || m.creating[name] {
		m.mu.Unlock()
		return nil
	}
	delete(m.inUse, name)
	_, bound := m.guests[name]
	delete(m.guests, name)
	m.mu.Unlock()
	if bound {
		// The binding goes before the tap is pooled or reused. A failed
		// apply leaves a stale binding for a tap nobody sends on; the
		// next bind of that name replaces it.
		if err := m.applyFirewall(ctx); err != nil {
			m.log.Warn("unbind released tap", logKeyTap, name, logKeyErr, err)
		}
	}
	m.mu.Lock()
	room := m.ensured && !m.closed && len(m.pool)+m.resetting < m.cfg.PoolSize
	if room {
		m.creating[name] = true
		m.resetting++
	}
	m.mu.Unlock()

	if !room {
		if err := m.p.DeleteLink(ctx, name); err != nil {
			return fmt.Errorf("release tap: %w", err)
		}
		return nil
	}
	err := m.p.EnsureTap(ctx, name, m.cfg.Bridge, m.cfg.UID, m.cfg.GID, m.cfg.GuestToGuest)
	m.mu.Lock()
	delete(m.creating, name)
	m.resetting--
	if err == nil {
		m.pool = append(m.pool, name)
	}
	m.mu.Unlock()
	if err != nil {
		// A tap that cannot be reset (changed owner, wrong kind) is not
		// worth keeping: delete it rather than leave a leak.
		if delErr := m.p.DeleteLink(ctx, name); delErr != nil {
			err = errors.Join(err, delErr)
		}
		return fmt.Errorf("release tap %s to pool: %w", name, err)
	}
	return nil
}

// IsPoolTap reports whether name is an idle tap in the pool. Pool taps are
// banger's own and never leaks.
func (m *Manager) IsPoolTap(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.pool, name)
}

// Pool returns the idle taps in the pool.
func (m *Manager) Pool() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pool)
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
// they are neither pooled, reused nor reported as orphans, binds each to
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
		m.pool = slices.DeleteFunc(m.pool, func(p string) bool { return p == n })
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

// Orphans lists the taps on the host that carry banger's prefix but are
// neither pooled, being created, handed out, adopted, nor in inUse (the
// caller's own record of running VMs): leaks, sorted by name.
func (m *Manager) Orphans(ctx context.Context, inUse []string) ([]string, error) {
	st, err := m.p.Inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("find orphan taps: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, l := range st.Links {
		n := l.Name
		if l.Kind != "tuntap" || !strings.HasPrefix(n, TapPrefix) {
			continue
		}
		if slices.Contains(m.pool, n) || m.inUse[n] || m.creating[n] || slices.Contains(inUse, n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// Teardown removes everything Ensure and the pool made: the pool taps,
// any orphaned banger taps, banger's nftables table and the bridge. It
// refuses while a tap is in use. IPv4 forwarding is left on (other
// software may rely on it). A later Ensure builds the network again.
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
	m.stopRefill()

	m.mu.Lock()
	pool := m.pool
	m.pool = nil
	m.mu.Unlock()

	orphans, err := m.Orphans(ctx, nil)
	if err != nil {
		return fmt.Errorf("tear down host network: %w", err)
	}
	var errs []error
	for _, n := range append(pool, orphans...) {
		if err := m.p.DeleteLink(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.p.RemoveFirewall(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := m.p.DeleteLink(ctx, m.cfg.Bridge); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down host network: %w", err)
	}
	return nil
}

// stopRefill stops the refill loop and waits for it to exit.
func (m *Manager) stopRefill() {
	m.mu.Lock()
	stop, done := m.stop, m.done
	m.stop, m.done = nil, nil
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Close stops the background refill and waits for it. The taps, the
// bridge and the table stay for the next daemon; Teardown removes them.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.stopRefill()
	return nil
}
