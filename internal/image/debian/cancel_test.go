package debian_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/image/debian"
	"banger/internal/image/debian/debiantest"
)

// lockedBuffer is a log the build writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBuild_CancelLeavesNothing cancels a cold build while mmdebstrap is
// installing packages and checks that the build returns the context's
// error and leaves no cache entry, no temporary tree and no mount behind.
func TestBuild_CancelLeavesNothing(t *testing.T) {
	debiantest.RequireBuild(t)
	agent := debiantest.AgentBin(t)
	dir := t.TempDir()
	cache, work, out := filepath.Join(dir, "cache"), filepath.Join(dir, "work"), filepath.Join(dir, "out")
	for _, d := range []string{work, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &lockedBuffer{}
	go func() {
		// Cancel once the chroot exists and packages are being set up,
		// when mmdebstrap has mounts to undo.
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if strings.Contains(log.String(), "installing") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := debian.Build(ctx, debian.Default(), debian.BuildOptions{
		AgentBin: agent, CacheDir: cache, WorkDir: work, Log: log,
	}, out)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build after cancel = %v, want context.Canceled", err)
	}
	t.Logf("cancelled build returned after %s", time.Since(start).Round(time.Second))
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("work dir not empty: %v", ents)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("out dir not empty: %v", ents)
	}
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left in the cache: %s", p)
		}
		return nil
	})
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s:\n%s", dir, mounts)
	}
}
