package daemon

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/imagectl"
	"banger/internal/operation"
	"banger/internal/store"
)

func (d *Daemon) imageRoutes() []Route {
	return []Route{
		{"GET " + api.PathImages, d.handleListImages},
		{"GET " + api.PathImage, d.handleGetImage},
		{"DELETE " + api.PathImage, d.handleRemoveImage},
		{"GET " + api.PathImageExport, d.handleExportImage},
		{"POST " + api.PathImageBuild, d.handleBuildImage},
		{"POST " + api.PathImagePull, d.handlePullImage},
		{"POST " + api.PathImageImport, d.handleImportImage},
		{"GET " + api.PathDefaultImage, d.handleDefaultImage},
	}
}

func (d *Daemon) handleDefaultImage(w http.ResponseWriter, r *http.Request) error {
	m := d.ImageManager()
	state, detail := m.DefaultImageState(r.Context())
	return writeJSON(w, http.StatusOK, api.DefaultImageState{Name: m.DefaultImageName(), State: state, Detail: detail})
}

// ImageManager returns the daemon's image manager, made on first use
// from the store, config and paths. The first call also removes staging
// directories left by a build that a previous daemon did not finish.
func (d *Daemon) ImageManager() *imagectl.Manager {
	d.imagesOnce.Do(func() {
		st := &image.Store{Dir: d.Paths.ImagesDir}
		if err := st.Clean(); err != nil {
			d.Logger.Warn("clean image store", logKeyErr, err)
		}
		d.Images = imagectl.New(d.Store, st, d.Config, d.Paths, d.Logger)
	})
	return d.Images
}

func (d *Daemon) handleListImages(w http.ResponseWriter, r *http.Request) error {
	m := d.ImageManager()
	imgs, err := m.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		info, err := m.Info(r.Context(), img)
		if err != nil {
			return err
		}
		out = append(out, info)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (d *Daemon) handleGetImage(w http.ResponseWriter, r *http.Request) error {
	m := d.ImageManager()
	img, err := m.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	info, err := m.Info(r.Context(), img)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, info)
}

func (d *Daemon) handleRemoveImage(w http.ResponseWriter, r *http.Request) error {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return api.Errorf(api.CodeInvalid, "force=%q: want true or false", v)
		}
	}
	img, err := d.Store.GetImage(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	if err := d.ImageManager().Remove(r.Context(), img.ID, force); err != nil {
		return err
	}
	// Its warm templates restore nothing without it.
	if err := d.VMs.DropTemplates(img.ID); err != nil {
		d.Logger.Warn("remove warm templates", "image", img.Name, logKeyErr, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleExportImage streams the image as a tar; an error before the
// first byte is a JSON error, after it the stream is cut short (the
// importer rejects a truncated archive).
func (d *Daemon) handleExportImage(w http.ResponseWriter, r *http.Request) error {
	m := d.ImageManager()
	img, err := m.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", api.ContentTypeTar)
	w.Header().Set("Content-Disposition", "attachment; filename="+strconv.Quote(img.Name+".tar"))
	return m.Export(r.Context(), img.ID, &lazyWriter{w: w})
}

// lazyWriter sends the 200 status only with the first byte, so an error
// found before any output still becomes a JSON error response.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

func (d *Daemon) handleBuildImage(w http.ResponseWriter, r *http.Request) error {
	var req api.BuildImageRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	for _, p := range []string{req.Dockerfile, req.Context} {
		if p != "" && !filepath.IsAbs(p) {
			return api.Errorf(api.CodeInvalid, "path %q must be absolute", p)
		}
	}
	if req.Recipe == "" && req.Dockerfile == "" {
		return api.Errorf(api.CodeInvalid, "build what? name a recipe (debian, debian-13, agents) or a Dockerfile")
	}
	return d.startImageOp(w, api.OpImageBuild, func(ctx context.Context, op *operation.Op) (any, error) {
		return d.imageResult(ctx, op, func(m *imagectl.Manager) (store.Image, error) {
			return m.Build(ctx, op, imagectl.BuildRequest{
				Recipe: req.Recipe, Packages: req.Packages, Name: req.Name,
				Dockerfile: req.Dockerfile, Context: req.Context,
			})
		})
	})
}

func (d *Daemon) handlePullImage(w http.ResponseWriter, r *http.Request) error {
	var req api.PullImageRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Name == "" {
		return api.Errorf(api.CodeInvalid, "pull what? name a catalog image")
	}
	return d.startImageOp(w, api.OpImagePull, func(ctx context.Context, op *operation.Op) (any, error) {
		return d.imageResult(ctx, op, func(m *imagectl.Manager) (store.Image, error) {
			return m.Pull(ctx, op, req.Name)
		})
	})
}

func (d *Daemon) handleImportImage(w http.ResponseWriter, r *http.Request) error {
	var req api.ImportImageRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.Ref == "" {
		return api.Errorf(api.CodeInvalid, "import what? give a registry reference, an OCI layout directory or an archive")
	}
	return d.startImageOp(w, api.OpImageImport, func(ctx context.Context, op *operation.Op) (any, error) {
		return d.imageResult(ctx, op, func(m *imagectl.Manager) (store.Image, error) {
			return m.Import(ctx, op, req.Ref, req.Name)
		})
	})
}

// startImageOp runs fn as an operation and answers with its reference.
func (d *Daemon) startImageOp(w http.ResponseWriter, kind string, fn operation.Func) error {
	op := d.Ops.Start(kind, fn)
	return writeJSON(w, http.StatusAccepted, op.Ref())
}

// imageResult runs make and returns the wire form of the image it made,
// the operation's result.
func (d *Daemon) imageResult(ctx context.Context, op *operation.Op, make func(*imagectl.Manager) (store.Image, error)) (any, error) {
	m := d.ImageManager()
	img, err := make(m)
	if err != nil {
		return nil, err
	}
	info, err := m.Info(ctx, img)
	if err != nil {
		return nil, err
	}
	op.Logf("image %s registered (id %s)", info.Name, info.ID)
	return info, nil
}
