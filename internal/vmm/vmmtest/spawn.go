package vmmtest

import (
	"context"
	"testing"
	"time"

	"banger/internal/vmm"
)

// StartUntilSpawn runs d.Start(ctx, s) in the background with an OnSpawn
// that reports the handles, and returns them once given: a driver must
// hand them over when its process exists, before waiting for it to be
// ready. The test fails when Start returns first or nothing comes within
// 30 s. errc receives Start's result.
func StartUntilSpawn(t *testing.T, ctx context.Context, d vmm.Driver, s vmm.Spec) (h vmm.Handles, errc <-chan error) {
	t.Helper()
	spawned := make(chan vmm.Handles, 1)
	s.OnSpawn = func(h vmm.Handles) error { spawned <- h; return nil }
	ec := make(chan error, 1)
	go func() { _, err := d.Start(ctx, s); ec <- err }()
	select {
	case h = <-spawned:
	case err := <-ec:
		t.Fatalf("Start returned before OnSpawn: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("OnSpawn not called")
	}
	if ok, err := vmm.Check(h); !ok || err != nil {
		t.Fatalf("handles given to OnSpawn do not find the process: %+v (%v)", h, err)
	}
	return h, ec
}
