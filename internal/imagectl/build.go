package imagectl

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/operation"
	"banger/internal/store"
	"banger/internal/units"
)

// BuildRequest is what `banger image build` asks for: a catalog recipe
// (Recipe "debian" or a recipe name) with extra packages, or a Dockerfile
// with its context directory.
type BuildRequest struct {
	Recipe     string
	Packages   []string
	Name       string
	Dockerfile string
	Context    string
}

// Build makes an image from a recipe or a Dockerfile and registers it.
func (m *Manager) Build(ctx context.Context, op *operation.Op, req BuildRequest) (store.Image, error) {
	if req.Dockerfile != "" {
		if req.Recipe != "" || len(req.Packages) > 0 {
			return store.Image{}, api.Errorf(api.CodeInvalid, "a Dockerfile build takes no recipe and no --package (install packages in the Dockerfile)")
		}
		return m.buildDockerfile(ctx, op, req)
	}
	if req.Recipe == "" {
		return store.Image{}, api.Errorf(api.CodeInvalid, "build what? name a recipe (debian, debian-13, agents) or a Dockerfile (-f)")
	}
	e, err := m.LookupCatalog(ctx, req.Recipe)
	if err != nil {
		return store.Image{}, err
	}
	if e == nil || e.Recipe == nil {
		var recipes []string
		cats, _ := m.Catalogs(ctx)
		for _, c := range cats {
			for _, ce := range c.Images {
				if ce.Recipe != nil {
					recipes = append(recipes, ce.Name)
				}
			}
		}
		msg := fmt.Sprintf("no recipe %q", req.Recipe)
		if e != nil {
			msg = fmt.Sprintf("%s is an artifact set, not a recipe: use `banger image pull %s`", req.Recipe, req.Recipe)
		}
		return store.Image{}, api.Errorf(api.CodeNotFound, "%s (recipes: debian, %s)", msg, strings.Join(recipes, ", "))
	}
	name := req.Name
	if name == "" {
		name = e.Name
	}
	unlock, err := m.lockName(ctx, name)
	if err != nil {
		return store.Image{}, err
	}
	defer unlock()
	return m.makeEntry(ctx, op, e, name, req.Packages)
}

// buildRecipe builds a Debian recipe (its Name is the image name) with
// the bootstrap cached under BuildCacheDir by the recipe hash.
func (m *Manager) buildRecipe(ctx context.Context, op *operation.Op, r debian.Recipe) (store.Image, error) {
	if err := r.Validate(); err != nil {
		return store.Image{}, api.WithCode(api.CodeInvalid, err)
	}
	agent, err := m.AgentBinary()
	if err != nil {
		return store.Image{}, err
	}
	cache := m.BuildCacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return store.Image{}, fmt.Errorf("build cache %s: %w", cache, err)
	}
	tr := newStageTracker(op)
	tr.plan(debian.StageBootstrap, debian.StageInitramfs, debian.StageConfigure, debian.StageKernel, debian.StageFilesystem, StageRegister)
	if _, err := os.Stat(debian.CachePath(cache, r)); err == nil {
		logf(op, "bootstrap cache hit: recipe %s (hash %s)", r.Name, units.ShortID(r.Hash()))
	} else {
		logf(op, "bootstrap cache miss: recipe %s (hash %s); running mmdebstrap, this takes minutes", r.Name, units.ShortID(r.Hash()))
	}
	build := m.BuildRecipe
	if build == nil {
		build = debian.Build
	}
	return m.produce(ctx, op, r.Name, func(ctx context.Context, dir string, log io.Writer) (*image.Manifest, error) {
		fmt.Fprintf(log, "recipe %s: suite %s, mirror %s, packages %s (hash %s)\n", r.Name, r.Suite, r.Mirror, strings.Join(r.AllPackages(), " "), r.Hash())
		if len(r.NPMPackages) > 0 {
			fmt.Fprintf(log, "recipe %s: npm packages %s (latest from npm's configured registry)\n", r.Name, strings.Join(r.NPMPackages, " "))
		}
		logPath := ""
		if f, ok := log.(*os.File); ok {
			logPath = f.Name()
		}
		man, err := build(ctx, r, debian.BuildOptions{
			AgentBin: agent,
			CacheDir: cache,
			// Temporary trees live in the staging dir: same filesystem
			// as the image, and removed with it after a crash.
			WorkDir:  dir,
			Log:      log,
			LogPath:  logPath,
			Progress: tr.report,
			Packages: tr.packages,
		}, dir)
		if err != nil {
			return nil, err
		}
		if man.Source.Kind == "" {
			man.Source = image.Source{Kind: image.SourceRecipe, Ref: r.Name, RecipeHash: r.Hash()}
		}
		if len(r.ExtraPackages) > 0 && !strings.Contains(man.Source.Ref, "+") {
			man.Source.Ref += " +" + strings.Join(slices.Clone(r.ExtraPackages), ",")
		}
		return man, nil
	})
}
