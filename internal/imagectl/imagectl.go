// Package imagectl orchestrates banger's images in the daemon: it finds
// a registered image or makes one (Debian recipe builds, Dockerfile
// builds, catalog pulls, OCI and archive imports), registers it, removes
// it and exports it.
//
// Every image is made the same way: in a staging directory from
// image.Store.Stage, committed with image.Store.Commit (a rename into
// place), and only then recorded in the SQLite store. A failure or a
// cancel removes the staging directory and registers nothing. Long work
// reports its stages on an operation.Op and writes a full log to
// <state>/logs/image-<name>-<time>.log.
package imagectl

import (
	"banger/internal/suggest"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
)

// Environment variables that override where imagectl finds things.
const (
	// EnvAgentBin names the banger-agent binary baked into images
	// (default: banger-agent beside the running executable).
	EnvAgentBin = "BANGER_AGENT_BIN"
	// EnvImageCache names the build cache directory (default:
	// <cache dir>/images). Tests and CI point it at a persistent place.
	EnvImageCache = "BANGER_IMAGE_CACHE"
)

// AgentBinName is the file name of the guest agent binary.
const AgentBinName = "banger-agent"

// Log attribute keys.
const (
	logKeyImage = "image"
	logKeyErr   = "err"
	logKeyLog   = "log"
)

// RecipeBuilder builds a Debian recipe's boot set into outDir (see
// debian.Build, the default).
type RecipeBuilder func(ctx context.Context, r debian.Recipe, opts debian.BuildOptions, outDir string) (*image.Manifest, error)

// Manager makes, finds and removes images. Set the fields, then use it;
// New fills the defaults. It is safe for concurrent use: work on the same
// image name is serialized, so two VM creates needing the same missing
// image share one build.
type Manager struct {
	// Store records images (and knows which VMs use them).
	Store *store.Store
	// Images is the image directory.
	Images *image.Store
	// Config supplies default_image and extra catalogs.
	Config *config.Config
	// Paths locate the state dir (build logs) and the cache dir.
	Paths config.Paths
	// Logger receives one line per image made or removed.
	Logger *slog.Logger

	// AgentBin is the banger-agent binary to bake in; "" means
	// $BANGER_AGENT_BIN, else banger-agent beside os.Executable.
	AgentBin string
	// CacheDir is the build cache; "" means $BANGER_IMAGE_CACHE, else
	// <Paths.CacheDir>/images.
	CacheDir string
	// BuildRecipe builds Debian recipes; debian.Build by default.
	BuildRecipe RecipeBuilder
	// HTTPClient fetches catalogs and artifacts; http.DefaultClient when
	// nil.
	HTTPClient *http.Client
	// Now is the clock (log file names).
	Now func() time.Time

	mu    sync.Mutex
	locks map[string]chan struct{}
}

// New returns a Manager over st and images with the defaults filled in.
func New(st *store.Store, images *image.Store, cfg *config.Config, paths config.Paths, logger *slog.Logger) *Manager {
	if cfg == nil {
		cfg = config.Default()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		Store:       st,
		Images:      images,
		Config:      cfg,
		Paths:       paths,
		Logger:      logger,
		BuildRecipe: debian.Build,
		Now:         time.Now,
	}
}

func (m *Manager) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// DefaultImageName is the image a VM gets when none is named.
func (m *Manager) DefaultImageName() string {
	if m.Config != nil && m.Config.DefaultImage != "" {
		return m.Config.DefaultImage
	}
	return config.DefaultImageName
}

