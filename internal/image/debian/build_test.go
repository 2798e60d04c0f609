package debian_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"banger/internal/disk/disktest"
	"banger/internal/guestcontract"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/image/debian/debiantest"
)

// built is the boot set TestBuildDefault makes, shared with the boot test.
var built struct {
	once     sync.Once
	dir      string
	manifest *image.Manifest
	stages   []string
	err      error
}

// buildDefault runs debian.Build for debian-12 once per test process,
// with the bootstrap cached in the test cache directory.
func buildDefault(t *testing.T) (string, *image.Manifest) {
	t.Helper()
	debiantest.RequireBuild(t)
	agent := debiantest.AgentBin(t)
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "banger-debian-build-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		out := filepath.Join(dir, "image")
		if err := os.Mkdir(out, 0o755); err != nil {
			built.err = err
			return
		}
		logf, err := os.Create(filepath.Join(dir, "build.log"))
		if err != nil {
			built.err = err
			return
		}
		defer logf.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		var mu sync.Mutex
		built.manifest, built.err = debian.Build(ctx, debian.Default(), debian.BuildOptions{
			AgentBin: agent,
			CacheDir: filepath.Join(debiantest.CacheDir(t), "debian"),
			Log:      logf,
			Progress: func(stage string, done, total int64) {
				mu.Lock()
				defer mu.Unlock()
				if done == 0 {
					built.stages = append(built.stages, stage)
				}
			},
		}, out)
	})
	if built.err != nil {
		t.Fatalf("build: %v", built.err)
	}
	return filepath.Join(built.dir, "image"), built.manifest
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func TestBuildDefault(t *testing.T) {
	dir, m := buildDefault(t)
	r := debian.Default()

	t.Run("manifest", func(t *testing.T) {
		if m.Name != "debian-12" || m.Init != image.InitSystemd {
			t.Errorf("manifest name %q init %q", m.Name, m.Init)
		}
		if m.Source != (image.Source{Kind: image.SourceRecipe, Ref: "debian-12", RecipeHash: r.Hash()}) {
			t.Errorf("manifest source %+v", m.Source)
		}
		if !strings.HasSuffix(m.KernelVersion, "-cloud-amd64") {
			t.Errorf("kernel version %q", m.KernelVersion)
		}
		if m.AgentVersion == "" {
			t.Error("no agent version")
		}
		if !slices.Equal(built.stages, []string{debian.StageBootstrap, debian.StageInitramfs,
			debian.StageConfigure, debian.StageKernel, debian.StageFilesystem}) {
			t.Errorf("stages %q", built.stages)
		}
		if _, err := os.Stat(debian.CachePath(filepath.Join(debiantest.CacheDir(t), "debian"), r)); err != nil {
			t.Errorf("bootstrap not cached: %v", err)
		}
	})

	t.Run("files", func(t *testing.T) {
		for _, f := range image.BootFiles {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() == 0 {
				t.Errorf("%s is empty", f)
			}
		}
	})

	t.Run("labels", func(t *testing.T) {
		for f, want := range map[string]string{image.FileRootfs: guestcontract.LabelRoot, image.FileWorkSeed: guestcontract.LabelWork} {
			out, err := exec.Command("e2label", filepath.Join(dir, f)).Output()
			if err != nil {
				t.Fatalf("e2label %s: %v", f, err)
			}
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("%s label %q, want %q", f, got, want)
			}
		}
		if _, apparent, err := disktest.Usage(filepath.Join(dir, image.FileWorkSeed)); err != nil || apparent != debian.WorkSeedSize {
			t.Errorf("work seed size %d (%v), want %d", apparent, err, debian.WorkSeedSize)
		}
	})

	t.Run("vmlinux", func(t *testing.T) {
		f, err := elf.Open(filepath.Join(dir, image.FileVmlinux))
		if err != nil {
			t.Fatalf("vmlinux is not ELF: %v", err)
		}
		defer f.Close()
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("vmlinux machine %v", f.Machine)
		}
	})

	t.Run("initrd", func(t *testing.T) {
		files, err := initrdFiles(filepath.Join(dir, image.FileInitrd))
		if err != nil {
			t.Fatal(err)
		}
		// banger's initramfs: banger-agent as /init and the listed
		// modules with their dependencies, in load order.
		agent, err := os.ReadFile(debiantest.AgentBin(t))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(files["init"], agent) {
			t.Errorf("initrd /init (%d bytes) is not the image's banger-agent (%d bytes)", len(files["init"]), len(agent))
		}
		if _, ok := files["dev/console"]; !ok {
			t.Error("initrd lacks dev/console (the kernel opens it for /init)")
		}
		order := strings.Fields(string(files[strings.TrimPrefix(guestcontract.InitramfsModuleOrder, "/")]))
		for _, m := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_pci", "virtio_console",
			"vmw_vsock_virtio_transport", "vsock", "overlay"} {
			i := slices.IndexFunc(order, func(p string) bool { return strings.HasSuffix(p, "/"+m+".ko") })
			if i < 0 {
				t.Errorf("initrd module order lacks %s: %v", m, order)
				continue
			}
			if _, ok := files[strings.TrimPrefix(order[i], "/")]; !ok {
				t.Errorf("initrd lists %s but does not carry it", order[i])
			}
		}
		// Dependencies load first (ext4 is built into Debian's kernel).
		for _, pair := range [][2]string{{"virtio", "virtio_blk"}, {"vsock", "vmw_vsock_virtio_transport"}} {
			a := slices.IndexFunc(order, func(p string) bool { return strings.HasSuffix(p, "/"+pair[0]+".ko") })
			b := slices.IndexFunc(order, func(p string) bool { return strings.HasSuffix(p, "/"+pair[1]+".ko") })
			if a < 0 || b < 0 || a > b {
				t.Errorf("%s (at %d) must load before %s (at %d): %v", pair[0], a, pair[1], b, order)
			}
		}
		// The listed modules and their dependencies only, none of the
		// storage controllers a virtio guest never has.
		for n := range files {
			for _, absent := range []string{"/nvme.ko", "/ahci.ko", "/xen-blkfront.ko"} {
				if strings.HasSuffix(n, absent) {
					t.Errorf("initrd carries %s", n)
				}
			}
		}
	})

	rootfs := filepath.Join(dir, image.FileRootfs)
	t.Run("agent", func(t *testing.T) {
		st := debugfs(t, rootfs, "stat "+guestcontract.AgentPath)
		if !strings.Contains(st, "Type: regular") || !strings.Contains(st, "Mode:  0755") {
			t.Errorf("agent inode:\n%s", st)
		}
		link := debugfs(t, rootfs, "stat /etc/systemd/system/multi-user.target.wants/"+guestcontract.AgentUnitName)
		if !strings.Contains(link, "Type: symlink") || !strings.Contains(link, "/etc/systemd/system/"+guestcontract.AgentUnitName) {
			t.Errorf("unit not enabled:\n%s", link)
		}
		if u := debugfs(t, rootfs, "cat /etc/systemd/system/"+guestcontract.AgentUnitName); !strings.Contains(u, "ExecStart="+guestcontract.AgentPath) {
			t.Errorf("unit file:\n%s", u)
		}
	})

	t.Run("guest config", func(t *testing.T) {
		if ls := debugfs(t, rootfs, "ls /etc/ssh"); strings.Contains(ls, "ssh_host_") {
			t.Errorf("ssh host keys in the image:\n%s", ls)
		}
		sshd := debugfs(t, rootfs, "cat /etc/ssh/sshd_config.d/banger.conf")
		for _, w := range []string{"PermitRootLogin prohibit-password", "PasswordAuthentication no"} {
			if !strings.Contains(sshd, w) {
				t.Errorf("sshd config lacks %q", w)
			}
		}
		if gen := debugfs(t, rootfs, "stat /etc/systemd/system-generators/systemd-gpt-auto-generator"); !strings.Contains(gen, "Type: symlink") {
			t.Errorf("gpt-auto generator not masked:\n%s", gen)
		}
		sock := debugfs(t, rootfs, "stat /etc/systemd/system/sockets.target.wants/"+guestcontract.SSHSocketName)
		if !strings.Contains(sock, "Type: symlink") {
			t.Errorf("%s not enabled:\n%s", guestcontract.SSHSocketName, sock)
		}
		if u := debugfs(t, rootfs, "cat /etc/systemd/system/"+guestcontract.SSHServiceName); !strings.Contains(u, "sshd -i") {
			t.Errorf("%s:\n%s", guestcontract.SSHServiceName, u)
		}
		// ssh.service would take port 22 from the socket.
		if ls := debugfs(t, rootfs, "ls /etc/systemd/system/multi-user.target.wants"); strings.Contains(ls, "ssh.service") {
			t.Errorf("ssh.service still enabled:\n%s", ls)
		}
		if mid := debugfs(t, rootfs, "stat /etc/machine-id"); !strings.Contains(mid, "Size: 0") {
			t.Errorf("machine-id not empty:\n%s", mid)
		}
		if rc := debugfs(t, rootfs, "cat /etc/resolv.conf"); strings.Contains(rc, "nameserver") {
			t.Errorf("resolv.conf from the build host:\n%s", rc)
		}
		for _, l := range strings.Split(debugfs(t, rootfs, "cat /etc/shadow"), "\n") {
			if f := strings.Split(l, ":"); len(f) > 1 && f[0] == "root" && f[1] != "*" {
				t.Errorf("root password field %q", f[1])
			}
		}
		if ls := debugfs(t, rootfs, "ls /boot"); strings.Contains(ls, "vmlinuz-") {
			t.Errorf("kernel left in the rootfs:\n%s", ls)
		}
		if ls := debugfs(t, rootfs, "ls -l /root"); strings.Contains(ls, ".bashrc") {
			t.Errorf("/root content left in the rootfs:\n%s", ls)
		}
		if ls := debugfs(t, filepath.Join(dir, image.FileWorkSeed), "ls /"); !strings.Contains(ls, ".bashrc") {
			t.Errorf("work seed lacks /root's .bashrc:\n%s", ls)
		}
		if ls := debugfs(t, rootfs, "ls /usr/lib/modules/"+m.KernelVersion); !strings.Contains(ls, "kernel") {
			t.Errorf("no modules for %s:\n%s", m.KernelVersion, ls)
		}
	})
}

