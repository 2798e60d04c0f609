// Package dockerfile builds banger images from a Dockerfile with podman or
// docker. The default image's root filesystem is loaded into the engine as
// banger/debian-12, so `FROM banger/debian-12` keeps the default image's
// kernel, init and agent; the built container's filesystem is exported and
// turned into the same boot set as the default image (debian.Assemble).
package dockerfile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/image/debian"
)

// Engine is a container engine's command line.
type Engine struct {
	// Name is "podman" or "docker".
	Name string
	// Bin is the engine's executable.
	Bin string
	// ExtraArgs go before every subcommand (podman: storage options).
	ExtraArgs []string
}

// Engine names.
const (
	Podman = "podman"
	Docker = "docker"
)

// DetectEngine finds podman or docker (podman first: it needs no daemon)
// with lookPath (exec.LookPath in production). As root, podman uses the vfs
// storage driver, which works on every host filesystem and inside
// containers.
func DetectEngine(lookPath func(string) (string, error)) (Engine, error) {
	if p, err := lookPath(Podman); err == nil {
		e := Engine{Name: Podman, Bin: p}
		if os.Geteuid() == 0 {
			e.ExtraArgs = []string{"--storage-driver", "vfs"}
		}
		return e, nil
	}
	if p, err := lookPath(Docker); err == nil {
		return Engine{Name: Docker, Bin: p}, nil
	}
	return Engine{}, errors.New("no container engine: neither podman nor docker is on PATH (install podman: apt-get install podman)")
}

// WithStorage returns e with podman's image storage kept under dir
// (--root and --runroot), apart from the user's own podman images, so the
// storage driver banger picks never conflicts with theirs. Docker is
// returned unchanged (its daemon owns its storage).
func (e Engine) WithStorage(dir string) Engine {
	if e.Name != Podman || dir == "" {
		return e
	}
	e.ExtraArgs = append(append([]string(nil), e.ExtraArgs...),
		"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"))
	return e
}

// argv returns the engine command for a subcommand.
func (e Engine) argv(args ...string) []string {
	return append(append([]string{e.Bin}, e.ExtraArgs...), args...)
}

// Options are the inputs of Build.
type Options struct {
	// Dockerfile is the Dockerfile path.
	Dockerfile string
	// ContextDir is the build context (default: the Dockerfile's
	// directory).
	ContextDir string
	// Name names the image (default: the context directory's name).
	Name string
	// Base is the default image's directory (its boot set and, when
	// present, manifest.json); it is loaded into the engine as BaseTag.
	Base string
	// AgentBin is the banger-agent binary baked into the image.
	AgentBin string
	// WorkDir is where temporary trees are made (default: os.TempDir()).
	WorkDir string
	// Log receives the full build log; LogPath names its file for errors
	// (an *os.File's name is used when empty).
	Log     io.Writer
	LogPath string
	// Progress, when set, is called as stages start (done=0) and end.
	Progress func(stage string, done, total int64)
}

// Build stages before the boot-set stages of debian.Assemble.
const (
	StageBase   = "base"
	StageBuild  = "build"
	StageExport = "export"
)

// BaseTag is the name the default image has inside the engine.
const BaseTag = "banger/debian-12"

// baseLabel is the image label holding the sha256 of the base rootfs the
// loaded BaseTag was made from, so an unchanged base is not loaded again.
const baseLabel = "io.banger.base-rootfs"

// Build builds the Dockerfile with engine e and makes the boot set in
// outDir, returning its manifest for image.Store.Commit. The build image
// and container are removed afterwards; BaseTag stays loaded for the next
// build. A failing Dockerfile's error carries the engine's last lines.
func Build(ctx context.Context, e Engine, opts Options, outDir string) (*image.Manifest, error) {
	m, err := build(ctx, e, opts, outDir)
	if err != nil {
		if p := logPath(opts.Log, opts.LogPath); p != "" {
			return nil, fmt.Errorf("build image from %s (build log: %s): %w", opts.Dockerfile, p, err)
		}
		return nil, fmt.Errorf("build image from %s: %w", opts.Dockerfile, err)
	}
	return m, nil
}

