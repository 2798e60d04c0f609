package agentserver

import (
	"archive/tar"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
	"banger/internal/tarfs"
)

// treeEntry describes one path of a tree for comparisons.
type treeEntry struct {
	Mode    fs.FileMode
	Content string
	Link    string
	UID     uint32
}

func snapshotTree(t *testing.T, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := treeEntry{Mode: fi.Mode(), UID: fi.Sys().(*syscall.Stat_t).Uid}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Content = string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, _ = os.Readlink(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func makeTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755))
	must(os.WriteFile(filepath.Join(src, "plain.txt"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o600))
	must(os.WriteFile(filepath.Join(src, "sub", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o750))
	must(os.WriteFile(filepath.Join(src, "sub", "deeper", "big.bin"), bytes.Repeat([]byte{0, 1, 2, 3}, 1<<20), 0o640))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o444))
	must(os.Symlink("sub/run.sh", filepath.Join(src, "link")))
	must(os.Mkdir(filepath.Join(src, "ro"), 0o555))
	must(os.Chmod(filepath.Join(src, "sub", "deeper"), 0o700))
	for _, p := range []string{"plain.txt", "secret"} {
		must(os.Chmod(filepath.Join(src, p), map[string]fs.FileMode{"plain.txt": 0o644, "secret": 0o600}[p]))
	}
	return src
}

func TestClient_UploadDownloadRoundTrip(t *testing.T) {
	for name, c := range transports(t) {
		t.Run(name, func(t *testing.T) {
			src := makeTree(t)
			want := snapshotTree(t, src)

			// Upload: host tree -> guest dir.
			guest := filepath.Join(t.TempDir(), "guest", "dest")
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(tarfs.Write(pw, src, false)) }()
			if err := c.Upload(agenttest.CtxTimeout(t, 60*time.Second), guest, pr); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, snapshotTree(t, filepath.Join(guest, "tree"))); diff != "" {
				t.Fatalf("uploaded tree differs (-want +got):\n%s", diff)
			}

			// Download: guest tree -> host dir.
			rc, err := c.Download(agenttest.CtxTimeout(t, 60*time.Second), filepath.Join(guest, "tree"))
			if err != nil {
				t.Fatal(err)
			}
			back := t.TempDir()
			if err := tarfs.Extract(back, rc, true); err != nil {
				t.Fatal(err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, snapshotTree(t, filepath.Join(back, "tree"))); diff != "" {
				t.Fatalf("downloaded tree differs (-want +got):\n%s", diff)
			}

			// A single file downloads as one entry named after it.
			rc, err = c.Download(agenttest.CtxTimeout(t, 10*time.Second), filepath.Join(guest, "tree", "secret"))
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(rc)
			h, err := tr.Next()
			if err != nil || h.Name != "secret" || h.Mode&0o777 != 0o600 {
				t.Fatalf("single file entry %+v, %v", h, err)
			}
			if _, err := tr.Next(); err != io.EOF {
				t.Fatalf("second entry: %v", err)
			}
			rc.Close()
		})
	}
}

func TestClient_FilesErrors(t *testing.T) {
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, testServer(t))}, agenttest.Token)
	defer c.Close()
	if _, err := c.Download(agenttest.CtxTimeout(t, 10*time.Second), "/no/such/path"); !agentclient.IsCode(err, agent.CodeNotFound) {
		t.Fatalf("missing path: %v", err)
	}
	if _, err := c.Download(agenttest.CtxTimeout(t, 10*time.Second), "relative/path"); !agentclient.IsCode(err, agent.CodeBadRequest) {
		t.Fatalf("relative path: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	dir := t.TempDir()
	err := c.Upload(agenttest.CtxTimeout(t, 10*time.Second), filepath.Join(dir, "in"), &buf)
	if !agentclient.IsCode(err, agent.CodeBadRequest) || !strings.Contains(err.Error(), `".." is not allowed`) {
		t.Fatalf("escaping entry: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Fatal("escaping entry was written")
	}
}
