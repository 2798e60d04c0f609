package operation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/api"
)

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestManager(t *testing.T) (*Manager, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := NewManager(nil)
	m.Now = clk.Now
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return m, clk
}

func wait(t *testing.T, op *Op) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := op.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatalf("operation %s did not finish", op.ID())
	}
	return err
}

// collect returns every event of op (waiting for the done event).
func collect(t *testing.T, op *Op) []api.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var evs []api.Event
	if err := op.Watch(ctx, func(ev api.Event) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return evs
}

// summary renders stage events as "name:state" and others by type.
func summary(evs []api.Event) []string {
	var out []string
	for _, ev := range evs {
		switch ev.Type {
		case api.EventStage:
			out = append(out, ev.Stage.Name+":"+string(ev.Stage.State))
		case api.EventLog:
			out = append(out, "log:"+ev.Message)
		case api.EventDone:
			out = append(out, "done:"+string(ev.State))
		}
	}
	return out
}

func TestOp_StagesOrderAndTimings(t *testing.T) {
	m, clk := newTestManager(t)
	op := m.Start("test.stages", func(ctx context.Context, op *Op) (any, error) {
		op.Plan("image", "disks", "boot")
		s := op.Stage("image")
		clk.Advance(2 * time.Second)
		s.Detail("pulled %s", "debian-12")
		s.Done()
		s.Done() // idempotent: no second event
		op.Logf("disks next")
		err := op.Do("disks", func(s *Stage) error {
			clk.Advance(3 * time.Second)
			return nil
		})
		extra := op.Stage("extra") // not planned: appended
		clk.Advance(time.Second)
		extra.Skip("nothing to do")
		return map[string]int{"answer": 42}, err
	})
	if err := wait(t, op); err != nil {
		t.Fatalf("op failed: %v", err)
	}
	snap := op.Snapshot()
	type row struct {
		Name     string
		State    api.StageState
		Duration time.Duration
		Detail   string
	}
	var got []row
	for _, s := range snap.Stages {
		got = append(got, row{s.Name, s.State, s.Duration, s.Detail})
	}
	want := []row{
		{"image", api.StageDone, 2 * time.Second, "pulled debian-12"},
		{"disks", api.StageDone, 3 * time.Second, ""},
		{"boot", api.StageSkipped, 0, ""},
		{"extra", api.StageSkipped, time.Second, "nothing to do"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stages (-want +got):\n%s", d)
	}
	if snap.State != api.OpSucceeded || string(snap.Result) != `{"answer":42}` {
		t.Errorf("state %s result %s, want succeeded {\"answer\":42}", snap.State, snap.Result)
	}
	wantEvents := []string{
		"image:pending", "disks:pending", "boot:pending",
		"image:running", "image:running", "image:done",
		"log:disks next",
		"disks:running", "disks:done",
		"extra:running", "extra:skipped",
		"boot:skipped",
		"done:succeeded",
	}
	evs := collect(t, op)
	if d := cmp.Diff(wantEvents, summary(evs)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	for i, ev := range evs {
		if ev.Seq != i+1 || ev.Op != op.ID() {
			t.Errorf("event %d: seq %d op %s, want seq %d op %s", i, ev.Seq, ev.Op, i+1, op.ID())
		}
	}
}

func TestOp_RollbackOnError(t *testing.T) {
	for _, tc := range []struct {
		name        string
		rollbackErr error
		wantMsg     string
		wantStage   api.StageState
	}{
		{"clean rollback", nil, "boot: no kernel", api.StageDone},
		{"rollback step fails", errors.New("tap busy"), "boot: no kernel (rollback failed: tap busy)", api.StageFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			var mu sync.Mutex
			var order []string
			step := func(name string, err error) func(context.Context) error {
				return func(ctx context.Context) error {
					mu.Lock()
					defer mu.Unlock()
					order = append(order, name)
					return err
				}
			}
			op := m.Start("test.rollback", func(ctx context.Context, op *Op) (any, error) {
				op.OnRollback(step("dir", nil))
				op.OnRollback(step("tap", tc.rollbackErr))
				s := op.Stage("boot")
				op.OnRollback(step("vmm", nil))
				return nil, s.Fail(api.Errorf(api.CodeConflict, "boot: %w", errors.New("no kernel")))
			})
			err := wait(t, op)
			if !errors.Is(err, api.ErrConflict) {
				t.Fatalf("error %v: want the function's conflict code", err)
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("error %q, want %q", err, tc.wantMsg)
			}
			if d := cmp.Diff([]string{"vmm", "tap", "dir"}, order); d != "" {
				t.Errorf("rollback order (-want +got):\n%s", d)
			}
			snap := op.Snapshot()
			if snap.State != api.OpFailed {
				t.Errorf("state %s, want failed", snap.State)
			}
			last := snap.Stages[len(snap.Stages)-1]
			if last.Name != rollbackStage || last.State != tc.wantStage {
				t.Errorf("last stage %s:%s, want %s:%s", last.Name, last.State, rollbackStage, tc.wantStage)
			}
			if snap.Stages[0].State != api.StageFailed {
				t.Errorf("boot stage %s, want failed", snap.Stages[0].State)
			}
		})
	}
}

func TestOp_RollbackOnCancel(t *testing.T) {
	m, _ := newTestManager(t)
	started := make(chan struct{})
	type rbCall struct {
		Name        string
		CtxErr      error
		HasDeadline bool
	}
	var mu sync.Mutex
	var calls []rbCall
	step := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, dl := ctx.Deadline()
			mu.Lock()
			calls = append(calls, rbCall{name, ctx.Err(), dl})
			mu.Unlock()
			return nil
		}
	}
	op := m.Start("test.cancel", func(ctx context.Context, op *Op) (any, error) {
		op.OnRollback(step("first"))
		op.OnRollback(step("second"))
		op.Stage("wait")
		close(started)
		<-ctx.Done()
		return nil, fmt.Errorf("wait for guest: %w", ctx.Err())
	})
	<-started
	if err := m.Cancel(op.ID()); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	err := wait(t, op)
	if !errors.Is(err, api.ErrCanceled) {
		t.Fatalf("error %v, want canceled", err)
	}
	if err.Error() != "operation canceled" {
		t.Errorf("error %q, want %q", err, "operation canceled")
	}
	want := []rbCall{{"second", nil, true}, {"first", nil, true}}
	if d := cmp.Diff(want, calls, cmp.Comparer(func(a, b error) bool { return a == b })); d != "" {
		t.Errorf("rollback calls (-want +got):\n%s", d)
	}
	if s := op.Snapshot(); s.State != api.OpCanceled {
		t.Errorf("state %s, want canceled", s.State)
	}
	// Canceling again, after the end, is harmless.
	if err := m.Cancel(op.ID()); err != nil {
		t.Errorf("second Cancel: %v", err)
	}
}

