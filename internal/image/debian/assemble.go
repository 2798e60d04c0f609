package debian

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"banger/internal/atomicfile"
	"banger/internal/disk"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/initramfs"
)

// AssembleOptions are the inputs of Assemble.
type AssembleOptions struct {
	// AgentBin is the banger-agent binary to install.
	AgentBin string
	// KernelDir, when set, is an image directory whose vmlinuz, vmlinux
	// and initrd.img are used (Dockerfile images keep the default image's
	// kernel). When empty, the kernel and initramfs are taken from the
	// tree's /boot and removed from it.
	KernelDir string
	// Tarball, when set, is unpacked into the (empty) tree first, as part
	// of the configure stage.
	Tarball string
	// ScratchDir is where the work-seed tree is made; it must be on the
	// tree's filesystem (default: the tree's parent).
	ScratchDir string
	// Log receives every step.
	Log io.Writer
	// Progress, when set, reports the configure, kernel and filesystem
	// stages.
	Progress func(stage string, done, total int64)
}

// Assembled describes what Assemble produced.
type Assembled struct {
	// KernelVersion is the release of the kernel in the boot set.
	KernelVersion string
	// RootfsSize is the apparent size of rootfs.ext4.
	RootfsSize int64
	// Init is image.InitSystemd when the tree has systemd as /sbin/init,
	// else image.InitAgent (banger-agent runs as PID 1).
	Init string
}

// WorkSeedSize is the apparent size of work-seed.ext4 (sparse; it is
// cloned and grown per VM).
const WorkSeedSize = 256 << 20

// Assemble turns an unpacked root filesystem tree into a boot set in
// outDir: it configures the tree for the guest contract (Configure),
// places the kernel files, moves /root's content into work-seed.ext4 and
// makes rootfs.ext4 from the rest with mkfs.ext4 -d. The tree is changed
// in place.
func Assemble(ctx context.Context, tree string, o AssembleOptions, outDir string) (*Assembled, error) {
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	progress := o.Progress
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	scratch := o.ScratchDir
	if scratch == "" {
		scratch = filepath.Dir(tree)
	}

	progress(StageConfigure, 0, 1)
	if o.Tarball != "" {
		if err := Run(ctx, log, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", o.Tarball, "-C", tree); err != nil {
			return nil, fmt.Errorf("%s: unpack %s: %w", StageConfigure, o.Tarball, err)
		}
	}
	if err := Configure(tree, o.AgentBin, log); err != nil {
		return nil, fmt.Errorf("%s: %w", StageConfigure, err)
	}
	progress(StageConfigure, 1, 1)

	progress(StageKernel, 0, 1)
	version, err := placeKernel(tree, o.KernelDir, outDir, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", StageKernel, err)
	}
	progress(StageKernel, 1, 1)

	initKind := image.InitAgent
	if _, err := os.Stat(filepath.Join(tree, "lib/systemd/systemd")); err == nil {
		if _, err := os.Stat(filepath.Join(tree, "sbin/init")); err == nil {
			initKind = image.InitSystemd
		}
	}

	progress(StageFilesystem, 0, 2)
	seed, err := os.MkdirTemp(scratch, "work-seed-")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", StageFilesystem, err)
	}
	defer os.RemoveAll(seed)
	if err := moveContents(filepath.Join(tree, guestcontract.WorkMountPoint), seed); err != nil {
		return nil, fmt.Errorf("%s: move /root to the work seed: %w", StageFilesystem, err)
	}
	if err := os.Chmod(seed, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", StageFilesystem, err)
	}
	seedPath := filepath.Join(outDir, image.FileWorkSeed)
	fmt.Fprintf(log, "filesystem: %s (%s, %d bytes sparse)\n", seedPath, guestcontract.LabelWork, WorkSeedSize)
	if err := disk.MakeExt4(ctx, seedPath, WorkSeedSize, guestcontract.LabelWork, seed); err != nil {
		return nil, fmt.Errorf("%s: %w", StageFilesystem, err)
	}
	progress(StageFilesystem, 1, 2)
	size, err := RootfsSize(tree)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", StageFilesystem, err)
	}
	rootPath := filepath.Join(outDir, image.FileRootfs)
	fmt.Fprintf(log, "filesystem: %s (%s, %d bytes sparse)\n", rootPath, guestcontract.LabelRoot, size)
	if err := disk.MakeExt4(ctx, rootPath, size, guestcontract.LabelRoot, tree); err != nil {
		return nil, fmt.Errorf("%s: %w", StageFilesystem, err)
	}
	progress(StageFilesystem, 2, 2)
	return &Assembled{KernelVersion: version, RootfsSize: size, Init: initKind}, nil
}

