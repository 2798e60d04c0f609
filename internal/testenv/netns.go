package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// NetnsPrefix starts the name of every namespace NewNetns creates, so a
// leaked one is recognisable in `ip netns list`.
const NetnsPrefix = "banger-test-"

// Netns is a named network namespace created for one test and removed,
// with every interface, route and nftables table in it, when the test
// ends.
type Netns struct {
	// Name is the name under /run/netns (what `ip netns exec` takes).
	Name string
	// Path is the namespace file, for netns.GetFromPath and setns(2).
	Path string

	mu   sync.Mutex
	cmds []*exec.Cmd
}

// NewNetns creates a fresh network namespace (`ip netns add
// banger-test-<random>`), brings its loopback up and registers its removal
// in t.Cleanup. Processes started through Command are killed before the
// namespace goes. It requires root and the ip binary (see RequireRoot).
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "ip")

	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("netns name: %v", err)
	}
	n := &Netns{Name: NetnsPrefix + hex.EncodeToString(b[:])}
	n.Path = filepath.Join("/run/netns", n.Name)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { n.remove(t) })
	if out, err := n.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("netns %s: lo up: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return n
}

// remove kills the processes started through Command that are still
// running and deletes the namespace; the kernel then destroys the virtual
// links in it (taps, bridges, veth pairs with their peers) and its
// nftables tables.
func (n *Netns) remove(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	cmds := n.cmds
	n.cmds = nil
	n.mu.Unlock()
	for _, c := range cmds {
		if c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, bytes.TrimSpace(out))
	}
}

// Run runs argv inside the namespace (`ip netns exec`) and returns its
// combined output. The error names the command and carries its output.
func (n *Netns) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("netns %s: run: empty command", n.Name)
	}
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netns %s: %s: %w: %s", n.Name, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Command returns a command that runs name inside the namespace, for
// daemons and listeners the test starts and stops itself. If it is still
// running when the test ends it is killed before the namespace is removed.
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	n.mu.Lock()
	n.cmds = append(n.cmds, c)
	n.mu.Unlock()
	return c
}

// Do runs fn on an OS thread switched into the namespace and switches it
// back afterwards. Sockets and links created by fn stay in the namespace
// after Do returns, so a listener opened in fn keeps serving there. fn must
// not start goroutines that expect to run inside the namespace: they run
// on other threads.
func (n *Netns) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: current namespace: %w", n.Name, err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(n.Path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: open: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns %s: enter: %w", n.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the test namespace: leave it locked so
		// the runtime discards it when this goroutine ends.
		return fmt.Errorf("netns %s: leave: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
