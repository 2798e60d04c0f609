package guest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agentmux"
	"banger/internal/agent/agentserver"
	"banger/internal/guestcontract"
	"banger/internal/testenv"
)

// serveSessions runs ServeSessions over open until the test ends, then
// closes l and waits for it.
func serveSessions(t *testing.T, l net.Listener, open func() (io.ReadWriteCloser, error)) {
	srv := &agentserver.Server{Token: "t", Version: "serial-test", HomeDir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ServeSessions(ctx, srv, open, false, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); l.Close(); <-done })
}

// chardevListener listens on a unix socket standing for the VMM's end of
// the agent's virtio-serial port (in a short temp dir: socket paths are
// bounded) and returns it with its path; both go when the test ends.
func chardevListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "chardev.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func TestServeSessions_ReopenAfterHostDisconnect(t *testing.T) {
	l, path := chardevListener(t)
	opens := 0
	// The "port": each open yields the next host connection, as the guest
	// side of a virtio-serial port sees a new host after a reconnect.
	open := func() (io.ReadWriteCloser, error) {
		c, err := l.Accept()
		if err == nil {
			opens++
		}
		return c, err
	}
	serveSessions(t, l, open)

	for i := 0; i < 3; i++ {
		c := agentclient.NewClient(agentclient.NewSerialDialer(path), "t")
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		h, err := c.Health(cctx)
		ccancel()
		if err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
		if h.Version != "serial-test" {
			t.Fatalf("host %d: version %q", i, h.Version)
		}
		c.Close() // the daemon goes away: the guest must start over
	}
	if opens != 3 {
		t.Fatalf("port opened %d times, want 3", opens)
	}
}

