package imagectl

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"

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

// report is the progress callback.
func (t *stageTracker) report(name string, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.stages[name]
	if !ok {
		s = stage(t.op, name)
		t.stages[name] = s
	}
	if total > 1 {
		s.progress(done, total)
	}
	if total > 0 && done >= total {
		s.done()
	}
}

// shortID is the first 12 characters of an id.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// humanBytes renders a size with a binary unit ("1.5 GiB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// maxSuggestions bounds the close names listed in a not-found error.
const maxSuggestions = 5

// suggest returns the names close to ref: sharing a prefix with it
// either way round, or within an edit distance that grows with its
// length. Closest first, without duplicates.
func suggest(ref string, names []string) []string {
	r := strings.ToLower(ref)
	maxDist := 1 + len(r)/4
	type cand struct {
		name string
		dist int
	}
	var cs []cand
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		l := strings.ToLower(n)
		d := editDistance(r, l)
		if d > maxDist && !strings.HasPrefix(l, r) && !(strings.HasPrefix(r, l) && len(l) >= 2) {
			continue
		}
		cs = append(cs, cand{n, d})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].dist != cs[j].dist {
			return cs[i].dist < cs[j].dist
		}
		return cs[i].name < cs[j].name
	})
	var out []string
	for i, c := range cs {
		if i == maxSuggestions {
			break
		}
		out = append(out, c.name)
	}
	return out
}

// editDistance is the optimal-string-alignment distance between a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