// debugfs runs one debugfs request against an ext4 image (read-only, no
// mount) and returns its output.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return string(out)
}

// initrdFiles returns the files (path -> content) of an initramfs: a sequence of newc cpio
// archives, each uncompressed, gzip- or zstd-compressed, as
// lsinitramfs would.
func initrdFiles(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for len(data) > 0 {
		switch {
		case len(data) >= 6 && string(data[:6]) == "070701":
			data, err = cpioFiles(data, files)
			if err != nil {
				return nil, err
			}
		case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
			g, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return nil, err
			}
			data, err = io.ReadAll(g)
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
		case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			d, err := zstd.NewReader(bytes.NewReader(data))
			if err != nil {
				return nil, err
			}
			data, err = io.ReadAll(d)
			d.Close()
			if err != nil {
				return nil, fmt.Errorf("zstd: %w", err)
			}
		case data[0] == 0:
			data = data[1:] // padding between archives
		default:
			return nil, fmt.Errorf("unknown initrd segment (magic % x)", data[:min(6, len(data))])
		}
	}
	return files, nil
}

// cpioFiles reads one newc cpio archive into files and returns what
// follows its trailer.
func cpioFiles(data []byte, files map[string][]byte) ([]byte, error) {
	pad4 := func(n int) int { return (n + 3) &^ 3 }
	off := 0
	for {
		if off+110 > len(data) || string(data[off:off+6]) != "070701" {
			return nil, errors.New("bad cpio header")
		}
		field := func(i int) int {
			v, _ := strconv.ParseUint(string(data[off+6+8*i:off+14+8*i]), 16, 32)
			return int(v)
		}
		size, nameLen := field(6), field(11)
		nameEnd := off + 110 + nameLen
		if nameEnd > len(data) {
			return nil, errors.New("truncated cpio name")
		}
		name := strings.TrimRight(string(data[off+110:nameEnd]), "\x00")
		next := pad4(nameEnd) + pad4(size)
		if next > len(data) {
			next = len(data)
		}
		if name == "TRAILER!!!" {
			return data[next:], nil
		}
		files[name] = data[pad4(nameEnd):min(pad4(nameEnd)+size, len(data))]
		off = next
	}
}
