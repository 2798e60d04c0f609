package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/testenv"
)

// TestAttacker plays the hostile guest of the security model against a
// real daemon and real guests: root in guest a sends crafted traffic, a
// DNS flood and spoofed frames; guest b is its neighbour on the bridge; a
// second namespace plays the outside world with a public-looking address,
// a private one and the cloud metadata address, each with a listener.
func TestAttacker(t *testing.T) {
	e := newEnv(t, func(c string) string {
		// Forwarded queries go to a black hole in the outside namespace,
		// the case that held a socket and a goroutine per query before.
		c = strings.Replace(c, `dns_upstream = ["127.0.0.1:1"]`, `dns_upstream = ["198.51.100.53:53"]`, 1)
		// A small console bound, so a guest's flood crosses it quickly.
		return c + "[limits]\nconsole_log = \"64K\"\n"
	})
	e.ensureImage()
	world := e.outside(t)
	hostile := buildHostile(t)

	e.must(e.banger("", "vm", "create", "--name", "a"))
	e.must(e.banger("", "vm", "create", "--name", "b"))
	e.must(e.banger("", "vm", "cp", hostile, "a:/root/"))
	a, b := e.vm("a"), e.vm("b")
	aIP, aMAC := a["ip"].(string), a["mac"].(string)
	bIP := b["ip"].(string)
	gwMAC := strings.TrimSpace(string(e.nsOut(t, "cat", "/sys/class/net/bgtest0/address")))
	const gwIP = "192.0.2.1"

	t.Run("egress reaches only public destinations", func(t *testing.T) {
		r := e.must(e.banger("", "vm", "exec", "a", "--", "curl", "-s", "--max-time", "10", "http://198.51.100.2:8080/"))
		if r.stdout != "public" {
			t.Fatalf("public listener answered %q", r.stdout)
		}
		for _, u := range []string{"http://10.9.0.2:8080/", "http://169.254.169.254/"} {
			r := e.banger("", "vm", "exec", "a", "--", "curl", "-s", "--max-time", "3", u)
			if r.code == 0 || r.stdout != "" {
				t.Errorf("guest reached %s: exit %d, %q", u, r.code, r.stdout)
			}
		}
		if n := world.hits("private") + world.hits("metadata"); n != 0 {
			t.Errorf("the private and metadata listeners saw %d connections", n)
		}
	})

	t.Run("guest a reaches no port of guest b", func(t *testing.T) {
		probe := func(ip string, port int) string {
			r := e.must(e.banger("", "vm", "exec", "a", "--", "bash", "-c",
				fmt.Sprintf("timeout 4 bash -c '</dev/tcp/%s/%d' 2>/dev/null && echo open || echo closed", ip, port)))
			return strings.TrimSpace(r.stdout)
		}
		// The control: the gateway's DNS port is open to every guest.
		if got := probe(gwIP, 53); got != "open" {
			t.Fatalf("gateway tcp/53 from a: %s", got)
		}
		if got := probe(bIP, 22); got != "closed" {
			t.Errorf("a reached b's sshd: %s", got)
		}
	})

	t.Run("forged sources never leave guest a", func(t *testing.T) {
		// Forwarded and masqueraded, a datagram keeps only its payload to
		// tell the outside listener who sent it.
		send := func(srcMAC, srcIP, payload string) {
			e.must(e.banger("", "vm", "exec", "a", "--", "/root/hostile", "udp-spoof", "auto",
				srcMAC, srcIP, gwMAC, "198.51.100.2", "7777", payload))
		}
		send(aMAC, bIP, "forged-ip")
		send("02:de:ad:be:ef:01", aIP, "forged-mac")
		send(aMAC, aIP, "legit")
		// Frames from one tap arrive in order: once legit is in, the forged
		// ones have either arrived before it or been dropped.
		var seen []string
		deadline := time.After(20 * time.Second)
	wait:
		for {
			select {
			case m := <-world.udp:
				seen = append(seen, m)
				if m == "legit" {
					break wait
				}
			case <-deadline:
				t.Fatalf("the legitimate datagram never arrived; saw %v", seen)
			}
		}
		if len(seen) != 1 {
			t.Errorf("the outside received %v, want only the legitimate datagram", seen)
		}
	})

	t.Run("guest a cannot take b's address by ARP", func(t *testing.T) {
		// The host learns b's MAC and b the gateway's; then a claims
		// both addresses.
		e.nsOut(t, "bash", "-c", "echo > /dev/udp/"+bIP+"/9")
		e.must(e.banger("", "vm", "exec", "b", "--", "bash", "-c", "echo > /dev/udp/"+gwIP+"/9"))
		var before string
		for deadline := time.Now().Add(10 * time.Second); before == ""; {
			if before = e.neigh(t, bIP); before == "" && time.Now().After(deadline) {
				t.Fatal("the host never resolved b")
			}
		}
		if before == aMAC {
			t.Fatalf("host neighbour entry for b is a's MAC before the attack")
		}
		r := e.must(e.banger("", "vm", "exec", "b", "--", "ip", "neigh", "show", gwIP))
		if !strings.Contains(r.stdout, gwMAC) {
			t.Fatalf("b has no entry for the gateway: %q", r.stdout)
		}
		e.must(e.banger("", "vm", "exec", "a", "--", "/root/hostile", "arp-spoof", "auto", bIP, "5"))
		e.must(e.banger("", "vm", "exec", "a", "--", "/root/hostile", "arp-spoof", "auto", gwIP, "5"))
		// Absence can only be watched for a while: 3 s of polling.
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
			if got := e.neigh(t, bIP); got == aMAC {
				t.Fatalf("host now sends b's traffic to a (%s is at %s)", bIP, got)
			}
			r := e.must(e.banger("", "vm", "exec", "b", "--", "ip", "neigh", "show", gwIP))
			if strings.Contains(r.stdout, aMAC) {
				t.Fatalf("b now sends its gateway traffic to a: %s", r.stdout)
			}
		}
	})

	t.Run("a DNS flood leaves the daemon answering", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		flood := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), "vm", "exec", "a", "--",
			"/root/hostile", "dns-flood", gwIP+":53", "15s")
		flood.Env = e.envv
		var floodOut strings.Builder
		flood.Stdout, flood.Stderr = &floodOut, &floodOut
		if err := flood.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- flood.Wait() }()
		pid := e.daemonPID()
		var worst time.Duration
		maxFDs, samples := 0, 0
		for running := true; running; {
			select {
			case err := <-done:
				running = false
				if err != nil {
					t.Errorf("the flooding exec failed: %v\n%s", err, floodOut.String())
				}
				continue
			default:
			}
			start := time.Now()
			e.must(e.banger("", "vm", "list"))
			worst = max(worst, time.Since(start))
			if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				maxFDs = max(maxFDs, len(fds))
			}
			samples++
		}
		t.Logf("flood: %s; %d vm list calls, slowest %s; bangerd fds at most %d; black hole got %d queries",
			strings.TrimSpace(floodOut.String()), samples, worst, maxFDs, world.dnsQueries())
		if samples < 3 {
			t.Errorf("only %d samples during the flood", samples)
		}
		if worst > time.Second {
			t.Errorf("vm list took %s during the flood", worst)
		}
		if maxFDs > 256 {
			t.Errorf("bangerd held %d fds during the flood", maxFDs)
		}
		if !strings.Contains(floodOut.String(), "sent ") {
			t.Errorf("the flood did not run: %s", floodOut.String())
		}
		if r := e.must(e.banger("", "vm", "exec", "a", "--", "true")); r.code != 0 {
			t.Errorf("exec after the flood: %d", r.code)
		}
	})

	t.Run("a console flood stays within its bound", func(t *testing.T) {
		const bound = 64 << 10
		start := time.Now()
		e.must(e.banger("", "vm", "exec", "b", "--", "sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' x > /dev/ttyS0"))
		took := time.Since(start)
		blog := e.vm("b")["console_log"].(string)
		size := func(p string) int64 {
			fi, err := os.Stat(p)
			if err != nil {
				return 0
			}
			return fi.Size()
		}
		// The watcher rotates every 500 ms; what a guest writes between
		// two checks is the overshoot, so wait for the rotation.
		for deadline := time.Now().Add(10 * time.Second); size(blog) > bound; {
			if time.Now().After(deadline) {
				t.Fatalf("console.log is %d bytes, bound %d", size(blog), bound)
			}
			time.Sleep(100 * time.Millisecond) // polling the file's size
		}
		if n := size(blog + ".1"); n > bound {
			t.Errorf("console.log.1 is %d bytes, bound %d", n, bound)
		}
		if size(blog)+size(blog+".1") == 0 {
			t.Error("nothing of the flood reached the console log")
		}
		t.Logf("2 MB written to the console in %s; console.log %d + console.log.1 %d bytes", took.Round(time.Millisecond), size(blog), size(blog+".1"))
	})

	// Last for guest a: it replaces a's agent for good.
	t.Run("a hostile agent's tar lands nothing outside the named entry", func(t *testing.T) {
		e.must(e.banger("", "vm", "exec", "a", "--", "systemd-run", "--unit=hostile-agent", "--on-active=2",
			"/root/hostile", "agent"))
		for deadline := time.Now().Add(90 * time.Second); ; {
			r := e.banger("", "vm", "health", "a", "--json")
			if r.code == 0 && strings.Contains(r.stdout, `"hostile"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the hostile agent never answered: %s%s", r.stdout, r.stderr)
			}
			time.Sleep(250 * time.Millisecond) // polling the agent's health
		}

		dst := t.TempDir()
		r := e.banger("", "vm", "cp", "a:/root/loot", dst)
		if r.code != 0 {
			t.Fatalf("cp loot: exit %d: %s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, "loot", "ok.txt")); string(b) != "fine\n" {
			t.Errorf("ok.txt = %q", b)
		}
		if fi, err := os.Stat(filepath.Join(dst, "loot", "suid")); err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
			t.Errorf("suid entry: %v %v", fi.Mode(), err)
		}
		for _, n := range []string{"etc", "up", "fifo", "mem"} {
			if _, err := os.Lstat(filepath.Join(dst, "loot", n)); err == nil {
				t.Errorf("loot/%s was written", n)
			}
		}
		if !strings.Contains(r.stderr, "warning") {
			t.Errorf("skipped entries not reported: %q", r.stderr)
		}

		parent := t.TempDir()
		dst = filepath.Join(parent, "dst")
		os.Mkdir(dst, 0o755)
		r = e.banger("", "vm", "cp", "a:/root/escape", dst)
		if r.code == 0 {
			t.Errorf("a stream with entries outside escape/ was accepted")
		}
		for _, p := range []string{
			filepath.Join(dst, ".bashrc"), filepath.Join(dst, ".git"),
			filepath.Join(parent, "evil"), "/tmp/banger-hostile-abs",
			filepath.Join(dst, "escape", "passwd"),
		} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s was written", p)
			}
		}

		dst = t.TempDir()
		start := time.Now()
		r = e.banger("", "vm", "cp", "--max-size", "1M", "a:/root/huge", dst)
		if r.code == 0 || !strings.Contains(r.stderr, "--max-size") {
			t.Errorf("endless file: exit %d: %s", r.code, r.stderr)
		}
		if fi, err := os.Stat(filepath.Join(dst, "huge", "big")); err == nil && fi.Size() > 1<<20 {
			t.Errorf("huge/big grew to %d bytes past a 1 MiB bound", fi.Size())
		}
		t.Logf("endless file stopped after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
	})

	t.Run("kill -9 during boot leaves no VMM", func(t *testing.T) {
		vmmPID := e.killDaemonWhileCreating(t, "c", "vm", "create", "--name", "c")
		e.must(e.banger("", "vm", "list"))
		waitGone(vmmPID, 10*time.Second)
		if processRunning(vmmPID) {
			t.Fatalf("vmm pid %d of the interrupted create still runs", vmmPID)
		}
		r := e.banger("", "vm", "show", "c", "--json")
		var c struct {
			State string `json:"state"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &c) != nil || c.State != "failed" {
			log, _ := os.ReadFile(filepath.Join(e.state, "bangerd.log"))
			t.Fatalf("c after the restart: exit %d %s%s\ndaemon log:\n%s", r.code, r.stdout, r.stderr, tail(log, 40))
		}
		e.must(e.banger("", "vm", "delete", "c"))
	})
}

