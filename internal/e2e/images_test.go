package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"banger/internal/testenv"
)

// TestImages boots images made the two other ways: a Dockerfile built
// with podman on top of the default image, and an OCI archive without
// systemd, where banger-agent runs as PID 1.
func TestImages(t *testing.T) {
	testenv.RequireCommand(t, "podman", "busybox")
	e := newEnv(t)
	e.ensureImage()

	t.Run("dockerfile image keeps its file and package", func(t *testing.T) {
		ctxDir := t.TempDir()
		os.WriteFile(filepath.Join(ctxDir, "hello.txt"), []byte("hello from a Dockerfile\n"), 0o644)
		os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(
			"FROM banger/debian-12\n"+
				"RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n"+
				"COPY hello.txt /etc/hello.txt\n"), 0o644)
		// The build needs Debian's archive: it runs from the host namespace.
		e.must(e.bangerHost("image", "build", "-f", filepath.Join(ctxDir, "Dockerfile"), "--name", "dtest", ctxDir))
		e.must(e.bangerHost("daemon", "stop"))
		r := e.must(e.banger("", "vm", "run", "--rm", "--image", "dtest", "--", "sh", "-c", "cat /etc/hello.txt; jq --version"))
		if !strings.Contains(r.stdout, "hello from a Dockerfile") || !strings.Contains(r.stdout, "jq-") {
			t.Fatalf("guest of the Dockerfile image printed %q\nstderr: %s", r.stdout, r.stderr)
		}
	})

	t.Run("oci archive without systemd boots with the agent as init", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "tiny.tar")
		writeBusyboxArchive(t, archive)
		e.must(e.banger("", "image", "import", archive, "--name", "tiny"))
		show := e.must(e.banger("", "image", "show", "tiny", "--json"))
		if !strings.Contains(show.stdout, `"init": "agent"`) {
			t.Fatalf("imported image init: %s", show.stdout)
		}
		r := e.must(e.banger("", "vm", "run", "--rm", "--image", "tiny", "--", "/bin/sh", "-c", "echo $((6*7)); cat /proc/1/comm; hostname"))
		lines := strings.Fields(r.stdout)
		if len(lines) != 3 || lines[0] != "42" || lines[1] != "banger-agent" {
			t.Fatalf("guest printed %q, want 42, banger-agent and the hostname\nstderr: %s", r.stdout, r.stderr)
		}
	})
}

// writeBusyboxArchive writes a `docker save` archive of a one-layer image
// holding the host's static busybox and its applet links: no systemd, no
// /sbin/init.
func writeBusyboxArchive(t *testing.T, path string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "etc/", "root/", "tmp/", "proc/", "sys/", "dev/", "run/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	for _, applet := range []string{"sh", "cat", "echo", "hostname", "ls", "mount", "stat", "sleep", "id"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("example.invalid/tiny:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
}
