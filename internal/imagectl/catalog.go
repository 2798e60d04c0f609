package imagectl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/debian"
)

// BuiltinCatalog names the catalog compiled into banger.
const BuiltinCatalog = "builtin"

// maxCatalogBytes bounds a catalog document.
const maxCatalogBytes = 4 << 20

// Catalog is a JSON index of images:
//
//	{"images": [
//	  {"name": "debian-12", "recipe": {"suite": "bookworm", ...}},
//	  {"name": "tiny", "init": "agent", "files": {
//	     "vmlinuz": {"url": "tiny/vmlinuz", "sha256": "…", "size": 123}, …}}
//	]}
//
// Artifact URLs may be relative to the catalog's own URL or path.
type Catalog struct {
	// Source is where the catalog was read from ("builtin", a URL or a
	// path).
	Source string `json:"-"`
	// Images are the entries, each a recipe or an artifact set.
	Images []CatalogEntry `json:"images"`
}

// CatalogEntry is one image a catalog offers: a Debian recipe built
// locally, or an artifact set (a URL, sha256 and size per file) pulled.
type CatalogEntry struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Recipe, when set, makes this a recipe entry.
	Recipe *debian.Recipe `json:"recipe,omitempty"`
	// Files is the artifact set: image file name -> artifact. vmlinuz,
	// initrd.img, rootfs.ext4 and work-seed.ext4 are required; vmlinux is
	// extracted from vmlinuz when absent.
	Files map[string]Artifact `json:"files,omitempty"`
	// Init is what runs as PID 1 ("systemd" or "agent").
	Init          string `json:"init,omitempty"`
	KernelVersion string `json:"kernel_version,omitempty"`
	AgentVersion  string `json:"agent_version,omitempty"`

	// Catalog is the Source of the catalog listing the entry.
	Catalog string `json:"-"`
	// base resolves relative artifact URLs.
	base string
}

// Artifact is one downloadable file of an artifact set.
type Artifact struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

func (e *CatalogEntry) verb() string {
	if e.Recipe != nil {
		return "building"
	}
	return "pulling"
}

// Validate checks that an entry is exactly one of recipe or artifact set
// and that every artifact has a checksum and a size.
func (e *CatalogEntry) Validate() error {
	if err := validName(e.Name); err != nil {
		return err
	}
	switch {
	case e.Recipe != nil && len(e.Files) > 0:
		return fmt.Errorf("catalog entry %s: both a recipe and files", e.Name)
	case e.Recipe != nil:
		r := *e.Recipe
		r.Name = e.Name
		return r.Validate()
	case len(e.Files) == 0:
		return fmt.Errorf("catalog entry %s: neither a recipe nor files", e.Name)
	}
	for _, f := range []string{image.FileVmlinuz, image.FileInitrd, image.FileRootfs, image.FileWorkSeed} {
		if _, ok := e.Files[f]; !ok {
			return fmt.Errorf("catalog entry %s: no %s", e.Name, f)
		}
	}
	for name, a := range e.Files {
		if !slices.Contains(image.BootFiles, name) {
			return fmt.Errorf("catalog entry %s: unknown file %q", e.Name, name)
		}
		if a.URL == "" || len(a.SHA256) != 64 || a.Size <= 0 {
			return fmt.Errorf("catalog entry %s: file %s needs url, sha256 (64 hex digits) and size", e.Name, name)
		}
	}
	if e.Init != "" && e.Init != image.InitSystemd && e.Init != image.InitAgent {
		return fmt.Errorf("catalog entry %s: init %q is neither %q nor %q", e.Name, e.Init, image.InitSystemd, image.InitAgent)
	}
	return nil
}

// artifactURL resolves an artifact's URL against its catalog.
func (e *CatalogEntry) artifactURL(a Artifact) (string, error) {
	u, err := url.Parse(a.URL)
	if err != nil {
		return "", fmt.Errorf("artifact url %q: %w", a.URL, err)
	}
	if u.IsAbs() || e.base == "" {
		return a.URL, nil
	}
	if filepath.IsAbs(a.URL) {
		return a.URL, nil
	}
	b, err := url.Parse(e.base)
	if err == nil && (b.Scheme == "http" || b.Scheme == "https") {
		return b.ResolveReference(u).String(), nil
	}
	return filepath.Join(filepath.Dir(e.base), filepath.FromSlash(a.URL)), nil
}

