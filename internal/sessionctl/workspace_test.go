package sessionctl

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/wait"
)

func TestParseStatus(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		out  string
		want api.WorkspaceStatus
		err  bool
	}{
		{out: "missing\n", want: api.WorkspaceStatus{Path: "/root/repo"}},
		{out: "git\n" + sha + "\nmain\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: true, Head: sha, Branch: "main"}},
		{out: "git\n\n\n?? new.txt\n M README\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Git: true, Dirty: true, Changes: "?? new.txt\n M README"}},
		{out: "plain\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true}},
		{out: "plain\nfile\n", want: api.WorkspaceStatus{Path: "/root/repo", Exists: true, Dirty: true, Changes: "file"}},
		{out: "git\n", err: true},
		{out: "", err: true},
	}
	for _, tt := range tests {
		got, err := parseStatus(tt.out)
		if (err != nil) != tt.err || (!tt.err && got != tt.want) {
			t.Errorf("parseStatus(%q) = %+v, %v; want %+v", tt.out, got, err, tt.want)
		}
	}
	long, err := parseStatus("plain\n" + strings.Repeat("f\n", maxChanges))
	if err != nil || len(long.Changes) != maxChanges+len("\n...") {
		t.Errorf("long status kept %d bytes, %v", len(long.Changes), err)
	}
}

// isStatus reports whether argv runs the status script (alone or after
// other commands).
func isStatus(argv []string) bool { return len(argv) == 3 && strings.HasSuffix(argv[2], statusScript) }

func TestManager_PrepareWorkspace(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, g := h.addVM(t, "box", true)
	dirty := true
	g.exec = func(argv []string) (string, string, int) {
		if isStatus(argv) {
			if dirty {
				return "git\n\nmain\n M file\n", "", 0
			}
			return "git\nabc\nmain\n", "", 0
		}
		return "", "", 0
	}
	if _, err := h.m.PrepareWorkspace(ctx, "box", strings.NewReader("tar"), false); api.CodeOf(err) != api.CodeConflict || !strings.Contains(err.Error(), " M file") {
		t.Fatalf("prepare over a dirty workspace: %v, want conflict naming the change", err)
	}
	if len(g.uploaded) != 0 {
		t.Fatal("uploaded over a dirty workspace")
	}
	dirty = false // what the swap leaves
	st, err := h.m.PrepareWorkspace(ctx, "box", strings.NewReader("tar"), true)
	if err != nil {
		t.Fatal(err)
	}
	if string(g.uploaded[workspaceIncoming]) != "tar" {
		t.Errorf("uploaded %v", g.uploaded)
	}
	var ran []string
	for _, argv := range g.execLog() {
		if isStatus(argv) && argv[2] != statusScript {
			before, _ := strings.CutSuffix(argv[2], statusScript)
			ran = append(ran, "before status: "+before)
		} else if !isStatus(argv) {
			ran = append(ran, strings.Join(argv, " "))
		}
	}
	want := []string{"rm -rf " + workspaceIncoming, "before status: { " + swapScript("/root/repo", workspaceIncoming, workspaceOld) + "; } || exit 9\n"}
	if !slices.Equal(ran, want) {
		t.Errorf("guest ran %q, want %q", ran, want)
	}
	if !st.Git || st.Dirty || st.Head != "abc" {
		t.Errorf("status after prepare = %+v", st)
	}
	g.exec = func(argv []string) (string, string, int) {
		if isStatus(argv) && argv[2] != statusScript {
			return "", "mv: cannot move", beforeFailed
		}
		return "git\nabc\nmain\n", "", 0
	}
	if _, err := h.m.PrepareWorkspace(ctx, "box", strings.NewReader("tar"), true); err == nil || !strings.Contains(err.Error(), "install workspace: mv: cannot move") {
		t.Errorf("prepare whose swap fails = %v, want the install error", err)
	}
	h.addVM(t, "off", false)
	if _, err := h.m.WorkspaceStatus(ctx, "off"); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("status of a stopped vm: %v, want conflict", err)
	}
}

func TestManager_WorkspaceBundle(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, g := h.addVM(t, "box", true)
	sha := strings.Repeat("a", 40)
	if _, err := h.m.WorkspaceBundle(ctx, "box", []string{"HEAD"}); api.CodeOf(err) != api.CodeInvalid {
		t.Errorf("exclude HEAD: %v, want invalid", err)
	}
	if _, err := h.m.WorkspaceBundle(ctx, "box", make([]string, maxExcludes+1)); api.CodeOf(err) != api.CodeInvalid {
		t.Errorf("too many excludes: %v, want invalid", err)
	}

	code, stderr := bundleNothingNew, ""
	g.exec = func(argv []string) (string, string, int) {
		if argv[0] == "sh" && argv[2] == bundleScript {
			return "", stderr, code
		}
		return "", "", 0
	}
	if _, err := h.m.WorkspaceBundle(ctx, "box", []string{sha}); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("nothing new: %v, want conflict", err)
	}
	code, stderr = 128, "fatal: bad revision"
	if _, err := h.m.WorkspaceBundle(ctx, "box", nil); api.CodeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), "bad revision") {
		t.Errorf("git failed: %v, want invalid with its stderr", err)
	}

	code = 0
	g.files[workspaceBundle] = []byte("# v2 git bundle\n")
	b, err := h.m.WorkspaceBundle(ctx, "box", []string{sha})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(b)
	if err != nil || string(data) != "# v2 git bundle\n" || b.Size != int64(len(data)) {
		t.Errorf("bundle %q (size %d), %v", data, b.Size, err)
	}
	b.Close()
	b.Close()
	var rms int
	var bundled []string
	for _, argv := range g.execLog() {
		if slices.Equal(argv, []string{"rm", "-f", workspaceBundle}) {
			rms++
		}
		if argv[0] == "sh" && argv[2] == bundleScript {
			bundled = argv[3:]
		}
	}
	// One cleanup per bundle attempt that reached the guest (three).
	if rms != 3 {
		t.Errorf("guest bundle removed %d times, want 3", rms)
	}
	if !slices.Equal(bundled, []string{"sh", workspaceBundle, sha}) {
		t.Errorf("bundle script args %q", bundled)
	}
}

