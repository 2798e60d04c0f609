package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"banger/internal/cmdrun"
	"banger/internal/disk"
	"banger/internal/guestcontract"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImportKind says what a `banger image import REF` argument is.
type ImportKind string

// The kinds of import source DetectImport recognises.
const (
	// ImportRegistry is an image reference in a registry.
	ImportRegistry ImportKind = "registry"
	// ImportOCILayout is an OCI image layout directory.
	ImportOCILayout ImportKind = "oci-layout"
	// ImportOCIArchive is a tar of an OCI image layout.
	ImportOCIArchive ImportKind = "oci-archive"
	// ImportDockerArchive is the output of `docker save`.
	ImportDockerArchive ImportKind = "docker-archive"
	// ImportBanger is an archive written by Export.
	ImportBanger ImportKind = "banger"
)

// Progress stages reported by ImportOCI. Fetch and extract run together:
// the layers are streamed into the tree as they are read, so fetch ends
// when the last layer has been read and extract when the tree is whole.
const (
	StageFetch    = "fetch"
	StageExtract  = "extract"
	StageAgent    = "agent"
	StageRootfs   = "rootfs"
	StageWorkSeed = "work-seed"
	StageKernel   = "kernel"
)

// DetectImport decides by content what ref is: an existing directory with
// an oci-layout file, an existing tar file (banger export, OCI archive or
// docker save; banger archives may be gzip or zstd compressed), or else a
// registry reference.
func DetectImport(ref string) (ImportKind, error) {
	fi, err := os.Stat(ref)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, perr := name.ParseReference(ref); perr != nil {
				return "", fmt.Errorf("import %s: neither a file nor an image reference: %w", ref, perr)
			}
			return ImportRegistry, nil
		}
		return "", fmt.Errorf("import %s: %w", ref, err)
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(ref, "oci-layout")); err != nil {
			return "", fmt.Errorf("import %s: directory without an oci-layout file", ref)
		}
		return ImportOCILayout, nil
	}
	f, err := os.Open(ref)
	if err != nil {
		return "", fmt.Errorf("import %s: %w", ref, err)
	}
	defer f.Close()
	r, err := decompressed(f)
	if err != nil {
		return "", fmt.Errorf("import %s: %w", ref, err)
	}
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("import %s: not a tar archive: %w", ref, err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "oci-layout":
			return ImportOCIArchive, nil
		case FileManifest:
			// Both docker save and banger archives have manifest.json:
			// docker's is a JSON array, ours an object.
			head := make([]byte, 64)
			n, _ := io.ReadFull(tr, head)
			if s := strings.TrimSpace(string(head[:n])); strings.HasPrefix(s, "[") {
				return ImportDockerArchive, nil
			}
			return ImportBanger, nil
		}
	}
	return "", fmt.Errorf("import %s: tar holds neither oci-layout nor manifest.json", ref)
}

// OCIOptions are the inputs ImportOCI needs besides the reference.
type OCIOptions struct {
	// Base is the manifest of the image whose kernel, initrd and agent
	// the imported rootfs is paired with (the default image).
	Base *Manifest
	// BaseDir is Base's image directory.
	BaseDir string
	// AgentBin is the banger-agent binary installed at guestcontract.AgentPath.
	AgentBin string
	// Name names the new image; derived from the reference when empty.
	Name string
	// Progress, when set, is told about each stage as it starts (done 0)
	// and ends (done = total > 0).
	Progress func(stage string, done, total int64)
	// Fetched, when set, is told how many bytes of the layers have been
	// read so far against their total size (the sizes in the image
	// manifest; 0 when unknown, as for `docker save` archives). It is
	// called from the goroutine reading the layers.
	Fetched func(done, total int64)
}

