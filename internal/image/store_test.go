package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// stageFiles stages an image holding the given files.
func stageFiles(t *testing.T, s *Store, files map[string]string) string {
	t.Helper()
	dir, err := s.Stage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStore_CommitLoadVerifyRemove(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Store{Dir: filepath.Join(t.TempDir(), "images"), Now: func() time.Time { return now }}
	tmp := stageFiles(t, s, map[string]string{FileVmlinux: "elf", FileRootfs: "root", FileInitrd: "initrd"})
	if !strings.HasPrefix(filepath.Base(tmp), stagingPrefix) || filepath.Dir(tmp) != s.Dir {
		t.Fatalf("staging dir %s is not a staging dir inside %s", tmp, s.Dir)
	}
	// A staged image is invisible.
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Fatalf("List during staging = %v, %v", l, err)
	}

	m := &Manifest{Name: "debian-12", Source: Source{Kind: SourceRecipe, Ref: "debian-12", RecipeHash: "abc"}, Init: InitSystemd}
	dir, err := s.Commit(ctx, tmp, m)
	if err != nil {
		t.Fatal(err)
	}
	if dir != s.Path(m.ID) || m.ID == "" {
		t.Fatalf("Commit dir %s, id %q", dir, m.ID)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir still exists after commit: %v", err)
	}
	want := map[string]FileInfo{
		FileVmlinux: {3, "780d84b20d7ae7e6292919399348bdbf96025270136198083fc8a4da398b5ca9"},
		FileRootfs:  {4, "4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2"},
		FileInitrd:  {6, ""},
	}
	got, err := s.Load(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Files) != 3 || got.SizeBytes != 13 || !got.Created.Equal(now) || got.Name != "debian-12" || got.Source.RecipeHash != "abc" {
		t.Errorf("loaded manifest = %+v", got)
	}
	for name, w := range want {
		g := got.Files[name]
		if g.Size != w.Size || (w.SHA256 != "" && g.SHA256 != w.SHA256) || len(g.SHA256) != 64 {
			t.Errorf("file %s = %+v, want %+v", name, g, w)
		}
	}
	if err := s.Verify(m.ID); err != nil {
		t.Errorf("Verify fresh image: %v", err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != m.ID {
		t.Errorf("List = %v, %v", list, err)
	}

	// Corruption is found and named.
	if err := os.WriteFile(filepath.Join(dir, FileRootfs), []byte("ROOT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(m.ID); err == nil || !strings.Contains(err.Error(), "file "+FileRootfs+": sha256") {
		t.Errorf("Verify corrupt rootfs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileRootfs), []byte("root!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(m.ID); err == nil || !strings.Contains(err.Error(), "size 5") {
		t.Errorf("Verify grown rootfs: %v", err)
	}
	os.Remove(filepath.Join(dir, FileInitrd))
	if err := s.Verify(m.ID); err == nil || !strings.Contains(err.Error(), FileInitrd) {
		t.Errorf("Verify missing initrd: %v", err)
	}

	// The same id cannot be committed twice.
	tmp2 := stageFiles(t, s, map[string]string{"x": "y"})
	if _, err := s.Commit(ctx, tmp2, &Manifest{ID: m.ID, Name: "dup", Init: InitAgent}); err == nil {
		t.Error("committing an existing id succeeded")
	}

	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load after Remove: %v", err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := s.Clean(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 0 {
		t.Errorf("Clean left %v", ents)
	}
}

func TestStore_BadInput(t *testing.T) {
	ctx := context.Background()
	s := &Store{Dir: t.TempDir()}
	tests := []struct {
		name    string
		m       Manifest
		wantErr string
	}{
		{"no name", Manifest{Init: InitSystemd}, "no name"},
		{"bad init", Manifest{Name: "x", Init: "openrc"}, "init"},
		{"path id", Manifest{ID: "../etc", Name: "x", Init: InitAgent}, "invalid image id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := stageFiles(t, s, map[string]string{"a": "b"})
			_, err := s.Commit(ctx, tmp, &tt.m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Commit error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	for _, id := range []string{"", "..", "a/b", "UPPER", strings.Repeat("a", 65)} {
		if _, err := s.Load(id); err == nil {
			t.Errorf("Load(%q) succeeded", id)
		}
		if err := s.Remove(id); err == nil {
			t.Errorf("Remove(%q) succeeded", id)
		}
	}
	// A manifest that lies about its id is refused.
	if err := os.MkdirAll(filepath.Join(s.Dir, "abc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeManifest(filepath.Join(s.Dir, "abc"), &Manifest{ID: "def", Name: "x", Init: InitAgent}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load("abc"); err == nil || !strings.Contains(err.Error(), `"def"`) {
		t.Errorf("Load of mismatched id: %v", err)
	}
}
