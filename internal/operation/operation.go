// Package operation runs long work in the daemon (VM create, image build,
// image pull) as operations: each has an id, ordered stages with timings
// and optional progress, log lines, cancellation with rollback, and a
// final result or error. Every change is an api.Event kept in order, so a
// subscriber that arrives late replays the whole history and then follows
// live, which is how `banger vm create` can re-attach to its own work.
//
// Inside an operation function:
//
//	op.Plan("image", "disks", "boot")          // optional: show pending stages
//	s := op.Stage("image")                     // starts the stage
//	s.Progress(n, total); s.Detail("pulling %s", ref)
//	s.ProgressIn(api.UnitBytes, n, total)      // a measure clients format
//	op.OnRollback(func(ctx context.Context) error { return removeDir(ctx, dir) })
//	s.Done()
//
// When the function fails or is canceled, the rollback steps run in
// reverse order with a fresh, bounded context, so a canceled operation
// still cleans up; then the done event is sent.
package operation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"banger/internal/api"
)

// Func is the body of an operation. ctx is canceled by Cancel or by the
// daemon's shutdown. The result is encoded as JSON into the done event.
type Func func(ctx context.Context, op *Op) (any, error)

// Defaults for Manager fields left zero.
const (
	DefaultRetain          = 15 * time.Minute
	DefaultRollbackTimeout = 2 * time.Minute
	DefaultMaxFinished     = 256
	progressInterval       = 100 * time.Millisecond
	rollbackStage          = "rollback"
)

// Log attribute keys.
const (
	logKeyOp   = "op"
	logKeyKind = "kind"
)

// Errors that become the message of a canceled operation.
var (
	errCanceled = errors.New("operation canceled")
	errShutdown = errors.New("bangerd is shutting down")
)

// Manager starts, tracks, cancels and prunes operations. Set the exported
// fields before the first Start; the zero value is not usable, use
// NewManager.
type Manager struct {
	// Retain is how long a finished operation stays queryable.
	Retain time.Duration
	// MaxFinished caps how many finished operations are kept.
	MaxFinished int
	// RollbackTimeout bounds the rollback of one operation.
	RollbackTimeout time.Duration
	// Now is the clock.
	Now func() time.Time
	// Logger receives one line per operation start and end.
	Logger *slog.Logger
	// Classify gives the API code of an error that ends an operation
	// (the daemon knows its packages' sentinel errors); it defaults to
	// api.CodeOf. Cancellation is always api.CodeCanceled.
	Classify func(error) api.Code

	mu     sync.Mutex
	ops    map[string]*Op
	closed bool
	wg     sync.WaitGroup
}

// NewManager returns a Manager with default settings.
func NewManager(logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		Retain:          DefaultRetain,
		MaxFinished:     DefaultMaxFinished,
		RollbackTimeout: DefaultRollbackTimeout,
		Now:             time.Now,
		Logger:          logger,
		Classify:        api.CodeOf,
		ops:             map[string]*Op{},
	}
}

// Start runs fn as a new operation of the given kind in its own goroutine
// and returns immediately. After Shutdown, the operation fails at once
// with an unavailable error.
func (m *Manager) Start(kind string, fn Func) *Op {
	ctx, cancel := context.WithCancelCause(context.Background())
	op := &Op{
		m:       m,
		id:      newID(),
		kind:    kind,
		created: m.Now(),
		ctx:     ctx,
		cancel:  cancel,
		state:   api.OpRunning,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	m.mu.Lock()
	m.pruneLocked()
	closed := m.closed
	m.ops[op.id] = op
	if !closed {
		m.wg.Add(1)
	}
	m.mu.Unlock()
	m.Logger.Info("operation started", logKeyOp, op.id, logKeyKind, kind)
	if closed {
		cancel(errShutdown)
		op.finish(nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("start %s: %v", kind, errShutdown)})
		return op
	}
	go func() {
		defer m.wg.Done()
		op.run(fn)
	}()
	return op
}

