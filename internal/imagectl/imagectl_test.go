package imagectl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/operation"
	"banger/internal/store"
)

// tinyFiles is a synthetic boot set: small files standing in for the
// real kernel and filesystems (nothing here boots).
func tinyFiles(tag string) map[string][]byte {
	return map[string][]byte{
		image.FileVmlinuz:  []byte("vmlinuz of " + tag),
		image.FileVmlinux:  []byte("vmlinux of " + tag),
		image.FileInitrd:   []byte("initrd of " + tag),
		image.FileRootfs:   append(make([]byte, 200<<10), []byte("rootfs of "+tag)...), // a zero run, kept sparse on import
		image.FileWorkSeed: []byte("work seed of " + tag),
	}
}

// fakeRecipeBuilder writes tinyFiles and returns a recipe manifest, or
// fails after writing half of them when fail is set.
func fakeRecipeBuilder(calls *atomic.Int32, fail error) RecipeBuilder {
	return func(ctx context.Context, r debian.Recipe, opts debian.BuildOptions, outDir string) (*image.Manifest, error) {
		calls.Add(1)
		if opts.AgentBin == "" || opts.CacheDir == "" {
			return nil, errors.New("fake builder: no agent or cache dir")
		}
		opts.Progress(debian.StageBootstrap, 0, 1)
		fmt.Fprintf(opts.Log, "fake bootstrap of %s\n", r.Name)
		n := 0
		for name, data := range tinyFiles(r.Name) {
			if fail != nil && n == 2 {
				return nil, fail
			}
			if err := os.WriteFile(filepath.Join(outDir, name), data, 0o644); err != nil {
				return nil, err
			}
			n++
		}
		opts.Progress(debian.StageBootstrap, 1, 1)
		return &image.Manifest{
			Name:          r.Name,
			Source:        image.Source{Kind: image.SourceRecipe, Ref: r.Name, RecipeHash: r.Hash()},
			KernelVersion: "6.1.0-test",
			AgentVersion:  "agent-test",
			Init:          image.InitSystemd,
		}, nil
	}
}

