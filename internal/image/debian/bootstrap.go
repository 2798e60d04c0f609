package debian

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
	"banger/internal/hostcap"
)

// Paths inside the guest where the bootstrap installs this package's
// initramfs files. modules.d is read by mkinitramfs like
// /etc/initramfs-tools/modules but is no dpkg conffile, so package
// upgrades never ask about it.
const (
	guestOverlayScript = "/etc/initramfs-tools/scripts/local-bottom/banger-overlay"
	guestModulesFile   = "/usr/share/initramfs-tools/modules.d/banger"
	guestInitramfsConf = "/etc/initramfs-tools/conf.d/banger"
)

// modulesFile is the content of guestModulesFile.
func modulesFile() []byte {
	return []byte("# Loaded by the initramfs so banger's virtio drives, vsock and the overlay root work.\n" +
		strings.Join(InitramfsModules, "\n") + "\n")
}

// NPMRecordPath is where an image with npm packages records them: the
// JSON of `npm ls --global --json --depth=0` run after the installs
// (name -> version under "dependencies").
const NPMRecordPath = "/usr/local/share/banger/npm-global.json"

// npmCacheDir is npm's cache inside the root during the build, removed
// once the packages are installed (npm's default, under $HOME, would end
// up in every VM's /root).
const npmCacheDir = "/var/tmp/banger-npm-cache"

// npmFailedMarker prefixes the line an npm install hook prints, naming
// the package, before it fails.
const npmFailedMarker = "banger-npm-failed: "

// npmHooks returns the customize hooks (shell commands; $1 is the root)
// that install r.NPMPackages with the root's own npm, one hook per
// package so that a failure names it, then record what got installed at
// NPMRecordPath and remove npm's cache. npm uses its default registry
// unless the environment it inherits (npm_config_registry, ...)
// configures another. None for a recipe without npm packages.
// hostCABundle is the host's trust store on Debian and Ubuntu; npmHostCA
// is where its copy sits in the chroot while npm runs.
const (
	hostCABundle = "/etc/ssl/certs/ca-certificates.crt"
	npmHostCA    = "/var/tmp/banger-host-ca.crt"
)

func npmHooks(r Recipe) []string {
	if len(r.NPMPackages) == 0 {
		return nil
	}
	npm := `chroot "$1" env HOME=/root NODE_EXTRA_CA_CERTS=` + npmHostCA + ` npm --cache=` + npmCacheDir + ` --no-update-notifier --no-fund --no-audit`
	// npm trusts what the host trusts while it installs (a TLS-inspecting
	// proxy's CA, say, as apt on the host does); the copy is removed
	// with npm's cache, so the image keeps Debian's trust store only.
	hooks := []string{`if [ -r ` + hostCABundle + ` ]; then mkdir -p "$1` + filepath.Dir(npmHostCA) + `" && cp ` + hostCABundle + ` "$1` + npmHostCA + `"; fi`}
	for _, p := range r.NPMPackages {
		q := shellQuote(p)
		hooks = append(hooks, npm+" install --global "+q+" || { echo "+shellQuote(npmFailedMarker+p)+"; exit 1; }")
	}
	record := `"$1"` + NPMRecordPath
	// npm ls exits non-zero on a dependency problem it still reports; an
	// output that lacks a package fails the build later, in Build.
	hooks = append(hooks,
		`mkdir -p "$1`+filepath.Dir(NPMRecordPath)+`" && { `+npm+` ls --global --json --depth=0 >`+record+` || test -s `+record+`; }`,
		`rm -rf "$1`+npmCacheDir+`"`,
		`rm -f "$1`+npmHostCA+`"`,
	)
	return hooks
}

// shellQuote quotes s as one sh word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// BootstrapArgs returns the mmdebstrap argv that bootstraps r into the
// tarball out. filesDir holds this package's files ("banger-overlay",
// "modules", "initramfs.conf") for the hooks to upload. The essential hook installs the
// initramfs files before the kernel package is configured, so the
// kernel's own initramfs already carries them; the customize hooks
// install r's npm packages (the chroot has the host's network and
// resolv.conf then) and check that the initramfs carries the files,
// regenerating it when it does not.
func BootstrapArgs(r Recipe, filesDir, out string) []string {
	check := `for i in "$1"/boot/initrd.img-*; do chroot "$1" lsinitramfs "/boot/${i##*/}" | grep -q 'scripts/local-bottom/banger-overlay$' || exit 1; done`
	var npm []string
	for _, h := range npmHooks(r) {
		npm = append(npm, "--customize-hook="+h)
	}
	return slices.Concat([]string{
		"mmdebstrap",
		"--variant=minbase",
		"--format=tar",
		// apt's and dpkg's output reaches the log only at this
		// verbosity; the package progress is read from it.
		"--verbose",
		"--include=" + strings.Join(r.AllPackages(), ","),
		"--aptopt=Acquire::Retries \"3\"",
		"--essential-hook=mkdir -p \"$1" + filepath.Dir(guestOverlayScript) + "\" \"$1" + filepath.Dir(guestModulesFile) + "\"",
		"--essential-hook=upload " + filepath.Join(filesDir, "banger-overlay") + " " + guestOverlayScript,
		"--essential-hook=chmod 0755 \"$1" + guestOverlayScript + "\"",
		"--essential-hook=upload " + filepath.Join(filesDir, "modules") + " " + guestModulesFile,
		"--essential-hook=mkdir -p \"$1" + filepath.Dir(guestInitramfsConf) + "\"",
		"--essential-hook=upload " + filepath.Join(filesDir, "initramfs.conf") + " " + guestInitramfsConf,
	}, npm, []string{
		"--customize-hook=echo '" + stageMarker + StageInitramfs + "'",
		"--customize-hook=ls \"$1\"/boot/vmlinuz-* >/dev/null",
		"--customize-hook=(" + check + ") || chroot \"$1\" update-initramfs -u -k all",
		"--customize-hook=" + check,
		r.Suite, out, r.Mirror,
	})
}