// Get returns the operation with id, or nil when it is unknown or pruned.
func (m *Manager) Get(id string) *Op {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked()
	return m.ops[id]
}

// Lookup is Get with a not-found error naming id.
func (m *Manager) Lookup(id string) (*Op, error) {
	if op := m.Get(id); op != nil {
		return op, nil
	}
	return nil, api.Errorf(api.CodeNotFound, "operation %s not found", id)
}

// List returns snapshots of every known operation, oldest first.
func (m *Manager) List() []api.Operation {
	m.mu.Lock()
	m.pruneLocked()
	ops := make([]*Op, 0, len(m.ops))
	for _, op := range m.ops {
		ops = append(ops, op)
	}
	m.mu.Unlock()
	slices.SortFunc(ops, func(a, b *Op) int { return a.created.Compare(b.created) })
	out := make([]api.Operation, len(ops))
	for i, op := range ops {
		out[i] = op.Snapshot()
	}
	return out
}

// Running returns how many operations have not finished.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, op := range m.ops {
		if !op.isDone() {
			n++
		}
	}
	return n
}

// Cancel asks the operation id to stop; it rolls back and finishes with a
// canceled error. Canceling a finished operation does nothing. An unknown
// id is a not-found error.
func (m *Manager) Cancel(id string) error {
	op, err := m.Lookup(id)
	if err != nil {
		return err
	}
	op.Cancel()
	return nil
}

// Shutdown cancels every running operation and waits until all have
// rolled back and finished, or ctx ends. Operations started afterwards
// fail at once.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	ops := make([]*Op, 0, len(m.ops))
	for _, op := range m.ops {
		ops = append(ops, op)
	}
	m.mu.Unlock()
	for _, op := range ops {
		op.cancel(errShutdown)
	}
	waited := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for operations: %w", ctx.Err())
	}
}

