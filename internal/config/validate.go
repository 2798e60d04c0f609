package config

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/guestcontract"
	"banger/internal/units"
)

// Validate checks every value and returns the first problem as one line
// naming the file, the line when known, the key and the reason, e.g.
//
//	config /home/u/.config/banger/config.toml:12: file_sync[2].guest "/etc/x": guest path must be under ~/ or /root/
func (c *Config) Validate() error {
	oneOf := func(key, val string, allowed ...string) error {
		for _, a := range allowed {
			if val == a {
				return nil
			}
		}
		return c.keyErr(key, strconv.Quote(val), "must be one of "+strings.Join(allowed, ", "))
	}
	if err := oneOf("vmm", c.VMM, "auto", "firecracker", "qemu"); err != nil {
		return err
	}
	if err := oneOf("warm_templates", c.WarmTemplates, WarmAuto, WarmManual); err != nil {
		return err
	}
	if err := oneOf("accel", c.Accel, "auto", "kvm", "tcg"); err != nil {
		return err
	}
	if c.VMM == "firecracker" && c.Accel == "tcg" {
		return c.keyErr("accel", `"tcg"`, `firecracker needs KVM; use vmm = "qemu" for tcg`)
	}
	for _, b := range []struct{ key, val string }{{"firecracker_bin", c.FirecrackerBin}, {"qemu_bin", c.QEMUBin}, {"jailer_bin", c.JailerBin}} {
		if strings.Contains(b.val, "/") && !filepath.IsAbs(b.val) {
			return c.keyErr(b.key, strconv.Quote(b.val), "must be an absolute path or a command name on PATH")
		}
	}
	for _, id := range []struct {
		key string
		val int
	}{{"jailer_uid", c.JailerUID}, {"jailer_gid", c.JailerGID}} {
		if id.val < 0 || id.val > 1<<31-2 {
			return c.keyErr(id.key, strconv.Itoa(id.val), "must be a uid or gid above 0 (Firecracker never runs as root in its jail)")
		}
	}
	if c.SSHKey != "" && !filepath.IsAbs(c.SSHKey) && !strings.HasPrefix(c.SSHKey, "~/") {
		return c.keyErr("ssh_key", strconv.Quote(c.SSHKey), `must be absolute or start with "~/"`)
	}
	if c.DefaultImage == "" || strings.ContainsAny(c.DefaultImage, " \t/") {
		return c.keyErr("default_image", strconv.Quote(c.DefaultImage), `must be an image name such as "debian-12"`)
	}
	for i, cat := range c.Catalogs {
		if !validCatalog(cat) {
			return c.keyErr(fmt.Sprintf("catalogs[%d]", i), strconv.Quote(cat), "must be an http(s) URL or an absolute path")
		}
	}
	if err := c.validateNetwork(); err != nil {
		return err
	}
	if err := c.validateVMDefaults(); err != nil {
		return err
	}
	if l := c.Limits.ConsoleLog; l < 0 || l > 0 && l < MinConsoleLog {
		return c.keyErr("limits.console_log", strconv.Quote(l.String()), "must be at least "+units.FormatSize(MinConsoleLog))
	}
	if err := c.validateSecrets(); err != nil {
		return err
	}
	for i, f := range c.FileSync {
		if field, reason := f.check(); field != "" {
			val := map[string]string{"host": f.Host, "guest": f.Guest, "mode": string(f.Mode)}[field]
			return c.keyErr(fmt.Sprintf("file_sync[%d].%s", i, field), strconv.Quote(val), reason)
		}
	}
	return nil
}

func validCatalog(s string) bool {
	if filepath.IsAbs(s) {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// ValidInterfaceName reports whether s is usable as a Linux network
// interface name: 1-15 bytes of [a-zA-Z0-9_.-], not "." or "..".
func ValidInterfaceName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(isBareKeyChar(b) || b == '.') {
			return false
		}
	}
	return true
}

