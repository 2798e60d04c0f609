package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// A guest that answers `workspace pull` with a bundle that never ends:
// the CLI must stop at --max-size, say so, and keep nothing of it, and
// must not write it to the host's temp dir (often RAM).
func TestWorkspacePull_HostileBundleIsBounded(t *testing.T) {
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q"}, {"-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"}} {
		if out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VersionInfo{Version: "test", PID: 1, BuildStamp: time.Now().Add(time.Hour)})
	})
	mux.HandleFunc("GET "+api.PathVM, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VM{ID: "id-x", Name: "x", State: "running"})
	})
	mux.HandleFunc("GET "+api.PathVMWorkspace, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: true, Head: strings.Repeat("ab", 20)})
	})
	mux.HandleFunc("GET "+api.PathVMWorkspaceBundle, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	serveFakeDaemon(t, mux)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	_, errOut, code := runMain(t, "vm", "workspace", "pull", "x", "--path", repo, "--max-size", "1M")
	if code == 0 || !strings.Contains(errOut, "exceeds --max-size 1M") {
		t.Fatalf("endless bundle: exit %d: %s", code, errOut)
	}
	left, _ := filepath.Glob(filepath.Join(repo, ".git", "banger-pull-*"))
	inTmp, _ := os.ReadDir(tmp)
	if len(left) != 0 || len(inTmp) != 0 {
		t.Errorf("bundle files left behind: %v in .git, %d entries in TMPDIR", left, len(inTmp))
	}
}
