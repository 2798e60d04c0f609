package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/egress"
	"banger/internal/operation"
)

// fakeEgress records what the lifecycle asks of the egress engine, and
// how many taps were out when each VM was bound.
type fakeEgress struct {
	mu        sync.Mutex
	net       *fakeNet
	bound     map[string]egress.Policy // vm id -> policy, while bound
	tapsAtBnd []int
	updates   []egress.Policy
	forgot    []string
	bindErr   error
	updateErr error
}

func (f *fakeEgress) Bind(_ context.Context, vmID string, ip netip.Addr, p egress.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bindErr != nil {
		return f.bindErr
	}
	if !ip.IsValid() {
		return errors.New("no address")
	}
	f.bound[vmID] = p
	f.tapsAtBnd = append(f.tapsAtBnd, f.net.inUse())
	return nil
}

func (f *fakeEgress) Unbind(_ context.Context, vmID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.bound, vmID)
	return nil
}

func (f *fakeEgress) Update(_ context.Context, vmID string, p egress.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.updateErr != nil {
		return f.updateErr
	}
	f.updates = append(f.updates, p)
	if _, ok := f.bound[vmID]; ok {
		f.bound[vmID] = p
	}
	return nil
}

func (f *fakeEgress) Forget(vmID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, vmID)
}

func withEgress(h *harness) *fakeEgress {
	f := &fakeEgress{net: h.net, bound: map[string]egress.Policy{}}
	h.m.opt.Egress = f
	return f
}