// ImportOCI makes an image in outDir (a Store staging directory) from an
// OCI/Docker image: a registry reference (plain HTTP for loopback
// registries), an OCI layout directory, an OCI archive or a `docker save`
// archive. Layers are flattened honouring whiteouts, banger-agent is
// installed, and rootfs.ext4 (label banger-root) and work-seed.ext4 (label
// banger-work, from the image's /root) are made with mkfs.ext4 -d. The
// kernel and initrd are linked from the base image, as are its kernel
// modules when the imported image has none for that kernel. Init is
// "systemd" when the image has systemd as /sbin/init, else "agent".
// The returned manifest is ready for Store.Commit.
func ImportOCI(ctx context.Context, ref string, o OCIOptions, outDir string) (*Manifest, error) {
	if o.Base == nil || o.BaseDir == "" {
		return nil, fmt.Errorf("import %s: no base image for the kernel and initrd", ref)
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	fetched := o.Fetched
	if fetched == nil {
		fetched = func(int64, int64) {}
	}
	progress(StageFetch, 0, 0)
	img, kind, cleanup, err := openOCI(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}
	defer cleanup()
	if _, err := img.ConfigFile(); err != nil {
		return nil, fmt.Errorf("import %s: read image config: %w", ref, err)
	}
	counted, total, err := countFetched(img, kind, fetched)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}
	fetched(0, total)

	tree, err := os.MkdirTemp(outDir, ".tree-")
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}
	defer os.RemoveAll(tree)
	if err := os.Chmod(tree, 0o755); err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}

	progress(StageExtract, 0, 0)
	rc := mutate.Extract(counted)
	err = untar(ctx, rc, tree)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("import %s: flatten layers: %w", ref, err)
	}
	// Every layer has been read; the unread tail of a stream (a tar's
	// end blocks, a gzip trailer) must not leave fetch short of its end.
	if total > 0 {
		fetched(total, total)
	}
	progress(StageFetch, 1, 1)
	progress(StageExtract, 1, 1)

	progress(StageAgent, 0, 1)
	init := detectInit(tree)
	if err := prepareTree(ctx, tree, o, init); err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}
	progress(StageAgent, 1, 1)

	if err := makeDisks(ctx, tree, outDir, progress); err != nil {
		return nil, fmt.Errorf("import %s: %w", ref, err)
	}

	progress(StageKernel, 0, 1)
	for _, f := range []string{FileVmlinux, FileVmlinuz, FileInitrd} {
		if _, ok := o.Base.Files[f]; !ok {
			continue
		}
		if err := linkOrCopy(filepath.Join(o.BaseDir, f), filepath.Join(outDir, f)); err != nil {
			return nil, fmt.Errorf("import %s: %w", ref, err)
		}
	}
	progress(StageKernel, 1, 1)

	n := o.Name
	if n == "" {
		n = nameFromRef(ref)
	}
	return &Manifest{
		Name:          n,
		Source:        Source{Kind: SourceOCI, Ref: ref},
		KernelVersion: o.Base.KernelVersion,
		AgentVersion:  o.Base.AgentVersion,
		Init:          init,
	}, nil
}

// countFetched returns img with layers that report the bytes read from
// them to fetched, and the layers' total size. A `docker save` archive's
// layers are left alone with a total of 0: their sizes would be computed
// by compressing every layer.
func countFetched(img v1.Image, kind ImportKind, fetched func(done, total int64)) (v1.Image, int64, error) {
	if kind == ImportDockerArchive {
		return img, 0, nil
	}
	man, err := img.Manifest()
	if err != nil {
		return nil, 0, fmt.Errorf("read image manifest: %w", err)
	}
	var total int64
	for _, d := range man.Layers {
		total += d.Size
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, 0, fmt.Errorf("read image layers: %w", err)
	}
	n := new(atomic.Int64)
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		cl, err := partial.CompressedToLayer(countedLayer{Layer: l, report: func(k int64) {
			fetched(n.Add(k), total)
		}})
		if err != nil {
			return nil, 0, err
		}
		out[i] = cl
	}
	return countedImage{Image: img, layers: out}, total, nil
}

// countedImage is an image whose layers count the bytes read from them.
type countedImage struct {
	v1.Image
	layers []v1.Layer
}

// Layers returns the counting layers.
func (c countedImage) Layers() ([]v1.Layer, error) { return c.layers, nil }

// countedLayer reports every read of its stored (compressed) stream;
// partial.CompressedToLayer decompresses on top of it.
type countedLayer struct {
	v1.Layer
	report func(n int64)
}

// Compressed returns the layer's stored stream, counted.
func (l countedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{ReadCloser: rc, report: l.report}, nil
}

// countingReadCloser reports the size of every read.
type countingReadCloser struct {
	io.ReadCloser
	report func(n int64)
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.report(int64(n))
	}
	return n, err
}

