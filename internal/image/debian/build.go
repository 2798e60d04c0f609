package debian

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"banger/internal/image"
)

// Build stages, in order, as reported to BuildOptions.Progress.
const (
	StageBootstrap  = "bootstrap"
	StageInitramfs  = "initramfs"
	StageConfigure  = "configure"
	StageKernel     = "kernel"
	StageFilesystem = "filesystem"
)

// BuildOptions are the host-side inputs of Build.
type BuildOptions struct {
	// AgentBin is the static banger-agent binary baked into the image.
	AgentBin string
	// CacheDir holds bootstrapped root filesystems, one directory per
	// Recipe.Hash, so a rebuild of the same recipe skips mmdebstrap.
	CacheDir string
	// WorkDir is where temporary trees are made (default: os.TempDir()).
	// It needs room for one unpacked root filesystem (~0.5 GiB for
	// debian-12; the agents image, with its toolchain and npm packages,
	// is several times that).
	WorkDir string
	// Log receives the full build log (every command and its output).
	Log io.Writer
	// LogPath names the file Log writes to; errors quote it. When empty
	// and Log is an *os.File, that file's name is used.
	LogPath string
	// Progress, when set, is called as stages start (done=0) and end
	// (done=total).
	Progress func(stage string, done, total int64)
	// Packages, when set, is told during StageBootstrap how many
	// packages mmdebstrap has downloaded, unpacked and set up of the
	// total apt announced, then how many of the recipe's npm packages
	// are installed (see PackageProgress). It is called from the
	// goroutine reading mmdebstrap's output.
	Packages func(PackageProgress)
}

// cacheTarball is the file inside CacheDir/<hash>/ holding the
// bootstrapped root filesystem, its initramfs already generated.
const cacheTarball = "rootfs.tar"

// CachePath returns where Build keeps (or finds) the bootstrapped root
// filesystem of r.
func CachePath(cacheDir string, r Recipe) string {
	return filepath.Join(cacheDir, r.Hash(), cacheTarball)
}

// Build makes the boot set of recipe r in outDir (vmlinuz, vmlinux,
// initrd.img, rootfs.ext4, work-seed.ext4) and returns its manifest,
// ready for image.Store.Commit. The bootstrap is cached under
// opts.CacheDir by r.Hash(). Cancelling ctx kills the running command
// and removes every temporary file; outDir's partial content is the
// caller's to remove.
func Build(ctx context.Context, r Recipe, opts BuildOptions, outDir string) (*image.Manifest, error) {
	m, err := build(ctx, r, opts, outDir)
	if err != nil {
		if p := logPath(opts.Log, opts.LogPath); p != "" {
			return nil, fmt.Errorf("build image %s (build log: %s): %w", r.Name, p, err)
		}
		return nil, fmt.Errorf("build image %s: %w", r.Name, err)
	}
	return m, nil
}

func build(ctx context.Context, r Recipe, opts BuildOptions, outDir string) (*image.Manifest, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if opts.CacheDir == "" {
		return nil, errors.New("no cache directory")
	}
	if opts.AgentBin == "" {
		return nil, errors.New("no banger-agent binary")
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	agentVersion, err := AgentVersion(ctx, opts.AgentBin)
	if err != nil {
		return nil, err
	}

	tarball := CachePath(opts.CacheDir, r)
	progress(StageBootstrap, 0, 1)
	if _, err := os.Stat(tarball); err == nil {
		fmt.Fprintf(log, "bootstrap: using cached %s\n", tarball)
		progress(StageBootstrap, 1, 1)
		progress(StageInitramfs, 0, 1)
		progress(StageInitramfs, 1, 1)
	} else {
		if err := bootstrap(ctx, r, tarball, opts.WorkDir, log, progress, opts.Packages); err != nil {
			return nil, err
		}
	}

	work, err := os.MkdirTemp(opts.WorkDir, "banger-debian-")
	if err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "rootfs")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	res, err := Assemble(ctx, tree, AssembleOptions{
		AgentBin: opts.AgentBin, Tarball: tarball, Log: log, Progress: progress, ScratchDir: work,
	}, outDir)
	if err != nil {
		return nil, err
	}
	npm, err := readNPMRecord(tree, r.NPMPackages)
	if err != nil {
		return nil, err
	}
	return &image.Manifest{
		Name:          r.Name,
		Source:        image.Source{Kind: image.SourceRecipe, Ref: r.Name, RecipeHash: r.Hash()},
		KernelVersion: res.KernelVersion,
		AgentVersion:  agentVersion,
		Init:          res.Init,
		NPMPackages:   npm,
	}, nil
}

