package imagectl

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/operation"
)

// TestBuild_BootstrapPackageProgress checks that a recipe build turns
// the builder's package reports into the bootstrap stage's progress in
// packages, its phase as the detail, and that a report after the stage
// ended changes nothing.
func TestBuild_BootstrapPackageProgress(t *testing.T) {
	e := newEnv(t)
	// Two apt runs (3 essential packages, then 2 more) and 2 npm
	// packages, as debian.Build reports them.
	var reports []debian.PackageProgress
	for d := int64(0); d <= 3; d++ {
		reports = append(reports, debian.PackageProgress{Phase: debian.PhaseFetch, Done: d, Total: 3})
	}
	for _, ph := range []string{debian.PhaseUnpack, debian.PhaseSetup} {
		for d := int64(1); d <= 3; d++ {
			reports = append(reports, debian.PackageProgress{Phase: ph, Done: d, Total: 3})
		}
	}
	for _, ph := range []string{debian.PhaseFetch, debian.PhaseUnpack, debian.PhaseSetup} {
		for d := int64(3); d <= 5; d++ {
			reports = append(reports, debian.PackageProgress{Phase: ph, Done: d, Total: 5})
		}
	}
	for d := int64(0); d <= 2; d++ {
		reports = append(reports, debian.PackageProgress{Phase: debian.PhaseNPM, Done: d, Total: 2})
	}
	fake := fakeRecipeBuilder(&atomic.Int32{}, nil)
	e.m.BuildRecipe = func(ctx context.Context, r debian.Recipe, opts debian.BuildOptions, outDir string) (*image.Manifest, error) {
		if opts.Packages == nil {
			t.Error("no Packages callback")
			return fake(ctx, r, opts, outDir)
		}
		inner := opts.Progress
		opts.Progress = func(stage string, done, total int64) {
			inner(stage, done, total)
			if stage == debian.StageBootstrap && done == 0 {
				for _, p := range reports {
					opts.Packages(p)
				}
			}
		}
		m, err := fake(ctx, r, opts, outDir)
		// Late: the bootstrap stage has ended.
		opts.Packages(debian.PackageProgress{Phase: debian.PhaseSetup, Done: 1, Total: 9})
		return m, err
	}
	op, err := e.run(t, func(ctx context.Context, op *operation.Op) (any, error) {
		return e.m.Build(ctx, op, BuildRequest{Recipe: "debian"})
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}

	var running []api.Stage
	var last api.Stage
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = op.Watch(ctx, func(ev api.Event) error {
		if ev.Type == api.EventStage && ev.Stage != nil && ev.Stage.Name == debian.StageBootstrap {
			last = *ev.Stage
			// Events without a detail: the stage's start, its first
			// figures just before their phase's name, its end.
			if last.State == api.StageRunning && last.Progress != nil && last.Detail != "" {
				running = append(running, last)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var details []string
	prev := map[string]api.Progress{}
	for i, s := range running {
		p := *s.Progress
		// A new phase's first figures may go out with the old phase's
		// detail just before the event naming the new phase.
		if i+1 < len(running) && running[i+1].Detail != s.Detail && *running[i+1].Progress == p {
			continue
		}
		if p.Unit != api.UnitPackages || p.Total <= 0 || p.Done > p.Total {
			t.Errorf("bootstrap progress %+v: want packages of a known total", p)
		}
		if q, ok := prev[s.Detail]; ok && (p.Done < q.Done || p.Total < q.Total) {
			t.Errorf("%s: %d/%d after %d/%d", s.Detail, p.Done, p.Total, q.Done, q.Total)
		}
		prev[s.Detail] = p
		if len(details) == 0 || details[len(details)-1] != s.Detail {
			details = append(details, s.Detail)
		}
	}
	want := []string{"downloading", "unpacking", "setting up", "downloading", "unpacking", "setting up", "installing npm packages"}
	if !slices.Equal(details, want) {
		t.Errorf("phases %q, want %q", details, want)
	}
	if p := prev["setting up"]; p.Done != 5 || p.Total != 5 {
		t.Errorf("setting up ended at %d/%d, want 5/5", p.Done, p.Total)
	}
	if p := prev["installing npm packages"]; p.Done != 2 || p.Total != 2 {
		t.Errorf("npm ended at %d/%d, want 2/2", p.Done, p.Total)
	}
	if last.State != api.StageDone || last.Detail != "" {
		t.Errorf("bootstrap stage ended %s with detail %q, want done without one", last.State, last.Detail)
	}
	if p := last.Progress; p == nil || p.Total != 2 {
		t.Errorf("bootstrap stage's last progress %+v, want the npm packages' (a late report must not count)", p)
	}
}
