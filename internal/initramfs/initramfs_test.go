package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// modTree makes a module tree: ext4 needs jbd2 and mbcache, jbd2 needs
// crc16; virtio-blk (named with a dash on purpose) needs nothing; vsock
// is built in.
func modTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	files := map[string]string{
		"modules.dep": "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n" +
			"kernel/fs/jbd2/jbd2.ko: kernel/lib/crc16.ko\n" +
			"kernel/fs/mbcache.ko:\n" +
			"kernel/lib/crc16.ko:\n" +
			"kernel/drivers/block/virtio_blk.ko:\n" +
			"kernel/drivers/net/unused.ko:\n",
		"modules.builtin":                    "kernel/net/vmw_vsock/vsock.ko\n",
		"kernel/fs/ext4/ext4.ko":             "EXT4",
		"kernel/fs/jbd2/jbd2.ko":             "JBD2",
		"kernel/fs/mbcache.ko":               "MBCACHE",
		"kernel/lib/crc16.ko":                "CRC16",
		"kernel/drivers/block/virtio_blk.ko": "VIRTIO_BLK",
		"kernel/drivers/net/unused.ko":       "UNUSED",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModuleOrder(t *testing.T) {
	dir := modTree(t)
	got, err := ModuleOrder(dir, []string{"virtio-blk", "vsock", "ext4", "jbd2"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/drivers/block/virtio_blk.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if _, err := ModuleOrder(dir, []string{"ext4", "nvme"}); err == nil || !strings.Contains(err.Error(), "nvme") {
		t.Fatalf("an unknown module: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A loop is broken, not followed forever: each module once.
	got, err = ModuleOrder(dir, []string{"a"})
	if err != nil || len(got) != 2 {
		t.Fatalf("loop: %v %v", got, err)
	}
}

// TestBuild unpacks the archive with cpio(1) and checks every entry.
func TestBuild(t *testing.T) {
	testenv.RequireCommand(t, "cpio")
	dir := modTree(t)
	var buf bytes.Buffer
	init := []byte("#!init binary, odd length")
	if err := Build(&buf, init, dir, []string{"ext4", "virtio_blk", "vsock"}); err != nil {
		t.Fatal(err)
	}
	list := exec.Command("cpio", "-itv", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	listing := string(out)
	for _, want := range []string{" init\n", " dev/console\n", " newroot\n", " lib/modules/6.1.0-test/kernel/fs/jbd2/jbd2.ko\n"} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
	if strings.Contains(listing, "unused.ko") {
		t.Errorf("a module nobody asked for is in:\n%s", listing)
	}
	for _, l := range strings.Split(listing, "\n") {
		switch {
		case strings.HasSuffix(l, " dev/console") && !strings.HasPrefix(l, "crw-------"):
			t.Errorf("console entry %q, want a 0600 character device", l)
		case strings.HasSuffix(l, " init") && !strings.HasPrefix(l, "-rwxr-xr-x"):
			t.Errorf("init entry %q, want 0755", l)
		}
	}

	root := t.TempDir()
	x := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/console")
	x.Dir = root
	x.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "init")); !bytes.Equal(b, init) {
		t.Errorf("init unpacked as %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko")); string(b) != "EXT4" {
		t.Errorf("ext4.ko unpacked as %q", b)
	}
	order, _ := os.ReadFile(filepath.Join(root, strings.TrimPrefix(OrderFile, "/")))
	want := "/lib/modules/6.1.0-test/kernel/lib/crc16.ko\n/lib/modules/6.1.0-test/kernel/fs/mbcache.ko\n" +
		"/lib/modules/6.1.0-test/kernel/fs/jbd2/jbd2.ko\n/lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko\n" +
		"/lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko\n"
	if string(order) != want {
		t.Errorf("order file:\n%s\nwant:\n%s", order, want)
	}
}

// TestBuild_RefusesEscapes: a module tree is a guest root filesystem; a
// dependency path leaving it or a module that is a link must not read a
// host file into the image.
func TestBuild_RefusesEscapes(t *testing.T) {
	dir := modTree(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/evil.ko: ../../../../../../../.."+secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel/evil.ko"), []byte("EVIL"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Build(&buf, []byte("init"), dir, []string{"evil"}); err == nil || bytes.Contains(buf.Bytes(), []byte("host secret")) {
		t.Fatalf("an escaping dependency was read: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("kernel/link.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "kernel/link.ko")); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := Build(&buf, []byte("init"), dir, []string{"link"}); err == nil || bytes.Contains(buf.Bytes(), []byte("host secret")) {
		t.Fatalf("a linked module was followed: %v", err)
	}
}
