package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Image endpoints. {ref} is an image name, id or unique id prefix.
const (
	PathImages      = "/v1/images"
	PathImage       = "/v1/images/{ref}"
	PathImageBuild  = "/v1/images/build"
	PathImagePull   = "/v1/images/pull"
	PathImageImport = "/v1/images/import"
	PathImageExport = "/v1/images/{ref}/export"
	// ContentTypeTar is the type of an exported image stream.
	ContentTypeTar = "application/x-tar"
)

// Operation kinds of image work.
const (
	OpImageBuild  = "image.build"
	OpImagePull   = "image.pull"
	OpImageImport = "image.import"
)

// ImageSource says where an image came from: Kind is "recipe",
// "dockerfile", "oci", "pull" or "import"; Ref the recipe name,
// Dockerfile path, OCI reference, catalog entry or archive.
type ImageSource struct {
	Kind string `json:"kind"`
	Ref  string `json:"ref,omitempty"`
}

// String renders the source as "kind:ref" (or "kind").
func (s ImageSource) String() string {
	if s.Ref == "" {
		return s.Kind
	}
	return s.Kind + ":" + s.Ref
}

// Image is a registered image as the daemon reports it.
type Image struct {
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	Source        ImageSource `json:"source"`
	SizeBytes     int64       `json:"size_bytes"`
	Created       time.Time   `json:"created"`
	KernelVersion string      `json:"kernel_version,omitempty"`
	AgentVersion  string      `json:"agent_version,omitempty"`
	// Init is "systemd" or "agent" (banger-agent runs as PID 1).
	Init string `json:"init,omitempty"`
	// NPMPackages are the npm packages the build installed globally in
	// the image, sorted by name.
	NPMPackages []NPMPackage `json:"npm_packages,omitempty"`
	// Dir is the image directory on the daemon's host.
	Dir string `json:"dir"`
	// UsedBy names the VMs built from the image.
	UsedBy []string `json:"used_by"`
}

// NPMPackage is an npm package installed in an image and its version.
type NPMPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// BuildImageRequest starts an image build: either a Debian recipe
// (Recipe "debian" for the default recipe, or a recipe name such as
// "debian-13") or a Dockerfile (Dockerfile set; Recipe empty). Paths are
// absolute on the daemon's host. The response is an OperationRef whose
// result is an Image.
type BuildImageRequest struct {
	Recipe string `json:"recipe,omitempty"`
	// Packages are extra Debian packages for a recipe build.
	Packages []string `json:"packages,omitempty"`
	// Name overrides the image name.
	Name string `json:"name,omitempty"`
	// Dockerfile is the Dockerfile path of a Dockerfile build.
	Dockerfile string `json:"dockerfile,omitempty"`
	// Context is the build context directory (default: the Dockerfile's
	// directory).
	Context string `json:"context,omitempty"`
}

// PullImageRequest pulls (or builds) a catalog image by name. The
// response is an OperationRef whose result is an Image.
type PullImageRequest struct {
	Name string `json:"name"`
}

// ImportImageRequest imports an image from Ref: an OCI registry
// reference, an OCI layout directory, a `docker save` or OCI tar archive,
// or a banger export tarball (absolute paths). Name overrides the image
// name. The response is an OperationRef whose result is an Image.
type ImportImageRequest struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"`
}

// imagePath fills the {ref} of an image path.
func imagePath(pattern, ref string) string {
	return strings.Replace(pattern, "{ref}", url.PathEscape(ref), 1)
}

// Images lists the registered images, by name.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	err := c.Do(ctx, http.MethodGet, PathImages, nil, &out)
	return out, err
}

// Image returns one image by name, id or id prefix.
func (c *Client) Image(ctx context.Context, ref string) (Image, error) {
	var out Image
	err := c.Do(ctx, http.MethodGet, imagePath(PathImage, ref), nil, &out)
	return out, err
}

// RemoveImage deletes an image. It is refused (conflict) while a VM uses
// it; force removes an image whose files or record are damaged, never one
// a VM still uses.
func (c *Client) RemoveImage(ctx context.Context, ref string, force bool) error {
	p := imagePath(PathImage, ref)
	if force {
		p += "?force=1"
	}
	return c.Do(ctx, http.MethodDelete, p, nil, nil)
}

// BuildImage starts an image build.
func (c *Client) BuildImage(ctx context.Context, req BuildImageRequest) (OperationRef, error) {
	var ref OperationRef
	err := c.Do(ctx, http.MethodPost, PathImageBuild, req, &ref)
	return ref, err
}

// PullImage starts pulling (or building) a catalog image.
func (c *Client) PullImage(ctx context.Context, req PullImageRequest) (OperationRef, error) {
	var ref OperationRef
	err := c.Do(ctx, http.MethodPost, PathImagePull, req, &ref)
	return ref, err
}

// ImportImage starts an import.
func (c *Client) ImportImage(ctx context.Context, req ImportImageRequest) (OperationRef, error) {
	var ref OperationRef
	err := c.Do(ctx, http.MethodPost, PathImageImport, req, &ref)
	return ref, err
}

// ExportImage returns the image as a tar stream that ImportImage accepts;
// the caller reads and closes it.
func (c *Client) ExportImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	return c.Stream(ctx, http.MethodGet, imagePath(PathImageExport, ref), nil)
}

// PathDefaultImage reports the state of the configured default image.
const PathDefaultImage = "/v1/default-image"

// DefaultImageState says whether the default image is present, can be made
// on first use (built from a recipe or pulled), or is missing.
type DefaultImageState struct {
	Name   string `json:"name"`
	State  string `json:"state"` // present | buildable | missing
	Detail string `json:"detail"`
}

// DefaultImage asks the daemon about the default image.
func (c *Client) DefaultImage(ctx context.Context) (DefaultImageState, error) {
	var out DefaultImageState
	err := c.Do(ctx, http.MethodGet, PathDefaultImage, nil, &out)
	return out, err
}
