package imagectl

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/dockerfile"
	"banger/internal/operation"
	"banger/internal/store"
)

// StageImport is the stage of an archive import.
const StageImport = "import"

// Import makes an image from ref: a banger export archive, an OCI
// layout directory, an OCI or `docker save` archive, or a registry
// reference. OCI images are paired with the default image's kernel,
// initrd and agent (the default image is made first when missing). name
// overrides the image name (default: the archive's own name, or one
// derived from the reference).
func (m *Manager) Import(ctx context.Context, op *operation.Op, ref, name string) (store.Image, error) {
	if ref == "" {
		return store.Image{}, api.Errorf(api.CodeInvalid, "import what? give a registry reference, an OCI layout directory or an archive")
	}
	kind, err := image.DetectImport(ref)
	if err != nil {
		return store.Image{}, api.WithCode(api.CodeInvalid, err)
	}
	if kind == image.ImportBanger {
		return m.importArchive(ctx, op, ref, name)
	}
	if name == "" {
		name = nameFromRef(ref)
	}
	base, err := m.Ensure(ctx, op, m.DefaultImageName())
	if err != nil {
		return store.Image{}, fmt.Errorf("import %s: default image (for the kernel): %w", ref, err)
	}
	baseMan, err := Manifest(base)
	if err != nil {
		return store.Image{}, err
	}
	agent, err := m.AgentBinary()
	if err != nil {
		return store.Image{}, err
	}
	unlock, err := m.lockName(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	tr := newStageTracker(op)
	tr.plan(image.StageFetch, image.StageExtract, image.StageAgent, image.StageRootfs, image.StageWorkSeed, image.StageKernel, StageRegister)
	return m.produce(ctx, op, name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		fmt.Fprintf(log, "import %s (%s) as %s on base image %s (%s)\n", ref, kind, name, base.Name, base.ID)
		return image.ImportOCI(ctx, ref, image.OCIOptions{
			Base: baseMan, BaseDir: base.Dir, AgentBin: agent, Name: name, Progress: tr.report,
			Fetched: func(done, total int64) { tr.measure(image.StageFetch, api.UnitBytes, done, total) },
		}, dir)
	})
}

// importArchive imports a banger export archive.
func (m *Manager) importArchive(ctx context.Context, op *operation.Op, path, name string) (store.Image, error) {
	if name == "" {
		n, err := archiveName(path)
		if err != nil {
			return store.Image{}, api.WithCode(api.CodeInvalid, fmt.Errorf("import %s: %w", path, err))
		}
		name = n
	}
	unlock, err := m.lockName(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	if op != nil {
		op.Plan(StageImport, StageRegister)
	}
	return m.produce(ctx, op, name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		s := stage(op, StageImport)
		f, err := os.Open(path)
		if err != nil {
			return nil, s.fail(err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, s.fail(err)
		}
		fmt.Fprintf(log, "import archive %s (%d bytes) as %s\n", path, fi.Size(), name)
		cr := &countingReader{r: f, progress: func(n int64) { s.progressIn(api.UnitBytes, n, fi.Size()) }}
		man, err := image.ImportArchive(ctx, cr, dir)
		if err != nil {
			return nil, s.fail(api.WithCode(api.CodeInvalid, err))
		}
		s.done()
		return man, nil
	})
}

// archiveName reads the image name from the manifest at the head of a
// banger export archive (plain, gzip or zstd).
func archiveName(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(4)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil {
		return "", fmt.Errorf("read archive: %w", err)
	}
	if h.Name != image.FileManifest {
		return "", fmt.Errorf("first entry is %q, want %s", h.Name, image.FileManifest)
	}
	var man struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&man); err != nil {
		return "", fmt.Errorf("read archive manifest: %w", err)
	}
	if err := validName(man.Name); err != nil {
		return "", fmt.Errorf("archive manifest: %w", err)
	}
	return man.Name, nil
}