// TestSwapScript runs the swap for real: the new tree takes the old one's
// place, the old one goes (in the background), and a leftover of an
// earlier swap is removed first.
func TestSwapScript(t *testing.T) {
	base := t.TempDir()
	dir, incoming, old := filepath.Join(base, "repo"), filepath.Join(base, "incoming"), filepath.Join(base, "old-")
	for _, p := range []string{filepath.Join(dir, "stale"), filepath.Join(incoming, "fresh"), old + "99/left"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 { // the second swap has no old tree to move
		if i == 1 {
			if err := os.MkdirAll(filepath.Join(incoming, "again"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command("sh", "-c", swapScript(dir, incoming, old)).CombinedOutput(); err != nil {
			t.Fatalf("swap #%d: %v: %s", i+1, err, out)
		}
		if _, err := os.Stat(incoming); !os.IsNotExist(err) {
			t.Errorf("swap #%d: incoming still there: %v", i+1, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "again")); err != nil {
		t.Errorf("the second new tree is not in place: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := wait.Until(ctx, 10*time.Millisecond, func() (bool, error) {
		left, err := filepath.Glob(old + "*")
		return len(left) == 0, err
	}); err != nil {
		t.Errorf("old trees not removed: %v", err)
	}
}

func TestCappedBuffer(t *testing.T) {
	c := &cappedBuffer{max: 5}
	for _, p := range []string{"abc", "defg", "h"} {
		if n, err := c.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want all of it taken", p, n, err)
		}
	}
	if c.b.String() != "abcde" || !c.over {
		t.Errorf("kept %q, over %v; want abcde, true", c.b.String(), c.over)
	}
}

func TestManager_WorkspaceManifest(t *testing.T) {
	ctx := ctxT(t)
	h := newHarness(t, Options{})
	_, g := h.addVM(t, "box", true)
	out, code := "f\x005\x001700000000.5\x00644\x00\x00README\x00d\x004096\x001700000000.0\x00755\x00\x00src\x00", 0
	g.exec = func(argv []string) (string, string, int) { return out, "", code }
	m, err := h.m.WorkspaceManifest(ctx, "box")
	if err != nil || len(m) != 2 || m[0].Path != "README" || m[0].Size != 5 || m[0].MtimeNS != 1700000000500000000 || m[1].Type != "d" || m[1].Perm != 0o755 {
		t.Fatalf("manifest = %+v, %v", m, err)
	}
	code = 3 // no repo
	if m, err := h.m.WorkspaceManifest(ctx, "box"); err != nil || len(m) != 0 {
		t.Errorf("manifest without a repo = %+v, %v; want empty", m, err)
	}
	out, code = "f\x005\x001.0\x00644\x00\x00../../etc/passwd\x00", 0
	if _, err := h.m.WorkspaceManifest(ctx, "box"); api.CodeOf(err) != api.CodeUnavailable || !strings.Contains(err.Error(), "bad path") {
		t.Errorf("a manifest naming a path outside the repo = %v, want refused", err)
	}
	if _, err := h.m.UpdateWorkspace(ctx, "box", []string{"../x"}, strings.NewReader(""), true); api.CodeOf(err) != api.CodeInvalid {
		t.Errorf("deleting ../x = %v, want invalid", err)
	}
}