func TestManager_CancelUnknown(t *testing.T) {
	m, _ := newTestManager(t)
	err := m.Cancel("op-nope")
	if !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("Cancel(unknown) = %v, want not found", err)
	}
	if !strings.Contains(err.Error(), "op-nope") {
		t.Errorf("error %q does not name the id", err)
	}
}

func TestOp_ReplayToLateSubscriber(t *testing.T) {
	m, _ := newTestManager(t)
	release := make(chan struct{})
	op := m.Start("test.replay", func(ctx context.Context, op *Op) (any, error) {
		op.Do("one", func(*Stage) error { return nil })
		op.Logf("halfway")
		<-release
		op.Do("two", func(*Stage) error { return nil })
		return "ok", nil
	})
	early := make(chan []api.Event)
	go func() { early <- collect(t, op) }()
	close(release)
	earlyEvents := <-early
	wait(t, op)
	late := collect(t, op) // subscribes after the end: full replay
	if d := cmp.Diff(earlyEvents, late); d != "" {
		t.Errorf("late subscriber saw different events (-early +late):\n%s", d)
	}
	want := []string{"one:running", "one:done", "log:halfway", "two:running", "two:done", "done:succeeded"}
	if d := cmp.Diff(want, summary(late)); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if string(late[len(late)-1].Result) != `"ok"` {
		t.Errorf("done result %s, want \"ok\"", late[len(late)-1].Result)
	}
}

func TestOp_ConcurrentSubscribers(t *testing.T) {
	m, _ := newTestManager(t)
	const lines, subscribers = 200, 8
	gate := make(chan struct{})
	op := m.Start("test.fanout", func(ctx context.Context, op *Op) (any, error) {
		<-gate
		for i := range lines {
			op.Logf("line %d", i)
		}
		return nil, nil
	})
	var wg sync.WaitGroup
	results := make([][]int, subscribers)
	for i := range subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 0 {
				close(gate)
			}
			for _, ev := range collect(t, op) {
				results[i] = append(results[i], ev.Seq)
			}
		}()
	}
	wg.Wait()
	want := make([]int, lines+1)
	for i := range want {
		want[i] = i + 1
	}
	for i, got := range results {
		if !slices.Equal(got, want) {
			t.Errorf("subscriber %d saw %d events (first %v), want seq 1..%d in order", i, len(got), got[:min(5, len(got))], lines+1)
		}
	}
}

func TestOp_WatchStopsWithContext(t *testing.T) {
	m, _ := newTestManager(t)
	op := m.Start("test.block", func(ctx context.Context, op *Op) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := op.Watch(ctx, func(api.Event) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Watch = %v, want deadline exceeded", err)
	}
	stop := errors.New("enough")
	op.Logf("x")
	if err := op.Watch(context.Background(), func(api.Event) error { return stop }); err != stop {
		t.Errorf("Watch = %v, want the callback's error", err)
	}
	op.Cancel()
	wait(t, op)
}

func TestOp_PanicIsInternalError(t *testing.T) {
	m, _ := newTestManager(t)
	rolledBack := false
	op := m.Start("test.panic", func(ctx context.Context, op *Op) (any, error) {
		op.OnRollback(func(context.Context) error { rolledBack = true; return nil })
		panic("boom")
	})
	err := wait(t, op)
	if !errors.Is(err, api.ErrInternal) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("error %v, want internal error mentioning the panic", err)
	}
	if !rolledBack {
		t.Error("rollback did not run after panic")
	}
}