func TestNet_policyFollowsTheVM(t *testing.T) {
	h := newHarness(t)
	eg := withEgress(h)
	ctx := context.Background()
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "p", Image: "debian-12", VMM: "qemu", Spec: spec(),
		Net: "allow", Allow: []string{"good.test", "203.0.113.0/24:443"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"mode":"allow","allow":["good.test","203.0.113.0/24:443"]}`
	if vm.NetPolicy != want {
		t.Errorf("stored policy %s, want %s", vm.NetPolicy, want)
	}
	if p, ok := eg.bound[vm.ID]; !ok || p.Encode() != want {
		t.Errorf("bound %v %v", p, ok)
	}
	// Bound before the tap was handed out: the guest never sends unpoliced.
	if len(eg.tapsAtBnd) != 1 || eg.tapsAtBnd[0] != 0 {
		t.Errorf("taps out at bind time: %v, want [0]", eg.tapsAtBnd)
	}

	if _, err := h.m.Stop(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if _, ok := eg.bound[vm.ID]; ok {
		t.Error("a stopped VM is still bound")
	}

	// A change to a stopped VM is stored (and reaches the engine, which
	// leaves VMs that are not bound alone).
	_, p, err := h.m.ChangeNet(ctx, "p", api.NetChange{Allow: []string{"bad.test"}, Deny: []string{"good.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.API().Allow, ","); got != "203.0.113.0/24:443,bad.test" {
		t.Errorf("policy after the change: %s", got)
	}
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.Start(ctx, op, "p", false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if p, ok := eg.bound[vm.ID]; !ok || !strings.Contains(p.Encode(), "bad.test") {
		t.Errorf("restarted VM bound with %v (%v), want the changed policy", p.Encode(), ok)
	}

	// A refused change changes nothing; a change the firewall refuses is
	// undone in the store too.
	before, _ := h.st.GetVM(ctx, vm.ID)
	if _, _, err := h.m.ChangeNet(ctx, "p", api.NetChange{Deny: []string{"nothere.test"}}); err == nil || !strings.Contains(err.Error(), "nothere.test") {
		t.Errorf("deny of a missing rule = %v", err)
	}
	eg.updateErr = errors.New("nft says no")
	if _, _, err := h.m.ChangeNet(ctx, "p", api.NetChange{Mode: "open"}); err == nil || !strings.Contains(err.Error(), "nft says no") {
		t.Errorf("change the firewall refused = %v", err)
	}
	eg.updateErr = nil
	if after, _ := h.st.GetVM(ctx, vm.ID); after.NetPolicy != before.NetPolicy {
		t.Errorf("stored policy %s after refused changes, want %s", after.NetPolicy, before.NetPolicy)
	}

	// Deleting the VM drops its flow log.
	if err := h.m.Delete(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(eg.forgot) != fmt.Sprint([]string{vm.ID}) {
		t.Errorf("forgot %v, want [%s]", eg.forgot, vm.ID)
	}
}

func TestNet_defaultsAndRefusals(t *testing.T) {
	h := newHarness(t)
	eg := withEgress(h)
	h.cfg.Network.Net = "allow"
	h.cfg.Network.NetAllow = []string{"@mine"}
	h.cfg.Network.Presets = map[string][]string{"mine": {"a.test", "b.test:22"}}
	vm, _, err := h.create(t, api.CreateVMRequest{Name: "d", Image: "debian-12", VMM: "qemu", Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"mode":"allow","allow":["a.test","b.test:22"]}`; vm.NetPolicy != want {
		t.Errorf("default policy %s, want %s", vm.NetPolicy, want)
	}
	if vm2, _, err := h.create(t, api.CreateVMRequest{Name: "o", Image: "debian-12", VMM: "qemu", Spec: spec(), Net: "open"}); err != nil || vm2.NetPolicy != `{"mode":"open"}` {
		t.Errorf("--net open over an allow default: %s, %v", vm2.NetPolicy, err)
	}

	names, dirs, taps := h.state(t)
	for _, tc := range []struct {
		req  api.CreateVMRequest
		want string
	}{
		{api.CreateVMRequest{Name: "x", Net: "closed"}, `net mode "closed"`},
		{api.CreateVMRequest{Name: "x", Allow: []string{"good.test:0"}}, "egress policy"},
		{api.CreateVMRequest{Name: "x", Allow: []string{"@nope"}}, `preset "nope"`},
		{api.CreateVMRequest{Name: "x", Net: "none", Allow: []string{"a.test"}}, "takes no allow rules"},
	} {
		tc.req.Image, tc.req.VMM, tc.req.Spec = "debian-12", "qemu", spec()
		_, _, err := h.create(t, tc.req)
		var ae *api.Error
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ae) || ae.Code != api.CodeInvalid {
			t.Errorf("create %+v = %v, want an invalid-request error naming %q", tc.req, err, tc.want)
		}
	}
	// A bind the firewall refuses fails the create and leaves nothing.
	eg.bindErr = errors.New("firewall refused")
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "x", Image: "debian-12", VMM: "qemu", Spec: spec()}); err == nil || !strings.Contains(err.Error(), "firewall refused") {
		t.Errorf("create with a refused bind = %v", err)
	}
	if n, d, tp := h.state(t); fmt.Sprint(n) != fmt.Sprint(names) || fmt.Sprint(d) != fmt.Sprint(dirs) || tp != taps {
		t.Errorf("refused creates left vms %v dirs %v taps %d (before %v %v %d)", n, d, tp, names, dirs, taps)
	}
}

func TestNet_snapshotsAndForksKeepThePolicy(t *testing.T) {
	h := newHarness(t)
	withSnapVMM(h)
	if _, _, err := h.create(t, api.CreateVMRequest{Name: "src", Image: "debian-12", VMM: "qemu", Spec: spec(), Net: "none"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		_, err := h.m.TakeSnapshot(ctx, op, "src", "s1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c1, _, err := h.create(t, api.CreateVMRequest{Name: "c1", From: "src@s1"})
	if err != nil || c1.NetPolicy != `{"mode":"none"}` {
		t.Errorf("a VM from a snapshot of a none VM: %s, %v", c1.NetPolicy, err)
	}
	c2, _, err := h.create(t, api.CreateVMRequest{Name: "c2", From: "src@s1", Allow: []string{"good.test"}})
	if err != nil || c2.NetPolicy != `{"mode":"allow","allow":["good.test"]}` {
		t.Errorf("a VM from a snapshot with its own rules: %s, %v", c2.NetPolicy, err)
	}
	var copies []string
	if _, err := h.run(func(ctx context.Context, op *operation.Op) error {
		vms, err := h.m.Fork(ctx, op, "src", 1, "")
		for _, v := range vms {
			copies = append(copies, v.NetPolicy)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(copies) != `[{"mode":"none"}]` {
		t.Errorf("fork copies' policies %v, want none", copies)
	}
}
