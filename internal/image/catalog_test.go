package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBuiltinCatalog(t *testing.T) {
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, suite string }{{"debian-12", "bookworm"}, {"debian-13", "trixie"}} {
		e, err := c.Lookup(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if !e.IsRecipe() || e.Catalog != BuiltinCatalogName {
			t.Errorf("%s: recipe=%v catalog=%q", tt.name, e.IsRecipe(), e.Catalog)
		}
		// The recipe shape internal/image/debian decodes.
		var r struct {
			Name          string   `json:"name"`
			Suite         string   `json:"suite"`
			Mirror        string   `json:"mirror"`
			Packages      []string `json:"packages"`
			ExtraPackages []string `json:"extra_packages"`
		}
		dec := json.NewDecoder(bytes.NewReader(e.Recipe))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s recipe: %v", tt.name, err)
		}
		if r.Name != tt.name || r.Suite != tt.suite || r.Mirror == "" || len(r.Packages) == 0 {
			t.Errorf("%s recipe = %+v", tt.name, r)
		}
	}
}

func TestCatalog_Lookup(t *testing.T) {
	c, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want []string
	}{
		{"debian-11", []string{"debian-12", "debian-13"}},
		{"debain-12", []string{"debian-12", "debian-13"}},
		{"debian", []string{"debian-12", "debian-13"}},
		{"alpine", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Lookup(tt.name)
			var nf *NotFoundError
			if !errors.As(err, &nf) || !errors.Is(err, ErrNotFound) {
				t.Fatalf("Lookup(%q) = %v, want NotFoundError", tt.name, err)
			}
			if fmt.Sprint(nf.Suggestions) != fmt.Sprint(tt.want) {
				t.Errorf("suggestions = %v, want %v", nf.Suggestions, tt.want)
			}
			if fmt.Sprint(nf.CatalogNames) != "[debian-12 debian-13]" {
				t.Errorf("catalog names = %v", nf.CatalogNames)
			}
			if !strings.Contains(err.Error(), tt.name) || !strings.Contains(err.Error(), "debian-12") {
				t.Errorf("message %q", err)
			}
		})
	}
}

// artifactSet makes random files and a catalog entry pointing at base.
func artifactSet(t testing.TB, base string, sizes map[string]int) (map[string][]byte, CatalogEntry) {
	files := map[string][]byte{}
	e := CatalogEntry{Name: "prebuilt", Artifacts: map[string]Artifact{}, Init: InitAgent, Catalog: "test"}
	for name, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		files[name] = b
		sum := sha256.Sum256(b)
		e.Artifacts[name] = Artifact{URL: base + "/" + name, SHA256: hex.EncodeToString(sum[:]), Size: int64(n)}
	}
	return files, e
}

