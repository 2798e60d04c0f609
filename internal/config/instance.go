package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"banger/internal/layout"
)

// InstanceIDLen is the number of hex digits of an instance id.
const InstanceIDLen = 8

// Ranges the network defaults of a non-default instance come from: a /24
// of InstanceSubnets and a DNS port of InstanceDNSPortBase and the
// InstanceDNSPorts after it. The default instance keeps DefaultBridge,
// DefaultSubnet and DefaultDNSListen.
const (
	InstanceSubnets     = "10.128.0.0/9"
	InstanceDNSPortBase = 42070
	InstanceDNSPorts    = 1000
)

// netKeys records which of the per-instance [network] keys a config file
// sets.
type netKeys struct {
	bridge, subnet, dnsListen bool
}

// InstanceID names the daemon instance that keeps stateDir: the first
// InstanceIDLen hex digits of the SHA-256 of the cleaned path. Two
// daemons with different state dirs (a user's and a test suite's) thus
// get different ids, and the same state dir always the same one.
func InstanceID(stateDir string) string {
	sum := instanceSum(stateDir)
	return hex.EncodeToString(sum[:InstanceIDLen/2])
}

func instanceSum(stateDir string) [sha256.Size]byte {
	return sha256.Sum256([]byte(filepath.Clean(stateDir)))
}

// InstanceNetwork returns the bridge, subnet and DNS listen address of
// the instance keeping stateDir when the config sets none: for the
// default state dir (isDefault) banger's defaults, so existing installs
// keep their bridge, subnet, port and firewall table; otherwise values
// derived from the state dir's hash, so a second daemon on the same host
// collides with nothing by default: bridge "bg" and the InstanceID, a
// /24 of InstanceSubnets and a DNS port from InstanceDNSPortBase.
func InstanceNetwork(stateDir string, isDefault bool) (bridge string, subnet netip.Prefix, dnsListen string) {
	if isDefault {
		return DefaultBridge, netip.MustParsePrefix(DefaultSubnet), DefaultDNSListen
	}
	sum := instanceSum(stateDir)
	h := binary.BigEndian.Uint32(sum[:4])
	base := netip.MustParsePrefix(InstanceSubnets)
	idx := h % (1 << (24 - base.Bits())) // which /24 of the range
	b := base.Addr().As4()
	b[1] |= byte(idx >> 8)
	b[2] = byte(idx)
	subnet = netip.PrefixFrom(netip.AddrFrom4(b), 24)
	port := InstanceDNSPortBase + int(h%InstanceDNSPorts)
	return "bg" + InstanceID(stateDir), subnet, "127.0.0.1:" + strconv.Itoa(port)
}

// IsDefaultStateDir reports whether p's state dir is the one chosen
// without $BANGER_STATE_DIR (the user's ordinary install); getenv is
// os.Getenv outside tests.
func IsDefaultStateDir(p Paths, getenv func(string) string) bool {
	def, err := layout.FromEnv(func(k string) string {
		if k == layout.EnvStateDir {
			return ""
		}
		return getenv(k)
	})
	return err == nil && filepath.Clean(def.StateDir) == filepath.Clean(p.StateDir)
}

// ForInstance gives the [network] bridge, subnet and dns_listen keys the
// config file does not set the values of the instance keeping p's state
// dir (InstanceNetwork), so daemons with different state dirs coexist on
// one host without configuration. Keys the file sets are kept.
func (c *Config) ForInstance(p Paths) { c.forInstance(p, os.Getenv) }

func (c *Config) forInstance(p Paths, getenv func(string) string) {
	bridge, subnet, dnsListen := InstanceNetwork(p.StateDir, IsDefaultStateDir(p, getenv))
	if !c.netSet.bridge {
		c.Network.Bridge = bridge
	}
	if !c.netSet.subnet {
		c.Network.Subnet = subnet
	}
	if !c.netSet.dnsListen {
		c.Network.DNSListen = dnsListen
	}
}
