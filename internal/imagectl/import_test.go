package imagectl

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/operation"
	"banger/internal/testenv"
)

// TestManager_ImportFetchStage imports from a registry inside an
// operation: the fetch stage reports the layer bytes read against the
// manifest's total and ends, with every byte counted, before extract.
func TestManager_ImportFetchStage(t *testing.T) {
	testenv.RequireCommand(t, "mkfs.ext4")
	e := newEnv(t)
	registerTiny(t, e.m, e.m.DefaultImageName())
	img, err := random.Image(256<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	man, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range man.Layers {
		total += l.Size
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/app:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}

	op, err := e.run(t, func(ctx context.Context, op *operation.Op) (any, error) {
		return e.m.Import(ctx, op, ref, "app")
	})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	var (
		fetchEnd, extractEnd = -1, -1
		measured             []api.Progress
	)
	evs := collectEvents(t, op)
	for i, ev := range evs {
		if ev.Type != api.EventStage {
			continue
		}
		switch s := ev.Stage; {
		case s.Name == image.StageFetch && s.State == api.StageRunning && s.Progress != nil:
			measured = append(measured, *s.Progress)
		case s.Name == image.StageFetch && s.State == api.StageDone:
			fetchEnd = i
		case s.Name == image.StageExtract && s.State == api.StageDone:
			extractEnd = i
		}
	}
	if fetchEnd < 0 || extractEnd < 0 || fetchEnd > extractEnd {
		t.Errorf("fetch ended at event %d, extract at %d: want both, fetch first", fetchEnd, extractEnd)
	}
	if len(measured) == 0 {
		t.Fatal("fetch reported no progress")
	}
	for _, p := range measured {
		if p.Unit != api.UnitBytes || p.Total != total || p.Done > total {
			t.Errorf("fetch progress %+v, want bytes of %d", p, total)
		}
	}
	for _, s := range op.Snapshot().Stages {
		if s.Name != image.StageFetch {
			continue
		}
		if s.State != api.StageDone || s.Progress == nil || s.Progress.Done != total || s.Progress.Total != total {
			t.Errorf("fetch stage at the end: %s %+v, want done at %d/%d bytes", s.State, s.Progress, total, total)
		}
	}
}

// collectEvents returns every event of a finished op.
func collectEvents(t *testing.T, op *operation.Op) []api.Event {
	t.Helper()
	var evs []api.Event
	if err := op.Watch(context.Background(), func(ev api.Event) error {
		evs = append(evs, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}