func build(ctx context.Context, e Engine, opts Options, outDir string) (*image.Manifest, error) {
	if opts.Dockerfile == "" || opts.Base == "" || opts.AgentBin == "" {
		return nil, errors.New("dockerfile, base image and agent binary are required")
	}
	dockerfile, err := filepath.Abs(opts.Dockerfile)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dockerfile); err != nil {
		return nil, err
	}
	contextDir := opts.ContextDir
	if contextDir == "" {
		contextDir = filepath.Dir(dockerfile)
	}
	if contextDir, err = filepath.Abs(contextDir); err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(contextDir)
	}
	for _, f := range image.BootFiles {
		if _, err := os.Stat(filepath.Join(opts.Base, f)); err != nil {
			return nil, fmt.Errorf("base image %s: %w", opts.Base, err)
		}
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	agentVersion, err := debian.AgentVersion(ctx, opts.AgentBin)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(opts.WorkDir, "banger-dockerfile-")
	if err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	defer os.RemoveAll(work)

	progress(StageBase, 0, 1)
	if err := loadBase(ctx, e, opts.Base, work, log); err != nil {
		return nil, fmt.Errorf("%s: %w", StageBase, err)
	}
	progress(StageBase, 1, 1)

	id := randomID()
	tag := "banger-build-" + id
	// Cleanup runs even after ctx is cancelled.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = debian.Run(cctx, log, e.argv("rm", "-f", tag)...)
		_ = debian.Run(cctx, log, e.argv("rmi", "-f", tag)...)
	}()

	progress(StageBuild, 0, 1)
	if err := debian.Run(ctx, log, BuildArgs(e, dockerfile, contextDir, tag)...); err != nil {
		return nil, fmt.Errorf("%s: %w", StageBuild, err)
	}
	progress(StageBuild, 1, 1)

	progress(StageExport, 0, 1)
	if err := debian.Run(ctx, log, e.argv("create", "--name", tag, tag, "/bin/sh")...); err != nil {
		return nil, fmt.Errorf("%s: %w", StageExport, err)
	}
	exported := filepath.Join(work, "rootfs.tar")
	if err := debian.Run(ctx, log, e.argv("export", "-o", exported, tag)...); err != nil {
		return nil, fmt.Errorf("%s: %w", StageExport, err)
	}
	progress(StageExport, 1, 1)

	tree := filepath.Join(work, "rootfs")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return nil, err
	}
	res, err := debian.Assemble(ctx, tree, debian.AssembleOptions{
		AgentBin: opts.AgentBin, KernelDir: opts.Base, Tarball: exported, ScratchDir: work, Log: log, Progress: progress,
	}, outDir)
	if err != nil {
		return nil, err
	}
	return &image.Manifest{
		Name:          name,
		Source:        image.Source{Kind: image.SourceDockerfile, Ref: dockerfile},
		KernelVersion: res.KernelVersion,
		AgentVersion:  agentVersion,
		Init:          res.Init,
	}, nil
}

// BuildArgs is the engine's build command: the Dockerfile, a tag, host
// networking (apt in RUN steps reaches the archive the host reaches) and,
// for podman, chroot isolation (no nested namespaces needed) and no
// intermediate layer images left behind.
func BuildArgs(e Engine, dockerfile, contextDir, tag string) []string {
	args := []string{"build", "--network", "host", "-f", dockerfile, "-t", tag}
	if e.Name == Podman {
		args = append(args, "--isolation", "chroot", "--layers=false")
	}
	return e.argv(append(args, contextDir)...)
}

// loadBase imports the base image's root filesystem (rootfs.ext4 with
// work-seed.ext4 at /root) into the engine as BaseTag, unless the loaded
// one was made from the same rootfs.
func loadBase(ctx context.Context, e Engine, base, work string, log io.Writer) error {
	sum := baseSum(base)
	if sum != "" {
		out, err := exec.CommandContext(ctx, e.Bin, append(e.ExtraArgs, "image", "inspect",
			"--format", "{{index .Config.Labels \""+baseLabel+"\"}}", BaseTag)...).Output()
		if err == nil && strings.TrimSpace(string(out)) == sum {
			fmt.Fprintf(log, "base: %s is loaded (rootfs %s)\n", BaseTag, sum)
			return nil
		}
	}
	tree := filepath.Join(work, "base")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(tree)
	if err := Dump(ctx, filepath.Join(base, image.FileRootfs), tree, log); err != nil {
		return err
	}
	if err := Dump(ctx, filepath.Join(base, image.FileWorkSeed), filepath.Join(tree, guestcontract.WorkMountPoint), log); err != nil {
		return err
	}
	tarball := filepath.Join(work, "base.tar")
	defer os.Remove(tarball)
	if err := debian.Run(ctx, log, "tar", "--numeric-owner", "-cf", tarball, "-C", tree, "."); err != nil {
		return err
	}
	// Drop the stale copy first so re-importing leaves no untagged image.
	_ = debian.Run(ctx, log, e.argv("rmi", "-f", BaseTag)...)
	args := []string{"import"}
	if sum != "" {
		args = append(args, "--change", "LABEL "+baseLabel+"="+sum)
	}
	return debian.Run(ctx, log, e.argv(append(args, tarball, BaseTag)...)...)
}