// hostProbes probes the host bootstrap runs on; tests replace it.
var hostProbes = hostcap.Real

// canBootstrap fails, before anything starts, when mmdebstrap could not
// pick a mode: as a normal user it builds in a user namespace, which
// needs subordinate ids (root needs none).
func canBootstrap(p hostcap.Probes) error {
	if p.Geteuid() == 0 {
		return nil
	}
	user, uid := hostcap.CurrentUser(p)
	if ok, why := hostcap.SubIDs(p, user, uid); !ok {
		return fmt.Errorf("building an image as %s needs subordinate ids (%s): %s", user, why, hostcap.SubIDsFix(user))
	}
	return nil
}

// bootstrap runs mmdebstrap for r and stores the result as the cache
// tarball; a failed or cancelled run leaves no tarball. packages (may be
// nil) is told how far the packages have got.
func bootstrap(ctx context.Context, r Recipe, tarball, workDir string, log io.Writer, progress func(string, int64, int64), packages func(PackageProgress)) error {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return errors.New("mmdebstrap is not installed (apt-get install mmdebstrap)")
	}
	if err := canBootstrap(hostProbes()); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
		return fmt.Errorf("make cache dir: %w", err)
	}
	work, err := os.MkdirTemp(workDir, "banger-bootstrap-")
	if err != nil {
		return fmt.Errorf("make work dir: %w", err)
	}
	defer removeAll(work)
	filesDir := filepath.Join(work, "files")
	tmpDir := filepath.Join(work, "tmp")
	for _, d := range []string{filesDir, tmpDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("make work dir: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(filesDir, "banger-overlay"), OverlayScript(), 0o755); err != nil {
		return fmt.Errorf("write overlay script: %w", err)
	}
	if err := os.WriteFile(filepath.Join(filesDir, "initramfs.conf"), InitramfsConf(), 0o644); err != nil {
		return fmt.Errorf("write initramfs config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(filesDir, "modules"), modulesFile(), 0o644); err != nil {
		return fmt.Errorf("write modules file: %w", err)
	}
	// mmdebstrap writes next to the cache entry; the rename publishes it.
	part := tarball + ".part"
	defer os.Remove(part)
	sw := &stageWriter{progress: progress, seen: map[string]bool{}}
	args := BootstrapArgs(r, filesDir, part)
	// mmdebstrap makes its temporary chroot under TMPDIR: keep it inside
	// our work dir so that a kill leaves nothing elsewhere.
	env := []string{"TMPDIR=" + tmpDir}
	pw := newPackageWriter(len(r.NPMPackages), packages)
	if err := runEnv(ctx, io.MultiWriter(log, pw, sw), env, args...); err != nil {
		if sw.npmFailed != "" {
			return fmt.Errorf("%s: npm install of %s failed (npm's output is in the build log): %w", StageBootstrap, sw.npmFailed, err)
		}
		return fmt.Errorf("%s: %w", StageBootstrap, err)
	}
	if !sw.seen[StageInitramfs] {
		progress(StageBootstrap, 1, 1)
		progress(StageInitramfs, 0, 1)
	}
	progress(StageInitramfs, 1, 1)
	// mmdebstrap does not fsync: sync the tarball before the rename
	// publishes it, and the directory after, so a crash never leaves a
	// cache entry with missing data.
	f, err := os.Open(part)
	if err != nil {
		return fmt.Errorf("store bootstrap cache: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("store bootstrap cache: %w", err)
	}
	if err := os.Rename(part, tarball); err != nil {
		return fmt.Errorf("store bootstrap cache: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(tarball)); err != nil {
		return fmt.Errorf("store bootstrap cache: %w", err)
	}
	return nil
}

// removeAll detaches every mount below dir (a killed mmdebstrap may leave
// /proc or /sys mounted in its chroot) before removing dir, so the
// removal never reaches into a host filesystem.
func removeAll(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	mounts, err := mountsUnder(abs)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w (left %s in place)", m, err, dir)
		}
	}
	return os.RemoveAll(abs)
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

// unescapeMount decodes the octal escapes (\040 for space) of
// /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
