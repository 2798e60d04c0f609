package workspace

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// WriteTar writes sel as a tar stream: entries named relative to the
// repository root, owned by uid/gid 0 with no user or group names, modes
// and modification times kept, symlinks stored as links. A file that
// changed size since Select is written with the size Select saw (padded
// or cut), so the stream stays consistent; ctx ending stops it.
func WriteTar(ctx context.Context, w io.Writer, sel Selection) error {
	return WriteTarCounted(ctx, w, sel, nil)
}

// Sent counts what WriteTarCounted has written so far; read it while the
// tar is being written to show progress against Selection.Bytes and
// Selection.Files.
type Sent struct {
	// Files is how many regular files were written in full.
	Files atomic.Int64
	// Bytes is how many bytes of file content were written.
	Bytes atomic.Int64
}

// WriteTarCounted is WriteTar counting the files and bytes written in
// sent (nil counts nothing).
func WriteTarCounted(ctx context.Context, w io.Writer, sel Selection, sent *Sent) error {
	if sent == nil {
		sent = new(Sent)
	}
	tw := tar.NewWriter(w)
	for _, e := range sel.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeEntry(tw, sel.Root, e, sent); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("workspace tar: %w", err)
	}
	return nil
}

func writeEntry(tw *tar.Writer, root string, e Entry, sent *Sent) error {
	full := filepath.Join(root, filepath.FromSlash(e.Path))
	link := ""
	if e.Info.Mode()&os.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(full); err != nil {
			return fmt.Errorf("workspace tar: %w", err)
		}
	}
	h, err := tar.FileInfoHeader(e.Info, link)
	if err != nil {
		return fmt.Errorf("workspace tar %s: %w", e.Path, err)
	}
	h.Name = e.Path
	if e.Info.IsDir() {
		h.Name += "/"
	}
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	h.Format = tar.FormatPAX
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("workspace tar %s: %w", e.Path, err)
	}
	if !e.Info.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(full)
	if err != nil {
		return fmt.Errorf("workspace tar: %w", err)
	}
	defer f.Close()
	n, err := io.Copy(tw, &countingReader{r: io.LimitReader(f, h.Size), n: &sent.Bytes})
	if err != nil {
		return fmt.Errorf("workspace tar %s: %w", e.Path, err)
	}
	if n < h.Size { // the file shrank: pad to the announced size
		if _, err := io.CopyN(tw, zeroReader{}, h.Size-n); err != nil {
			return fmt.Errorf("workspace tar %s: %w", e.Path, err)
		}
		sent.Bytes.Add(h.Size - n)
	}
	sent.Files.Add(1)
	return nil
}

// countingReader adds the bytes read through it to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