func TestOp_ProgressCoalesced(t *testing.T) {
	m, clk := newTestManager(t)
	op := m.Start("test.progress", func(ctx context.Context, op *Op) (any, error) {
		s := op.Stage("copy")
		for i := int64(1); i <= 100; i++ {
			s.Progress(i, 100) // same instant: only first and final emitted
		}
		clk.Advance(time.Second)
		s.Done()
		return nil, nil
	})
	wait(t, op)
	var progress []int64
	for _, ev := range collect(t, op) {
		if ev.Type == api.EventStage && ev.Stage.State == api.StageRunning && ev.Stage.Progress != nil {
			progress = append(progress, ev.Stage.Progress.Done)
		}
	}
	if d := cmp.Diff([]int64{1, 100}, progress); d != "" {
		t.Errorf("progress events (-want +got):\n%s", d)
	}
	if p := op.Snapshot().Stages[0].Progress; p == nil || p.Done != 100 {
		t.Errorf("final progress %+v, want 100/100", p)
	}
}

func TestManager_Prune(t *testing.T) {
	m, clk := newTestManager(t)
	m.Retain = time.Minute
	op := m.Start("test.prune", func(ctx context.Context, op *Op) (any, error) { return nil, nil })
	wait(t, op)
	if m.Get(op.ID()) == nil {
		t.Fatal("finished op gone before Retain")
	}
	clk.Advance(2 * time.Minute)
	if m.Get(op.ID()) != nil {
		t.Error("finished op kept after Retain")
	}
	if err := m.Cancel(op.ID()); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Cancel(pruned) = %v, want not found", err)
	}
}

func TestManager_ShutdownCancelsAndRefuses(t *testing.T) {
	m, _ := newTestManager(t)
	rolledBack := make(chan struct{})
	op := m.Start("test.shutdown", func(ctx context.Context, op *Op) (any, error) {
		op.OnRollback(func(context.Context) error { close(rolledBack); return nil })
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if n := m.Running(); n != 1 {
		t.Errorf("Running = %d, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-rolledBack:
	default:
		t.Error("Shutdown returned before the rollback ran")
	}
	if err := wait(t, op); !errors.Is(err, api.ErrCanceled) || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("error %v, want canceled by shutdown", err)
	}
	late := m.Start("test.late", func(ctx context.Context, op *Op) (any, error) { return nil, nil })
	if err := wait(t, late); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("Start after Shutdown: %v, want unavailable", err)
	}
}

func TestStage_ProgressIn(t *testing.T) {
	m, _ := newTestManager(t)
	op := m.Start("test.fetch", func(ctx context.Context, op *Op) (any, error) {
		s := op.Stage("fetch")
		s.ProgressIn(api.UnitBytes, 512, 2048)
		s.Done()
		s.ProgressIn(api.UnitBytes, 4096, 4096) // after the end: ignored
		return nil, nil
	})
	wait(t, op)
	var got []api.Progress
	for _, ev := range collect(t, op) {
		if ev.Type == api.EventStage && ev.Stage.Progress != nil {
			got = append(got, *ev.Stage.Progress)
		}
	}
	want := []api.Progress{
		{Done: 512, Total: 2048, Unit: api.UnitBytes}, // the update
		{Done: 512, Total: 2048, Unit: api.UnitBytes}, // carried by the done event
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("progress events (-want +got):\n%s", d)
	}
	if s := op.Snapshot().Stages[0]; s.State != api.StageDone || s.Progress.Done != 512 {
		t.Errorf("stage %+v, want done at 512 bytes", s)
	}
}

func TestOp_RunningStagesEndWithOperation(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want api.StageState
	}{
		{"succeeded", nil, api.StageDone},
		{"failed", errors.New("boom"), api.StageFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, clk := newTestManager(t)
			op := m.Start("test.leftover", func(ctx context.Context, op *Op) (any, error) {
				op.Stage("fetch") // started, never ended by its owner
				clk.Advance(time.Second)
				return nil, tc.err
			})
			wait(t, op)
			evs := collect(t, op)
			s := op.Snapshot().Stages[0]
			if s.State != tc.want || s.Duration != time.Second {
				t.Errorf("fetch %s after %s, want %s after 1s", s.State, s.Duration, tc.want)
			}
			// The end is an event too, before the done event.
			last := evs[len(evs)-2]
			if last.Type != api.EventStage || last.Stage.State != tc.want {
				t.Errorf("event before done: %+v, want fetch %s", last, tc.want)
			}
		})
	}
}