// openOCI resolves ref to a linux/amd64 image and says what kind of
// source it was.
func openOCI(ctx context.Context, ref string) (v1.Image, ImportKind, func(), error) {
	noop := func() {}
	kind, err := DetectImport(ref)
	if err != nil {
		return nil, "", noop, err
	}
	platform := v1.Platform{OS: "linux", Architecture: "amd64"}
	switch kind {
	case ImportRegistry:
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, kind, noop, err
		}
		img, err := remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(platform))
		if err != nil {
			return nil, kind, noop, fmt.Errorf("fetch %s: %w", ref, err)
		}
		return img, kind, noop, nil
	case ImportOCILayout:
		img, err := imageFromLayout(ref, platform)
		return img, kind, noop, err
	case ImportOCIArchive:
		dir, err := os.MkdirTemp("", "banger-oci-")
		if err != nil {
			return nil, kind, noop, err
		}
		cleanup := func() { os.RemoveAll(dir) }
		f, err := os.Open(ref)
		if err != nil {
			cleanup()
			return nil, kind, noop, err
		}
		err = untar(ctx, f, dir)
		f.Close()
		if err == nil {
			var img v1.Image
			img, err = imageFromLayout(dir, platform)
			if err == nil {
				return img, kind, cleanup, nil
			}
		}
		cleanup()
		return nil, kind, noop, fmt.Errorf("oci archive: %w", err)
	case ImportDockerArchive:
		img, err := tarball.ImageFromPath(ref, nil)
		if err != nil {
			return nil, kind, noop, fmt.Errorf("docker archive: %w", err)
		}
		return img, kind, noop, nil
	default:
		return nil, kind, noop, fmt.Errorf("%s is a banger image archive, not an OCI image (use ImportArchive)", ref)
	}
}

// imageFromLayout picks the image for platform from an OCI layout (or the
// only image when there is just one).
func imageFromLayout(dir string, platform v1.Platform) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("oci layout %s: %w", dir, err)
	}
	return imageFromIndex(idx, platform)
}

func imageFromIndex(idx v1.ImageIndex, platform v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var candidates []v1.Descriptor
	for _, d := range im.Manifests {
		if d.MediaType.IsIndex() {
			sub, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			return imageFromIndex(sub, platform)
		}
		if !d.MediaType.IsImage() {
			continue
		}
		if d.Platform == nil || d.Platform.Satisfies(platform) {
			candidates = append(candidates, d)
		}
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("no %s/%s image in the index", platform.OS, platform.Architecture)
	}
	return idx.Image(candidates[0].Digest)
}

// detectInit reports InitSystemd when the tree has systemd as its init.
func detectInit(tree string) string {
	for _, p := range []string{"sbin/init", "lib/systemd/systemd", "usr/lib/systemd/systemd"} {
		if _, err := statInRoot(tree, p); err == nil {
			return InitSystemd
		}
	}
	return InitAgent
}

// statInRoot stats p inside root, resolving symlinks as if root were /
// (the image's /sbin/init is usually an absolute symlink).
func statInRoot(root, p string) (os.FileInfo, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for range 16 {
		fi, err := r.Lstat(p)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return fi, nil
		}
		target, err := r.Readlink(p)
		if err != nil {
			return nil, err
		}
		if filepath.IsAbs(target) {
			p = strings.TrimPrefix(filepath.Clean(target), "/")
		} else {
			p = filepath.Join(filepath.Dir(p), target)
		}
		if p == "." || strings.HasPrefix(p, "..") {
			return nil, os.ErrNotExist
		}
	}
	return nil, fmt.Errorf("%s: too many symlinks", p)
}