// Builtin returns the catalog compiled into banger: the Debian recipes.
func Builtin() Catalog {
	d12, d13, agents := debian.Default(), debian.Trixie(), debian.Agents()
	return Catalog{Source: BuiltinCatalog, Images: []CatalogEntry{
		{Name: d12.Name, Description: "Debian 12 (bookworm), built from packages; the default image", Recipe: &d12, Catalog: BuiltinCatalog},
		{Name: d13.Name, Description: "Debian 13 (trixie), built from packages", Recipe: &d13, Catalog: BuiltinCatalog},
		{Name: agents.Name, Description: "Debian 12 with Node.js, git, build-essential, ripgrep, jq, python3, tmux and the coding-agent CLIs " +
			"Claude Code, opencode and Codex (installed from npm when the image is built)", Recipe: &agents, Catalog: BuiltinCatalog},
	}}
}

// Catalogs returns the built-in catalog followed by those listed in the
// config (`catalogs`: http(s) URLs or absolute paths), in order. A
// catalog that cannot be read is an error naming it.
func (m *Manager) Catalogs(ctx context.Context) ([]Catalog, error) {
	out := []Catalog{Builtin()}
	if m.Config == nil {
		return out, nil
	}
	for _, src := range m.Config.Catalogs {
		c, err := m.loadCatalog(ctx, src)
		if err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, nil
}

// LookupCatalog returns the first catalog entry called name, or nil when
// no catalog lists it. The alias "debian" names the default recipe.
func (m *Manager) LookupCatalog(ctx context.Context, name string) (*CatalogEntry, error) {
	if name == "debian" {
		name = debian.Default().Name
	}
	cats, err := m.Catalogs(ctx)
	for _, c := range cats {
		for i := range c.Images {
			if c.Images[i].Name == name {
				e := c.Images[i]
				return &e, nil
			}
		}
	}
	if err != nil {
		return nil, api.WithCode(api.CodeUnavailable, err)
	}
	return nil, nil
}

// loadCatalog reads and validates one catalog.
func (m *Manager) loadCatalog(ctx context.Context, src string) (Catalog, error) {
	rc, err := m.open(ctx, src, 0)
	if err != nil {
		return Catalog{}, fmt.Errorf("catalog %s: %w", src, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxCatalogBytes+1))
	if err != nil {
		return Catalog{}, fmt.Errorf("catalog %s: %w", src, err)
	}
	if len(data) > maxCatalogBytes {
		return Catalog{}, fmt.Errorf("catalog %s: larger than %d bytes", src, maxCatalogBytes)
	}
	c, err := ParseCatalog(src, data)
	if err != nil {
		return Catalog{}, err
	}
	return c, nil
}

// ParseCatalog decodes (strictly) and validates a catalog read from src.
func ParseCatalog(src string, data []byte) (Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Catalog{}, fmt.Errorf("catalog %s: %w", src, err)
	}
	c.Source = src
	for i := range c.Images {
		e := &c.Images[i]
		if r := e.Recipe; r != nil {
			// A recipe may name just its suite: the default mirror and
			// banger's base packages fill the rest.
			r.Name = e.Name
			if r.Mirror == "" {
				r.Mirror = debian.DefaultMirror
			}
			if len(r.Packages) == 0 {
				r.Packages = debian.Default().Packages
			}
		}
		if err := e.Validate(); err != nil {
			return Catalog{}, fmt.Errorf("catalog %s: %w", src, err)
		}
		e.Catalog, e.base = src, src
	}
	return c, nil
}

// open reads a URL (http, https, file) or a local path, starting at
// offset (0 for all). For http it returns a *rangeBody that says whether
// the server honoured the offset.
func (m *Manager) open(ctx context.Context, src string, offset int64) (io.ReadCloser, error) {
	u, err := url.Parse(src)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, err
		}
		if offset > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		}
		hc := m.HTTPClient
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusPartialContent && offset > 0:
			return &rangeBody{ReadCloser: resp.Body, resumed: true}, nil
		case resp.StatusCode == http.StatusOK:
			return &rangeBody{ReadCloser: resp.Body}, nil
		default:
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
		}
	}
	path := src
	if err == nil && u.Scheme == "file" {
		path = u.Path
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%q is neither an http(s) URL nor an absolute path", src)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
		return &rangeBody{ReadCloser: f, resumed: true}, nil
	}
	return &rangeBody{ReadCloser: f}, nil
}

// rangeBody is a download body that knows whether it starts at the
// requested offset (resumed) or at byte 0.
type rangeBody struct {
	io.ReadCloser
	resumed bool
}
