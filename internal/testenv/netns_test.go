package testenv

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func TestInCI(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"true", true}, {"", false}, {"1", false}, {"false", false}} {
		t.Setenv("CI", tc.val)
		if got := InCI(); got != tc.want {
			t.Errorf("CI=%q: InCI() = %v, want %v", tc.val, got, tc.want)
		}
	}
}

func TestNetns_Lifecycle(t *testing.T) {
	RequireRoot(t)
	RequireCommand(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var name, path string
	var pid int
	t.Run("inside", func(t *testing.T) {
		n := NewNetns(t)
		name, path = n.Name, n.Path
		if !strings.HasPrefix(n.Name, NetnsPrefix) {
			t.Errorf("name %q lacks prefix %q", n.Name, NetnsPrefix)
		}
		if _, err := os.Stat(n.Path); err != nil {
			t.Fatalf("namespace file: %v", err)
		}

		// Do switches the thread in: a link made there is visible through
		// Run and absent from the test's own namespace.
		if err := n.Do(func() error {
			return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "bgtestbr0"}})
		}); err != nil {
			t.Fatalf("Do: %v", err)
		}
		out, err := n.Run(ctx, "ip", "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "bgtestbr0") {
			t.Errorf("link made in Do not in namespace:\n%s", out)
		}
		if !strings.Contains(string(out), "lo: <LOOPBACK,UP") {
			t.Errorf("lo not up:\n%s", out)
		}
		if _, err := netlink.LinkByName("bgtestbr0"); err == nil {
			t.Errorf("bgtestbr0 leaked into the test's own namespace")
		}

		// A listener opened inside Do keeps serving in the namespace.
		var ln net.Listener
		if err := n.Do(func() (err error) {
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				_, _ = c.Write([]byte("hi"))
				c.Close()
			}
		}()
		var got []byte
		if err := n.Do(func() error {
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			got, err = io.ReadAll(c)
			return err
		}); err != nil {
			t.Fatalf("reach listener in namespace: %v", err)
		}
		// The same address from the test's own namespace reaches nothing.
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.Close()
			t.Errorf("listener in the namespace reachable from outside it")
		}
		if string(got) != "hi" {
			t.Errorf("listener answered %q, want %q", got, "hi")
		}

		// Command starts a process in the namespace; the cleanup kills it.
		c := n.Command(ctx, "sleep", "300")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pid = c.Process.Pid
		// ip enters the namespace and then execs sleep: wait for that.
		want, err := nsID(n.Path)
		if err != nil {
			t.Fatal(err)
		}
		var inNS string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if inNS, _ = os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net"); inNS == want {
				break
			}
		}
		if inNS != want {
			t.Errorf("Command process is in %s, want the test namespace %s", inNS, want)
		}
	})
	if t.Failed() {
		return
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("namespace %s still present after cleanup (stat: %v)", name, err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), name) {
		t.Errorf("ip netns list still shows %s", name)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Errorf("process %d started through Command still running", pid)
		}
	}
}

// nsID returns the namespace file's identity the way /proc/PID/ns/net
// spells it: net:[inode].
func nsID(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", err
	}
	return "net:[" + strconv.FormatUint(st.Ino, 10) + "]", nil
}
