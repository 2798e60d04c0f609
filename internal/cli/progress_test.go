package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/operation"
	"banger/internal/wait"
)

// stageEv builds a stage event.
func stageEv(i int, name string, state api.StageState, started time.Time, dur time.Duration, detail string, prog *api.Progress) api.Event {
	return api.Event{Type: api.EventStage, StageIndex: i, Stage: &api.Stage{
		Name: name, State: state, Started: started, Duration: dur, Detail: detail, Progress: prog,
	}}
}

func progressEvents(t0 time.Time) []api.Event {
	return []api.Event{
		stageEv(0, "image", api.StagePending, time.Time{}, 0, "", nil),
		stageEv(1, "boot", api.StagePending, time.Time{}, 0, "", nil),
		stageEv(2, "agent", api.StagePending, time.Time{}, 0, "", nil),
		stageEv(0, "image", api.StageRunning, t0, 0, "", nil),
		stageEv(0, "image", api.StageRunning, t0, 0, "pulling debian-12", &api.Progress{Done: 5, Total: 10}),
		stageEv(0, "image", api.StageDone, t0, 2100*time.Millisecond, "pulling debian-12", &api.Progress{Done: 10, Total: 10}),
		{Type: api.EventLog, Message: "kernel 6.1.0"},
		stageEv(1, "boot", api.StageRunning, t0, 0, "", nil),
		stageEv(1, "boot", api.StageFailed, t0, 3*time.Second, "boot: no kernel", nil),
		stageEv(3, "rollback", api.StageRunning, t0, 0, "", nil),
		stageEv(3, "rollback", api.StageDone, t0, 250*time.Millisecond, "", nil),
		stageEv(2, "agent", api.StageSkipped, time.Time{}, 0, "", nil),
		{Type: api.EventDone, State: api.OpFailed, Error: &api.Error{Code: api.CodeInternal, Message: "boot: no kernel"}},
	}
}

func TestProgress_Plain(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, false)
	for _, ev := range progressEvents(time.Now()) {
		p.Event(ev)
	}
	p.Close()
	want := strings.Join([]string{
		"→ image",
		"  image: pulling debian-12",
		"  image:  50% 5/10",
		"✓ image 2.1s",
		"  kernel 6.1.0",
		"→ boot",
		"✗ boot 3.0s",
		"→ rollback",
		"✓ rollback 250ms",
		"",
	}, "\n")
	if buf.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestProgress_TTY(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return t0.Add(1200 * time.Millisecond) }
	for _, ev := range progressEvents(t0) {
		p.Event(ev)
	}
	p.Close()
	out := buf.String()
	for _, want := range []string{
		"\r\033[K⠋ image  pulling debian-12  [==========>         ]  50% 5/10  1.2s",
		"\r\033[K✓ image 2.1s\n",
		"\r\033[K✗ boot 3.0s\n",
		"✓ rollback 250ms\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tty progress lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "→") {
		t.Errorf("tty progress printed plain start lines:\n%q", out)
	}
	if !strings.HasSuffix(out, "✓ rollback 250ms\n") {
		t.Errorf("tty progress does not end cleanly:\n%q", out)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond:             "850ms",
		3200 * time.Millisecond:            "3.2s",
		4*time.Minute + 5*time.Second:      "4m05s",
		2*time.Hour + 10*time.Minute + 3e9: "2h10m",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFollowOperation_InterruptCancelsAndWaitsForRollback follows an
// operation on an in-process daemon, presses Ctrl-C once, and checks that
// the daemon rolled back and the CLI waited for it.
func TestFollowOperation_InterruptCancelsAndWaitsForRollback(t *testing.T) {
	e := newEnv(t)
	paths, err := config.DefaultPaths()
	if err != nil {
		t.Fatal(err)
	}
	rolled := make(chan struct{})
	d := daemon.New(daemon.Options{Paths: &paths, LogWriter: &bytes.Buffer{}})
	d.AddRoutes(daemon.Route{Pattern: "POST /v1/test/op", Handler: func(w http.ResponseWriter, r *http.Request) error {
		op := d.Ops.Start("vm.create", func(ctx context.Context, op *operation.Op) (any, error) {
			op.Plan("disks", "boot")
			op.Do("disks", func(*operation.Stage) error { return nil })
			op.OnRollback(func(ctx context.Context) error {
				time.Sleep(100 * time.Millisecond) // the CLI must wait for this
				close(rolled)
				return nil
			})
			op.Stage("boot")
			<-ctx.Done()
			return nil, ctx.Err()
		})
		w.WriteHeader(http.StatusAccepted)
		return json.NewEncoder(w).Encode(op.Ref())
	}})
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); d.Wait() })

	stderr := &syncBuffer{}
	intr := make(chan os.Signal, 1)
	a := &app{streams: IOStreams{Out: &bytes.Buffer{}, ErrOut: stderr, Interrupt: intr}, paths: paths}
	c := &api.Client{Socket: e.socket}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ref api.OperationRef
	if err := c.Do(ctx, http.MethodPost, "/v1/test/op", nil, &ref); err != nil {
		t.Fatal(err)
	}
	go func() {
		if wait.Until(ctx, 10*time.Millisecond, func() (bool, error) { return strings.Contains(stderr.String(), "→ boot"), nil }) == nil {
			intr <- os.Interrupt
		}
	}()
	_, err = a.followOperation(ctx, c, ref)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitInterrupted {
		t.Fatalf("followOperation = %v, want exit %d", err, exitInterrupted)
	}
	select {
	case <-rolled:
	default:
		t.Fatal("followOperation returned before the rollback finished")
	}
	out := stderr.String()
	for _, want := range []string{"✓ disks", "canceling vm.create: rolling back", "✗ boot", "✓ rollback", "vm.create canceled and rolled back"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	snap, err := c.Operation(ctx, ref.ID)
	if err != nil || snap.State != api.OpCanceled {
		t.Errorf("operation %+v, %v; want canceled", snap.State, err)
	}
}