// AgentBinary returns the banger-agent binary to bake into images:
// Manager.AgentBin, else $BANGER_AGENT_BIN, else banger-agent in the
// directory of the running executable. A missing file is an unavailable
// error saying how to provide one.
func (m *Manager) AgentBinary() (string, error) {
	p, how := m.AgentBin, "the daemon's agent binary setting"
	if p == "" {
		if p = os.Getenv(EnvAgentBin); p != "" {
			how = "$" + EnvAgentBin
		}
	}
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", api.Errorf(api.CodeUnavailable, "find %s: %w (set $%s)", AgentBinName, err, EnvAgentBin)
		}
		p, how = filepath.Join(filepath.Dir(exe), AgentBinName), "beside "+exe
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", api.Errorf(api.CodeUnavailable, "%s not found at %s (%s): build it with `make build` or set $%s to its path: %w", AgentBinName, p, how, EnvAgentBin, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", api.Errorf(api.CodeUnavailable, "%s at %s (%s) is not an executable file", AgentBinName, p, how)
	}
	return p, nil
}

// BuildCacheDir returns the build cache directory (see CacheDir).
func (m *Manager) BuildCacheDir() string {
	if m.CacheDir != "" {
		return m.CacheDir
	}
	if d := os.Getenv(EnvImageCache); d != "" {
		return d
	}
	return filepath.Join(m.Paths.CacheDir, "images")
}

// lockName serializes work on one image name; the returned func unlocks.
func (m *Manager) lockName(ctx context.Context, name string) (func(), error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]chan struct{}{}
	}
	ch, ok := m.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		m.locks[name] = ch
	}
	m.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for other work on image %s: %w", name, ctx.Err())
	}
}

// Get returns the registered image named by ref (name, id or unique id
// prefix).
func (m *Manager) Get(ctx context.Context, ref string) (store.Image, error) {
	img, err := m.Store.GetImage(ctx, ref)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Image{}, m.notFound(ctx, ref)
		}
		return store.Image{}, err
	}
	return img, nil
}

// List returns every registered image, by name.
func (m *Manager) List(ctx context.Context) ([]store.Image, error) {
	return m.Store.ListImages(ctx)
}

// Ensure returns the image named by ref. When no image is registered
// under ref but a catalog lists it, it is built (recipe) or pulled
// (artifact set) first, reporting stages on op (which may be nil). An
// unknown ref is a not-found error listing close local names and the
// catalog names.
func (m *Manager) Ensure(ctx context.Context, op *operation.Op, ref string) (store.Image, error) {
	if ref == "" {
		ref = m.DefaultImageName()
	}
	img, err := m.Store.GetImage(ctx, ref)
	if err == nil {
		return img, m.checkPresent(img)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Image{}, err
	}
	entry, cerr := m.LookupCatalog(ctx, ref)
	if cerr != nil {
		return store.Image{}, cerr
	}
	if entry == nil {
		return store.Image{}, m.notFound(ctx, ref)
	}
	unlock, err := m.lockName(ctx, entry.Name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	// Another caller may have made it while we waited.
	if img, err := m.Store.GetImage(ctx, entry.Name); err == nil {
		return img, m.checkPresent(img)
	}
	logf(op, "image %s is not registered; %s it from catalog %s", entry.Name, entry.verb(), entry.Catalog)
	return m.makeEntry(ctx, op, entry, entry.Name, nil)
}

// checkPresent reports an image whose record exists but whose directory
// does not hold a manifest (removed by hand, or a damaged disk).
func (m *Manager) checkPresent(img store.Image) error {
	if _, err := os.Stat(filepath.Join(img.Dir, image.FileManifest)); err != nil {
		return api.Errorf(api.CodeConflict, "image %s is damaged (%v); remove it with `banger image rm --force %s` and make it again", img.Name, err, img.Name)
	}
	return nil
}

// makeEntry builds or pulls a catalog entry under name.
func (m *Manager) makeEntry(ctx context.Context, op *operation.Op, e *CatalogEntry, name string, extra []string) (store.Image, error) {
	if e.Recipe != nil {
		r := *e.Recipe
		r.Name = name
		r.ExtraPackages = append(slices.Clone(r.ExtraPackages), extra...)
		return m.buildRecipe(ctx, op, r)
	}
	return m.pull(ctx, op, e, name)
}

// notFound builds the not-found error for ref: close local names and
// every catalog name.
func (m *Manager) notFound(ctx context.Context, ref string) error {
	var local []string
	if imgs, err := m.Store.ListImages(ctx); err == nil {
		for _, img := range imgs {
			local = append(local, img.Name)
		}
	}
	var catalogNames []string
	cats, _ := m.Catalogs(ctx)
	for _, c := range cats {
		for _, e := range c.Images {
			if !slices.Contains(catalogNames, e.Name) {
				catalogNames = append(catalogNames, e.Name)
			}
		}
	}
	msg := fmt.Sprintf("image %q not found", ref)
	if s := suggest.Closest(ref, slices.Concat(local, catalogNames)); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, ", ") + "?"
	}
	if len(catalogNames) > 0 {
		msg += " (catalog images: " + strings.Join(catalogNames, ", ") + ")"
	}
	return api.Errorf(api.CodeNotFound, "%s", msg)
}

