package imagectl

import (
	"os/exec"
	"sync"

	"banger/internal/api"
	"banger/internal/image/debian"
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
	ended  map[string]bool   // stages report ended
	detail map[string]string // the detail measureIn last set
}

func newStageTracker(op *operation.Op) *stageTracker {
	return &stageTracker{op: op, stages: map[string]opStage{}, ended: map[string]bool{}, detail: map[string]string{}}
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

// measureIn is measure for work that goes through phases (downloading,
// then unpacking): detail names the phase and is set when it changes.
// A stage that has ended is left alone.
func (t *stageTracker) measureIn(name, detail string, unit api.ProgressUnit, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended[name] {
		return
	}
	s := t.get(name)
	// The figures first, so the event the detail sends carries them.
	s.progressIn(unit, done, total)
	if detail != t.detail[name] {
		t.detail[name] = detail
		s.detail("%s", detail)
	}
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
		t.ended[name] = true
		if t.detail[name] != "" {
			// The phase measureIn named is over with the stage.
			s.detail("")
		}
		s.done()
	}
}

// packagePhases names the phases of a Debian bootstrap for people, as
// the bootstrap stage's detail.
var packagePhases = map[string]string{
	debian.PhaseFetch:  "downloading",
	debian.PhaseUnpack: "unpacking",
	debian.PhaseSetup:  "setting up",
	debian.PhaseNPM:    "installing npm packages",
}

// packages is the BuildOptions.Packages callback: the bootstrap stage's
// progress in packages, its phase as the detail.
func (t *stageTracker) packages(p debian.PackageProgress) {
	t.measureIn(debian.StageBootstrap, packagePhases[p.Phase], api.UnitPackages, p.Done, p.Total)
}
