package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/disk"
	"banger/internal/disk/disktest"
	"banger/internal/guestcontract"
	"banger/internal/testenv"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func requireTools(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		testenv.RequireCommand(t, b)
	}
}

// tarEntry is one entry of a test layer.
type tarEntry struct {
	name, body, link string
	typ              byte
	mode             int64
	uid, gid         int
}

func layerTar(t testing.TB, entries []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage builds a three-layer image: a base, a layer of random files
// and a layer whose whiteout deletes /etc/gone. With systemd it has
// /sbin/init -> /lib/systemd/systemd.
func testImage(t testing.TB, systemd bool) v1.Image {
	t.Helper()
	random := make([]byte, 300<<10)
	rand.Read(random)
	base := []tarEntry{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/hello", body: "hello from layer 1\n"},
		{name: "etc/gone", body: "deleted by a whiteout\n"},
		{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/bin/su", body: "#!/bin/false\n", mode: 0o4755},
		{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		{name: "home/dev/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		{name: "home/dev/notes", body: "mine", uid: 1000, gid: 1000, mode: 0o600},
		{name: "root/", typ: tar.TypeDir, mode: 0o700},
		{name: "root/.profile", body: "export PS1=vm\n"},
	}
	if systemd {
		base = append(base,
			tarEntry{name: "lib/systemd/systemd", body: "systemd", mode: 0o755},
			tarEntry{name: "sbin/init", typ: tar.TypeSymlink, link: "/lib/systemd/systemd"},
			tarEntry{name: "etc/ssh/ssh_host_ed25519_key", body: "SECRET", mode: 0o600},
		)
	}
	files := []tarEntry{
		{name: "opt/data.bin", body: string(random)},
		{name: "opt/link-to-hello", typ: tar.TypeLink, link: "etc/hello"},
	}
	whiteout := []tarEntry{
		{name: "etc/.wh.gone", body: ""},
		{name: "etc/added-late", body: "layer 3\n"},
	}
	cfgImg, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(cfgImg, layerTar(t, base), layerTar(t, files), layerTar(t, whiteout))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testBase makes a base image dir: kernel files and a rootfs holding
// kernel modules for release 6.1.0-test.
func testBase(t testing.TB) (*Manifest, string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{FileVmlinux, FileVmlinuz, FileInitrd} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("base "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree := t.TempDir()
	mod := filepath.Join(tree, "usr/lib/modules/6.1.0-test/kernel")
	os.MkdirAll(mod, 0o755)
	os.WriteFile(filepath.Join(mod, "virtio_blk.ko"), []byte("module"), 0o644)
	if err := disk.MakeExt4(context.Background(), filepath.Join(dir, FileRootfs), 64<<20, guestcontract.LabelRoot, tree); err != nil {
		t.Fatal(err)
	}
	files, _, err := hashDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return &Manifest{ID: "base", Name: "debian-12", Init: InitSystemd, Files: files,
		KernelVersion: "6.1.0-test (builder) #1 SMP", AgentVersion: "agent-1.0"}, dir
}

func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	// Drop the version banner debugfs prints first.
	s := string(out)
	if strings.HasPrefix(s, "debugfs ") {
		_, s, _ = strings.Cut(s, "\n")
	}
	return s
}

func TestImportOCI(t *testing.T) {
	requireTools(t, "mkfs.ext4", "debugfs")
	ctx := context.Background()
	base, baseDir := testBase(t)
	agent := filepath.Join(t.TempDir(), "banger-agent")
	os.WriteFile(agent, []byte("#!/bin/sh\necho agent\n"), 0o755)

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	sysImg := testImage(t, true)
	plainImg := testImage(t, false)

	push := func(t *testing.T, img v1.Image) string {
		ref := host + "/test/app:v1"
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatal(err)
		}
		return ref
	}
	ociLayout := func(t *testing.T, img v1.Image) string {
		dir := filepath.Join(t.TempDir(), "layout")
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	ociArchive := func(t *testing.T, img v1.Image) string {
		dir := ociLayout(t, img)
		out := filepath.Join(t.TempDir(), "app.oci.tar")
		if b, err := exec.Command("tar", "-C", dir, "-cf", out, ".").CombinedOutput(); err != nil {
			t.Fatalf("tar: %v: %s", err, b)
		}
		return out
	}
	dockerArchive := func(t *testing.T, img v1.Image) string {
		out := filepath.Join(t.TempDir(), "app.tar")
		tag, _ := name.NewTag("example.test/app:v1")
		if err := tarball.WriteToFile(out, tag, img); err != nil {
			t.Fatal(err)
		}
		return out
	}

	tests := []struct {
		name     string
		img      v1.Image
		source   func(*testing.T, v1.Image) string
		wantKind ImportKind
		wantInit string
	}{
		{"registry", sysImg, push, ImportRegistry, InitSystemd},
		{"oci layout", sysImg, ociLayout, ImportOCILayout, InitSystemd},
		{"oci archive", plainImg, ociArchive, ImportOCIArchive, InitAgent},
		{"docker archive", plainImg, dockerArchive, ImportDockerArchive, InitAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := tt.source(t, tt.img)
			if k, err := DetectImport(ref); err != nil || k != tt.wantKind {
				t.Fatalf("DetectImport = %q, %v; want %q", k, err, tt.wantKind)
			}
			store := &Store{Dir: filepath.Join(t.TempDir(), "images")}
			out, err := store.Stage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var stages []string
			finished := map[string]bool{}
			m, err := ImportOCI(ctx, ref, OCIOptions{Base: base, BaseDir: baseDir, AgentBin: agent, Progress: func(s string, done, total int64) {
				if len(stages) == 0 || stages[len(stages)-1] != s {
					stages = append(stages, s)
				}
				if total > 0 && done >= total {
					finished[s] = true
				}
			}}, out)
			if err != nil {
				t.Fatal(err)
			}
			// Every stage the import starts it also finishes (the CLI
			// shows a stage as running until then).
			if len(stages) == 0 || stages[0] != StageFetch {
				t.Errorf("stages %v, want fetch first", stages)
			}
			for _, st := range stages {
				if !finished[st] {
					t.Errorf("stage %s started but never finished (stages %v)", st, stages)
				}
			}
			if m.Init != tt.wantInit || m.Source.Kind != SourceOCI || m.KernelVersion != base.KernelVersion {
				t.Errorf("manifest = %+v", m)
			}
			dir, err := store.Commit(ctx, out, m)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Verify(m.ID); err != nil {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 6 {
				t.Errorf("image dir holds %d entries, want 5 files + manifest: %v", len(ents), ents)
			}
			rootfs, work := filepath.Join(dir, FileRootfs), filepath.Join(dir, FileWorkSeed)
			if l, _ := disktest.Label(rootfs); l != guestcontract.LabelRoot {
				t.Errorf("rootfs label %q", l)
			}
			if l, _ := disktest.Label(work); l != guestcontract.LabelWork {
				t.Errorf("work-seed label %q", l)
			}
			checks := []struct{ req, want string }{
				{"cat /etc/hello", "hello from layer 1\n"},
				{"cat /etc/added-late", "layer 3\n"},
				{"cat /opt/link-to-hello", "hello from layer 1\n"},
				{"cat " + guestcontract.AgentPath, "#!/bin/sh\necho agent\n"},
				{"stat /etc/gone", "File not found"},
				{"stat /etc/.wh.gone", "File not found"},
				{"stat /usr/bin/su", "Mode:  04755"},
				{"stat /home/dev/notes", "User:  1000   Group:  1000"},
				{"stat /bin", "Type: symlink"},
			}
			if tt.wantInit == InitSystemd {
				checks = append(checks,
					struct{ req, want string }{"cat /etc/systemd/system/banger-agent.service", "ExecStart=" + guestcontract.AgentPath},
					struct{ req, want string }{"stat /etc/systemd/system/multi-user.target.wants/banger-agent.service", "Type: symlink"},
					struct{ req, want string }{"stat /etc/ssh/ssh_host_ed25519_key", "File not found"},
				)
			}
			for _, c := range checks {
				if got := debugfs(t, rootfs, c.req); !strings.Contains(got, c.want) {
					t.Errorf("rootfs %q = %q, want containing %q", c.req, got, c.want)
				}
			}
			// The base image's modules land in /lib/modules, which is
			// usr/lib/modules on a merged-/usr image.
			modA := debugfs(t, rootfs, "stat /lib/modules/6.1.0-test/kernel/virtio_blk.ko")
			modB := debugfs(t, rootfs, "stat /usr/lib/modules/6.1.0-test/kernel/virtio_blk.ko")
			if !strings.Contains(modA+modB, "Type: regular") {
				t.Errorf("kernel modules not copied from the base image: %s %s", modA, modB)
			}
			if got := debugfs(t, rootfs, "stat /opt/data.bin"); !strings.Contains(got, "Size: 307200") {
				t.Errorf("data.bin: %s", got)
			}
			if got := debugfs(t, work, "cat /.profile"); got != "export PS1=vm\n" {
				t.Errorf("work-seed /.profile = %q", got)
			}
			for _, f := range []string{FileVmlinux, FileVmlinuz, FileInitrd} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				if string(b) != "base "+f {
					t.Errorf("%s = %q, want the base image's", f, b)
				}
			}
			if !containsAll(stages, StageFetch, StageExtract, StageRootfs, StageKernel) {
				t.Errorf("stages = %v", stages)
			}
		})
	}
}

func containsAll(have []string, want ...string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func TestImportOCI_Errors(t *testing.T) {
	ctx := context.Background()
	base, baseDir := testBase(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	notTar := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(notTar, []byte("this is not a tar archive at all, not even close........."), 0o644)
	emptyDir := t.TempDir()
	tests := []struct {
		name, ref, wantErr string
	}{
		{"missing in registry", host + "/nope/none:v1", "fetch"},
		{"junk file", notTar, "not a tar"},
		{"dir without layout", emptyDir, "oci-layout"},
		{"bad reference", "UPPER/Case:??", "neither a file nor an image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			_, err := ImportOCI(ctx, tt.ref, OCIOptions{Base: base, BaseDir: baseDir, AgentBin: "/bin/true"}, out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ImportOCI error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := ImportOCI(ctx, "x", OCIOptions{}, t.TempDir()); err == nil {
		t.Error("ImportOCI without a base image succeeded")
	}
}

func TestNameFromRef(t *testing.T) {
	tests := map[string]string{
		"docker.io/library/alpine:3.20": "alpine-3.20",
		"127.0.0.1:5000/test/app":       "app",
		"ghcr.io/org/tool:latest":       "tool",
		"localhost:5000/a/b/c:1.0":      "c-1.0",
	}
	for in, want := range tests {
		if got := nameFromRef(in); got != want {
			t.Errorf("nameFromRef(%q) = %q, want %q", in, got, want)
		}
	}
}
