// Package imagetest gives tests real boot artifacts, fetched once and
// cached: Debian's cloud kernel for the kernel-extraction and VMM tests.
package imagetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// KernelPackage is the Debian metapackage whose kernel the tests use.
const KernelPackage = "linux-image-cloud-amd64"

// CacheDir is where test artifacts are kept between runs:
// $BANGER_TEST_CACHE, else $XDG_CACHE_HOME/banger-test, else
// ~/.cache/banger-test.
func CacheDir() (string, error) {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "banger-test"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("test cache dir: %w", err)
	}
	return filepath.Join(home, ".cache", "banger-test"), nil
}

// inCI reports whether tests run in CI, where prerequisites are required.
func inCI() bool { return os.Getenv("CI") == "true" }

// DebianKernel returns the path of the bzImage (vmlinuz) of Debian's
// cloud kernel. The first call downloads the package with
// `apt-get download` and unpacks it with `dpkg-deb -x` into the cache,
// keyed by package name and version; later calls reuse it. In CI a
// failure fails the test; elsewhere the test is skipped only when apt is
// unavailable.
func DebianKernel(tb testing.TB) string {
	tb.Helper()
	for _, bin := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(bin); err != nil {
			if inCI() {
				tb.Fatalf("debian kernel: %s not found (CI needs apt and dpkg)", bin)
			}
			tb.Skipf("debian kernel: %s not found", bin)
		}
	}
	p, err := debianKernel()
	if err != nil {
		tb.Fatalf("debian kernel: %v", err)
	}
	return p
}

func debianKernel() (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	pkg, version, err := resolveKernelPackage()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "deb", pkg+"_"+version)
	if p, err := findVmlinuz(dir); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// Root's downloads would otherwise be attempted as the _apt user,
	// which cannot write into a private temp dir.
	if _, err := run(tmp, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", pkg+"="+version); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: found %d .deb files", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if _, err := run(tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return "", err
	}
	if _, err := findVmlinuz(root); err != nil {
		return "", err
	}
	// Another test binary may have won the race; either copy is good.
	if err := os.Rename(root, dir); err != nil {
		if p, ferr := findVmlinuz(dir); ferr == nil {
			return p, nil
		}
		return "", err
	}
	return findVmlinuz(dir)
}

// resolveKernelPackage finds the versioned kernel package the
// metapackage depends on, and its candidate version.
func resolveKernelPackage() (pkg, version string, err error) {
	out, err := run("", "apt-cache", "depends", KernelPackage)
	if err != nil {
		return "", "", fmt.Errorf("%w (run apt-get update?)", err)
	}
	m := regexp.MustCompile(`Depends: (linux-image-[0-9][^\s]*)`).FindStringSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("apt-cache depends %s: no linux-image dependency in %q", KernelPackage, out)
	}
	pkg = m[1]
	out, err = run("", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", err
	}
	v := regexp.MustCompile(`(?m)^Version: (\S+)`).FindStringSubmatch(out)
	if v == nil {
		return "", "", fmt.Errorf("apt-cache show %s: no version", pkg)
	}
	return pkg, v[1], nil
}

// findVmlinuz returns the single boot/vmlinuz-* below root.
func findVmlinuz(root string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return "", fmt.Errorf("expected one boot/vmlinuz-* in %s, found %d", root, len(m))
	}
	return m[0], nil
}

// run executes a command in dir and returns its stdout; the error keeps
// argv and output.
func run(dir string, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+stdout.String()))
	}
	return stdout.String(), nil
}
