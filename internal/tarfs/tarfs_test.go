package tarfs

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteExtract_roundTripKeepsModes(t *testing.T) {
	src := t.TempDir()
	tree := filepath.Join(src, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o750)
	os.WriteFile(filepath.Join(tree, "run.sh"), []byte("#!/bin/sh\n"), 0o751)
	os.WriteFile(filepath.Join(tree, "sub", "secret"), []byte("s3cret"), 0o600)
	os.Symlink("run.sh", filepath.Join(tree, "link"))

	var buf bytes.Buffer
	if err := Write(&buf, tree, true); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h.Name, "tree") {
			t.Errorf("entry %q not rooted at the tree's name", h.Name)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("entry %q owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
	}
	dst := t.TempDir()
	if err := Extract(dst, &buf, false); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"tree/run.sh": 0o751, "tree/sub/secret": 0o600, "tree/sub": 0o750} {
		st, err := os.Stat(filepath.Join(dst, p))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", p, st, err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dst, "tree", "link")); err != nil || l != "run.sh" {
		t.Errorf("symlink = %q %v", l, err)
	}
}

func TestExtract_refusesEscapes(t *testing.T) {
	for _, name := range []string{"../evil", "a/../../evil"} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
		tw.Write([]byte("x"))
		tw.Close()
		dir := t.TempDir()
		if err := Extract(filepath.Join(dir, "in"), &buf, false); err == nil {
			t.Errorf("%q extracted", name)
		}
		if _, err := os.Stat(filepath.Join(dir, "evil")); err == nil {
			t.Errorf("%q escaped the target", name)
		}
	}
}