// RootfsSize sizes rootfs.ext4 for the tree: the space its files take
// plus a quarter and 256 MiB of headroom (metadata, journal, the odd
// package a Dockerfile adds), with at least one inode per 8 KiB of tree
// content at mke2fs's default 16 KiB per inode, rounded up to 4 MiB.
func RootfsSize(tree string) (int64, error) {
	var used, inodes int64
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inodes++
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used += st.Blocks * 512
		} else {
			used += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size tree %s: %w", tree, err)
	}
	size := used + used/4 + 256<<20
	size = max(size, inodes*2*16384)
	const align = 4 << 20
	return (size + align - 1) / align * align, nil
}

// placeKernel puts vmlinuz, vmlinux and initrd.img into outDir and
// returns the kernel release.
func placeKernel(tree, kernelDir, outDir string, log io.Writer) (string, error) {
	vmlinuz := filepath.Join(outDir, image.FileVmlinuz)
	if kernelDir != "" {
		for _, f := range []string{image.FileVmlinuz, image.FileVmlinux, image.FileInitrd} {
			fmt.Fprintf(log, "kernel: copy %s from %s\n", f, kernelDir)
			if err := copyFile(filepath.Join(kernelDir, f), filepath.Join(outDir, f), 0o644); err != nil {
				return "", err
			}
		}
		v, err := kernelVersion(vmlinuz)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(filepath.Join(tree, "usr/lib/modules", v)); err != nil {
			fmt.Fprintf(log, "kernel: warning: the root filesystem has no modules for kernel %s\n", v)
		}
		return v, nil
	}
	kernels, _ := filepath.Glob(filepath.Join(tree, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		return "", errors.New("no /boot/vmlinuz-* in the root filesystem")
	}
	slices.Sort(kernels)
	src := kernels[len(kernels)-1]
	release := strings.TrimPrefix(filepath.Base(src), "vmlinuz-")
	fmt.Fprintf(log, "kernel: %s and banger's initramfs (banger-agent as /init, modules %s)\n", src, strings.Join(InitramfsModules, " "))
	if err := copyFile(src, vmlinuz, 0o644); err != nil {
		return "", err
	}
	if err := writeInitramfs(tree, release, filepath.Join(outDir, image.FileInitrd)); err != nil {
		return "", err
	}
	if err := image.ExtractVmlinux(vmlinuz, filepath.Join(outDir, image.FileVmlinux)); err != nil {
		return "", err
	}
	v, err := kernelVersion(vmlinuz)
	if err != nil {
		return "", err
	}
	// The VMM loads the kernel from the image directory; copies inside
	// the read-only root would only take space.
	for _, k := range kernels {
		r := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		for _, f := range []string{k, filepath.Join(tree, "boot", "initrd.img-"+r)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("remove %s: %w", f, err)
			}
		}
	}
	for _, l := range []string{"vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"} {
		p := filepath.Join(tree, l)
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			os.Remove(p)
		}
	}
	return v, nil
}

// writeInitramfs builds the image's initramfs (package initramfs) at out
// from the tree's banger-agent and its modules for release. The tree's
// own initrd (initramfs-tools') is not used: it starts udev and scripts
// that cost seconds of every cold boot under emulation.
func writeInitramfs(tree, release, out string) error {
	agent, err := os.ReadFile(filepath.Join(tree, guestcontract.AgentPath))
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	modDir := filepath.Join(tree, "usr/lib/modules", release)
	if _, err := os.Stat(modDir); err != nil {
		modDir = filepath.Join(tree, "lib/modules", release)
	}
	var buf bytes.Buffer
	if err := initramfs.Build(&buf, agent, modDir, InitramfsModules); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return atomicfile.Write(out, buf.Bytes(), 0o644)
}

// kernelVersion returns the kernel release ("6.1.0-28-cloud-amd64"), the
// first word of a bzImage's version string.
func kernelVersion(path string) (string, error) {
	v, err := image.KernelVersion(path)
	if err != nil {
		return "", err
	}
	release, _, _ := strings.Cut(v, " ")
	return release, nil
}

// moveContents renames every entry of src into dst (same filesystem).
func moveContents(src, dst string) error {
	entries, err := os.ReadDir(src)
	if errors.Is(err, fs.ErrNotExist) {
		return os.MkdirAll(src, 0o700)
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src to dst (replacing it) with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return os.Chmod(dst, perm)
}
