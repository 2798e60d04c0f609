package hostnet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// fakeHost is a hand-written in-memory Privileged: a model of the host's
// links, banger's table and the forwarding switch, recording every
// mutating call.
type fakeHost struct {
	mu         sync.Mutex
	links      map[string]*Link
	firewall   *Firewall
	forwarding bool
	calls      []string
	// routes are the host's routes Inspect reports.
	routes []Route
	// failTap makes EnsureTap fail for this name; failNew makes it fail
	// for any tap that does not exist yet.
	failTap string
	failNew bool
	// failFirewall makes ApplyFirewall fail.
	failFirewall bool
}

var _ Privileged = (*fakeHost)(nil)

func newFakeHost() *fakeHost { return &fakeHost{links: map[string]*Link{}} }

func (f *fakeHost) record(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

// Calls returns the recorded calls and clears the record.
func (f *fakeHost) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeHost) EnsureBridge(ctx context.Context, name string, subnet netip.Prefix, mark string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("EnsureBridge %s %s %s", name, subnet, mark)
	if l, ok := f.links[name]; ok && l.Alias != "" && l.Alias != mark {
		return fmt.Errorf("ensure bridge %s: marked %s", name, l.Alias)
	}
	f.links[name] = &Link{Name: name, Kind: "bridge", Up: true, Addrs: []netip.Prefix{GatewayPrefix(subnet)}, Alias: mark}
	return nil
}

func (f *fakeHost) EnsureTap(ctx context.Context, name, bridge string, uid, gid int, shared bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("EnsureTap %s %s %d %d", name, bridge, uid, gid)
	if name == f.failTap {
		return fmt.Errorf("ensure tap %s: injected failure", name)
	}
	if _, ok := f.links[name]; !ok && f.failNew {
		return fmt.Errorf("ensure tap %s: injected failure: cannot create", name)
	}
	if l, ok := f.links[name]; ok && (l.Kind != "tuntap" || l.Owner != uid || l.Group != gid) {
		return fmt.Errorf("ensure tap %s: exists as %s owned by %d:%d", name, l.Kind, l.Owner, l.Group)
	}
	if _, ok := f.links[bridge]; !ok {
		return fmt.Errorf("ensure tap %s: bridge %s missing", name, bridge)
	}
	f.links[name] = &Link{Name: name, Kind: "tuntap", Up: true, Master: bridge, Owner: uid, Group: gid}
	return nil
}

func (f *fakeHost) DeleteLink(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("DeleteLink %s", name)
	delete(f.links, name)
	for _, l := range f.links {
		if l.Master == name {
			l.Master = ""
		}
	}
	return nil
}

func (f *fakeHost) ApplyFirewall(ctx context.Context, fw Firewall) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ApplyFirewall %s %s", fw.Bridge, fw.Subnet)
	if f.failFirewall {
		return fmt.Errorf("apply firewall: injected failure")
	}
	f.firewall = &fw
	return nil
}

func (f *fakeHost) RemoveFirewall(ctx context.Context, bridge string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("RemoveFirewall %s", bridge)
	f.firewall = nil
	return nil
}

func (f *fakeHost) EnableForwarding(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("EnableForwarding")
	f.forwarding = true
	return nil
}

func (f *fakeHost) Inspect(ctx context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := State{Forwarding: f.forwarding, Routes: slices.Clone(f.routes)}
	for _, l := range f.links {
		c := *l
		c.Addrs = slices.Clone(l.Addrs)
		st.Links = append(st.Links, c)
	}
	slices.SortFunc(st.Links, func(a, b Link) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}

// addLink puts a link on the fake host, as if made by hand.
func (f *fakeHost) addLink(l Link) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[l.Name] = &l
}

// linkNames returns the names of the links on the fake host with prefix.
func (f *fakeHost) linkNames(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.links {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// tapNames returns the names of the banger taps on the fake host, sorted.
func (f *fakeHost) tapNames() []string {
	var out []string
	for _, n := range f.linkNames("") {
		if ValidTapName(n) {
			out = append(out, n)
		}
	}
	return out
}