type env struct {
	m     *Manager
	st    *store.Store
	calls *atomic.Int32
	ops   *operation.Manager
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	paths := config.Paths{
		StateDir:  filepath.Join(root, "state"),
		CacheDir:  filepath.Join(root, "cache"),
		ImagesDir: filepath.Join(root, "state", "images"),
	}
	st, err := store.Open(context.Background(), filepath.Join(root, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	agent := filepath.Join(root, "banger-agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\necho agent-test\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := New(st, &image.Store{Dir: paths.ImagesDir}, config.Default(), paths, nil)
	m.AgentBin = agent
	m.CacheDir = filepath.Join(root, "cache", "images")
	calls := &atomic.Int32{}
	m.BuildRecipe = fakeRecipeBuilder(calls, nil)
	return &env{m: m, st: st, calls: calls, ops: operation.NewManager(nil)}
}

// run executes fn inside a real operation and returns the operation.
func (e *env) run(t *testing.T, fn func(ctx context.Context, op *operation.Op) (any, error)) (*operation.Op, error) {
	t.Helper()
	op := e.ops.Start("test", fn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := op.Wait(ctx)
	return op, err
}

// stagingLeft lists staging and work directories left in the image store.
func stagingLeft(t *testing.T, m *Manager) []string {
	t.Helper()
	ents, err := os.ReadDir(m.Images.Dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestManager_BuildAndEnsure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	op, err := e.run(t, func(ctx context.Context, op *operation.Op) (any, error) {
		return e.m.Build(ctx, op, BuildRequest{Recipe: "debian"})
	})
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	snap := op.Snapshot()
	var names []string
	for _, s := range snap.Stages {
		names = append(names, s.Name+"="+string(s.State))
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "bootstrap=done") || !strings.Contains(got, "register=done") {
		t.Errorf("stages = %s", got)
	}
	if !strings.Contains(strings.Join(snap.Log, "\n"), filepath.Join(e.m.Paths.StateDir, "logs", "image-debian-12-")) {
		t.Errorf("op log does not name the build log: %q", snap.Log)
	}

	tests := []struct{ ref, want string }{
		{"debian-12", "debian-12"},
		{"", "debian-12"}, // the default image
	}
	for _, tc := range tests {
		img, err := e.m.Ensure(ctx, nil, tc.ref)
		if err != nil {
			t.Fatalf("ensure %q: %v", tc.ref, err)
		}
		if img.Name != tc.want {
			t.Errorf("ensure %q = %s, want %s", tc.ref, img.Name, tc.want)
		}
		// by id prefix too
		if byID, err := e.m.Ensure(ctx, nil, img.ID[:6]); err != nil || byID.ID != img.ID {
			t.Errorf("ensure by id prefix: %v %v", byID.ID, err)
		}
		if err := image.VerifyDir(ctx, img.Dir, mustManifest(t, img)); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
	if n := e.calls.Load(); n != 1 {
		t.Errorf("builder called %d times, want 1 (Ensure of a local image must not build)", n)
	}
	info, err := e.m.Info(ctx, mustGet(t, e.m, "debian-12"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Source.Kind != image.SourceRecipe || info.KernelVersion != "6.1.0-test" || info.Init != image.InitSystemd || info.UsedBy == nil {
		t.Errorf("info = %+v", info)
	}
	if state, detail := e.m.DefaultImageState(ctx); state != StatePresent {
		t.Errorf("default image state = %s (%s), want present", state, detail)
	}
}

func TestManager_EnsureBuildsFromCatalog(t *testing.T) {
	e := newEnv(t)
	img, err := e.m.Ensure(context.Background(), nil, "debian-13")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "debian-13" || e.calls.Load() != 1 {
		t.Errorf("got %s after %d builds", img.Name, e.calls.Load())
	}
	man := mustManifest(t, img)
	if man.Source.RecipeHash != debian.Trixie().Hash() {
		t.Errorf("recipe hash %s, want trixie's", man.Source.RecipeHash)
	}
}

func TestManager_EnsureUnknown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	registerTiny(t, e.m, "webapp")
	tests := []struct {
		ref  string
		want []string
	}{
		{"debain-12", []string{`image "debain-12" not found`, "did you mean debian-12", "catalog images: debian-12, debian-13"}},
		{"webap", []string{"did you mean webapp"}},
		{"zzzzzzzz", []string{"catalog images: debian-12, debian-13"}},
	}
	for _, tc := range tests {
		_, err := e.m.Ensure(ctx, nil, tc.ref)
		if !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("ensure %s: err = %v, want not_found", tc.ref, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ensure %s: %q lacks %q", tc.ref, err, w)
			}
		}
	}
	if e.calls.Load() != 0 {
		t.Error("an unknown name must not build anything")
	}
}

func TestManager_RemoveRefusedWhileUsed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	img := registerTiny(t, e.m, "busy")
	now := time.Now()
	for _, n := range []string{"vm-b", "vm-a"} {
		if err := e.st.CreateVM(ctx, store.VM{ID: store.NewID(), Name: n, ImageID: img.ID, VCPU: 1, MemoryMiB: 256,
			VMM: store.VMMQEMU, State: store.StateStopped, DesiredState: store.StateStopped, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, force := range []bool{false, true} {
		err := e.m.Remove(ctx, "busy", force)
		if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "vm-a, vm-b") {
			t.Fatalf("remove force=%v: %v, want conflict naming vm-a, vm-b", force, err)
		}
		if _, err := os.Stat(img.Dir); err != nil {
			t.Fatalf("image dir gone after refused remove: %v", err)
		}
	}
	info, _ := e.m.Info(ctx, img)
	if strings.Join(info.UsedBy, ",") != "vm-a,vm-b" {
		t.Errorf("used_by = %v", info.UsedBy)
	}
	vms, _ := e.st.ListVMs(ctx)
	for _, vm := range vms {
		if err := e.st.DeleteVM(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.Remove(ctx, "busy", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Dir); !os.IsNotExist(err) {
		t.Errorf("image dir still there: %v", err)
	}
	if _, err := e.st.GetImage(ctx, "busy"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("row still there: %v", err)
	}
}

func TestManager_RemoveForceUnregistered(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A committed directory without a record (a crash between Commit and
	// the insert).
	dir, err := e.m.Images.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, d := range tinyFiles("orphan") {
		os.WriteFile(filepath.Join(dir, n), d, 0o644)
	}
	path, err := e.m.Images.Commit(ctx, dir, &image.Manifest{Name: "orphan", Init: image.InitAgent})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Remove(ctx, "orphan", false); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("remove without force: %v, want not_found", err)
	}
	if err := e.m.Remove(ctx, "orphan", true); err != nil {
		t.Fatalf("remove --force: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("orphan dir still there: %v", err)
	}
}

func TestManager_FailedBuildLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		cancel bool
		code   api.Code
	}{
		{"builder error", false, api.CodeInternal},
		{"canceled", true, api.CodeCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			started := make(chan struct{})
			if tc.cancel {
				e.m.BuildRecipe = func(ctx context.Context, r debian.Recipe, opts debian.BuildOptions, outDir string) (*image.Manifest, error) {
					os.WriteFile(filepath.Join(outDir, image.FileRootfs), []byte("half"), 0o644)
					close(started)
					<-ctx.Done()
					return nil, ctx.Err()
				}
			} else {
				e.m.BuildRecipe = fakeRecipeBuilder(e.calls, errors.New("mmdebstrap exploded"))
				close(started)
			}
			op := e.ops.Start("image.build", func(ctx context.Context, op *operation.Op) (any, error) {
				return e.m.Build(ctx, op, BuildRequest{Recipe: "debian-13", Packages: []string{"htop"}})
			})
			<-started
			if tc.cancel {
				op.Cancel()
			}
			_, err := op.Wait(context.Background())
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != tc.code {
				t.Fatalf("err = %v, want code %s", err, tc.code)
			}
			if left := stagingLeft(t, e.m); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if imgs, _ := e.st.ListImages(context.Background()); len(imgs) != 0 {
				t.Errorf("registered %d images", len(imgs))
			}
			if !tc.cancel && !strings.Contains(err.Error(), filepath.Join(e.m.Paths.StateDir, "logs", "image-debian-13-")) {
				t.Errorf("error does not name the build log: %v", err)
			}
			logs, _ := filepath.Glob(filepath.Join(e.m.Paths.StateDir, "logs", "image-debian-13-*.log"))
			if len(logs) != 1 {
				t.Fatalf("build logs: %v", logs)
			}
			if data, _ := os.ReadFile(logs[0]); !strings.Contains(string(data), "error:") {
				t.Errorf("build log lacks the error: %q", data)
			}
		})
	}
}

func TestManager_ExportImportRoundTrip(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	img := registerTiny(t, e.m, "travel")
	want := mustManifest(t, img)
	archive := filepath.Join(t.TempDir(), "travel.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Export(ctx, "travel", f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := e.m.Remove(ctx, "travel", false); err != nil {
		t.Fatal(err)
	}

	got, err := e.m.Import(ctx, nil, archive, "")
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if got.Name != "travel" {
		t.Errorf("imported name %q", got.Name)
	}
	gm := mustManifest(t, got)
	for name, fi := range want.Files {
		if gm.Files[name] != fi {
			t.Errorf("file %s: %+v, want %+v", name, gm.Files[name], fi)
		}
	}
	if gm.Source.Kind != image.SourceImport {
		t.Errorf("source %+v", gm.Source)
	}
	// A second import under the same name conflicts; --name avoids it.
	if _, err := e.m.Import(ctx, nil, archive, ""); !errors.Is(err, api.ErrConflict) {
		t.Errorf("second import: %v, want conflict", err)
	}
	if _, err := e.m.Import(ctx, nil, archive, "travel-2"); err != nil {
		t.Errorf("import --name: %v", err)
	}
	// A truncated archive registers nothing.
	data, _ := os.ReadFile(archive)
	cut := filepath.Join(t.TempDir(), "cut.tar")
	os.WriteFile(cut, data[:len(data)/2], 0o644)
	if _, err := e.m.Import(ctx, nil, cut, "cut"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("truncated import: %v, want invalid", err)
	}
	if _, err := e.st.GetImage(ctx, "cut"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("truncated import registered: %v", err)
	}
	if left := stagingLeft(t, e.m); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// artifactServer serves tinyFiles over HTTP; the first request for
// rootfs.ext4 is cut short to exercise resume.
type artifactServer struct {
	*httptest.Server
	files      map[string][]byte
	ranges     atomic.Int32
	cutRootfs  atomic.Bool
	rootfsHits atomic.Int32
}

func newArtifactServer(t *testing.T) *artifactServer {
	s := &artifactServer{files: tinyFiles("pulled")}
	s.cutRootfs.Store(true)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/a/")
		data, ok := s.files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Range") != "" {
			s.ranges.Add(1)
		}
		if name == image.FileRootfs {
			s.rootfsHits.Add(1)
			if s.cutRootfs.CompareAndSwap(true, false) {
				w.Header().Set("Content-Length", fmt.Sprint(len(data)))
				w.Write(data[:len(data)/2])
				return // the server closes a response shorter than its length
			}
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(s.Close)
	return s
}

// writeCatalog writes a catalog offering the server's files as "tiny";
// corrupt changes the sha256 of initrd.img.
func writeCatalog(t *testing.T, s *artifactServer, corrupt bool) string {
	files := map[string]Artifact{}
	for name, data := range s.files {
		sum := sha256.Sum256(data)
		a := Artifact{URL: s.URL + "/a/" + name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
		if corrupt && name == image.FileInitrd {
			a.SHA256 = strings.Repeat("0", 64)
		}
		files[name] = a
	}
	cat := map[string]any{"images": []any{map[string]any{"name": "tiny", "init": "agent", "kernel_version": "6.1.0-tiny", "files": files}}}
	data, _ := json.Marshal(cat)
	p := filepath.Join(t.TempDir(), "catalog.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManager_Pull(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newArtifactServer(t)
	e.m.Config.Catalogs = []string{writeCatalog(t, s, false)}

	op, err := e.run(t, func(ctx context.Context, op *operation.Op) (any, error) {
		return e.m.Pull(ctx, op, "tiny")
	})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	img := mustGet(t, e.m, "tiny")
	man := mustManifest(t, img)
	if man.Init != image.InitAgent || man.KernelVersion != "6.1.0-tiny" || man.Source.Kind != image.SourcePull {
		t.Errorf("manifest %+v", man)
	}
	for name, data := range s.files {
		got, err := os.ReadFile(filepath.Join(img.Dir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("file %s differs (%v)", name, err)
		}
	}
	if s.rootfsHits.Load() < 2 || s.ranges.Load() == 0 {
		t.Errorf("rootfs fetched %d times with %d range requests; want a resumed download", s.rootfsHits.Load(), s.ranges.Load())
	}
	var downloadDone bool
	for _, st := range op.Snapshot().Stages {
		if st.Name == StageDownload && st.State == api.StageDone && st.Progress != nil && st.Progress.Done == st.Progress.Total {
			downloadDone = true
		}
	}
	if !downloadDone {
		t.Errorf("no finished download stage with progress: %+v", op.Snapshot().Stages)
	}
	// Ensure of another catalog name pulls; of a pulled one does nothing.
	if _, err := e.m.Ensure(ctx, nil, "tiny"); err != nil {
		t.Error(err)
	}
	if state, _ := e.m.DefaultImageState(ctx); state == StatePresent {
		t.Error("default image reported present")
	}
}

func TestManager_PullChecksumMismatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newArtifactServer(t)
	s.cutRootfs.Store(false)
	e.m.Config.Catalogs = []string{writeCatalog(t, s, true)}
	_, err := e.m.Ensure(ctx, nil, "tiny")
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), image.FileInitrd) {
		t.Fatalf("err = %v, want an invalid sha256 error naming %s", err, image.FileInitrd)
	}
	if imgs, _ := e.st.ListImages(ctx); len(imgs) != 0 {
		t.Errorf("registered %d images", len(imgs))
	}
	if left := stagingLeft(t, e.m); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	parts, _ := filepath.Glob(filepath.Join(e.m.BuildCacheDir(), "downloads", "0000*.part"))
	if len(parts) > 0 {
		t.Errorf("corrupt partial download kept: %v", parts)
	}
}

func TestManager_AgentBinary(t *testing.T) {
	e := newEnv(t)
	e.m.AgentBin = ""
	t.Setenv(EnvAgentBin, filepath.Join(t.TempDir(), "nope"))
	_, err := e.m.AgentBinary()
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), EnvAgentBin) {
		t.Errorf("missing agent: %v", err)
	}
	if _, err := e.m.Build(context.Background(), nil, BuildRequest{Recipe: "debian"}); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("build without agent: %v", err)
	}
	if state, detail := e.m.DefaultImageState(context.Background()); state != StateMissing || !strings.Contains(detail, "banger-agent") {
		t.Errorf("default image state %s: %s", state, detail)
	}
}

func TestParseCatalog(t *testing.T) {
	sum := strings.Repeat("a", 64)
	tests := []struct {
		name, doc, err string
	}{
		{"recipe with suite only", `{"images":[{"name":"deb","recipe":{"suite":"bookworm"}}]}`, ""},
		{"both", `{"images":[{"name":"x","recipe":{"suite":"bookworm"},"files":{"vmlinuz":{"url":"u","sha256":"` + sum + `","size":1}}}]}`, "both"},
		{"neither", `{"images":[{"name":"x"}]}`, "neither"},
		{"missing rootfs", `{"images":[{"name":"x","files":{"vmlinuz":{"url":"u","sha256":"` + sum + `","size":1}}}]}`, "no initrd.img"},
		{"unknown key", `{"images":[],"extra":1}`, "unknown field"},
		{"bad name", `{"images":[{"name":"X Y","recipe":{"suite":"bookworm"}}]}`, "invalid image name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCatalog("/cat.json", []byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if r := c.Images[0].Recipe; r.Mirror != debian.DefaultMirror || len(r.Packages) == 0 {
					t.Errorf("recipe defaults not filled: %+v", r)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

func TestNameFromRef(t *testing.T) {
	tests := map[string]string{
		"docker.io/library/alpine:3.20": "alpine-3.20",
		"127.0.0.1:5000/tools/web":      "web",
		"ghcr.io/x/y:latest":            "y",
		"busybox@sha256:abcd":           "busybox",
	}
	for ref, want := range tests {
		if got := nameFromRef(ref); got != want {
			t.Errorf("nameFromRef(%q) = %q, want %q", ref, got, want)
		}
	}
}

// registerTiny registers a synthetic image called name through the
// normal staging path.
func registerTiny(t *testing.T, m *Manager, name string) store.Image {
	t.Helper()
	img, err := m.produce(context.Background(), nil, name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		for n, d := range tinyFiles(name) {
			if err := os.WriteFile(filepath.Join(dir, n), d, 0o644); err != nil {
				return nil, err
			}
		}
		return &image.Manifest{Source: image.Source{Kind: image.SourceRecipe, Ref: name}, Init: image.InitSystemd}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustGet(t *testing.T, m *Manager, ref string) store.Image {
	t.Helper()
	img, err := m.Get(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustManifest(t *testing.T, img store.Image) *image.Manifest {
	t.Helper()
	man, err := Manifest(img)
	if err != nil {
		t.Fatal(err)
	}
	return man
}