// npmVersion is what readNPMRecord accepts as a version ("1.0.43",
// "0.0.0-beta-17236+build").
var npmVersion = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$`)

// readNPMRecord reads the npm packages recorded at NPMRecordPath in tree
// (name -> version) and checks that every package of want is there. With
// nothing wanted it reads nothing and returns nil.
func readNPMRecord(tree string, want []string) (map[string]string, error) {
	if len(want) == 0 {
		return nil, nil
	}
	data, err := os.ReadFile(filepath.Join(tree, NPMRecordPath))
	if err != nil {
		return nil, fmt.Errorf("read npm package record: %w", err)
	}
	var ls struct {
		Dependencies map[string]struct {
			Version string `json:"version"`
		} `json:"dependencies"`
	}
	if err := json.Unmarshal(data, &ls); err != nil {
		return nil, fmt.Errorf("read npm package record %s: %w", NPMRecordPath, err)
	}
	out := map[string]string{}
	for name, d := range ls.Dependencies {
		// The record is shown to people (`image show`): keep only what
		// looks like a package name and a version.
		if npmName.MatchString(name) && npmVersion.MatchString(d.Version) {
			out[name] = d.Version
		}
	}
	for _, p := range want {
		if out[p] == "" {
			return nil, fmt.Errorf("npm package %s is not installed (%s has no version for it)", p, NPMRecordPath)
		}
	}
	return out, nil
}

// Validate checks that a recipe names a suite, a mirror and packages,
// that no package name could be read as an option or hook, and that npm
// packages are plain npm names with npm among the Debian packages.
func (r Recipe) Validate() error {
	if r.Name == "" || r.Suite == "" || r.Mirror == "" {
		return fmt.Errorf("recipe %q: name, suite and mirror are required", r.Name)
	}
	if len(r.Packages) == 0 {
		return fmt.Errorf("recipe %s: no packages", r.Name)
	}
	for _, p := range r.AllPackages() {
		if strings.HasPrefix(p, "-") || strings.ContainsAny(p, " ,\t\n'\"$;&|") {
			return fmt.Errorf("recipe %s: bad package name %q", r.Name, p)
		}
	}
	for _, p := range r.NPMPackages {
		if !npmName.MatchString(p) {
			return fmt.Errorf("recipe %s: bad npm package name %q (a lowercase name, optionally @scope/name, no version)", r.Name, p)
		}
	}
	if len(r.NPMPackages) > 0 && !slices.Contains(r.AllPackages(), "npm") {
		return fmt.Errorf("recipe %s: npm packages need the npm Debian package", r.Name)
	}
	if strings.HasPrefix(r.Suite, "-") || strings.HasPrefix(r.Mirror, "-") {
		return fmt.Errorf("recipe %s: bad suite or mirror", r.Name)
	}
	return nil
}

// logPath is the name of the build log file, if known.
func logPath(w io.Writer, named string) string {
	if named != "" {
		return named
	}
	if f, ok := w.(*os.File); ok && f != os.Stdout && f != os.Stderr {
		return f.Name()
	}
	return ""
}

// stageWriter watches a command's output for the stage markers the
// mmdebstrap hooks print and reports them.
type stageWriter struct {
	partial  []byte // the unterminated last line
	progress func(string, int64, int64)
	seen     map[string]bool
	// npmFailed is the npm package whose install hook failed, if any.
	npmFailed string
}

// maxStageLine bounds the unterminated line a stageWriter keeps; marker
// lines are far shorter.
const maxStageLine = 4 << 10

// stageMarker prefixes the lines the bootstrap hooks print when a stage
// starts.
const stageMarker = "banger-stage: "

func (s *stageWriter) Write(p []byte) (int, error) {
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		l := string(s.partial[:i])
		s.partial = s.partial[i+1:]
		if pkg, ok := strings.CutPrefix(strings.TrimSpace(l), npmFailedMarker); ok && s.npmFailed == "" {
			s.npmFailed = pkg
		}
		if st, ok := strings.CutPrefix(strings.TrimSpace(l), stageMarker); ok && !s.seen[st] {
			s.seen[st] = true
			if st == StageInitramfs {
				s.progress(StageBootstrap, 1, 1)
			}
			s.progress(st, 0, 1)
		}
	}
	if len(s.partial) > maxStageLine {
		s.partial = nil
	}
	return len(p), nil
}
