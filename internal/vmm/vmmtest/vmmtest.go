// Package vmmtest provides test fixtures for the VMM drivers: Debian's
// cloud kernel (downloaded once into a cache keyed by version) and a tiny
// busybox initramfs that proves the guest booted and found its devices.
package vmmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// CI reports whether tests run in CI, where missing prerequisites fail the
// test instead of skipping it.
func CI() bool { return os.Getenv("CI") == "true" }

// Require fails the test in CI, and skips it elsewhere, when err is set.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if CI() {
		t.Fatalf("%s: %v", what, err)
	}
	t.Skipf("%s: %v", what, err)
}

// RequireBinary returns the path of name on PATH, or fails in CI / skips
// elsewhere.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, "need "+name, err)
	return p
}

// Kernel is an extracted Debian kernel package.
type Kernel struct {
	// Version is the Debian package version, e.g. 6.1.192-2.
	Version string
	// Release is the kernel release, e.g. 6.1.0-56-cloud-amd64.
	Release string
	// BzImage is the compressed kernel QEMU boots.
	BzImage string
	// ModulesDir is lib/modules/<release> of the package.
	ModulesDir string
}

// Module returns the path of the module named name (e.g. "virtio_blk")
// inside the kernel tree.
func (k Kernel) Module(name string) (string, error) {
	var found string
	err := filepath.WalkDir(k.ModulesDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == name+".ko" {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if err == nil && found == "" {
		err = fmt.Errorf("module %s not in %s", name, k.ModulesDir)
	}
	return found, err
}

// CacheDir is where downloaded fixtures are kept between runs:
// $BANGER_TEST_CACHE, else the user cache dir.
func CacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Fatalf("user cache dir: %v", err)
	}
	return filepath.Join(d, "banger-test")
}

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// DebianKernel returns Debian's linux-image-cloud-amd64 kernel, downloaded
// with apt-get and extracted with dpkg-deb into the cache on first use.
func DebianKernel(t testing.TB) Kernel {
	t.Helper()
	RequireBinary(t, "apt-get")
	RequireBinary(t, "dpkg-deb")
	// The metapackage depends on exactly one versioned image package.
	out, err := run("apt-cache", "depends", "linux-image-cloud-amd64")
	Require(t, "resolve linux-image-cloud-amd64", err)
	var pkg string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(v, "linux-image-") {
			pkg = v
			break
		}
	}
	if pkg == "" {
		Require(t, "resolve linux-image-cloud-amd64", fmt.Errorf("no linux-image dependency in %q", out))
	}
	out, err = run("apt-cache", "show", "--no-all-versions", pkg)
	Require(t, "show "+pkg, err)
	var version string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			version = strings.TrimSpace(v)
			break
		}
	}
	release := strings.TrimPrefix(pkg, "linux-image-")
	dir := filepath.Join(CacheDir(t), "kernel", pkg+"_"+version)
	k := Kernel{
		Version:    version,
		Release:    release,
		BzImage:    filepath.Join(dir, "boot", "vmlinuz-"+release),
		ModulesDir: filepath.Join(dir, "lib", "modules", release),
	}
	if _, err := os.Stat(k.BzImage); err == nil {
		return k
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	dl, err := os.MkdirTemp(filepath.Dir(dir), ".dl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dl)
	cmd := exec.Command("apt-get", "download", pkg+"="+version)
	cmd.Dir = dl
	if b, err := cmd.CombinedOutput(); err != nil {
		Require(t, "download "+pkg, fmt.Errorf("apt-get download: %w: %s", err, b))
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download left %v", debs)
	}
	x := filepath.Join(dl, "x")
	if _, err := run("dpkg-deb", "-x", debs[0], x); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(x, dir); err != nil && !os.IsExist(err) {
		// Another test process may have won the race; accept its copy.
		if _, statErr := os.Stat(k.BzImage); statErr != nil {
			t.Fatalf("install kernel into cache: %v", err)
		}
	}
	return k
}

// Markers printed by the busybox initramfs /init on the serial console.
const (
	MarkerBooted = "BANGER-TEST-BOOTED"
	MarkerReady  = "BANGER-TEST-READY"
	// MarkerPowerOff is printed when the guest handles the power button.
	MarkerPowerOff = "BANGER-TEST-POWEROFF"
)

// initModules are loaded by /init in dependency order (virtio_mmio,
// virtio_blk and virtio_console are modules in Debian's cloud kernel).
// button and evdev deliver the ACPI power button to acpid.
var initModules = []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_blk", "virtio_console", "button", "evdev"}

const initScript = `#!/bin/sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo ` + MarkerBooted + `
for pass in 1 2 3; do
  for m in %s; do
    [ -d /sys/module/$m ] || insmod /lib/modules/$m.ko 2>/dev/null
  done
done
echo "modules: $(ls /sys/module | grep virtio | tr '\n' ' ')"
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  echo "virtio-port: $(basename $p) $(cat $p/name)"
  # Echo everything the host sends on the port back to it. Reading the port
  # returns EOF while no host is connected, so cat is restarted until one is.
  n=$(basename $p)
  (while true; do cat 0<>/dev/$n 1>&0; sleep 0.1; done) &
done
for b in /sys/block/vd*; do
  [ -e "$b" ] && echo "block: $(basename $b)"
done
if [ -x /etc/acpi/PWRF/00000080 ]; then
  # Ready only once acpid holds the power button's event device: a press
  # before that is lost.
  acpid -d -c /etc/acpi &
  apid=$!
  for i in $(seq 100); do ls -l /proc/$apid/fd 2>/dev/null | grep -q input/event && break; sleep 0.1; done
fi
echo ` + MarkerReady + `
while true; do sleep 3600; done
`

// BusyboxInitramfs builds an uncompressed cpio initramfs holding static
// busybox, the virtio modules of k, and an /init that prints MarkerBooted,
// loads the modules, lists virtio ports ("virtio-port: vport0p1 NAME", each
// echoing back what the host writes to it) and
// block devices ("block: vda"), prints MarkerReady and waits forever. It
// returns the path of the archive (in a test temp dir).
func BusyboxInitramfs(t testing.TB, k Kernel) string {
	t.Helper()
	return BusyboxInitramfsWith(t, k, InitramfsOptions{})
}

// InitramfsOptions change what the busybox /init does.
type InitramfsOptions struct {
	// ACPIPowerOff runs acpid so that an ACPI power button press (QMP
	// system_powerdown) powers the guest off, as systemd-logind would.
	ACPIPowerOff bool
}

// BusyboxInitramfsWith is BusyboxInitramfs with options.
func BusyboxInitramfsWith(t testing.TB, k Kernel, o InitramfsOptions) string {
	t.Helper()
	busybox := RequireBinary(t, "busybox")
	RequireBinary(t, "cpio")
	root := t.TempDir()
	for _, d := range []string{"bin", "lib/modules", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	CopyFile(t, busybox, filepath.Join(root, "bin", "busybox"), 0o755)
	if err := os.Symlink("busybox", filepath.Join(root, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	for _, m := range initModules {
		p, err := k.Module(m)
		if err != nil {
			t.Fatal(err)
		}
		CopyFile(t, p, filepath.Join(root, "lib", "modules", m+".ko"), 0o644)
	}
	if o.ACPIPowerOff {
		dir := filepath.Join(root, "etc", "acpi", "PWRF")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		handler := "#!/bin/sh\necho " + MarkerPowerOff + "\npoweroff -f\n"
		if err := os.WriteFile(filepath.Join(dir, "00000080"), []byte(handler), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(initScript, strings.Join(initModules, " "))
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return PackInitramfs(t, root)
}

// PackInitramfs packs the tree at root into an uncompressed newc cpio
// archive (in a test temp dir) and returns its path.
func PackInitramfs(t testing.TB, root string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build initramfs: %v: %s", err, b)
	}
	return out
}

// CopyFile copies the file from to the path to with mode, failing t on
// error: the step of putting a binary or module into an initramfs tree.
func CopyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// BootCmdline is a kernel command line for the busybox initramfs.
const BootCmdline = "console=ttyS0 reboot=k panic=-1 quiet loglevel=4"