// pruneLocked drops finished operations older than Retain and the oldest
// finished ones beyond MaxFinished.
func (m *Manager) pruneLocked() {
	now := m.Now()
	var finished []*Op
	for id, op := range m.ops {
		fin, ok := op.finishedAt()
		if !ok {
			continue
		}
		if now.Sub(fin) > m.Retain {
			delete(m.ops, id)
			continue
		}
		finished = append(finished, op)
	}
	if extra := len(finished) - m.MaxFinished; m.MaxFinished > 0 && extra > 0 {
		slices.SortFunc(finished, func(a, b *Op) int {
			fa, _ := a.finishedAt()
			fb, _ := b.finishedAt()
			return fa.Compare(fb)
		})
		for _, op := range finished[:extra] {
			delete(m.ops, op.id)
		}
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "op-" + hex.EncodeToString(b[:])
}

// Op is one running or finished operation. Its methods are safe for
// concurrent use.
type Op struct {
	m       *Manager
	id      string
	kind    string
	created time.Time
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{}

	mu           sync.Mutex
	state        api.OperationState
	stages       []api.Stage
	lastProgress []time.Time
	logs         []string
	events       []api.Event
	changed      chan struct{} // closed and replaced on every event
	rollbacks    []func(context.Context) error
	finished     time.Time
	result       json.RawMessage
	err          *api.Error
}

// ID returns the operation id ("op-" and 16 hex digits).
func (op *Op) ID() string { return op.id }

// Kind returns the kind given to Start, e.g. "vm.create".
func (op *Op) Kind() string { return op.kind }

// Ref returns the reference handed to API clients.
func (op *Op) Ref() api.OperationRef { return api.OperationRef{ID: op.id, Kind: op.kind} }

// Context returns the operation's context, canceled by Cancel.
func (op *Op) Context() context.Context { return op.ctx }

// Done is closed when the operation has finished (after rollback).
func (op *Op) Done() <-chan struct{} { return op.done }

// Cancel asks the operation to stop. It returns at once; watch Done or
// the events for the end of the rollback.
func (op *Op) Cancel() { op.cancel(errCanceled) }

// Wait blocks until the operation finishes or ctx ends and returns its
// result and error.
func (op *Op) Wait(ctx context.Context) (json.RawMessage, error) {
	select {
	case <-op.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.err != nil {
		return nil, op.err
	}
	return op.result, nil
}

func (op *Op) isDone() bool {
	select {
	case <-op.done:
		return true
	default:
		return false
	}
}

func (op *Op) finishedAt() (time.Time, bool) {
	if !op.isDone() {
		return time.Time{}, false
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.finished, true
}

// Snapshot returns the current state of the operation.
func (op *Op) Snapshot() api.Operation {
	op.mu.Lock()
	defer op.mu.Unlock()
	now := op.m.Now()
	stages := make([]api.Stage, len(op.stages))
	for i, s := range op.stages {
		stages[i] = copyStage(s)
		if s.State == api.StageRunning {
			stages[i].Duration = now.Sub(s.Started)
		}
	}
	return api.Operation{
		ID:       op.id,
		Kind:     op.kind,
		State:    op.state,
		Created:  op.created,
		Finished: op.finished,
		Stages:   stages,
		Log:      slices.Clone(op.logs),
		Result:   op.result,
		Error:    op.err,
	}
}

func copyStage(s api.Stage) api.Stage {
	if s.Progress != nil {
		p := *s.Progress
		s.Progress = &p
	}
	return s
}

// Watch calls fn with every event of the operation in order: first all
// past events, then live ones as they happen, the last being the done
// event, after which Watch returns nil. It returns ctx's error when ctx
// ends first and fn's error when fn fails. fn runs on the caller's
// goroutine; a slow fn never blocks the operation.
func (op *Op) Watch(ctx context.Context, fn func(api.Event) error) error {
	next := 0
	for {
		op.mu.Lock()
		pending := op.events[next:len(op.events):len(op.events)]
		changed := op.changed
		op.mu.Unlock()
		for _, ev := range pending {
			if err := fn(ev); err != nil {
				return err
			}
			next++
			if ev.Type == api.EventDone {
				return nil
			}
		}
		if len(pending) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// emitLocked appends an event; op.mu must be held.
func (op *Op) emitLocked(ev api.Event) {
	ev.Seq = len(op.events) + 1
	ev.Time = op.m.Now()
	ev.Op = op.id
	op.events = append(op.events, ev)
	close(op.changed)
	op.changed = make(chan struct{})
}

func (op *Op) emitStageLocked(i int) {
	s := copyStage(op.stages[i])
	op.emitLocked(api.Event{Type: api.EventStage, StageIndex: i, Stage: &s})
}

// Logf adds a line to the operation's log.
func (op *Op) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	op.mu.Lock()
	op.logs = append(op.logs, line)
	op.emitLocked(api.Event{Type: api.EventLog, Message: line})
	op.mu.Unlock()
	op.m.Logger.Debug("operation log", logKeyOp, op.id, "line", line)
}

// Plan declares stages up front, in order, as pending, so watchers can
// show what is coming. Names already present are ignored.
func (op *Op) Plan(names ...string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	for _, name := range names {
		if op.indexLocked(name) >= 0 {
			continue
		}
		op.stages = append(op.stages, api.Stage{Name: name, State: api.StagePending})
		op.lastProgress = append(op.lastProgress, time.Time{})
		op.emitStageLocked(len(op.stages) - 1)
	}
}

func (op *Op) indexLocked(name string) int {
	return slices.IndexFunc(op.stages, func(s api.Stage) bool { return s.Name == name })
}

// Stage starts the stage called name and returns its handle: a planned
// stage is started in place, an unknown one is appended. Calling Stage
// again for a running stage returns the same handle.
func (op *Op) Stage(name string) *Stage {
	op.mu.Lock()
	defer op.mu.Unlock()
	i := op.indexLocked(name)
	if i >= 0 && op.stages[i].State == api.StageRunning {
		return &Stage{op: op, idx: i}
	}
	if i < 0 || op.stages[i].State != api.StagePending {
		op.stages = append(op.stages, api.Stage{Name: name})
		op.lastProgress = append(op.lastProgress, time.Time{})
		i = len(op.stages) - 1
	}
	op.stages[i].State = api.StageRunning
	op.stages[i].Started = op.m.Now()
	op.emitStageLocked(i)
	return &Stage{op: op, idx: i}
}

// Do runs fn as the stage called name: Done when fn returns nil, Fail
// with its error otherwise. It returns fn's error.
func (op *Op) Do(name string, fn func(s *Stage) error) error {
	s := op.Stage(name)
	if err := fn(s); err != nil {
		return s.Fail(err)
	}
	s.Done()
	return nil
}

// OnRollback registers an undo step. If the operation fails or is
// canceled, the steps run in reverse order of registration with a context
// that is not canceled but is bounded by Manager.RollbackTimeout. Steps
// must be idempotent.
func (op *Op) OnRollback(fn func(ctx context.Context) error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.rollbacks = append(op.rollbacks, fn)
}

// Stage is the handle of one stage of an operation.
type Stage struct {
	op  *Op
	idx int
}

// Name returns the stage's name.
func (s *Stage) Name() string {
	s.op.mu.Lock()
	defer s.op.mu.Unlock()
	return s.op.stages[s.idx].Name
}

// Detail sets a short description of what the stage is doing now.
func (s *Stage) Detail(format string, args ...any) {
	s.op.mu.Lock()
	defer s.op.mu.Unlock()
	s.op.stages[s.idx].Detail = fmt.Sprintf(format, args...)
	s.op.emitStageLocked(s.idx)
}

// Progress reports done of total steps (total 0 when unknown). Updates
// are coalesced to a few events per second; the stage snapshot is always
// current. It does nothing unless the stage is running.
func (s *Stage) Progress(done, total int64) { s.ProgressIn("", done, total) }

// ProgressIn is Progress in a unit (bytes, files, packages) that clients
// use to format the figures.
func (s *Stage) ProgressIn(unit api.ProgressUnit, done, total int64) {
	s.op.mu.Lock()
	defer s.op.mu.Unlock()
	st := &s.op.stages[s.idx]
	if st.State != api.StageRunning {
		return
	}
	st.Progress = &api.Progress{Done: done, Total: total, Unit: unit}
	now := s.op.m.Now()
	last := s.op.lastProgress[s.idx]
	if !last.IsZero() && now.Sub(last) < progressInterval && (total == 0 || done < total) {
		return
	}
	s.op.lastProgress[s.idx] = now
	s.op.emitStageLocked(s.idx)
}

// Done marks the stage finished. It does nothing unless the stage is
// running.
func (s *Stage) Done() { s.end(api.StageDone, "") }

// Skip marks the stage skipped with a reason (e.g. "image already
// present").
func (s *Stage) Skip(reason string) { s.end(api.StageSkipped, reason) }

// Fail marks the stage failed with err as its detail and returns err, so
// `return nil, s.Fail(err)` reads naturally.
func (s *Stage) Fail(err error) error {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.end(api.StageFailed, msg)
	return err
}

func (s *Stage) end(state api.StageState, detail string) {
	s.op.mu.Lock()
	defer s.op.mu.Unlock()
	s.op.endStageLocked(s.idx, state, detail)
}

// endStageLocked moves a pending or running stage to a final state.
func (op *Op) endStageLocked(i int, state api.StageState, detail string) {
	st := &op.stages[i]
	switch st.State {
	case api.StageRunning:
		st.Duration = op.m.Now().Sub(st.Started)
	case api.StagePending:
	default:
		return
	}
	st.State = state
	if detail != "" {
		st.Detail = detail
	}
	op.emitStageLocked(i)
}

// run executes fn, then rollback on failure, then finishes the op.
func (op *Op) run(fn Func) {
	res, err := op.call(fn)
	var raw json.RawMessage
	if err == nil && res != nil {
		raw, err = json.Marshal(res)
		if err != nil {
			err = api.Errorf(api.CodeInternal, "encode %s result: %w", op.kind, err)
		}
	}
	var final *api.Error
	if err != nil {
		final = op.classify(err)
		op.mu.Lock()
		for i := range op.stages {
			if op.stages[i].State == api.StageRunning {
				op.endStageLocked(i, api.StageFailed, final.Message)
			}
		}
		op.mu.Unlock()
		if rbErr := op.rollback(); rbErr != nil {
			final.Message = fmt.Sprintf("%s (rollback failed: %v)", final.Message, rbErr)
		}
		raw = nil
	}
	op.finish(raw, final)
}

// classify builds the final error: canceled when the op's context was
// canceled, else err's own code.
func (op *Op) classify(err error) *api.Error {
	if op.ctx.Err() == nil {
		return &api.Error{Code: op.m.Classify(err), Message: err.Error()}
	}
	cause := context.Cause(op.ctx)
	msg := cause.Error()
	if !errors.Is(err, context.Canceled) && !errors.Is(err, cause) {
		msg = fmt.Sprintf("%s: %v", msg, err)
	}
	return &api.Error{Code: api.CodeCanceled, Message: msg}
}

// call runs fn, turning a panic into an internal error.
func (op *Op) call(fn Func) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			op.m.Logger.Error("operation panicked", logKeyOp, op.id, logKeyKind, op.kind, "panic", r, "stack", string(debug.Stack()))
			err = api.Errorf(api.CodeInternal, "%s: panic: %v", op.kind, r)
		}
	}()
	return fn(op.ctx, op)
}

// rollback runs the registered undo steps in reverse as a "rollback"
// stage and returns their joined errors.
func (op *Op) rollback() error {
	op.mu.Lock()
	steps := op.rollbacks
	op.rollbacks = nil
	op.mu.Unlock()
	if len(steps) == 0 {
		return nil
	}
	st := op.Stage(rollbackStage)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(op.ctx), op.m.RollbackTimeout)
	defer cancel()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := op.callRollback(ctx, steps[i]); err != nil {
			op.Logf("rollback step %d: %v", i+1, err)
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		st.Fail(err)
		return err
	}
	st.Done()
	return nil
}