// Remove deletes the image named by ref: its record, then its files. It
// is refused (conflict, naming them) while VMs use the image. With force
// it also removes an image directory that was committed but never
// registered (named by id or by its manifest's name); force never removes
// an image a VM still uses.
func (m *Manager) Remove(ctx context.Context, ref string, force bool) error {
	img, err := m.Store.GetImage(ctx, ref)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) && force {
			if id := m.unregisteredDir(ref); id != "" {
				if err := m.Images.Remove(id); err != nil {
					return err
				}
				m.logger().Info("removed unregistered image directory", logKeyImage, id)
				return nil
			}
		}
		if errors.Is(err, store.ErrNotFound) {
			return m.notFound(ctx, ref)
		}
		return err
	}
	unlock, err := m.lockName(ctx, img.Name)
	if err != nil {
		return err
	}
	defer unlock()
	users, err := m.Store.ImageInUse(ctx, img.ID)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return api.Errorf(api.CodeConflict, "image %s is used by vm %s; delete those VMs first (--force does not remove an image in use)", img.Name, strings.Join(users, ", "))
	}
	if err := m.Store.DeleteImage(ctx, img.ID); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return api.WithCode(api.CodeConflict, fmt.Errorf("remove image %s: %w", img.Name, err))
		}
		return fmt.Errorf("remove image %s: %w", img.Name, err)
	}
	if err := m.removeDir(img); err != nil {
		return err
	}
	m.logger().Info("removed image", logKeyImage, img.Name, "id", img.ID)
	return nil
}

// removeDir removes an image's files; the directory must be the store's
// own, never an arbitrary path from the record.
func (m *Manager) removeDir(img store.Image) error {
	if filepath.Clean(img.Dir) != m.Images.Path(filepath.Base(img.Dir)) {
		return fmt.Errorf("remove image %s: directory %s is outside the image store %s", img.Name, img.Dir, m.Images.Dir)
	}
	if err := m.Images.Remove(filepath.Base(img.Dir)); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Name, err)
	}
	return nil
}

// unregisteredDir finds a committed image directory named by ref (its id,
// or the name in its manifest) that has no record.
func (m *Manager) unregisteredDir(ref string) string {
	if image.ValidID(ref) == nil {
		if _, err := os.Stat(m.Images.Path(ref)); err == nil {
			return ref
		}
	}
	ents, err := os.ReadDir(m.Images.Dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(m.Images.Dir, e.Name(), image.FileManifest))
		if err != nil {
			continue
		}
		var man struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(data, &man) == nil && man.Name == ref {
			if _, err := m.Store.GetImage(context.Background(), e.Name()); errors.Is(err, store.ErrNotFound) {
				return e.Name()
			}
		}
	}
	return ""
}

