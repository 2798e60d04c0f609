package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/egress"
	"banger/internal/hostcap"
	"banger/internal/hostnet"
	"banger/internal/sshkey"
	"banger/internal/vmctl"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// reapInterval is how often the daemon looks for VMMs that died behind
// its back.
const reapInterval = 2 * time.Second

// startVMs brings up what VMs need: banger's ssh key, the DNS server, the
// host-network manager (which touches nothing until the first VM starts),
// the VMM drivers and the lifecycle manager; then it reconciles VMs that
// were running before this daemon started.
func (d *Daemon) startVMs(ctx context.Context) error {
	// ssh_key may start with "~/"; Ensure needs the path itself.
	var configured string
	if d.Config.SSHKey != "" {
		p, err := d.Config.SSHKeyPath(d.Paths)
		if err != nil {
			return fmt.Errorf("ssh key: %w", err)
		}
		configured = p
	}
	key, err := sshkey.Ensure(ctx, configured, d.Paths.SSHDir)
	if err != nil {
		return fmt.Errorf("ssh key: %w", err)
	}
	d.sshKey = key
	d.knownHosts = &sshkey.KnownHosts{Path: filepath.Join(d.Paths.SSHDir, "known_hosts")}

	if d.Config.Network.TapPoolSize != 0 {
		d.Logger.Info("network.tap_pool_size is ignored: each VM's tap is made for it and named after it")
	}
	host := newHostProbe(d.Config)
	jailer, err := d.jailer()
	if err != nil {
		return err
	}
	netCfg := hostnet.Config{
		Bridge:   d.Config.Network.Bridge,
		Subnet:   d.Config.Network.Prefix(),
		Instance: config.InstanceID(d.Paths.StateDir),
		Allow:    d.Config.Network.AllowPrefixes(),
		// Off by default: each tap is an isolated bridge port.
		GuestToGuest: d.Config.Network.GuestToGuest,
		UID:          os.Getuid(),
		GID:          os.Getgid(),
	}
	if jailer != nil {
		// A jailed Firecracker has dropped to the jail's ids when it opens
		// its tap (QEMU, run as root here, opens any).
		netCfg.UID, netCfg.GID = jailer.UID, jailer.GID
	}
	var priv hostnet.Privileged = hostnet.Direct{}
	if os.Geteuid() != 0 {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find bangerd for sudo: %w", err)
		}
		priv = hostnet.Sudo{Bangerd: self}
	}
	d.hostNet = hostnet.New(netCfg, priv, d.Logger.With("component", "hostnet"))
	// Another daemon's bridge or a network already routing the subnet is
	// said now, naming the key to change; it fails every VM start (the
	// Manager's Ensure checks again) but not the daemon, which images
	// and other work without VMs do not need the network for.
	if err := d.hostNet.Check(ctx); err != nil {
		d.Logger.Error("host network conflict: VMs cannot start until it is fixed", logKeyErr, err)
	}
	bridge, subnet := d.Config.Network.Bridge, d.Config.Network.Prefix()
	d.egress = egress.New(d.hostNet, func(a netip.Addr) bool { return hostnet.Denied(bridge, subnet, a) },
		d.Logger.With("component", "egress"))
	home, _ := os.UserHomeDir()
	secrets, err := egress.NewSecrets(d.Config.Secrets, home)
	if err != nil {
		return fmt.Errorf("config [[secret]]: %w", err)
	}
	d.egress.Secrets = secrets
	vmsDir := d.Paths.VMsDir
	d.egress.CAs = func(vmID string) (*egress.CA, error) { return egress.LoadCA(filepath.Join(vmsDir, vmID)) }
	// Packets the firewall refuses policed guests reach the flow log when
	// bangerd may read the kernel's log (as root).
	if l, err := hostnet.OpenRefusedLog(bridge); err != nil {
		d.Logger.Info("refused packets will not be in flow logs", logKeyErr, err)
	} else {
		go func() {
			if err := l.Watch(d.runCtx, d.egress.Refused); err != nil {
				d.Logger.Warn("refused-packet log", logKeyErr, err)
			}
		}()
	}
	// Rules in the config are checked now, not at the first create.
	if _, err := egress.Parse(d.Config.Network.Net, d.Config.Network.NetAllow, egress.ModeOpen, egress.Presets(d.Config.Network.Presets)); err != nil {
		return fmt.Errorf("config [network] net/net_allow: %w", err)
	}
	for name, rules := range d.Config.Network.Presets {
		if _, err := egress.Parse(egress.ModeAllow, rules, "", nil); err != nil {
			return fmt.Errorf("config [network.presets] %s: %w", name, err)
		}
	}
	d.dns = dns.New(d.Config.Network.DNSUpstream, d.Logger.With("component", "dns"))
	d.dns.Gate = d.egress
	// Guests are served from their subnet only; loopback always.
	d.dns.AllowSources(d.Config.Network.Prefix())
	if addr := d.Config.Network.DNSListen; addr != "" {
		if err := d.dns.Listen(ctx, addr); errors.Is(err, syscall.EADDRINUSE) {
			// Most likely another bangerd with the same port.
			return fmt.Errorf("network.dns_listen %s is in use (another bangerd?); set [network] dns_listen", addr)
		} else if err != nil {
			// Not a clash (no such local address, say): VMs still run;
			// status shows the host has no DNS for them.
			d.Logger.Warn("dns listener unavailable", "addr", addr, logKeyErr, err)
		} else if addrs := d.dns.Addrs(); len(addrs) > 0 {
			d.dnsListen = addrs[0] // the bound address, even for port 0
		}
	}

	nw := &vmNetwork{Manager: d.hostNet, dns: d.dns, gateway: d.Config.Network.Gateway(), log: d}

	drivers := map[string]vmm.Driver{
		vmm.QEMU:        &qemu.Driver{Binary: host.QEMU()},
		vmm.Firecracker: &firecracker.Driver{Binary: host.Firecracker(), Jailer: jailer},
	}
	d.VMs = vmctl.New(vmctl.Options{
		Store:   d.Store,
		Images:  d.ImageManager(),
		Network: nw,
		DNS:     d.dns,
		Egress:  d.egress,
		Host:    host,
		Drivers: drivers,
		Handles: vmm.NewHandleCache(d.Paths.VMsDir),
		Config:  d.Config,
		VMsDir:  d.Paths.VMsDir,
		// A guest writes its console; the bound is the user's.
		ConsoleLogMax: d.Config.Limits.ConsoleLogBytes(),
		SSHKey:        key,
		KnownHosts:    d.knownHosts,
		Logger:        d.Logger.With("component", "vmctl"),
	})
	d.Sessions = d.newSessions()
	if err := d.VMs.Reconcile(ctx); err != nil {
		d.Logger.Warn("reconcile", logKeyErr, err)
	}
	d.reclaimTaps(ctx)
	// Taps of running VMs keep the host network in use: bring the bridge
	// and table back (idempotent) so guests keep their NAT and DNS.
	if len(d.hostNet.InUse()) > 0 {
		if err := nw.Ensure(ctx); err != nil {
			d.Logger.Warn("restore host network", logKeyErr, err)
		}
	}
	go d.VMs.Watch(d.runCtx, reapInterval)
	return nil
}