func (op *Op) callRollback(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return fn(ctx)
}

// finish records the outcome, skips stages never started, ends stages
// still running (done when the operation succeeded: its work is over),
// sends the done event and closes Done.
func (op *Op) finish(result json.RawMessage, e *api.Error) {
	op.cancel(context.Canceled) // release the context; no-op when already canceled
	op.mu.Lock()
	for i := range op.stages {
		switch op.stages[i].State {
		case api.StagePending:
			op.endStageLocked(i, api.StageSkipped, "")
		case api.StageRunning:
			if e == nil {
				op.endStageLocked(i, api.StageDone, "")
			} else {
				op.endStageLocked(i, api.StageFailed, e.Message)
			}
		}
	}
	op.finished = op.m.Now()
	op.result = result
	op.err = e
	switch {
	case e == nil:
		op.state = api.OpSucceeded
	case e.Code == api.CodeCanceled:
		op.state = api.OpCanceled
	default:
		op.state = api.OpFailed
	}
	op.emitLocked(api.Event{Type: api.EventDone, State: op.state, Result: result, Error: e})
	state := op.state
	took := op.finished.Sub(op.created)
	op.mu.Unlock()
	close(op.done)
	if e != nil {
		op.m.Logger.Info("operation finished", logKeyOp, op.id, logKeyKind, op.kind, "state", state, "took", took, "error", e.Message)
	} else {
		op.m.Logger.Info("operation finished", logKeyOp, op.id, logKeyKind, op.kind, "state", state, "took", took)
	}
}