// baseFormat versions how the base is loaded; it is part of the label
// value so a change here reloads every engine's copy.
const baseFormat = "2"

// baseSum identifies the base rootfs: the load format and the sha256
// from its manifest, or "" without a manifest.
func baseSum(base string) string {
	data, err := os.ReadFile(filepath.Join(base, image.FileManifest))
	if err != nil {
		return ""
	}
	var m image.Manifest
	if json.Unmarshal(data, &m) != nil {
		return ""
	}
	if m.Files[image.FileRootfs].SHA256 == "" {
		return ""
	}
	return baseFormat + ":" + m.Files[image.FileRootfs].SHA256
}

// Dump copies the content of the ext4 image img into dir without mounting
// it (debugfs rdump keeps modes, owners and times; run as root to keep
// owners).
func Dump(ctx context.Context, img, dir string, log io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// rdump copies "/" as dir/<name of />; dump the root's entries
	// one by one instead, so they land in dir itself.
	out, err := exec.CommandContext(ctx, "debugfs", "-R", "ls -p /", img).Output()
	if err != nil {
		return fmt.Errorf("list %s: %w", img, err)
	}
	var reqs []string
	for _, l := range strings.Split(string(out), "\n") {
		// ls -p: /inode/mode/uid/gid/name/size/
		f := strings.Split(l, "/")
		if len(f) < 7 || f[5] == "." || f[5] == ".." || f[5] == "" || f[5] == "lost+found" {
			continue
		}
		if strings.ContainsAny(f[5], "\" \t") {
			return fmt.Errorf("dump %s: unsupported name %q at the root", img, f[5])
		}
		reqs = append(reqs, fmt.Sprintf("rdump \"/%s\" \"%s\"", f[5], dir))
	}
	if len(reqs) == 0 {
		return nil
	}
	cmds := filepath.Join(filepath.Dir(dir), ".debugfs-"+randomID())
	if err := os.WriteFile(cmds, []byte(strings.Join(reqs, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(cmds)
	if err := debian.Run(ctx, log, "debugfs", "-f", cmds, img); err != nil {
		return fmt.Errorf("dump %s: %w", img, err)
	}
	if err := restoreModes(ctx, img, dir); err != nil {
		return fmt.Errorf("dump %s: %w", img, err)
	}
	return nil
}

// restoreModes puts back the setuid, setgid and sticky bits rdump drops
// (it chowns after chmod, which clears them): one debugfs run lists every
// dumped directory of img, and entries with any of those bits get their
// full mode again.
func restoreModes(ctx context.Context, img, dir string) error {
	var reqs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if strings.Contains(rel, "\"") {
			return nil
		}
		if rel == "." {
			rel = ""
		}
		reqs = append(reqs, fmt.Sprintf("ls -p \"/%s\"", filepath.ToSlash(rel)))
		return nil
	})
	if err != nil {
		return err
	}
	cmds := filepath.Join(filepath.Dir(dir), ".debugfs-"+randomID())
	if err := os.WriteFile(cmds, []byte(strings.Join(reqs, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(cmds)
	out, err := exec.CommandContext(ctx, "debugfs", "-f", cmds, img).Output()
	if err != nil {
		return fmt.Errorf("list modes: %w", err)
	}
	for _, fix := range SpecialModes(string(out)) {
		if err := os.Chmod(filepath.Join(dir, fix.Path), fix.Mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restore mode of %s: %w", fix.Path, err)
		}
	}
	return nil
}

// ModeFix is a path (relative to the image root) and the mode it must
// have.
type ModeFix struct {
	Path string
	Mode os.FileMode
}

// SpecialModes parses the output of debugfs `ls -p "DIR"` requests (each
// preceded by the "debugfs: ls -p ..." echo) and returns the regular files
// and directories with setuid, setgid or sticky bits.
func SpecialModes(out string) []ModeFix {
	var fixes []ModeFix
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if q, ok := strings.CutPrefix(l, "debugfs: ls -p "); ok {
			cur = strings.Trim(q, "\"")
			continue
		}
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(l, "/")
		if len(f) < 7 || f[5] == "." || f[5] == ".." {
			continue
		}
		m, err := strconv.ParseUint(f[2], 8, 32)
		if err != nil {
			continue
		}
		typ := m &^ 0o7777
		if m&0o7000 == 0 || (typ != 0o100000 && typ != 0o040000) {
			continue
		}
		mode := os.FileMode(m & 0o777)
		if m&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if m&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if m&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		fixes = append(fixes, ModeFix{Path: strings.TrimPrefix(path.Join(cur, f[5]), "/"), Mode: mode})
	}
	return fixes
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
