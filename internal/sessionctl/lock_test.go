package sessionctl

import (
	"context"
	"testing"
	"time"

	"banger/internal/api"
)

// lockTimeout bounds how long a test waits for what must happen at once;
// it is a failure bound, never a synchronisation.
const lockTimeout = 10 * time.Second

// startResult is one Start's outcome.
type startResult struct {
	s   api.Session
	err error
}

func startAsync(ctx context.Context, m *Manager, ref string) <-chan startResult {
	ch := make(chan startResult, 1)
	go func() {
		s, err := m.Start(ctx, ref, api.StartSessionRequest{Argv: []string{"sleep", "9"}})
		ch <- startResult{s, err}
	}()
	return ch
}

// gateGuest makes g's session list wait until the returned func is
// called; entered receives one value per list that reached it.
func gateGuest(g *fakeGuest) (entered <-chan struct{}, release func()) {
	gate, ent := make(chan struct{}), make(chan struct{}, 8)
	g.gate, g.entered = gate, ent
	return ent, func() { close(gate) }
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(lockTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestManager_StartOtherVMDoesNotWait: while a start on one VM is held
// up in its guest, a start on another VM completes. A lock shared by all
// VMs (one mutex for every start) fails this test.
func TestManager_StartOtherVMDoesNotWait(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, slow := h.addVM(t, "slow", true)
	h.addVM(t, "fast", true)
	waited := make(chan string, 4)
	h.m.locks.waiting = func(id string) { waited <- id }

	entered, release := gateGuest(slow)
	slowDone := startAsync(ctx, h.m, "slow")
	waitFor(t, entered, "the slow vm's start to reach its guest")

	fastDone := startAsync(ctx, h.m, "fast")
	select {
	case r := <-fastDone:
		if r.err != nil || r.s.Name != "s1" {
			t.Errorf("fast vm's start = %+v, %v", r.s, r.err)
		}
	case id := <-waited:
		t.Fatalf("the fast vm's start waited for a lock (%s) held by the slow vm's", id)
	case <-time.After(lockTimeout):
		t.Fatal("the fast vm's start did not finish while the slow vm's was held up")
	}
	release()
	if r := waitFor(t, slowDone, "the slow vm's start"); r.err != nil || r.s.Name != "s1" {
		t.Errorf("slow vm's start = %+v, %v", r.s, r.err)
	}
}

// TestManager_StartSameVMSerialised: a second start on the same VM waits
// for the first to finish before it looks at names, so both get their
// own.
func TestManager_StartSameVMSerialised(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, g := h.addVM(t, "box", true)
	waited := make(chan string, 4)
	h.m.locks.waiting = func(id string) { waited <- id }

	entered, release := gateGuest(g)
	first := startAsync(ctx, h.m, "box")
	waitFor(t, entered, "the first start to reach the guest")

	second := startAsync(ctx, h.m, "box")
	select {
	case id := <-waited:
		if id != "id-box" {
			t.Errorf("waited for the lock of %s, want id-box", id)
		}
	case <-entered:
		t.Fatal("the second start reached the guest while the first held the vm")
	case r := <-second:
		t.Fatalf("the second start finished while the first held the vm: %+v, %v", r.s, r.err)
	case <-time.After(lockTimeout):
		t.Fatal("the second start neither waited nor ran")
	}
	release()
	r1, r2 := waitFor(t, first, "the first start"), waitFor(t, second, "the second start")
	if r1.err != nil || r2.err != nil {
		t.Fatalf("starts: %v, %v", r1.err, r2.err)
	}
	if r1.s.Name != "s1" || r2.s.Name != "s2" {
		t.Errorf("names %s and %s, want s1 and s2", r1.s.Name, r2.s.Name)
	}
}

// TestManager_StartLockWaitEndsWithContext: a start waiting behind
// another gives up when its caller does, and the lock is free afterwards.
func TestManager_StartLockWaitEndsWithContext(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, g := h.addVM(t, "box", true)
	waited := make(chan string, 4)
	h.m.locks.waiting = func(id string) { waited <- id }

	entered, release := gateGuest(g)
	first := startAsync(ctx, h.m, "box")
	waitFor(t, entered, "the first start to reach the guest")
	cctx, cancel := context.WithCancel(ctx)
	second := startAsync(cctx, h.m, "box")
	waitFor(t, waited, "the second start to wait")
	cancel()
	if r := waitFor(t, second, "the cancelled start"); r.err == nil || api.CodeOf(r.err) != api.CodeCanceled {
		t.Errorf("cancelled start = %+v, %v; want canceled", r.s, r.err)
	}
	release()
	if r := waitFor(t, first, "the first start"); r.err != nil {
		t.Fatal(r.err)
	}
	h.m.locks.mu.Lock()
	n := len(h.m.locks.held)
	h.m.locks.mu.Unlock()
	if n != 0 {
		t.Errorf("%d locks left after every start finished", n)
	}
}
