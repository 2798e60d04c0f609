package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// StageDownload prefixes the progress stage of each downloaded file
// ("download rootfs.ext4").
const StageDownload = "download"

// Puller downloads the artifacts of a catalog entry. The zero value works.
type Puller struct {
	// Client does the requests; http.DefaultClient when nil.
	Client *http.Client
	// Retries is how many times a cut download is resumed (default 5).
	Retries int
	// Backoff is the wait before the first retry, doubled each time
	// (default 500ms).
	Backoff time.Duration
}

// partialSuffix marks a file still being downloaded.
const partialSuffix = ".partial"

// Pull downloads entry's artifacts into outDir (a Store staging
// directory) with the default Puller.
func Pull(ctx context.Context, entry *CatalogEntry, outDir string, progress func(stage string, done, total int64)) (*Manifest, error) {
	return (&Puller{}).Pull(ctx, entry, outDir, progress)
}

// Pull downloads every artifact of entry into outDir. A file is fetched
// into <name>.partial; a cut connection is resumed with an HTTP Range
// request (as is a .partial left in outDir by an earlier attempt), and
// the finished file must match the catalog's size and sha256 or it is
// deleted and Pull fails naming it. The returned manifest is ready for
// Store.Commit.
func (p *Puller) Pull(ctx context.Context, entry *CatalogEntry, outDir string, progress func(stage string, done, total int64)) (*Manifest, error) {
	if entry.IsRecipe() {
		return nil, fmt.Errorf("pull %s: %w", entry.Name, errRecipe)
	}
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	names := make([]string, 0, len(entry.Artifacts))
	for n := range entry.Artifacts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		a := entry.Artifacts[name]
		stage := StageDownload + " " + name
		if err := p.fetch(ctx, a, filepath.Join(outDir, name), func(done int64) { progress(stage, done, a.Size) }); err != nil {
			return nil, fmt.Errorf("pull %s: file %s: %w", entry.Name, name, err)
		}
	}
	init := entry.Init
	if init == "" {
		init = InitSystemd
	}
	kv := entry.KernelVersion
	if kv == "" {
		if v, err := KernelVersion(filepath.Join(outDir, FileVmlinuz)); err == nil {
			kv = v
		}
	}
	return &Manifest{
		Name:          entry.Name,
		Source:        Source{Kind: SourcePull, Ref: entry.Catalog + "#" + entry.Name},
		KernelVersion: kv,
		AgentVersion:  entry.AgentVersion,
		Init:          init,
	}, nil
}

// fetch downloads one artifact to dst (via dst.partial) and verifies it.
func (p *Puller) fetch(ctx context.Context, a Artifact, dst string, progress func(int64)) error {
	partial := dst + partialSuffix
	retries := p.Retries
	if retries == 0 {
		retries = 5
	}
	backoff := p.Backoff
	if backoff == 0 {
		backoff = 500 * time.Millisecond
	}
	var lastErr error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff << (attempt - 1)):
			}
		}
		done, err := p.download(ctx, a, partial, progress)
		if err == nil {
			break
		}
		lastErr = err
		if ctx.Err() != nil || !retryable(err) {
			os.Remove(partial)
			return err
		}
		if done > a.Size {
			os.Remove(partial)
			return fmt.Errorf("server sent %d bytes, catalog says %d", done, a.Size)
		}
		if attempt == retries {
			os.Remove(partial)
			return fmt.Errorf("download truncated after %d attempts: %w", retries+1, lastErr)
		}
	}
	got, err := hashFile(ctx, partial)
	if err != nil {
		os.Remove(partial)
		return err
	}
	if got.Size != a.Size {
		os.Remove(partial)
		return fmt.Errorf("size %d, catalog says %d (truncated download?)", got.Size, a.Size)
	}
	if got.SHA256 != a.SHA256 {
		os.Remove(partial)
		return fmt.Errorf("sha256 %s, catalog says %s", got.SHA256, a.SHA256)
	}
	if err := os.Rename(partial, dst); err != nil {
		os.Remove(partial)
		return err
	}
	progress(a.Size)
	return nil
}

// errRetry marks a download error worth resuming.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }
func (e errRetry) Unwrap() error { return e.err }

func retryable(err error) bool {
	var r errRetry
	return errors.As(err, &r)
}

// download appends to partial from its current length (Range request) or
// restarts it when the server ignores the range. It returns the length of
// partial afterwards.
func (p *Puller) download(ctx context.Context, a Artifact, partial string, progress func(int64)) (int64, error) {
	u, err := url.Parse(a.URL)
	if err != nil {
		return 0, err
	}
	if u.Scheme == "file" {
		return copyLocal(ctx, u.Path, partial, progress)
	}
	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if have >= a.Size {
		return have, nil // complete (or too long: the checksum decides)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return have, err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return have, errRetry{err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
	case resp.StatusCode == http.StatusOK:
		// No range support (or a fresh start): begin again.
		if err := f.Truncate(0); err != nil {
			return 0, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		have = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return have, fmt.Errorf("size %d, catalog says %d (the server's file is shorter: range refused, %s)", have, a.Size, resp.Status)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return have, errRetry{fmt.Errorf("GET %s: %s", a.URL, resp.Status)}
	default:
		return have, fmt.Errorf("GET %s: %s", a.URL, resp.Status)
	}
	progress(have)
	pw := &progressWriter{w: f, done: have, report: progress}
	// Never take more than the catalog size (+1 to notice an overlong
	// file).
	_, err = io.Copy(pw, io.LimitReader(ctxReader{ctx, resp.Body}, a.Size-have+1))
	if err != nil {
		if ctx.Err() != nil {
			return pw.done, ctx.Err()
		}
		return pw.done, errRetry{err}
	}
	if pw.done < a.Size {
		return pw.done, errRetry{fmt.Errorf("connection closed at %d of %d bytes", pw.done, a.Size)}
	}
	return pw.done, f.Sync()
}

// copyLocal copies a file:// artifact.
func copyLocal(ctx context.Context, src, partial string, progress func(int64)) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(partial)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	pw := &progressWriter{w: out, report: progress}
	if _, err := io.Copy(pw, ctxReader{ctx, in}); err != nil {
		return pw.done, err
	}
	return pw.done, out.Sync()
}

// progressWriter counts bytes and reports them at most every 4 MiB.
type progressWriter struct {
	w        io.Writer
	done     int64
	reported int64
	report   func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.done-p.reported >= 4<<20 {
		p.reported = p.done
		p.report(p.done)
	}
	return n, err
}