// isBareKeyChar reports whether b may appear in a bare TOML key (and so
// in an interface name).
func isBareKeyChar(b byte) bool {
	return b == '_' || b == '-' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// ManagedIfPrefixes are the name prefixes of the network interfaces
// banger creates and may delete (its bridge and taps); the privileged
// helper refuses to touch any other interface.
var ManagedIfPrefixes = []string{"banger", "bg"}

func (c *Config) validateNetwork() error {
	n := c.Network
	if !ValidInterfaceName(n.Bridge) {
		return c.keyErr("network.bridge", strconv.Quote(n.Bridge), "must be a Linux interface name: 1-15 characters of a-z, A-Z, 0-9, '_', '.', '-'")
	}
	if !slices.ContainsFunc(ManagedIfPrefixes, func(p string) bool { return strings.HasPrefix(n.Bridge, p) }) {
		return c.keyErr("network.bridge", strconv.Quote(n.Bridge), fmt.Sprintf("must start with %q or %q: banger only manages interfaces it names", ManagedIfPrefixes[0], ManagedIfPrefixes[1]))
	}
	pfx := n.Subnet
	if !pfx.IsValid() || !pfx.Addr().Is4() {
		return c.keyErr("network.subnet", strconv.Quote(subnetText(pfx)), `must be an IPv4 prefix such as "10.77.0.0/24"`)
	}
	if pfx.Bits() < guestcontract.MinSubnetBits || pfx.Bits() > guestcontract.MaxSubnetBits {
		return c.keyErr("network.subnet", strconv.Quote(subnetText(pfx)), fmt.Sprintf("prefix length must be between /%d and /%d", guestcontract.MinSubnetBits, guestcontract.MaxSubnetBits))
	}
	if pfx != pfx.Masked() {
		return c.keyErr("network.subnet", strconv.Quote(subnetText(pfx)), fmt.Sprintf("host bits are set; did you mean %q?", pfx.Masked().String()))
	}
	if _, err := netip.ParseAddrPort(n.DNSListen); err != nil {
		return c.keyErr("network.dns_listen", strconv.Quote(n.DNSListen), `must be an address and port such as "127.0.0.1:42069"`)
	}
	for i, u := range n.DNSUpstream {
		if _, err := ParseUpstream(u); err != nil {
			return c.keyErr(fmt.Sprintf("network.dns_upstream[%d]", i), strconv.Quote(u), `must be an IP address, optionally with a port ("192.0.2.53", "192.0.2.53:53", "[2001:db8::1]:53")`)
		}
	}
	for i, a := range n.Allow {
		if _, err := ParseAllow(a); err != nil {
			return c.keyErr(fmt.Sprintf("network.allow[%d]", i), strconv.Quote(a), `must be an IPv4 address or network prefix such as "192.168.1.10" or "10.20.0.0/16"`)
		}
	}
	switch n.Net {
	case "", "open", "allow", "none":
	default:
		return c.keyErr("network.net", strconv.Quote(n.Net), `must be "open", "allow" or "none"`)
	}
	for name := range n.Presets {
		if name == "" || strings.ContainsAny(name, "@ \t") {
			return c.keyErr("network.presets", strconv.Quote(name), "a preset name must be a word without spaces or @")
		}
	}
	return nil
}

// ParseAllow parses one [network] allow entry: an IPv4 address (a /32) or
// an IPv4 network prefix without host bits.
func ParseAllow(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("allow %q: want an IPv4 address or network prefix", s)
	}
	return p, nil
}

// AllowPrefixes returns [network] allow as prefixes (entries that do not
// parse are skipped: Validate has refused them).
func (n Network) AllowPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, a := range n.Allow {
		if p, err := ParseAllow(a); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// ParseUpstream parses a DNS upstream: an IP address (port 53 assumed) or
// an address and port.
func ParseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns upstream %q: %w", s, err)
	}
	return ap, nil
}

func (c *Config) validateVMDefaults() error {
	v := c.VMDefaults
	// Unset keys (zero) take the built-ins, which pass; the rest get the
	// check every VM spec gets.
	spec := api.VMSpec{VCPU: cmp.Or(v.VCPU, BuiltinVCPU), MemoryMiB: cmp.Or(v.MemoryMiB, BuiltinMemoryMiB), DiskBytes: BuiltinDiskBytes}
	if v.DiskSize != 0 {
		spec.DiskBytes = int64(v.DiskSize)
	}
	var se *api.SpecError
	if errors.As(spec.Validate(), &se) {
		key, val := "vm_defaults.vcpu", strconv.Itoa(v.VCPU)
		switch se.Field {
		case api.SpecMemory:
			key, val = "vm_defaults.memory_mib", strconv.Itoa(v.MemoryMiB)
		case api.SpecDisk:
			key, val = "vm_defaults.disk_size", strconv.Quote(v.DiskSize.String())
		}
		return c.keyErr(key, val, se.Rule)
	}
	return nil
}

// subnetText renders a subnet for an error ("" for the zero Prefix).
func subnetText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// Prefix returns the guest subnet without host bits. It is the zero
// Prefix when Subnet is invalid (Validate rejects that).
func (n Network) Prefix() netip.Prefix {
	if !n.Subnet.IsValid() {
		return netip.Prefix{}
	}
	return n.Subnet.Masked()
}

// Gateway returns the bridge's address: the first address of the subnet
// (10.77.0.1 for 10.77.0.0/24).
func (n Network) Gateway() netip.Addr {
	p := n.Prefix()
	if !p.IsValid() {
		return netip.Addr{}
	}
	return guestcontract.Gateway(p)
}
