package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image"
)

// tinyImageArchive writes a banger export archive of a synthetic image
// (small files standing in for the boot set) and returns its path.
func tinyImageArchive(t *testing.T, name string) string {
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
	path, err := st.Commit(ctx, dir, &image.Manifest{Name: name, Init: image.InitAgent, KernelVersion: "6.1.0-tiny",
		Source: image.Source{Kind: image.SourceRecipe, Ref: name}})
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

func TestMain_Image(t *testing.T) {
	newEnv(t)
	archive := tinyImageArchive(t, "tiny")

	// A relative path is made absolute before it reaches the daemon.
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(filepath.Dir(archive)); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runMain(t, "image", "import", filepath.Base(archive))
	if code != 0 || !strings.Contains(out, "image tiny ready") {
		t.Fatalf("image import: code %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "import") || !strings.Contains(errOut, "register") {
		t.Errorf("no stages on stderr: %q", errOut)
	}

	out, errOut, code = runMain(t, "image", "list", "--json")
	if code != 0 {
		t.Fatalf("image list --json: %d %s", code, errOut)
	}
	var imgs []api.Image
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if len(imgs) != 1 || imgs[0].Name != "tiny" || imgs[0].Init != image.InitAgent || imgs[0].Source.Kind != image.SourceImport {
		t.Fatalf("image list --json = %+v", imgs)
	}
	id := imgs[0].ID

	out, _, code = runMain(t, "image", "list")
	if code != 0 || !strings.Contains(out, "NAME") || !strings.Contains(out, "tiny") || !strings.Contains(out, id[:12]) {
		t.Errorf("image list:\n%s", out)
	}

	out, _, code = runMain(t, "image", "show", "tiny")
	for _, want := range []string{"tiny", id, "6.1.0-tiny", "agent", filepath.Join("images", id)} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("image show lacks %q:\n%s", want, out)
		}
	}
	out, _, code = runMain(t, "image", "show", id[:8], "--json")
	var one api.Image
	if err := json.Unmarshal([]byte(out), &one); code != 0 || err != nil || one.ID != id {
		t.Errorf("image show --json by id prefix: %d %v %s", code, err, out)
	}
	_, errOut, code = runMain(t, "image", "show", "tinny")
	if code != 1 || !strings.Contains(errOut, "not found") || !strings.Contains(errOut, "did you mean tiny") {
		t.Errorf("image show tinny: %d %q", code, errOut)
	}

	exported := filepath.Join(t.TempDir(), "out.tar")
	if _, errOut, code = runMain(t, "image", "export", "tiny", "-o", exported); code != 0 {
		t.Fatalf("image export: %d %s", code, errOut)
	}
	f, err := os.Open(exported)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(f)
	var man image.Manifest
	if h, err := tr.Next(); err != nil || h.Name != image.FileManifest {
		t.Fatalf("export: first entry %v, %v", h, err)
	}
	if err := json.NewDecoder(tr).Decode(&man); err != nil || man.ID != id || len(man.Files) != len(image.BootFiles) {
		t.Errorf("exported manifest %+v, %v; want id %s with every boot file", man, err, id)
	}
	f.Close()
	if out, errOut, code = runMain(t, "image", "rm", "tiny"); code != 0 || !strings.Contains(out, "removed tiny") {
		t.Errorf("image rm: %d %s %s", code, out, errOut)
	}
	if _, _, code = runMain(t, "image", "rm", "tiny"); code != 1 {
		t.Errorf("second image rm: exit %d, want 1", code)
	}
	if out, _, code = runMain(t, "image", "list", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("image list --json after rm: %q", out)
	}
}

func TestMain_ImageUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"image", "build"}, "name a recipe"},
		{[]string{"image", "build", "-f", "Dockerfile", "--package", "htop"}, "--package applies to recipe builds"},
		{[]string{"image", "pull"}, "accepts 1 arg"},
		{[]string{"image", "show", "a", "b"}, "accepts 1 arg"},
	}
	for _, tc := range tests {
		_, errOut, code := runMain(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestWriteImageTable(t *testing.T) {
	now := time.Date(2025, 1, 2, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	err := writeImageTable(&buf, []api.Image{
		{Name: "debian-12", ID: "0123456789abcdef", SizeBytes: 3 << 29, Created: now.Add(-3 * time.Hour), Source: api.ImageSource{Kind: "recipe", Ref: "debian-12"}},
		{Name: "web", ID: "fedcba98", SizeBytes: 512, Created: now.Add(-72 * time.Hour), Source: api.ImageSource{Kind: "dockerfile", Ref: "/src/Dockerfile"}},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := "NAME       ID            SIZE     CREATED  SOURCE\n" +
		"debian-12  0123456789ab  1.5 GiB  3h ago   recipe:debian-12\n" +
		"web        fedcba98      512 B    3d ago   dockerfile:/src/Dockerfile\n"
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
}
