package agentserver

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
)

func TestClient_Auth(t *testing.T) {
	path := agenttest.ServeUnix(t, testServer(t))
	for _, tok := range []string{"", "wrong", agenttest.Token + "x"} {
		c := agentclient.NewClient(agenttest.UnixDialer{Path: path}, tok)
		_, err := c.Health(agenttest.CtxTimeout(t, 10*time.Second))
		if !agentclient.IsCode(err, agent.CodeUnauthorized) {
			t.Fatalf("token %q: err = %v, want unauthorized", tok, err)
		}
		c.Close()
	}
	// A server without a token refuses everything.
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, &Server{})}, "")
	if _, err := c.Health(agenttest.CtxTimeout(t, 10*time.Second)); !agentclient.IsCode(err, agent.CodeUnauthorized) {
		t.Fatalf("empty server token: %v", err)
	}
}

func TestClient_Health(t *testing.T) {
	srv := testServer(t)
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, srv)}, agenttest.Token)
	defer c.Close()
	h, err := c.Health(agenttest.CtxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	host, _ := os.Hostname()
	if h.Version != "test-1" || h.BootID != strings.TrimSpace(string(bootID)) || h.Hostname != host {
		t.Fatalf("health %+v", h)
	}
	if h.Uptime <= 0 {
		t.Fatalf("uptime %v", h.Uptime)
	}
	if h.IdentityApplied || h.IdentityError != "" {
		t.Fatalf("identity reported before any apply: %+v", h)
	}
	srv.SetIdentityResult(os.ErrPermission)
	h, _ = c.Health(agenttest.CtxTimeout(t, 10*time.Second))
	if h.IdentityApplied || h.IdentityError != os.ErrPermission.Error() {
		t.Fatalf("after failed apply: %+v", h)
	}
	srv.SetIdentityResult(nil)
	h, _ = c.Health(agenttest.CtxTimeout(t, 10*time.Second))
	if !h.IdentityApplied || h.IdentityError != "" {
		t.Fatalf("after apply: %+v", h)
	}
}

func TestClient_HostKeys(t *testing.T) {
	dir := t.TempDir()
	keys := map[string]string{
		"ssh_host_ed25519_key.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA root@x\n",
		"ssh_host_rsa_key.pub":     "ssh-rsa AAAAB3NzaC1yc2E root@x\n",
		"ssh_host_rsa_key":         "PRIVATE",
	}
	for n, v := range keys {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv := testServer(t)
	srv.HostKeyGlob = filepath.Join(dir, "ssh_host_*_key.pub")
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, srv)}, agenttest.Token)
	defer c.Close()
	got, err := c.HostKeys(agenttest.CtxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA root@x", "ssh-rsa AAAAB3NzaC1yc2E root@x"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("host keys (-want +got):\n%s", diff)
	}
}

func TestClient_Ports(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)
	defer c.Close()
	ports, err := c.Ports(agenttest.CtxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	want := []agent.Port{
		{Proto: "tcp", Family: "ipv4", Address: "127.0.0.1", Port: uint16(tcp.Addr().(*net.TCPAddr).Port), PID: os.Getpid(), Process: strings.TrimSpace(string(comm))},
		{Proto: "udp", Family: "ipv6", Address: "::1", Port: uint16(udp.LocalAddr().(*net.UDPAddr).Port), PID: os.Getpid(), Process: strings.TrimSpace(string(comm))},
	}
	for _, w := range want {
		found := false
		for _, p := range ports {
			if p == w {
				found = true
			}
		}
		if !found {
			t.Errorf("port %+v not listed in %+v", w, ports)
		}
	}
}

func TestParseProcNet(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 100 0 0 10 0
`
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 45678 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 56789 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 67890 1 0000000000000000 100 0 0 10 0
`
	const udp = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11111 2 0000000000000000 0
  101: 0100007F:A000 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 22222 2 0000000000000000 0
`
	tests := []struct {
		name, in, proto string
		v6              bool
		want            []procSocket
	}{
		{"tcp4", tcp, "tcp", false, []procSocket{
			{agent.Port{Proto: "tcp", Family: "ipv4", Address: "127.0.0.1", Port: 8080}, 12345},
			{agent.Port{Proto: "tcp", Family: "ipv4", Address: "0.0.0.0", Port: 22}, 34567},
		}},
		{"tcp6", tcp6, "tcp", true, []procSocket{
			{agent.Port{Proto: "tcp", Family: "ipv6", Address: "::", Port: 22}, 45678},
			{agent.Port{Proto: "tcp", Family: "ipv6", Address: "::1", Port: 80}, 56789},
			{agent.Port{Proto: "tcp", Family: "ipv6", Address: "127.0.0.1", Port: 81}, 67890},
		}},
		{"udp4", udp, "udp", false, []procSocket{
			{agent.Port{Proto: "udp", Family: "ipv4", Address: "0.0.0.0", Port: 68}, 11111},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcNet(strings.NewReader(tt.in), tt.proto, tt.v6)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(procSocket{})); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := parseProcNet(strings.NewReader("hdr\n 0: ZZ:1 0:0 0A a b c d e 1\n"), "tcp", false); err == nil {
		t.Fatal("bad hex accepted")
	}
}
