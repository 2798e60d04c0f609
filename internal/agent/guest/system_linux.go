package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/cmdrun"
)

// LinuxSystem is the System of a real guest: syscalls, netlink and
// ssh-keygen.
type LinuxSystem struct{}

var _ System = LinuxSystem{}

// SetHostname sets the kernel hostname.
func (LinuxSystem) SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %s: %w", name, err)
	}
	return nil
}

// ConfigureNetwork brings up lo and the chosen NIC, replaces its address
// and the default route.
func (LinuxSystem) ConfigureNetwork(cfg NetConfig) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	link, err := pickLink(cfg.MAC)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	// A guest restored from another VM's memory still carries that VM's
	// MAC: take the one the host bound to this VM's tap (virtio-net
	// changes it live).
	if mac, err := net.ParseMAC(cfg.MAC); err == nil && cfg.MAC != "" && !strings.EqualFold(link.Attrs().HardwareAddr.String(), mac.String()) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set %s mac %s: %w", name, mac, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   cfg.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(cfg.Address.Bits(), cfg.Address.Addr().BitLen()),
	}}
	// A restored guest also carries that VM's address: remove every other
	// IPv4 address first, so the new one is the primary and its subnet
	// route the one the default route goes through.
	old, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range old {
		if a.IP.Equal(addr.IP) {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove old address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", cfg.Address, name, err)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("set default route via %s on %s: %w", cfg.Gateway, name, err)
		}
	}
	return nil
}

// pickLink returns the NIC with the given MAC, else the first
// non-loopback ethernet-like link by index.
func pickLink(mac string) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	var first netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" || a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		if mac != "" && strings.EqualFold(a.HardwareAddr.String(), mac) {
			return l, nil
		}
		if first == nil {
			first = l
		}
	}
	if first == nil {
		return nil, errors.New("no network interface besides loopback")
	}
	return first, nil
}

// IsMounted reports whether path is a mount point, from
// /proc/self/mountinfo.
func (LinuxSystem) IsMounted(path string) (bool, error) {
	return isMountPoint("/proc/self/mountinfo", path)
}

func isMountPoint(mountinfo, path string) (bool, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return false, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	path = filepath.Clean(path)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == path {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FindLabel finds an ext filesystem by label.
func (LinuxSystem) FindLabel(label string) (string, error) {
	return FindByLabel(label, "/dev/disk/by-label", "/sys/class/block", "/dev")
}

// Mount mounts an ext4 device at target.
func (LinuxSystem) Mount(dev, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	var flags uintptr = unix.MS_NOATIME
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(dev, target, "ext4", flags, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, target, err)
	}
	return nil
}

// Unmount detaches the filesystem at target. EINVAL (nothing mounted
// there) is not an error; EBUSY falls back to a lazy detach so an open
// file cannot keep the config drive reachable by path.
func (LinuxSystem) Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Chown sets the owner of path without following symlinks.
func (LinuxSystem) Chown(path string, uid, gid int) error {
	if err := os.Lchown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// hostKeyTypes are the ssh host keys a guest gets. RSA is left out on
// purpose: a 3072-bit RSA key takes tens of seconds to generate under
// software emulation (TCG), and it would hold up the agent and sshd on
// every first boot; every current ssh client speaks ed25519.
var hostKeyTypes = []string{"ed25519", "ecdsa"}

// ReloadSSHD makes a running sshd load its host keys again: SIGHUP to the
// PID in /run/sshd.pid makes sshd re-execute itself, which rereads them.
// (Asking systemctl costs about a second under emulation; the signal is
// what its reload does.) No pid file means no sshd to reload.
func (LinuxSystem) ReloadSSHD() error {
	b, err := os.ReadFile("/run/sshd.pid")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read sshd pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("sshd pid file holds %q", b)
	}
	if err := unix.Kill(pid, unix.SIGHUP); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal sshd %d: %w", pid, err)
	}
	return nil
}

// Sync flushes every filesystem (sync(2)): the root overlay and the work
// disk both hold identity files.
func (LinuxSystem) Sync() error {
	unix.Sync()
	return nil
}

// GenerateHostKeys creates the missing ed25519 and ecdsa ssh host keys of
// the filesystem at root; existing keys are kept.
func (LinuxSystem) GenerateHostKeys(root string) error {
	bin, err := exec.LookPath("ssh-keygen")
	if err != nil {
		return fmt.Errorf("generate ssh host keys: %w", err)
	}
	for _, typ := range hostKeyTypes {
		key := filepath.Join(root, "etc", "ssh", "ssh_host_"+typ+"_key")
		if _, err := os.Stat(key); err == nil {
			continue
		}
		if err := cmdrun.Run(context.Background(), bin, "-q", "-t", typ, "-N", "", "-C", "", "-f", key); err != nil {
			return fmt.Errorf("generate ssh host keys: %w", err)
		}
	}
	return nil
}