// stopVMs releases the daemon's hold on VMs; the VMs keep running.
func (d *Daemon) stopVMs() error {
	var errs []error
	if d.VMs != nil {
		d.VMs.Close()
	}
	if d.hostNet != nil {
		errs = append(errs, d.hostNet.Close())
	}
	if d.dns != nil {
		errs = append(errs, d.dns.Close())
	}
	return errors.Join(errs...)
}

// vmNetwork is the host network as the lifecycle sees it: ensuring it
// also makes the DNS server answer guests on the gateway address.
type vmNetwork struct {
	*hostnet.Manager
	dns     *dns.Server
	gateway netip.Addr
	log     *Daemon

	mu      sync.Mutex
	dnsPort uint16 // where the DNS server serves guests; 0 until it does
	proxy   sync.Once
}

// Ensure sets up the bridge, NAT and firewall, then serves guests' DNS:
// the server listens on the gateway at a port the kernel picks (no
// privilege needed, as root or not) and the firewall redirects guests'
// queries to the gateway's port 53 there, so the guests' resolv.conf
// names the gateway alone. A failure to listen fails Ensure (and the VM
// create), and the next Ensure tries again.
func (n *vmNetwork) Ensure(ctx context.Context) error {
	if err := n.Manager.Ensure(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dnsPort == 0 {
		ap, err := n.dns.ListenAddr(ctx, net.JoinHostPort(n.gateway.String(), "0"))
		if err != nil {
			return fmt.Errorf("dns for guests: %w", err)
		}
		n.dnsPort = ap.Port()
		if err := n.Manager.SetDNSPort(ctx, n.dnsPort); err != nil {
			// The Manager keeps the port: the next apply carries it.
			return fmt.Errorf("dns for guests on port %d: %w", n.dnsPort, err)
		}
	}
	n.proxy.Do(func() { n.log.startProxy(ctx, n.gateway) })
	return nil
}

// newHostProbe answers vmctl's questions about the host through hostcap,
// the probes `banger doctor`'s checks use, so both agree.
func newHostProbe(cfg *config.Config) *hostcap.VMHost {
	return &hostcap.VMHost{
		Probes:         hostcap.Real(),
		FirecrackerBin: cfg.FirecrackerBin,
		QEMUBin:        cfg.QEMUBin,
		Memory: func() int {
			info, err := config.ProbeHost()
			if err != nil {
				return 0
			}
			return info.MemoryMiB
		},
	}
}

// reclaimTaps deletes the taps an earlier run of this daemon left: taps
// named after one of its VMs that is not running (adopted taps are in
// use and never listed), and the numbered pool taps of daemons before
// taps were named after VMs. A tap named after a VM this daemon does not
// have is another daemon's and is left alone.
func (d *Daemon) reclaimTaps(ctx context.Context) {
	vms, err := d.Store.ListVMs(ctx)
	if err != nil {
		d.Logger.Warn("find orphan taps", logKeyErr, err)
		return
	}
	mine := map[string]bool{}
	for _, vm := range vms {
		if tap, err := hostnet.TapName(vm.ID); err == nil {
			mine[tap] = true
		}
	}
	orphans, err := d.hostNet.Orphans(ctx, func(tap string) bool {
		if _, named := hostnet.TapVMID(tap); !named {
			return true // a numbered pool tap of an earlier daemon
		}
		if !mine[tap] {
			d.Logger.Info("tap of a vm this daemon does not have left alone", "tap", tap)
			return false
		}
		return true
	})
	if err != nil {
		d.Logger.Warn("find orphan taps", logKeyErr, err)
		return
	}
	for _, tap := range orphans {
		if err := d.hostNet.ReleaseTap(ctx, tap); err != nil {
			d.Logger.Warn("reclaim orphan tap", "tap", tap, logKeyErr, err)
		} else {
			d.Logger.Info("reclaimed orphan tap", "tap", tap)
		}
	}
}

// jailer returns how Firecracker is jailed: under Firecracker's jailer
// when bangerd runs as root and a jailer is found (jailer_bin, else
// "jailer" on PATH), else nil (Firecracker runs as bangerd's user, its
// seccomp filter on). The choice is logged; doctor reports it too.
func (d *Daemon) jailer() (*firecracker.Jailer, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	path, err := hostcap.FindJailer(hostcap.Real(), d.Config.JailerBin)
	if err != nil {
		if d.Config.JailerBin != "" && !errors.Is(err, hostcap.ErrJailerOff) {
			return nil, fmt.Errorf("config jailer_bin: %w", err)
		}
		d.Logger.Info("firecracker runs without its jailer", "reason", err.Error())
		return nil, nil
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("config jailer_bin: %w", err)
	}
	uid, gid := d.Config.JailerIDs()
	if err := os.MkdirAll(d.Paths.JailsDir, 0o755); err != nil {
		return nil, fmt.Errorf("jail base: %w", err)
	}
	d.Logger.Info("firecracker runs under its jailer", "jailer", path, "uid", uid, "gid", gid, "base", d.Paths.JailsDir)
	return &firecracker.Jailer{Binary: path, UID: uid, GID: gid, BaseDir: d.Paths.JailsDir}, nil
}
