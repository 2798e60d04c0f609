// Package debian builds banger's default images from Debian packages: it
// bootstraps a root filesystem with mmdebstrap, adds an initramfs that
// mounts the root as overlayfs over banger's drives (see the guest
// contract in ARCHITECTURE.md), bakes in banger-agent and produces the
// boot set (vmlinuz, vmlinux, initrd.img, rootfs.ext4, work-seed.ext4).
//
// mmdebstrap runs in its default mode, which is "root" for the root user.
// A non-root user needs mmdebstrap's unshare mode (subordinate ids in
// /etc/subuid and /etc/subgid, unprivileged user namespaces enabled) and
// must also extract the cached tarball and run mkfs.ext4 inside such a
// user namespace so that file ownership in the image stays root's; Build
// itself expects to run as root.
package debian

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"regexp"
	"slices"
)

// Recipe is the data that describes a Debian image: which suite from
// which mirror with which packages. Its Hash names the bootstrap cache
// entry.
type Recipe struct {
	// Name is the image name, e.g. "debian-12".
	Name string `json:"name"`
	// Suite is the Debian suite (codename), e.g. "bookworm".
	Suite string `json:"suite"`
	// Mirror is the archive URL mmdebstrap downloads from.
	Mirror string `json:"mirror"`
	// Packages is the base package set every banger image needs.
	Packages []string `json:"packages"`
	// ExtraPackages are added by the user (`--package`).
	ExtraPackages []string `json:"extra_packages"`
	// NPMPackages are npm package names installed globally (npm's
	// --global prefix, /usr/local) at build time, each at the latest
	// version of npm's configured registry; the installed versions are
	// recorded in the image (see NPMRecordPath). They need the npm
	// Debian package in Packages or ExtraPackages.
	NPMPackages []string `json:"npm_packages,omitempty"`
}

// DefaultMirror is Debian's main archive, which redirects to a nearby
// mirror.
const DefaultMirror = "http://deb.debian.org/debian"

// basePackages is what a banger guest needs: systemd as init, sshd, the
// tools a developer expects, the cloud kernel (small, virtio drivers as
// modules) and initramfs-tools for the overlay root.
var basePackages = []string{
	"systemd", "systemd-sysv", "udev", "dbus",
	"openssh-server", "iproute2", "ca-certificates",
	"sudo", "curl", "git", "tmux",
	"linux-image-cloud-amd64", "initramfs-tools", "kmod", "e2fsprogs",
}

// Default is the default image, debian-12 (bookworm).
func Default() Recipe {
	return Recipe{Name: "debian-12", Suite: "bookworm", Mirror: DefaultMirror, Packages: slices.Clone(basePackages)}
}

// Trixie is debian-13 (trixie) with the same package set.
func Trixie() Recipe {
	return Recipe{Name: "debian-13", Suite: "trixie", Mirror: DefaultMirror, Packages: slices.Clone(basePackages)}
}

// agentPackages are what the agents image adds to basePackages for
// coding-agent CLIs and the work they do: Node.js (Debian 12's is the
// 18.x LTS line) with npm, a compiler toolchain, Python and the search
// and JSON tools agents call.
var agentPackages = []string{
	"nodejs", "npm", "git", "build-essential", "ripgrep", "jq", "python3", "tmux",
}

// agentNPMPackages are the coding-agent CLIs of the agents image: Claude
// Code (`claude`), opencode (`opencode`) and Codex (`codex`).
var agentNPMPackages = []string{"@anthropic-ai/claude-code", "opencode-ai", "@openai/codex"}

// Agents is the agents image: debian-12 plus Node.js, build tools and the
// coding-agent CLIs installed from npm at build time.
func Agents() Recipe {
	r := Default()
	r.Name = "agents"
	for _, p := range agentPackages {
		if !slices.Contains(r.Packages, p) {
			r.Packages = append(r.Packages, p)
		}
	}
	r.NPMPackages = slices.Clone(agentNPMPackages)
	return r
}

// npmName is what Validate accepts as an npm package name: lowercase,
// optionally scoped, no version or other specifier, nothing a shell
// would read.
var npmName = regexp.MustCompile(`^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$`)

// AllPackages returns Packages followed by ExtraPackages, without
// duplicates, in order.
func (r Recipe) AllPackages() []string {
	var out []string
	for _, p := range slices.Concat(r.Packages, r.ExtraPackages) {
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// files holds everything baked into the cached bootstrap from this
// package: the initramfs overlay script and module list. Their content is
// part of Hash, so editing them invalidates the cache.
//
//go:embed files
var files embed.FS

// cacheFormat is bumped when the way the cached bootstrap is made changes
// in a way the recipe and files do not show.
const cacheFormat = "banger-debian-bootstrap/1"

// Hash is the hex sha256 over the canonical recipe JSON, the content of
// every file this package bakes into the bootstrap, the npm hooks and the
// cache format. The npm packages' versions are not part of it: a cached
// bootstrap keeps the versions it installed until the recipe changes.
// The agent binary is not part of it: it is installed after the cache.
func (r Recipe) Hash() string {
	h := sha256.New()
	canon := r
	canon.Packages = slices.Clone(r.Packages)
	canon.ExtraPackages = slices.Clone(r.ExtraPackages)
	canon.NPMPackages = slices.Clone(r.NPMPackages)
	// Package order does not change what gets installed.
	slices.Sort(canon.Packages)
	slices.Sort(canon.ExtraPackages)
	slices.Sort(canon.NPMPackages)
	b, err := json.Marshal(canon)
	if err != nil {
		panic("marshal recipe: " + err.Error()) // plain strings and slices always marshal
	}
	h.Write([]byte(cacheFormat + "\n"))
	h.Write(b)
	h.Write([]byte("\x00modules\x00"))
	h.Write(modulesFile())
	// The npm hooks' text (of the sorted list, as install order does not
	// change what gets installed), so that changing how they install or
	// record makes a new cache entry. A recipe without npm packages has
	// none, which keeps its hash what it was before npm packages existed.
	for _, hook := range npmHooks(canon) {
		h.Write([]byte("\x00npm-hook\x00" + hook))
	}
	_ = fs.WalkDir(files, "files", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		h.Write([]byte("\x00" + path + "\x00"))
		h.Write(data)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// OverlayScript returns the initramfs-tools local-bottom script that
// mounts the overlay root (installed as
// /etc/initramfs-tools/scripts/local-bottom/banger-overlay).
func OverlayScript() []byte {
	b, _ := files.ReadFile("files/banger-overlay")
	return b
}

// InitramfsConf returns the initramfs-tools configuration the bootstrap
// installs (as guestInitramfsConf): only the listed modules go in.
func InitramfsConf() []byte {
	b, _ := files.ReadFile("files/initramfs.conf")
	return b
}

// InitramfsModules are the modules the initramfs loads at boot: the
// virtio transports and devices, vsock, overlayfs and ext4 (all modules
// in Debian's cloud kernel).
var InitramfsModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
	"vmw_vsock_virtio_transport", "vsock", "overlay", "ext4",
}
