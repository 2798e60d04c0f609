// Package debiantest gives tests a real default image: banger-agent built
// from the module, the
// debian-12 boot set built with mmdebstrap once and cached between runs
// under the test cache directory, keyed by recipe hash and agent hash.
package debiantest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/image"
	"banger/internal/image/debian"
	"banger/internal/image/imagetest"
	"banger/internal/testenv"
)

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the banger module")
	}
	return filepath.Dir(mod), nil
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// AgentBin returns a static banger-agent built with CGO_ENABLED=0 from
// ./cmd/banger-agent. The binary lives for the whole test process.
func AgentBin(tb testing.TB) string {
	tb.Helper()
	testenv.RequireCommand(tb, "go")
	agentOnce.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			agentErr = err
			return
		}
		const pkg = "./cmd/banger-agent"
		dir, err := os.MkdirTemp("", "banger-agent-test-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "banger-agent")
		cmd := exec.Command("go", "build", "-o", agentPath, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if agentErr != nil {
		tb.Fatalf("build agent: %v", agentErr)
	}
	return agentPath
}

// RequireBuild stops the test unless an image build can run here (root,
// mmdebstrap, e2fsprogs, tar): a failure in CI, a skip elsewhere.
func RequireBuild(tb testing.TB) {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireCommand(tb, "mmdebstrap", "mkfs.ext4", "debugfs", "tar")
}

// CacheDir returns the test cache directory (see imagetest.CacheDir).
func CacheDir(tb testing.TB) string {
	tb.Helper()
	d, err := imagetest.CacheDir()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

var imageMu sync.Mutex

// Image returns the directory of a complete debian-12 image (boot set and
// manifest.json) built with the agent from AgentBin. It is built once per
// recipe and agent and kept in the test cache; the bootstrap is shared with
// every other build through the same cache. The build log of a failed
// build is kept next to the cache entry and named in the failure.
func Image(tb testing.TB) string {
	tb.Helper()
	RequireBuild(tb)
	agent := AgentBin(tb)
	imageMu.Lock()
	defer imageMu.Unlock()
	r := debian.Default()
	sum, err := fileHash(agent)
	if err != nil {
		tb.Fatal(err)
	}
	cache := CacheDir(tb)
	dir := filepath.Join(cache, "images", r.Hash()[:16]+"-"+sum[:16])
	if _, err := os.Stat(filepath.Join(dir, image.FileManifest)); err == nil {
		return dir
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		tb.Fatal(err)
	}
	// Images built with an older agent are of no further use.
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), r.Hash()[:16]+"-*"))
	for _, p := range stale {
		os.RemoveAll(p)
	}
	stage, err := os.MkdirTemp(filepath.Dir(dir), ".stage-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(stage)
	logPath := dir + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	m, err := debian.Build(ctx, r, debian.BuildOptions{
		AgentBin: agent, CacheDir: filepath.Join(cache, "debian"), Log: logf,
	}, stage)
	if err != nil {
		tb.Fatalf("build default image: %v", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, image.FileManifest), data, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(stage, dir); err != nil {
		tb.Fatal(err)
	}
	return dir
}

func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
