// Package image is banger's managed image store: the on-disk layout of an
// image (a full boot set plus a manifest), kernel extraction from a
// bzImage, OCI import, and export/import of images between hosts.
// Catalogs and pulls live in imagectl.
//
// An image lives in <state>/images/<id>/ and is complete or absent: it is
// built in a staging directory on the same filesystem and renamed into
// place only after its manifest (with the sha256 of every file) is
// written.
package image

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// The files of an image directory.
const (
	// FileManifest describes the image (Manifest, JSON).
	FileManifest = "manifest.json"
	// FileVmlinux is the uncompressed ELF kernel (Firecracker).
	FileVmlinux = "vmlinux"
	// FileVmlinuz is the distribution's bzImage (QEMU).
	FileVmlinuz = "vmlinuz"
	// FileInitrd is the initramfs that sets up the overlay root.
	FileInitrd = "initrd.img"
	// FileRootfs is the shared read-only root filesystem, label guestcontract.LabelRoot.
	FileRootfs = "rootfs.ext4"
	// FileWorkSeed is the initial /root, cloned per VM, label guestcontract.LabelWork.
	FileWorkSeed = "work-seed.ext4"
)

// Init values of a manifest: what runs as PID 1 in the guest.
const (
	InitSystemd = "systemd"
	InitAgent   = "agent"
)

// Source kinds: where an image came from.
const (
	SourceRecipe     = "recipe"
	SourceDockerfile = "dockerfile"
	SourceOCI        = "oci"
	SourcePull       = "pull"
	SourceImport     = "import"
)

// Manifest describes one image: its identity, its origin and every file
// with its size and sha256. It is written last, so an image directory
// with a manifest is complete.
type Manifest struct {
	Name          string              `json:"name"`
	ID            string              `json:"id"`
	Source        Source              `json:"source"`
	Created       time.Time           `json:"created"`
	Files         map[string]FileInfo `json:"files"`
	KernelVersion string              `json:"kernel_version,omitempty"`
	AgentVersion  string              `json:"agent_version,omitempty"`
	// Init is InitSystemd or InitAgent (the agent runs as PID 1).
	Init string `json:"init"`
	// NPMPackages are the npm packages installed globally in the image
	// at build time, name -> version (recipes with npm packages).
	NPMPackages map[string]string `json:"npm_packages,omitempty"`
	// SizeBytes is the sum of the apparent sizes of Files.
	SizeBytes int64 `json:"size_bytes"`
}

// Source records how an image was made.
type Source struct {
	// Kind is one of the Source* constants.
	Kind string `json:"kind"`
	// Ref is the recipe name, Dockerfile path, OCI reference, catalog
	// entry or archive the image came from.
	Ref string `json:"ref,omitempty"`
	// RecipeHash names the recipe's cache entry, for recipe builds.
	RecipeHash string `json:"recipe_hash,omitempty"`
}

// FileInfo is the size and sha256 (hex) of one image file.
type FileInfo struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// BootFiles are the files every complete image has.
var BootFiles = []string{FileVmlinux, FileVmlinuz, FileInitrd, FileRootfs, FileWorkSeed}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	filePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// ValidID reports whether id can name an image directory: lowercase
// letters, digits, '.', '_' and '-', no path separators, at most 64 bytes.
func ValidID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("invalid image id %q", id)
	}
	return nil
}

// NewID returns a random image id (16 hex digits).
func NewID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("read random: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Validate checks the fields a manifest must have to be usable.
func (m *Manifest) Validate() error {
	if err := ValidID(m.ID); err != nil {
		return err
	}
	if m.Name == "" {
		return fmt.Errorf("image %s: no name", m.ID)
	}
	if m.Init != InitSystemd && m.Init != InitAgent {
		return fmt.Errorf("image %s: init %q is neither %q nor %q", m.ID, m.Init, InitSystemd, InitAgent)
	}
	for name := range m.Files {
		if !validFileName(name) {
			return fmt.Errorf("image %s: bad file name %q", m.ID, name)
		}
	}
	return nil
}

// validFileName accepts plain names inside the image directory only.
func validFileName(name string) bool {
	return name != FileManifest && filePattern.MatchString(name)
}

// decodeManifest parses and validates a manifest.
func decodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
