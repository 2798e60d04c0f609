package image

import (
	"banger/internal/suggest"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Catalog is an index of images banger can get by name: each entry is
// either a recipe (built locally by the recipe's builder) or an artifact
// set (files downloaded and verified by Pull).
type Catalog struct {
	Images []CatalogEntry `json:"images"`
}

// CatalogEntry is one named image in a catalog.
type CatalogEntry struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Recipe is the builder's input (for Debian images, the
	// internal/image/debian Recipe: suite, mirror, packages,
	// extra_packages). Set for images built locally.
	Recipe json.RawMessage `json:"recipe,omitempty"`
	// Artifacts maps an image file name (FileRootfs, ...) to where to
	// download it. Set for prebuilt images.
	Artifacts map[string]Artifact `json:"artifacts,omitempty"`
	// Init, KernelVersion and AgentVersion describe a prebuilt image;
	// Init defaults to InitSystemd.
	Init          string `json:"init,omitempty"`
	KernelVersion string `json:"kernel_version,omitempty"`
	AgentVersion  string `json:"agent_version,omitempty"`
	// Catalog is where the entry came from ("builtin", a URL or a path).
	Catalog string `json:"-"`
}

// Artifact is one downloadable file of a prebuilt image.
type Artifact struct {
	// URL is absolute, or relative to the catalog's own URL or path.
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// IsRecipe reports whether the entry is built locally.
func (e *CatalogEntry) IsRecipe() bool { return len(e.Recipe) > 0 }

//go:embed catalog.json
var builtinCatalog []byte

// BuiltinCatalogName is the Catalog field of built-in entries.
const BuiltinCatalogName = "builtin"

// Builtin returns the catalog compiled into banger: the Debian recipes.
func Builtin() (*Catalog, error) {
	c, err := ParseCatalog(builtinCatalog, BuiltinCatalogName)
	if err != nil {
		return nil, fmt.Errorf("builtin catalog: %w", err)
	}
	return c, nil
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ParseCatalog decodes and validates a catalog loaded from source (used
// to resolve relative artifact URLs and in error messages).
func ParseCatalog(data []byte, source string) (*Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", source, err)
	}
	seen := map[string]bool{}
	for i := range c.Images {
		e := &c.Images[i]
		e.Catalog = source
		if err := ValidID(e.Name); err != nil {
			return nil, fmt.Errorf("catalog %s: entry %d: %w", source, i, err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("catalog %s: %s listed twice", source, e.Name)
		}
		seen[e.Name] = true
		if e.IsRecipe() == (len(e.Artifacts) > 0) {
			return nil, fmt.Errorf("catalog %s: %s: needs exactly one of recipe and artifacts", source, e.Name)
		}
		if e.Init != "" && e.Init != InitSystemd && e.Init != InitAgent {
			return nil, fmt.Errorf("catalog %s: %s: bad init %q", source, e.Name, e.Init)
		}
		for file, a := range e.Artifacts {
			if !validFileName(file) {
				return nil, fmt.Errorf("catalog %s: %s: bad file name %q", source, e.Name, file)
			}
			if !sha256Pattern.MatchString(a.SHA256) || a.Size <= 0 || a.URL == "" {
				return nil, fmt.Errorf("catalog %s: %s: artifact %s needs url, sha256 (hex) and size", source, e.Name, file)
			}
			u, err := resolveURL(source, a.URL)
			if err != nil {
				return nil, fmt.Errorf("catalog %s: %s: artifact %s: %w", source, e.Name, file, err)
			}
			a.URL = u
			e.Artifacts[file] = a
		}
	}
	return &c, nil
}

// resolveURL makes an artifact URL absolute against its catalog source.
func resolveURL(source, ref string) (string, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	if u.IsAbs() {
		if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file" {
			return "", fmt.Errorf("unsupported url scheme %q", u.Scheme)
		}
		return u.String(), nil
	}
	if filepath.IsAbs(ref) {
		return (&url.URL{Scheme: "file", Path: ref}).String(), nil
	}
	if base, err := url.Parse(source); err == nil && (base.Scheme == "http" || base.Scheme == "https") {
		return base.ResolveReference(u).String(), nil
	}
	if filepath.IsAbs(source) {
		return (&url.URL{Scheme: "file", Path: filepath.Join(filepath.Dir(source), ref)}).String(), nil
	}
	return "", fmt.Errorf("relative url %q in a catalog without a location", ref)
}

// LoadCatalogs returns the built-in catalog merged with the catalogs at
// sources (http(s) URLs or absolute paths), in order: an entry in a later
// catalog replaces one of the same name.
func LoadCatalogs(ctx context.Context, sources []string) (*Catalog, error) {
	merged, err := Builtin()
	if err != nil {
		return nil, err
	}
	for _, src := range sources {
		data, err := readCatalog(ctx, src)
		if err != nil {
			return nil, err
		}
		c, err := ParseCatalog(data, src)
		if err != nil {
			return nil, err
		}
		for _, e := range c.Images {
			merged.replace(e)
		}
	}
	return merged, nil
}

func (c *Catalog) replace(e CatalogEntry) {
	for i := range c.Images {
		if c.Images[i].Name == e.Name {
			c.Images[i] = e
			return
		}
	}
	c.Images = append(c.Images, e)
}

// maxCatalog bounds a catalog download.
const maxCatalog = 8 << 20

func readCatalog(ctx context.Context, src string) ([]byte, error) {
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", src, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", src, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("catalog %s: %s", src, resp.Status)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxCatalog))
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", src, err)
		}
		return data, nil
	}
	if !filepath.IsAbs(src) {
		return nil, fmt.Errorf("catalog %s: neither an http(s) URL nor an absolute path", src)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", src, err)
	}
	return data, nil
}

// NotFoundError says an image name is in no catalog; it lists the close
// matches and every name the catalogs have.
type NotFoundError struct {
	Name         string
	Suggestions  []string
	CatalogNames []string
}

// Error names the image and the close matches.
func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("image %q not found", e.Name)
	if len(e.Suggestions) > 0 {
		msg += "; did you mean " + strings.Join(e.Suggestions, ", ") + "?"
	}
	if len(e.CatalogNames) > 0 {
		msg += " (catalog images: " + strings.Join(e.CatalogNames, ", ") + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Names returns the catalog's image names, sorted.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.Images))
	for _, e := range c.Images {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	return names
}

// Lookup finds an entry by name; an unknown name is a *NotFoundError
// with suggestions.
func (c *Catalog) Lookup(name string) (*CatalogEntry, error) {
	for i := range c.Images {
		if c.Images[i].Name == name {
			return &c.Images[i], nil
		}
	}
	names := c.Names()
	return nil, &NotFoundError{Name: name, Suggestions: Suggest(name, names), CatalogNames: names}
}

// Suggest returns the candidates close to name: within an edit distance
// of a third of its length (at least 2), or sharing a prefix or
// containing it, closest first.
func Suggest(name string, candidates []string) []string {
	return suggest.Closest(name, candidates)
}

// errRecipe is returned when Pull is given an entry that must be built.
var errRecipe = errors.New("is a recipe: build it instead of pulling")
