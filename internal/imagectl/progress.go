package imagectl

import (
	"os/exec"
	"sync"

	"banger/internal/api"
	"banger/internal/operation"
)

// lookPath finds a host command; a variable so tests can hide tools.
var lookPath = exec.LookPath

// opStage is an operation stage that tolerates a nil operation (callers
// outside an operation, tests).
type opStage struct{ s *operation.Stage }

// stage starts the stage name on op (nil op: a no-op stage).
func stage(op *operation.Op, name string) opStage {
	if op == nil {
		return opStage{}
	}
	return opStage{op.Stage(name)}
}

func (s opStage) done() {
	if s.s != nil {
		s.s.Done()
	}
}

func (s opStage) fail(err error) error {
	if s.s != nil {
		return s.s.Fail(err)
	}
	return err
}

func (s opStage) detail(format string, args ...any) {
	if s.s != nil {
		s.s.Detail(format, args...)
	}
}

func (s opStage) progress(done, total int64) {
	if s.s != nil {
		s.s.Progress(done, total)
	}
}

func (s opStage) progressIn(unit api.ProgressUnit, done, total int64) {
	if s.s != nil {
		s.s.ProgressIn(unit, done, total)
	}
}

// logf adds a line to op's log when there is an op.
func logf(op *operation.Op, format string, args ...any) {
	if op != nil {
		op.Logf(format, args...)
	}
}

// stageTracker turns a builder's progress callback (stage, done, total;
// done=0 at start, done=total at the end) into operation stages.
type stageTracker struct {
	op     *operation.Op
	mu     sync.Mutex
	stages map[string]opStage
}

func newStageTracker(op *operation.Op) *stageTracker {
	return &stageTracker{op: op, stages: map[string]opStage{}}
}

// plan declares the stages up front.
func (t *stageTracker) plan(names ...string) {
	if t.op != nil {
		t.op.Plan(names...)
	}
}

// get returns the stage called name, starting it on first use.
func (t *stageTracker) get(name string) opStage {
	s, ok := t.stages[name]
	if !ok {
		s = stage(t.op, name)
		t.stages[name] = s
	}
	return s
}

// measure reports a stage's work in a unit (bytes read, say) without
// ending it; the stage's end comes from report.
func (t *stageTracker) measure(name string, unit api.ProgressUnit, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.get(name).progressIn(unit, done, total)
}

// report is the progress callback.
func (t *stageTracker) report(name string, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(name)
	if total > 1 {
		s.progress(done, total)
	}
	if total > 0 && done >= total {
		s.done()
	}
}