// Manifest decodes the manifest recorded with img.
func Manifest(img store.Image) (*image.Manifest, error) {
	var man image.Manifest
	if len(img.Manifest) == 0 {
		return &man, nil
	}
	if err := json.Unmarshal(img.Manifest, &man); err != nil {
		return nil, fmt.Errorf("image %s: decode manifest: %w", img.Name, err)
	}
	return &man, nil
}

// Info returns the wire form of img, with the VMs that use it.
func (m *Manager) Info(ctx context.Context, img store.Image) (api.Image, error) {
	man, err := Manifest(img)
	if err != nil {
		return api.Image{}, err
	}
	users, err := m.Store.ImageInUse(ctx, img.ID)
	if err != nil {
		return api.Image{}, err
	}
	if users == nil {
		users = []string{}
	}
	return api.Image{
		ID:            img.ID,
		Name:          img.Name,
		Source:        api.ImageSource{Kind: man.Source.Kind, Ref: man.Source.Ref},
		SizeBytes:     img.SizeBytes,
		Created:       img.CreatedAt,
		KernelVersion: man.KernelVersion,
		AgentVersion:  man.AgentVersion,
		Init:          man.Init,
		NPMPackages:   npmPackages(man.NPMPackages),
		Dir:           img.Dir,
		UsedBy:        users,
	}, nil
}

// npmPackages is a manifest's npm packages in wire form, sorted by name.
func npmPackages(m map[string]string) []api.NPMPackage {
	var out []api.NPMPackage
	for _, name := range slices.Sorted(maps.Keys(m)) {
		out = append(out, api.NPMPackage{Name: name, Version: m[name]})
	}
	return out
}

// DefaultImage states reported by DefaultImageState.
const (
	StatePresent   = "present"
	StateBuildable = "buildable"
	StateMissing   = "missing"
)

// DefaultImageState tells doctor about the default image: "present"
// (registered), "buildable" (a catalog recipe whose tools and agent
// binary are here, or an artifact set to pull) or "missing", with a
// detail line.
func (m *Manager) DefaultImageState(ctx context.Context) (state, detail string) {
	name := m.DefaultImageName()
	if img, err := m.Store.GetImage(ctx, name); err == nil {
		if err := m.checkPresent(img); err != nil {
			return StateMissing, err.Error()
		}
		return StatePresent, fmt.Sprintf("%s (%s, %s)", img.Name, units.ShortID(img.ID), units.Bytes(img.SizeBytes))
	}
	e, err := m.LookupCatalog(ctx, name)
	if err != nil {
		return StateMissing, err.Error()
	}
	if e == nil {
		return StateMissing, fmt.Sprintf("%s is neither registered nor in a catalog", name)
	}
	if e.Recipe == nil {
		return StateBuildable, fmt.Sprintf("%s can be pulled from catalog %s on first use", name, e.Catalog)
	}
	if _, err := m.AgentBinary(); err != nil {
		return StateMissing, fmt.Sprintf("%s cannot be built: %v", name, err)
	}
	if _, err := lookPath("mmdebstrap"); err != nil {
		return StateMissing, fmt.Sprintf("%s cannot be built: mmdebstrap not found (apt install mmdebstrap)", name)
	}
	return StateBuildable, fmt.Sprintf("%s is built from Debian packages on first use (`banger image build debian`)", name)
}

// logFile opens the build log for one image.
func (m *Manager) logFile(name string) (*os.File, error) {
	dir := filepath.Join(m.Paths.StateDir, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	p := filepath.Join(dir, fmt.Sprintf("image-%s-%s.log", name, m.now().UTC().Format("20060102T150405.000Z")))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	return f, nil
}

// filler makes an image's files in dir and returns its manifest (files
// are hashed by Commit). log receives the full log.
type filler func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error)

