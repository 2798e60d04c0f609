package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
)

// tinyArchive makes a banger export archive of a synthetic image called
// name (small files standing in for the boot set) and returns its path.
func tinyArchive(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	st := &image.Store{Dir: filepath.Join(t.TempDir(), "images")}
	dir, err := st.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range image.BootFiles {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f+" of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path, err := st.Commit(ctx, dir, &image.Manifest{
		Name: name, Init: image.InitAgent, KernelVersion: "6.1.0-tiny",
		Source: image.Source{Kind: image.SourceRecipe, Ref: name},
	})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), name+".tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := image.Export(ctx, path, f); err != nil {
		t.Fatal(err)
	}
	return archive
}

// importImage imports an archive through the API and waits for the
// operation, returning its result.
func importImage(t *testing.T, c *api.Client, archive, name string) (api.Image, []api.Event, error) {
	t.Helper()
	ctx := testCtx(t)
	ref, err := c.ImportImage(ctx, api.ImportImageRequest{Ref: archive, Name: name})
	if err != nil {
		t.Fatalf("ImportImage: %v", err)
	}
	if ref.Kind != api.OpImageImport {
		t.Errorf("operation kind %q", ref.Kind)
	}
	var events []api.Event
	done, err := c.WaitOperation(ctx, ref.ID, func(ev api.Event) error { events = append(events, ev); return nil })
	if err != nil {
		return api.Image{}, events, err
	}
	var img api.Image
	if err := json.Unmarshal(done.Result, &img); err != nil {
		t.Fatalf("decode result %s: %v", done.Result, err)
	}
	return img, events, nil
}

func TestDaemon_Images(t *testing.T) {
	p := testPaths(t)
	d, c := startDaemon(t, p)
	ctx := testCtx(t)

	imgs, err := c.Images(ctx)
	if err != nil || len(imgs) != 0 {
		t.Fatalf("Images on an empty daemon = %v, %v", imgs, err)
	}
	archive := tinyArchive(t, "tiny")
	got, events, err := importImage(t, c, archive, "")
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if got.Name != "tiny" || got.Init != image.InitAgent || got.KernelVersion != "6.1.0-tiny" || got.Source.Kind != image.SourceImport {
		t.Errorf("imported %+v", got)
	}
	var stages []string
	for _, ev := range events {
		if ev.Type == api.EventStage && ev.Stage.State == api.StageDone {
			stages = append(stages, ev.Stage.Name)
		}
	}
	if strings.Join(stages, ",") != "import,register" {
		t.Errorf("done stages %v, want import,register", stages)
	}
	if _, err := os.Stat(filepath.Join(p.ImagesDir, got.ID, image.FileManifest)); err != nil {
		t.Errorf("image not in the state dir: %v", err)
	}

	list, err := c.Images(ctx)
	if err != nil || len(list) != 1 || list[0].ID != got.ID || list[0].UsedBy == nil {
		t.Fatalf("Images = %+v, %v", list, err)
	}
	for _, ref := range []string{"tiny", got.ID, got.ID[:6]} {
		one, err := c.Image(ctx, ref)
		if err != nil || one.ID != got.ID || one.Dir != filepath.Join(p.ImagesDir, got.ID) {
			t.Errorf("Image(%s) = %+v, %v", ref, one, err)
		}
	}
	if _, err := c.Image(ctx, "tinny"); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "did you mean tiny") || !strings.Contains(err.Error(), "debian-12") {
		t.Errorf("Image(tinny) = %v, want not found suggesting tiny and the catalog", err)
	}

	// Export through the API and import it again under another name.
	rc, err := c.ExportImage(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	again := filepath.Join(t.TempDir(), "again.tar")
	os.WriteFile(again, buf.Bytes(), 0o644)
	if cp, _, err := importImage(t, c, again, "tiny-copy"); err != nil || cp.SizeBytes != got.SizeBytes {
		t.Errorf("re-import of export: %+v, %v", cp, err)
	}
	if _, err := c.ExportImage(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("export of unknown image: %v", err)
	}

	// A second import under a taken name fails and leaves nothing.
	if _, _, err := importImage(t, c, archive, ""); !errors.Is(err, api.ErrConflict) {
		t.Errorf("duplicate import: %v, want conflict", err)
	}
	if err := c.RemoveImage(ctx, "tiny", false); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	if err := c.RemoveImage(ctx, "tiny", false); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	st, _ := c.Status(ctx)
	if st.Images != 1 {
		t.Errorf("status counts %d images, want 1", st.Images)
	}
	if d.ImageManager() != d.Images {
		t.Error("ImageManager is not the daemon's manager")
	}

	// Bad requests.
	if _, err := c.BuildImage(ctx, api.BuildImageRequest{Dockerfile: "rel/Dockerfile"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("relative dockerfile: %v", err)
	}
	if _, err := c.PullImage(ctx, api.PullImageRequest{}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("pull without name: %v", err)
	}
	ref, err := c.PullImage(ctx, api.PullImageRequest{Name: "no-such-image"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitOperation(ctx, ref.ID, nil); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("pull of unknown image: %v, want not found", err)
	}
}