func TestBoot_FindsMountsAndApplies(t *testing.T) {
	root := t.TempDir()
	cfgDir := t.TempDir()
	id := agent.Identity{VMID: "vm-9", Hostname: "bright-fox", Token: "tok", AuthorizedKeys: []string{"ssh-ed25519 K banger"}}
	b, _ := json.Marshal(id)
	if err := os.WriteFile(filepath.Join(cfgDir, guestcontract.IdentityFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	sys := &fakeSystem{
		mounted: map[string]bool{filepath.Join(root, "root"): true},
		labels:  map[string]string{guestcontract.LabelConfig: "/dev/vdd"},
		chowned: map[string]bool{},
	}
	got, err := Boot(context.Background(), BootConfig{Root: root, ConfigDir: cfgDir, Sys: sys})
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != "tok" || got.VMID != "vm-9" {
		t.Fatalf("identity %+v", got)
	}
	if len(sys.mounts) != 1 || sys.mounts[0] != "/dev/vdd "+cfgDir {
		t.Fatalf("mounts %v", sys.mounts)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "hostname")); string(b) != "bright-fox\n" {
		t.Fatalf("hostname file %q", b)
	}
	// The drive holding the token is unmounted once identity is applied.
	if len(sys.unmounts) != 1 || sys.unmounts[0] != cfgDir || sys.mounted[cfgDir] {
		t.Fatalf("config drive left mounted: unmounts %v", sys.unmounts)
	}
	// Already mounted (an agent restarted before it unmounted): nothing
	// mounted again, and unmounted after.
	sys.mounted[cfgDir] = true
	if _, err := Boot(context.Background(), BootConfig{Root: root, ConfigDir: cfgDir, Sys: sys}); err != nil {
		t.Fatal(err)
	}
	if len(sys.mounts) != 1 || len(sys.unmounts) != 2 {
		t.Fatalf("mounts %v, unmounts %v", sys.mounts, sys.unmounts)
	}
	// A boot that fails still unmounts.
	if err := os.WriteFile(filepath.Join(cfgDir, guestcontract.IdentityFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Boot(context.Background(), BootConfig{Root: root, ConfigDir: cfgDir, Sys: sys}); err == nil {
		t.Fatal("a broken identity.json was accepted")
	}
	if len(sys.unmounts) != 3 || sys.mounted[cfgDir] {
		t.Fatalf("failed boot left the drive mounted: unmounts %v", sys.unmounts)
	}

	// No config drive: a bounded wait and a clear error.
	empty := &fakeSystem{mounted: map[string]bool{}, labels: map[string]string{}, chowned: map[string]bool{}}
	_, err = Boot(context.Background(), BootConfig{Root: root, ConfigDir: t.TempDir(), Sys: empty, Wait: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no filesystem labelled banger-config") {
		t.Fatalf("err = %v", err)
	}
}

func TestIsMountPoint(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	content := `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda ro
30 22 254:2 / /root rw,noatime shared:2 - ext4 /dev/vdb rw
31 22 254:3 / /run/banger/config ro shared:3 - ext4 /dev/vdc ro
32 22 0:5 / /mnt/with\040space rw - tmpfs tmpfs rw
`
	if err := os.WriteFile(mi, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/root": true, "/root/": true, "/run/banger/config": true, "/run": false, "/mnt/with space": true, "/home": false} {
		got, err := isMountPoint(mi, path)
		if err != nil || got != want {
			t.Errorf("isMountPoint(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
}

// TestLinuxSystem_ConfigureNetwork runs the real netlink executor inside
// a network namespace the test creates, on veth NICs.
func TestLinuxSystem_ConfigureNetwork(t *testing.T) {
	testenv.RequireRoot(t) // a network namespace
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	defer ns.Close()
	defer netns.Set(orig)

	mac, _ := net.ParseMAC("02:00:c0:00:02:07")
	for _, l := range []*netlink.Veth{
		{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, PeerName: "peer0"},
		{LinkAttrs: netlink.LinkAttrs{Name: "eth1", HardwareAddr: mac}, PeerName: "peer1"},
	} {
		if err := netlink.LinkAdd(l); err != nil {
			t.Fatalf("add %s: %v", l.Name, err)
		}
	}
	id := agent.Identity{Address: "192.0.2.7/24", Gateway: "192.0.2.1", MAC: "02:00:C0:00:02:07"}
	for i := 0; i < 2; i++ { // twice: idempotent
		if err := applyNetwork(id, LinuxSystem{}); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	link, err := netlink.LinkByName("eth1")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("eth1 not up")
	}
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "192.0.2.7/24" {
		t.Fatalf("eth1 addresses %v", addrs)
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	var gw string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			gw = r.Gw.String()
		}
	}
	if gw != "192.0.2.1" {
		t.Fatalf("default route via %q; routes %v", gw, routes)
	}
	other, _ := netlink.LinkByName("eth0")
	if a, _ := netlink.AddrList(other, netlink.FAMILY_V4); len(a) != 0 {
		t.Fatalf("eth0 got addresses %v", a)
	}
}

// TestReopenDelay: short after a session that heard from its host (a
// restored guest resumes inside this pause), doubling to pollInterval
// while no host is connected.
func TestReopenDelay(t *testing.T) {
	var r reopenDelay
	want := []time.Duration{minReopen, 2 * minReopen, 4 * minReopen}
	for i, w := range want {
		if got := r.next(false); got != w {
			t.Fatalf("unheard session %d: pause %v, want %v", i, got, w)
		}
	}
	for i := 0; i < 10; i++ {
		r.next(false)
	}
	if got := r.next(false); got != pollInterval {
		t.Fatalf("after many unheard sessions: pause %v, want %v", got, pollInterval)
	}
	if got := r.next(true); got != minReopen {
		t.Fatalf("after a heard session: pause %v, want %v", got, minReopen)
	}
}

// TestServeOneSession_Heard: a session on a port nobody writes to (no host
// connected: EOF at once) is unheard; one that served a host request is
// heard.
func TestServeOneSession_Heard(t *testing.T) {
	srv := &agentserver.Server{Token: "t", Version: "serial-test", HomeDir: t.TempDir()}
	ctx := context.Background()

	guestEnd, hostEnd := net.Pipe()
	hostEnd.Close()
	heard, err := serveOneSession(ctx, srv, func() (io.ReadWriteCloser, error) { return guestEnd, nil }, false, slog.New(slog.DiscardHandler))
	if err != nil || heard {
		t.Fatalf("no host: heard %v, err %v; want false, nil", heard, err)
	}

	l, path := chardevListener(t)
	type result struct {
		heard bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		h, err := serveOneSession(ctx, srv, func() (io.ReadWriteCloser, error) { return l.Accept() }, false, slog.New(slog.DiscardHandler))
		done <- result{h, err}
	}()
	c := agentclient.NewClient(agentclient.NewSerialDialer(path), "t")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Health(cctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-done
	if r.err != nil || !r.heard {
		t.Fatalf("after a host request: heard %v, err %v; want true, nil", r.heard, r.err)
	}
}

// TestFirstServer: the first agent process of a boot finds no marker; a
// later one (restarted unit, crashed agent) does.
func TestFirstServer(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "run", "agent-served")
	if !firstServer(marker) {
		t.Fatal("the first server of a boot was told another served before")
	}
	if firstServer(marker) {
		t.Fatal("a second server was told it is the first")
	}
}

// portOf is the guest end of a virtio-serial port: the agent process that
// had it open dies, the host's connection to the VMM does not end.
type portOf struct{ net.Conn }

func (portOf) Close() error { return nil }

// TestServeSessions_ResetEndsStaleHostSession plays an agent that died
// with a host request in flight: the host's session stays up (its
// connection is to the VMM, not the agent) and its stream waits. A new
// agent process must end that session, so the request fails instead of
// waiting forever.
func TestServeSessions_ResetEndsStaleHostSession(t *testing.T) {
	l, path := chardevListener(t)
	hostConn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer hostConn.Close()
	guestConn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer guestConn.Close()

	host, err := yamux.Client(hostConn, agentmux.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	// The old agent accepts a stream and reads the request on it...
	old, err := yamux.Server(portOf{guestConn}, agentmux.GuestConfig())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := host.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := old.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(got, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	// ...then dies without a word: its reads end, the port stays.
	if err := guestConn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	<-old.CloseChan()
	if err := guestConn.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := stream.Read(make([]byte, 1))
		readErr <- err
	}()

	srv := &agentserver.Server{Token: "t", Version: "serial-test", HomeDir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := make(chan struct{}, 1)
	go func() {
		_ = ServeSessions(ctx, srv, func() (io.ReadWriteCloser, error) {
			select {
			case opened <- struct{}{}:
				return portOf{guestConn}, nil
			default:
				<-ctx.Done() // one port: later opens wait for the test to end
				return nil, ctx.Err()
			}
		}, true, slog.New(slog.DiscardHandler))
	}()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the stale stream read data")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the host's request still waits on the dead agent's session")
	}
	if !host.IsClosed() {
		t.Fatal("the host's session is still open")
	}
}