// countingReader reports how many bytes were read.
type countingReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// Export writes the image named by ref to w as a tar archive that Import
// accepts (manifest.json first, then every file, checked as written).
func (m *Manager) Export(ctx context.Context, ref string, w io.Writer) error {
	img, err := m.Get(ctx, ref)
	if err != nil {
		return err
	}
	if err := m.checkPresent(img); err != nil {
		return err
	}
	return image.Export(ctx, img.Dir, w)
}

// buildDockerfile builds a Dockerfile image on top of the default image
// (made first when missing) with podman or docker.
func (m *Manager) buildDockerfile(ctx context.Context, op *operation.Op, req BuildRequest) (store.Image, error) {
	if !filepath.IsAbs(req.Dockerfile) || (req.Context != "" && !filepath.IsAbs(req.Context)) {
		return store.Image{}, api.Errorf(api.CodeInvalid, "Dockerfile and context paths must be absolute")
	}
	if _, err := os.Stat(req.Dockerfile); err != nil {
		return store.Image{}, api.Errorf(api.CodeInvalid, "dockerfile: %w", err)
	}
	ctxDir := req.Context
	if ctxDir == "" {
		ctxDir = filepath.Dir(req.Dockerfile)
	}
	if fi, err := os.Stat(ctxDir); err != nil || !fi.IsDir() {
		return store.Image{}, api.Errorf(api.CodeInvalid, "build context %s is not a directory", ctxDir)
	}
	name := req.Name
	if name == "" {
		name = image.SanitizeName(filepath.Base(ctxDir))
	}
	if err := validName(name); err != nil {
		return store.Image{}, err
	}
	engine, err := dockerfile.DetectEngine(lookPath)
	if err != nil {
		return store.Image{}, api.WithCode(api.CodeUnavailable, err)
	}
	engine = engine.WithStorage(filepath.Join(m.BuildCacheDir(), "engine"))
	agent, err := m.AgentBinary()
	if err != nil {
		return store.Image{}, err
	}
	base, err := m.Ensure(ctx, op, m.DefaultImageName())
	if err != nil {
		return store.Image{}, fmt.Errorf("dockerfile build: base image: %w", err)
	}
	unlock, err := m.lockName(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	tr := newStageTracker(op)
	tr.plan(dockerfile.StageBase, dockerfile.StageBuild, dockerfile.StageExport, "configure", "kernel", "filesystem", StageRegister)
	return m.produce(ctx, op, name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		logPath := ""
		if f, ok := log.(*os.File); ok {
			logPath = f.Name()
		}
		fmt.Fprintf(log, "dockerfile %s, context %s, engine %s, base image %s (%s)\n", req.Dockerfile, ctxDir, engine.Name, base.Name, base.ID)
		return dockerfile.Build(ctx, engine, dockerfile.Options{
			Dockerfile: req.Dockerfile,
			ContextDir: ctxDir,
			Name:       name,
			Base:       base.Dir,
			AgentBin:   agent,
			WorkDir:    dir,
			Log:        log,
			LogPath:    logPath,
			Progress:   tr.report,
		}, dir)
	})
}

// nameFromRef derives an image name from an import reference or path:
// "docker.io/library/alpine:3.20" -> "alpine-3.20".
func nameFromRef(ref string) string {
	base := ref
	if _, err := os.Stat(ref); err == nil {
		base = filepath.Base(filepath.Clean(ref))
		for _, ext := range []string{".tar.gz", ".tgz", ".tar.zst", ".tar"} {
			base = strings.TrimSuffix(base, ext)
		}
		return image.SanitizeName(base)
	}
	if i := strings.Index(base, "@"); i >= 0 {
		base = base[:i]
	}
	base = base[strings.LastIndex(base, "/")+1:]
	if repo, tag, ok := strings.Cut(base, ":"); ok {
		base = repo
		if tag != "latest" {
			base = repo + "-" + tag
		}
	}
	return image.SanitizeName(base)
}
