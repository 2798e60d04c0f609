package wait

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestUntilDone(t *testing.T) {
	n := 0
	err := Until(context.Background(), time.Millisecond, func() (bool, error) {
		n++
		return n == 3, nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Until = %v after %d calls, want nil after 3", err, n)
	}
}

func TestUntilError(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	err := Until(context.Background(), time.Millisecond, func() (bool, error) {
		n++
		return false, boom
	})
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("Until = %v after %d calls, want boom after 1", err, n)
	}
}

func TestUntilContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := Until(ctx, time.Millisecond, func() (bool, error) {
		n++
		if n == 2 {
			cancel()
		}
		return false, nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Fatalf("Until = %v after %d calls, want Canceled after 2", err, n)
	}
}

func TestUntilCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := Until(ctx, time.Hour, func() (bool, error) { called = true; return true, nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Fatalf("Until = %v, called %v; want Canceled without a call", err, called)
	}
}
