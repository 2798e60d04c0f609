package config

import (
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"banger/internal/layout"
)

func TestInstanceNetwork(t *testing.T) {
	bridge, subnet, dns := InstanceNetwork("/home/u/.local/state/banger", true)
	if bridge != DefaultBridge || subnet.String() != DefaultSubnet || dns != DefaultDNSListen {
		t.Errorf("default instance: %s %s %s, want the defaults", bridge, subnet, dns)
	}

	seen := map[string]string{}
	for i := range 50 {
		dir := "/tmp/bge2e-" + strconv.Itoa(i) + "/s"
		bridge, subnet, dns := InstanceNetwork(dir, false)
		b2, s2, d2 := InstanceNetwork(dir+"/", false) // same dir, other spelling
		if b2 != bridge || s2 != subnet || d2 != dns {
			t.Errorf("%s: not stable: %s %s %s vs %s %s %s", dir, bridge, subnet, dns, b2, s2, d2)
		}
		if !regexp.MustCompile(`^bg[0-9a-f]{8}$`).MatchString(bridge) || bridge != "bg"+InstanceID(dir) {
			t.Errorf("%s: bridge %q, want bg and the instance id %s", dir, bridge, InstanceID(dir))
		}
		if !netip.MustParsePrefix(InstanceSubnets).Contains(subnet.Addr()) || subnet.Bits() != 24 || subnet.Masked() != subnet {
			t.Errorf("%s: subnet %s, want a /24 of %s", dir, subnet, InstanceSubnets)
		}
		ap, err := netip.ParseAddrPort(dns)
		if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") ||
			ap.Port() < InstanceDNSPortBase || ap.Port() >= InstanceDNSPortBase+InstanceDNSPorts {
			t.Errorf("%s: dns_listen %q, want 127.0.0.1:%d-%d", dir, dns, InstanceDNSPortBase, InstanceDNSPortBase+InstanceDNSPorts-1)
		}
		if other, dup := seen[bridge]; dup {
			t.Errorf("%s and %s share bridge %s", dir, other, bridge)
		}
		seen[bridge] = dir
		c := &Config{Network: Network{Bridge: bridge, Subnet: subnet, DNSListen: dns}}
		if err := c.validateNetwork(); err != nil {
			t.Errorf("%s: derived network invalid: %v", dir, err)
		}
	}
}

func TestForInstance(t *testing.T) {
	home := t.TempDir()
	env := map[string]string{"HOME": home}
	getenv := func(k string) string { return env[k] }
	def, err := layout.FromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if !IsDefaultStateDir(def, getenv) {
		t.Fatalf("state dir %s without $BANGER_STATE_DIR is not the default", def.StateDir)
	}
	env["BANGER_STATE_DIR"] = filepath.Join(home, "other")
	other, err := layout.FromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if IsDefaultStateDir(other, getenv) {
		t.Fatalf("state dir %s from $BANGER_STATE_DIR counts as the default", other.StateDir)
	}

	c := Default()
	c.forInstance(other, getenv)
	bridge, subnet, dns := InstanceNetwork(other.StateDir, false)
	if c.Network.Bridge != bridge || c.Network.Subnet != subnet || c.Network.DNSListen != dns {
		t.Errorf("unset keys: %s %s %s, want the derived %s %s %s", c.Network.Bridge, c.Network.Subnet, c.Network.DNSListen, bridge, subnet, dns)
	}
	if c.Network.Bridge == DefaultBridge {
		t.Errorf("a second instance got the default bridge")
	}

	c, err = Parse("config.toml", []byte("[network]\nbridge = \"bgmine\"\ndns_listen = \"127.0.0.1:5000\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.forInstance(other, getenv)
	if c.Network.Bridge != "bgmine" || c.Network.DNSListen != "127.0.0.1:5000" || c.Network.Subnet != subnet {
		t.Errorf("set keys: %s %s %s, want bgmine, 127.0.0.1:5000 kept and subnet %s derived",
			c.Network.Bridge, c.Network.DNSListen, c.Network.Subnet, subnet)
	}

	c = Default()
	c.forInstance(def, getenv)
	if c.Network.Bridge != DefaultBridge || c.Network.Subnet.String() != DefaultSubnet || c.Network.DNSListen != DefaultDNSListen {
		t.Errorf("default instance: %+v, want the defaults", c.Network)
	}
	if InstanceID(def.StateDir) == InstanceID(other.StateDir) {
		t.Errorf("two state dirs share instance id %s", InstanceID(def.StateDir))
	}
}