// killDaemonWhileCreating runs banger args (a create or fork that makes
// the VM name), waits until name's VMM is spawned while the VM is still
// being created (its handles are recorded the moment it is spawned, so
// show names its PID while the guest is still booting), kills bangerd
// with SIGKILL and returns that VMM's PID once the command has ended.
func (e *env) killDaemonWhileCreating(t *testing.T, name string, args ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := e.ns.Command(ctx, filepath.Join(e.bin, "banger"), args...)
	cmd.Env = e.envv
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var vmmPID int
	for deadline := time.Now().Add(2 * time.Minute); vmmPID == 0; {
		var v struct {
			State string `json:"state"`
			PID   int    `json:"pid"`
		}
		r := e.banger("", "vm", "show", name, "--json")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &v) == nil && v.PID > 0 {
			if v.State != "creating" {
				t.Fatalf("%s is %s before the daemon was killed: too fast to interrupt", name, v.State)
			}
			vmmPID = v.PID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no VMM started for %s", name)
		}
	}
	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid, 5*time.Second)
	cmd.Wait()
	return vmmPID
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// nsOut runs argv in the test namespace and fails the test on error.
func (e *env) nsOut(t *testing.T, argv ...string) []byte {
	t.Helper()
	out, err := e.ns.Run(context.Background(), argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// neigh returns the MAC the test namespace's bridge holds for ip ("" if
// none).
func (e *env) neigh(t *testing.T, ip string) string {
	t.Helper()
	out, err := e.ns.Run(context.Background(), "ip", "-j", "neigh", "show", ip, "dev", "bgtest0")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		LLAddr string `json:"lladdr"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("ip -j neigh: %v: %s", err, out)
	}
	if len(rows) == 0 {
		return ""
	}
	return rows[0].LLAddr
}

// buildHostile builds the attacker's tool, static, for copying into a
// guest.
func buildHostile(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hostile")
	cmd := exec.Command("go", "build", "-o", out, "./internal/e2e/hostile")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hostile: %v\n%s", err, b)
	}
	return out
}

// world is the pretend outside: a namespace behind the test namespace's
// default route, holding listeners on a public-looking, a private and the
// metadata address, and a DNS upstream that never answers.
type world struct {
	udp     chan string // payloads received on 198.51.100.2:7777
	mu      sync.Mutex
	counts  map[string]int
	queries int
}

func (w *world) hits(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[name]
}

func (w *world) dnsQueries() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queries
}

// outside makes the world namespace (see outsideNS) and starts its
// listeners.
func (e *env) outside(t *testing.T) *world {
	t.Helper()
	o := e.outsideNS(t, "198.51.100.2", "198.51.100.53", "10.9.0.2", "169.254.169.254")
	w := &world{counts: map[string]int{}, udp: udpSink(t, o, "198.51.100.2:7777")}
	for addr, name := range map[string]string{
		"198.51.100.2:8080":  "public",
		"10.9.0.2:8080":      "private",
		"169.254.169.254:80": "metadata",
	} {
		var l net.Listener
		if err := o.Do(func() (err error) { l, err = net.Listen("tcp4", addr); return err }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
			w.mu.Lock()
			w.counts[name]++
			w.mu.Unlock()
			fmt.Fprint(rw, name)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
	}
	var hole net.PacketConn
	if err := o.Do(func() (err error) { hole, err = net.ListenPacket("udp4", "198.51.100.53:53"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
			w.mu.Lock()
			w.queries++
			w.mu.Unlock()
		}
	}()
	return w
}

// outsideNS makes a namespace playing the outside world, links it to the
// test namespace with a veth pair (203.0.113.0/24, the test namespace's
// default route) and gives it addrs (/32 each, on its loopback).
func (e *env) outsideNS(t *testing.T, addrs ...string) *testenv.Netns {
	t.Helper()
	o := testenv.NewNetns(t)
	ctx := context.Background()
	link := []string{"ip", "link", "add", "bgatk0", "netns", e.ns.Name, "type", "veth", "peer", "name", "bgatk1", "netns", o.Name}
	if out, err := exec.CommandContext(ctx, link[0], link[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", link, err, out)
	}
	for _, s := range [][]string{
		{"ip", "addr", "add", "203.0.113.1/24", "dev", "bgatk0"},
		{"ip", "link", "set", "bgatk0", "up"},
		{"ip", "route", "add", "default", "via", "203.0.113.2"},
	} {
		if _, err := e.ns.Run(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}
	steps := [][]string{
		{"ip", "addr", "add", "203.0.113.2/24", "dev", "bgatk1"},
		{"ip", "link", "set", "bgatk1", "up"},
	}
	for _, a := range addrs {
		steps = append(steps, []string{"ip", "addr", "add", a + "/32", "dev", "lo"})
	}
	for _, s := range steps {
		if _, err := o.Run(ctx, s...); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// udpSink listens on addr (UDP) in namespace o until the test ends and
// hands each datagram's payload to the returned channel (dropping when 64
// are waiting).
func udpSink(t *testing.T, o *testenv.Netns, addr string) chan string {
	t.Helper()
	ch := make(chan string, 64)
	var udp net.PacketConn
	if err := o.Do(func() (err error) { udp, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case ch <- string(buf[:n]):
			default:
			}
		}
	}()
	return ch
}
