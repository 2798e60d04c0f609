package daemon

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"banger/internal/config"
)

// TestStart_DNSListenInUse: a dns_listen port another process holds (a
// second bangerd with the same port) stops the daemon at start with an
// error naming the key to change.
func TestStart_DNSListenInUse(t *testing.T) {
	p := testPaths(t)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.LocalAddr().String()
	if err := os.WriteFile(p.ConfigFile, []byte("[network]\ndns_listen = \""+addr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := New(Options{Paths: &p, LogLevel: "debug"})
	err = d.Start(context.Background())
	if err == nil {
		d.Stop()
		_ = d.Wait()
		t.Fatal("Start with dns_listen in use succeeded")
	}
	want := "network.dns_listen " + addr + " is in use (another bangerd?); set [network] dns_listen"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Start = %v, want %q", err, want)
	}
}

// TestStart_InstanceNetwork: a daemon on a state dir of its own whose
// config sets no bridge or subnet gets the instance's (not banger0 and
// 10.77.0.0/24), so it collides with no other daemon.
func TestStart_InstanceNetwork(t *testing.T) {
	p := testPaths(t)
	d, _ := startDaemon(t, p)
	bridge, subnet, _ := config.InstanceNetwork(p.StateDir, false)
	if d.Config.Network.Bridge != bridge || d.Config.Network.Subnet != subnet {
		t.Errorf("network %s %s, want the instance's %s %s", d.Config.Network.Bridge, d.Config.Network.Subnet, bridge, subnet)
	}
	if d.Config.Network.DNSListen != "127.0.0.1:0" {
		t.Errorf("dns_listen %q, want the config's 127.0.0.1:0 kept", d.Config.Network.DNSListen)
	}
}
