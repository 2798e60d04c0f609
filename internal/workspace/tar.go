package workspace

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// WriteTar writes sel as a tar stream: entries named relative to the
// repository root, owned by uid/gid 0 with no user or group names, modes
// and modification times kept, symlinks stored as links. A file that
// changed size since Select is written with the size Select saw (padded
// or cut), so the stream stays consistent; ctx ending stops it.
func WriteTar(ctx context.Context, w io.Writer, sel Selection) error {
	tw := tar.NewWriter(w)
	for _, e := range sel.Entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeEntry(tw, sel.Root, e); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("workspace tar: %w", err)
	}
	return nil
}

func writeEntry(tw *tar.Writer, root string, e Entry) error {
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
	n, err := io.Copy(tw, io.LimitReader(f, h.Size))
	if err != nil {
		return fmt.Errorf("workspace tar %s: %w", e.Path, err)
	}
	if n < h.Size { // the file shrank: pad to the announced size
		if _, err := io.CopyN(tw, zeroReader{}, h.Size-n); err != nil {
			return fmt.Errorf("workspace tar %s: %w", e.Path, err)
		}
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