// produce runs fill in a staging directory and registers the result
// under name: Stage, fill, Commit (rename into place), then the store
// row. On any failure (or cancel) the staging directory or the committed
// directory is removed and nothing is registered. The log path appears
// in the operation's log and in the error.
func (m *Manager) produce(ctx context.Context, op *operation.Op, name string, fill filler) (_ store.Image, err error) {
	if err := validName(name); err != nil {
		return store.Image{}, err
	}
	if _, err := m.Store.GetImage(ctx, name); err == nil {
		return store.Image{}, api.Errorf(api.CodeConflict, "image %s already exists; remove it first (`banger image rm %s`) or choose another --name", name, name)
	}
	lf, err := m.logFile(name)
	if err != nil {
		return store.Image{}, err
	}
	defer lf.Close()
	logPath := lf.Name()
	logf(op, "log: %s", logPath)
	defer func() {
		if err != nil {
			fmt.Fprintf(lf, "error: %v\n", err)
			if !strings.Contains(err.Error(), logPath) {
				err = wrapKeep(err, fmt.Sprintf("image %s (log: %s)", name, logPath))
			}
			m.logger().Warn("image failed", logKeyImage, name, logKeyLog, logPath, logKeyErr, err)
		}
	}()

	dir, err := m.Images.Stage(ctx)
	if err != nil {
		return store.Image{}, err
	}
	committed := ""
	defer func() {
		if err == nil {
			return
		}
		if committed != "" {
			if rerr := m.Images.Remove(filepath.Base(committed)); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove staging dir: %w", rerr))
		}
	}()

	man, err := fill(ctx, dir, lf)
	if err != nil {
		return store.Image{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Image{}, err
	}
	man.Name = name
	if man.ID == "" || m.idTaken(ctx, man.ID) {
		man.ID = image.NewID()
	}
	s := stage(op, StageRegister)
	committed, err = m.Images.Commit(ctx, dir, man)
	if err != nil {
		return store.Image{}, s.fail(err)
	}
	data, err := json.Marshal(man)
	if err != nil {
		return store.Image{}, s.fail(fmt.Errorf("encode manifest: %w", err))
	}
	img := store.Image{
		ID:        man.ID,
		Name:      name,
		Dir:       committed,
		Source:    api.ImageSource{Kind: man.Source.Kind, Ref: man.Source.Ref}.String(),
		SizeBytes: man.SizeBytes,
		Manifest:  data,
		CreatedAt: man.Created,
	}
	if err := m.Store.CreateImage(ctx, img); err != nil {
		if errors.Is(err, store.ErrConflict) {
			err = api.WithCode(api.CodeConflict, err)
		}
		return store.Image{}, s.fail(err)
	}
	s.detail("%s (%s, %s)", name, units.ShortID(man.ID), units.Bytes(man.SizeBytes))
	s.done()
	fmt.Fprintf(lf, "registered image %s id %s in %s\n", name, man.ID, committed)
	m.logger().Info("image registered", logKeyImage, name, "id", man.ID, "source", img.Source, logKeyLog, logPath)
	return m.Store.GetImage(ctx, man.ID)
}

// idTaken reports whether an image id is already used (by a record or a
// directory).
func (m *Manager) idTaken(ctx context.Context, id string) bool {
	if image.ValidID(id) != nil {
		return true
	}
	if _, err := os.Lstat(m.Images.Path(id)); err == nil {
		return true
	}
	img, err := m.Store.GetImage(ctx, id)
	return err == nil && img.ID == id
}

// validName accepts image names that are safe in file names and on the
// command line: lowercase letters, digits, '.', '_' and '-'.
func validName(name string) error {
	if image.ValidID(name) != nil {
		return api.Errorf(api.CodeInvalid, "invalid image name %q: use lowercase letters, digits, '.', '_' and '-' (at most 64)", name)
	}
	return nil
}

// wrapKeep prefixes err's message with context and keeps its api code.
func wrapKeep(err error, prefix string) error {
	werr := fmt.Errorf("%s: %w", prefix, err)
	var ae *api.Error
	if errors.As(err, &ae) {
		return api.WithCode(ae.Code, werr)
	}
	return werr
}