// prepareTree applies the guest contract to an imported filesystem:
// the agent binary (and its unit under systemd), no ssh host keys, a
// /root directory, and the base image's kernel modules.
func prepareTree(ctx context.Context, tree string, o OCIOptions, init string) error {
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.MkdirAll("usr/local/bin", 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if err := copyFileInRoot(r, o.AgentBin, strings.TrimPrefix(guestcontract.AgentPath, "/"), 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if init == InitSystemd {
		unitDir := strings.TrimPrefix(guestcontract.UnitDir, "/")
		if err := r.MkdirAll(unitDir+"/multi-user.target.wants", 0o755); err != nil {
			return fmt.Errorf("install agent unit: %w", err)
		}
		unit := unitDir + "/" + guestcontract.AgentUnitName
		if err := r.WriteFile(unit, []byte(guestcontract.AgentUnit), 0o644); err != nil {
			return fmt.Errorf("install agent unit: %w", err)
		}
		link := unitDir + "/multi-user.target.wants/" + guestcontract.AgentUnitName
		_ = r.Remove(link)
		if err := r.Symlink("/"+unit, link); err != nil {
			return fmt.Errorf("enable agent unit: %w", err)
		}
	}
	if keys, _ := filepath.Glob(filepath.Join(tree, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		for _, k := range keys {
			if err := r.Remove(strings.TrimPrefix(k, tree+"/")); err != nil {
				return fmt.Errorf("remove ssh host key: %w", err)
			}
		}
	}
	if err := r.MkdirAll("root", 0o700); err != nil {
		return fmt.Errorf("make /root: %w", err)
	}
	return copyModules(ctx, tree, o)
}

// copyModules copies /lib/modules/<kernel> from the base image's rootfs
// (read with debugfs, no mount) so the guest can load modules for the
// base kernel. Skipped when the image already has them or the base
// kernel's release is unknown.
func copyModules(ctx context.Context, tree string, o OCIOptions) error {
	release, _, _ := strings.Cut(o.Base.KernelVersion, " ")
	if release == "" {
		return nil
	}
	if _, ok := o.Base.Files[FileRootfs]; !ok {
		return nil
	}
	dst := filepath.Join("usr/lib/modules", release)
	if _, err := statInRoot(tree, dst); err == nil {
		return nil
	}
	if _, err := statInRoot(tree, "lib/modules/"+release); err == nil {
		return nil
	}
	r, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer r.Close()
	// Follow /lib -> usr/lib style symlinks the image may have.
	dir := "lib/modules"
	if fi, err := r.Lstat("lib"); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		dir = "usr/lib/modules"
	}
	if err := r.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("copy kernel modules: %w", err)
	}
	rootfs := filepath.Join(o.BaseDir, FileRootfs)
	src := "/usr/lib/modules/" + release
	if out, err := cmdrun.Output(ctx, "debugfs", "-R", "stat "+src, rootfs); err != nil || strings.Contains(string(out), "not found") {
		src = "/lib/modules/" + release
	}
	args := []string{"debugfs", "-R", fmt.Sprintf("rdump %s %s", src, filepath.Join(tree, dir)), rootfs}
	out, err := cmdrun.Output(ctx, args...)
	if err != nil {
		return fmt.Errorf("copy kernel modules: %w", err)
	}
	// debugfs reports a missing source on its output and still exits 0.
	if strings.Contains(string(out), "File not found") {
		return fmt.Errorf("copy kernel modules: %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return nil
}

// copyFileInRoot copies the host file src to p inside r.
func copyFileInRoot(r *os.Root, src, p string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	_ = r.Remove(p)
	out, err := r.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return r.Chmod(p, perm)
}

// makeDisks builds rootfs.ext4 from tree and work-seed.ext4 from its
// /root, sized from their contents.
func makeDisks(ctx context.Context, tree, outDir string, progress func(string, int64, int64)) error {
	rootDir := filepath.Join(tree, guestcontract.WorkMountPoint)
	progress(StageWorkSeed, 0, 1)
	workSize, err := FSSize(rootDir, 64<<20)
	if err != nil {
		return err
	}
	if err := disk.MakeExt4(ctx, filepath.Join(outDir, FileWorkSeed), workSize, guestcontract.LabelWork, rootDir); err != nil {
		return err
	}
	progress(StageWorkSeed, 1, 1)
	progress(StageRootfs, 0, 1)
	rootSize, err := FSSize(tree, 128<<20)
	if err != nil {
		return err
	}
	if err := disk.MakeExt4(ctx, filepath.Join(outDir, FileRootfs), rootSize, guestcontract.LabelRoot, tree); err != nil {
		return err
	}
	progress(StageRootfs, 1, 1)
	return nil
}

// FSSize estimates an ext4 size that holds the tree at dir: file data
// rounded to 4 KiB blocks, an inode and a block per entry, plus 25% and
// a floor of min bytes, rounded up to a MiB.
func FSSize(dir string, min int64) (int64, error) {
	var total int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		total += 4096 + 256
		if fi.Mode().IsRegular() {
			total += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size %s: %w", dir, err)
	}
	size := total + total/4 + 32<<20
	if size < min {
		size = min
	}
	return (size + 1<<20 - 1) &^ (1<<20 - 1), nil
}

// linkOrCopy hard-links src to dst, copying when they are on different
// filesystems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// nameFromRef derives an image name from a reference or path:
// "docker.io/library/alpine:3.20" -> "alpine-3.20".
func nameFromRef(ref string) string {
	if _, err := os.Stat(ref); err == nil {
		base := filepath.Base(filepath.Clean(ref))
		for _, ext := range []string{".tar.gz", ".tgz", ".tar.zst", ".tar"} {
			base = strings.TrimSuffix(base, ext)
		}
		return SanitizeName(base)
	}
	if r, err := name.ParseReference(ref); err == nil {
		repo := r.Context().RepositoryStr()
		repo = repo[strings.LastIndex(repo, "/")+1:]
		if t, ok := r.(name.Tag); ok && t.TagStr() != "latest" {
			return SanitizeName(repo + "-" + t.TagStr())
		}
		return SanitizeName(repo)
	}
	return SanitizeName(ref)
}

// SanitizeName maps s onto the image-name alphabet (lowercase letters,
// digits, '.', '-', '_'), at most 64 bytes; "imported" when nothing is
// left.
func SanitizeName(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-._")
	if out == "" {
		return "imported"
	}
	if len(out) > 64 {
		out = out[:64]
	}
	return out
}