func TestLoadCatalogs(t *testing.T) {
	ctx := context.Background()
	sum := strings.Repeat("ab", 32)
	remote := fmt.Sprintf(`{"images":[{"name":"tools","description":"x","artifacts":{"rootfs.ext4":{"url":"files/rootfs.ext4","sha256":%q,"size":10}}}]}`, sum)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cat/index.json" {
			w.Write([]byte(remote))
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	local := filepath.Join(t.TempDir(), "local.json")
	os.WriteFile(local, []byte(`{"images":[{"name":"debian-12","description":"mine","artifacts":{"vmlinux":{"url":"vmlinux.bin","sha256":"`+sum+`","size":1}}}]}`), 0o644)

	c, err := LoadCatalogs(ctx, []string{srv.URL + "/cat/index.json", local})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.Names()); got != "[debian-12 debian-13 tools]" {
		t.Errorf("names = %s", got)
	}
	tools, _ := c.Lookup("tools")
	if u := tools.Artifacts[FileRootfs].URL; u != srv.URL+"/cat/files/rootfs.ext4" {
		t.Errorf("relative URL resolved to %s", u)
	}
	d12, _ := c.Lookup("debian-12")
	if d12.Description != "mine" || d12.IsRecipe() || d12.Artifacts[FileVmlinux].URL != "file://"+filepath.Join(filepath.Dir(local), "vmlinux.bin") {
		t.Errorf("later catalog did not replace debian-12: %+v", d12)
	}

	bad := []struct{ name, data, wantErr string }{
		{"both kinds", `{"images":[{"name":"a","recipe":{},"artifacts":{"x":{"url":"u","sha256":"` + sum + `","size":1}}}]}`, "exactly one"},
		{"bad sha", `{"images":[{"name":"a","artifacts":{"x":{"url":"http://h/u","sha256":"nope","size":1}}}]}`, "sha256"},
		{"bad file name", `{"images":[{"name":"a","artifacts":{"../x":{"url":"http://h/u","sha256":"` + sum + `","size":1}}}]}`, "bad file name"},
		{"duplicate", `{"images":[{"name":"a","recipe":{}},{"name":"a","recipe":{}}]}`, "twice"},
		{"unknown field", `{"images":[],"extra":1}`, "unknown field"},
		{"bad scheme", `{"images":[{"name":"a","artifacts":{"x":{"url":"ftp://h/u","sha256":"` + sum + `","size":1}}}]}`, "scheme"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.json")
			os.WriteFile(p, []byte(tt.data), 0o644)
			if _, err := LoadCatalogs(ctx, []string{p}); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadCatalogs error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	for _, src := range []string{"relative/path.json", srv.URL + "/missing.json"} {
		if _, err := LoadCatalogs(ctx, []string{src}); err == nil {
			t.Errorf("LoadCatalogs(%s) succeeded", src)
		}
	}
}

// cutServer serves files with Range support; the first cuts requests of
// each file are cut after half of what they would send.
type cutServer struct {
	mu       sync.Mutex
	files    map[string][]byte
	cuts     map[string]int
	ranges   []string
	override map[string][]byte // served instead of files (wrong content)
}

func (s *cutServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	data, ok := s.files[name]
	if o, has := s.override[name]; has {
		data = o
	}
	cut := s.cuts[name] > 0
	if cut {
		s.cuts[name]--
	}
	s.ranges = append(s.ranges, name+" "+r.Header.Get("Range"))
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !cut {
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
		return
	}
	// Announce the full length, send half, then drop the connection.
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		fmt.Sscanf(rg, "bytes=%d-", &start)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(len(data)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
	}
	w.Write(data[start : start+(len(data)-start)/2])
	w.(http.Flusher).Flush()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestPull(t *testing.T) {
	ctx := context.Background()
	cs := &cutServer{cuts: map[string]int{}, override: map[string][]byte{}}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	files, entry := artifactSet(t, srv.URL, map[string]int{FileRootfs: 3 << 20, FileVmlinux: 200 << 10, FileInitrd: 100 << 10})
	cs.files = files
	p := &Puller{Backoff: time.Millisecond, Retries: 3}

	t.Run("resume after cuts", func(t *testing.T) {
		cs.cuts[FileRootfs] = 2
		cs.ranges = nil
		store := &Store{Dir: filepath.Join(t.TempDir(), "images")}
		out, _ := store.Stage(ctx)
		var last int64
		m, err := p.Pull(ctx, &entry, out, func(stage string, done, total int64) {
			if stage == StageDownload+" "+FileRootfs {
				last = done
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if last != 3<<20 {
			t.Errorf("last progress %d, want %d", last, 3<<20)
		}
		// Two cuts: the second request resumes at 1.5 MiB, the third at
		// 2.25 MiB.
		var got []string
		for _, r := range cs.ranges {
			if strings.HasPrefix(r, FileRootfs) {
				got = append(got, r)
			}
		}
		want := []string{FileRootfs + " ", FileRootfs + " bytes=1572864-", FileRootfs + " bytes=2359296-"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("requests = %q, want %q", got, want)
		}
		if m.Init != InitAgent || m.Source.Kind != SourcePull || m.Name != "prebuilt" {
			t.Errorf("manifest = %+v", m)
		}
		if _, err := store.Commit(ctx, out, m); err != nil {
			t.Fatal(err)
		}
		if err := store.Verify(m.ID); err != nil {
			t.Fatal(err)
		}
		for name, fi := range entry.Artifacts {
			if m.Files[name].SHA256 != fi.SHA256 {
				t.Errorf("%s sha256 differs", name)
			}
		}
	})

	t.Run("resume a partial file left by an earlier run", func(t *testing.T) {
		cs.ranges = nil
		out := t.TempDir()
		os.WriteFile(filepath.Join(out, FileRootfs+partialSuffix), files[FileRootfs][:1<<20], 0o644)
		if _, err := p.Pull(ctx, &entry, out, nil); err != nil {
			t.Fatal(err)
		}
		if !containsAll(cs.ranges, FileRootfs+" bytes=1048576-") {
			t.Errorf("requests = %q, want a range from 1 MiB", cs.ranges)
		}
	})

	bad := []struct {
		name    string
		setup   func()
		wantErr string
	}{
		{"checksum mismatch", func() {
			wrong := bytes.Clone(files[FileVmlinux])
			wrong[100] ^= 0xff
			cs.override[FileVmlinux] = wrong
		}, "file vmlinux: sha256"},
		{"truncated file", func() { cs.override[FileInitrd] = files[FileInitrd][:50<<10] }, "file initrd.img: size 51200"},
		{"cut every time", func() { cs.cuts[FileRootfs] = 100 }, "truncated after 4 attempts"},
		{"missing", func() { cs.override[FileInitrd] = nil; delete(cs.files, FileInitrd) }, "404"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			cs.mu.Lock()
			cs.override = map[string][]byte{}
			cs.cuts = map[string]int{}
			cs.files = map[string][]byte{}
			for k, v := range files {
				cs.files[k] = v
			}
			tt.setup()
			cs.mu.Unlock()
			store := &Store{Dir: filepath.Join(t.TempDir(), "images")}
			out, _ := store.Stage(ctx)
			_, err := p.Pull(ctx, &entry, out, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Pull error = %v, want %q", err, tt.wantErr)
			}
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), partialSuffix) {
					t.Errorf("failed pull kept %s", e.Name())
				}
				if _, ok := entry.Artifacts[e.Name()]; ok && strings.Contains(tt.wantErr, e.Name()) {
					t.Errorf("failed pull kept the bad file %s", e.Name())
				}
			}
			if l, _ := store.List(); len(l) != 0 {
				t.Errorf("failed pull registered %v", l)
			}
		})
	}

	recipe := CatalogEntry{Name: "debian-12", Recipe: json.RawMessage(`{}`)}
	if _, err := Pull(ctx, &recipe, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "recipe") {
		t.Errorf("Pull of a recipe: %v", err)
	}
}

// BenchmarkPullRegister measures registering an image from a pulled
// artifact set over loopback HTTP: download, verify, hash and commit.
func BenchmarkPullRegister(b *testing.B) {
	ctx := context.Background()
	cs := &cutServer{cuts: map[string]int{}}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	files, entry := artifactSet(b, srv.URL, map[string]int{FileRootfs: 64 << 20, FileWorkSeed: 4 << 20, FileVmlinux: 24 << 20, FileVmlinuz: 8 << 20, FileInitrd: 30 << 20})
	cs.files = files
	store := &Store{Dir: filepath.Join(b.TempDir(), "images")}
	var total int64
	for _, a := range entry.Artifacts {
		total += a.Size
	}
	b.SetBytes(total)
	for b.Loop() {
		out, err := store.Stage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		m, err := Pull(ctx, &entry, out, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := store.Commit(ctx, out, m); err != nil {
			b.Fatal(err)
		}
		if err := store.Remove(m.ID); err != nil {
			b.Fatal(err)
		}
	}
}
