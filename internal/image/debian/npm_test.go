package debian

import (
	"banger/internal/testenv"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAgents(t *testing.T) {
	r := Agents()
	if r.Name != "agents" || r.Suite != Default().Suite || r.Mirror != DefaultMirror {
		t.Fatalf("Agents() = %+v", r)
	}
	for _, p := range slices.Concat(basePackages, []string{"nodejs", "npm", "git", "build-essential", "ripgrep", "jq", "python3", "tmux"}) {
		if !slices.Contains(r.Packages, p) {
			t.Errorf("Agents() lacks package %s", p)
		}
	}
	if len(r.AllPackages()) != len(r.Packages) {
		t.Errorf("Agents() lists a package twice: %q", r.Packages)
	}
	want := []string{"@anthropic-ai/claude-code", "opencode-ai", "@openai/codex"}
	if !slices.Equal(r.NPMPackages, want) {
		t.Errorf("Agents().NPMPackages = %q, want %q", r.NPMPackages, want)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Hash() == Default().Hash() {
		t.Fatal("agents has debian-12's hash: they would share a bootstrap cache")
	}
	r.NPMPackages[0], r.Packages[0] = "changed", "changed"
	if a := Agents(); a.NPMPackages[0] == "changed" || a.Packages[0] == "changed" {
		t.Fatal("Agents() shares its slices")
	}
	if Default().NPMPackages != nil {
		t.Fatal("debian-12 installs npm packages")
	}
}

func TestRecipe_HashNPM(t *testing.T) {
	h := Agents().Hash()
	tests := []struct {
		name   string
		change func(*Recipe)
		same   bool
	}{
		{"npm package added", func(r *Recipe) { r.NPMPackages = append(r.NPMPackages, "typescript") }, false},
		{"npm package removed", func(r *Recipe) { r.NPMPackages = r.NPMPackages[1:] }, false},
		{"npm package replaced", func(r *Recipe) { r.NPMPackages[1] = "opencode" }, false},
		{"no npm packages", func(r *Recipe) { r.NPMPackages = nil }, false},
		{"npm order", func(r *Recipe) { slices.Reverse(r.NPMPackages) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Agents()
			tt.change(&r)
			if got := r.Hash(); (got == h) != tt.same {
				t.Fatalf("hash %s after the change, agents' is %s; want same=%v", got, h, tt.same)
			}
		})
	}
	// An empty list is no list: the recipe JSON and the hooks are the
	// same, so debian-12's cache entry stays where it was.
	d := Default()
	d.NPMPackages = []string{}
	if d.Hash() != Default().Hash() {
		t.Fatal("an empty npm list changed debian-12's hash")
	}
}

func TestRecipe_ValidateNPM(t *testing.T) {
	tests := []struct {
		name string
		npm  []string
		ok   bool
	}{
		{"agents", nil, true},
		{"scoped", []string{"@scope/pkg.js"}, true},
		{"version", []string{"opencode-ai@1.0.0"}, false},
		{"scoped version", []string{"@openai/codex@latest"}, false},
		{"option", []string{"--prefix=/tmp"}, false},
		{"shell", []string{"x;reboot"}, false},
		{"quote", []string{"x'y"}, false},
		{"space", []string{"a b"}, false},
		{"upper case", []string{"Claude"}, false},
		{"url", []string{"https://example.com/x.tgz"}, false},
		{"path", []string{"../x"}, false},
		{"empty", []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Agents()
			r.NPMPackages = append(r.NPMPackages, tt.npm...)
			if err := r.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	t.Run("without npm", func(t *testing.T) {
		r := Default()
		r.NPMPackages = []string{"opencode-ai"}
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), "npm Debian package") {
			t.Fatalf("Validate() = %v, want an error about the npm package", err)
		}
		r.ExtraPackages = []string{"npm"}
		if err := r.Validate(); err != nil {
			t.Fatalf("npm as an extra package: %v", err)
		}
	})
}

// customizeHooks returns the commands of argv's --customize-hook options.
func customizeHooks(argv []string) []string {
	var out []string
	for _, a := range argv {
		if h, ok := strings.CutPrefix(a, "--customize-hook="); ok {
			out = append(out, h)
		}
	}
	return out
}

func TestBootstrapArgs_NPM(t *testing.T) {
	r := Agents()
	args := BootstrapArgs(r, "/f", "/out.tar")
	hooks := customizeHooks(args)
	marker := slices.Index(hooks, "echo '"+stageMarker+StageInitramfs+"'")
	// The host's trust store is copied in before npm runs and removed
	// after, so the image keeps only Debian's.
	if ca := slices.IndexFunc(hooks, func(h string) bool { return strings.Contains(h, "cp "+hostCABundle) }); ca != 0 {
		t.Errorf("host CA copy hook at %d, want first: %q", ca, hooks)
	}
	if !slices.Contains(hooks, `rm -f "$1`+npmHostCA+`"`) {
		t.Errorf("host CA copy not removed: %q", hooks)
	}
	if marker < 0 {
		t.Fatalf("no initramfs marker hook in %q", hooks)
	}
	last := -1
	for _, p := range r.NPMPackages {
		i := slices.IndexFunc(hooks, func(h string) bool {
			return strings.HasPrefix(h, `chroot "$1" env HOME=/root NODE_EXTRA_CA_CERTS=`+npmHostCA+` npm `) &&
				strings.Contains(h, " install --global '"+p+"' || ") &&
				strings.HasSuffix(h, "{ echo '"+npmFailedMarker+p+"'; exit 1; }")
		})
		if i < 0 {
			t.Fatalf("no install hook for %s in %q", p, hooks)
		}
		if i < last || i > marker {
			t.Errorf("install hook of %s at %d: want after the previous (%d) and in the bootstrap stage (before %d)", p, i, last, marker)
		}
		last = i
	}
	record := slices.IndexFunc(hooks, func(h string) bool {
		return strings.Contains(h, " ls --global --json --depth=0 >\"$1\""+NPMRecordPath)
	})
	if record < 0 || record < last || record > marker {
		t.Fatalf("record hook at %d (installs end at %d, marker at %d) in %q", record, last, marker, hooks)
	}
	if !slices.Contains(hooks, `rm -rf "$1`+npmCacheDir+`"`) {
		t.Errorf("npm's cache is not removed: %q", hooks)
	}
	for _, h := range hooks {
		if strings.Contains(h, "registry") {
			t.Errorf("hook %q names a registry: npm's own configuration chooses it", h)
		}
	}
	if n := len(args); args[n-3] != r.Suite || args[n-2] != "/out.tar" || args[n-1] != r.Mirror {
		t.Fatalf("positional args %q", args[n-3:])
	}
	for _, a := range BootstrapArgs(Default(), "/f", "/out.tar") {
		if strings.Contains(a, "npm") {
			t.Errorf("debian-12's argv has an npm step: %q", a)
		}
	}
}

// fakeChroot makes a directory for PATH holding a chroot that runs its
// command without changing root and an npm that logs its arguments and
// environment, "installs" by remembering the package (failing for the
// package in $NPM_FAIL) and lists what it installed as `npm ls --json`
// does.
func fakeChroot(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	scripts := map[string]string{
		"chroot": `#!/bin/sh
test -d "$1" || { echo "fake chroot: $1 is no directory" >&2; exit 97; }
shift
exec "$@"
`,
		"npm": `#!/bin/sh
{ printf 'HOME=%s' "$HOME"; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >>"$NPM_LOG"
for a in "$@"; do last=$a; done
case " $* " in
*" install "*)
	if [ "$last" = "$NPM_FAIL" ]; then echo "npm error 404 $last" >&2; exit 1; fi
	echo "$last" >>"$NPM_STATE" ;;
*" ls "*)
	printf '{"name": "lib", "dependencies": {'
	sep=
	while read -r p; do printf '%s"%s": {"version": "1.2.3"}' "$sep" "$p"; sep=', '; done <"$NPM_STATE"
	printf '}}\n' ;;
esac
`,
	}
	for name, text := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// runHooks runs hooks as mmdebstrap does (sh -c HOOK exec ROOT), in
// order, stopping at the first failure, with bin first on PATH; it
// returns the combined output.
func runHooks(t *testing.T, hooks []string, root, bin string, env ...string) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	for _, h := range hooks {
		cmd := exec.Command("sh", "-c", h, "exec", root)
		cmd.Env = append(os.Environ(), append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return out.Bytes(), err
		}
	}
	return out.Bytes(), nil
}

// TestNPMHooks_FakeChroot runs the npm hooks of the agents recipe with a
// fake chroot and npm: each package is one argument, the record lands
// where Build reads it, npm's cache is removed, and a failed install
// names its package.
func TestNPMHooks_FakeChroot(t *testing.T) {
	testenv.RequireCommand(t, "sh")
	r := Agents()
	bin := fakeChroot(t)

	t.Run("success", func(t *testing.T) {
		root, state := t.TempDir(), t.TempDir()
		log := filepath.Join(state, "npm.log")
		if err := os.MkdirAll(filepath.Join(root, npmCacheDir, "_logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := runHooks(t, npmHooks(r), root, bin, "NPM_LOG="+log, "NPM_STATE="+filepath.Join(state, "installed"), "NPM_FAIL=", "HOME=/home/builder")
		if err != nil {
			t.Fatalf("hooks: %v\n%s", err, out)
		}
		calls, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
		if len(lines) != len(r.NPMPackages)+1 {
			t.Fatalf("npm ran %d times, want %d:\n%s", len(lines), len(r.NPMPackages)+1, calls)
		}
		for i, p := range r.NPMPackages {
			if !strings.HasPrefix(lines[i], "HOME=/root ") || !strings.HasSuffix(lines[i], " [install] [--global] ["+p+"]") ||
				!strings.Contains(lines[i], " [--cache="+npmCacheDir+"] ") {
				t.Errorf("npm call %d = %s, want HOME=/root, the cache and install --global %s as one argument", i, lines[i], p)
			}
		}
		if l := lines[len(lines)-1]; !strings.HasSuffix(l, " [ls] [--global] [--json] [--depth=0]") {
			t.Errorf("last npm call = %s, want ls --global --json --depth=0", l)
		}
		got, err := readNPMRecord(root, r.NPMPackages)
		if err != nil {
			t.Fatalf("read record: %v", err)
		}
		if len(got) != len(r.NPMPackages) {
			t.Errorf("record = %v, want %d packages", got, len(r.NPMPackages))
		}
		for _, p := range r.NPMPackages {
			if got[p] != "1.2.3" {
				t.Errorf("record %s = %q, want 1.2.3", p, got[p])
			}
		}
		if _, err := os.Stat(filepath.Join(root, npmCacheDir)); !os.IsNotExist(err) {
			t.Errorf("npm's cache is still in the root: %v", err)
		}
	})

	t.Run("failure names the package", func(t *testing.T) {
		root, state := t.TempDir(), t.TempDir()
		out, err := runHooks(t, npmHooks(r), root, bin, "NPM_LOG="+filepath.Join(state, "npm.log"),
			"NPM_STATE="+filepath.Join(state, "installed"), "NPM_FAIL=opencode-ai")
		if err == nil {
			t.Fatalf("hooks succeeded with a failing npm install:\n%s", out)
		}
		sw := &stageWriter{progress: func(string, int64, int64) {}, seen: map[string]bool{}}
		sw.Write(out)
		if sw.npmFailed != "opencode-ai" {
			t.Fatalf("stageWriter saw failed package %q in:\n%s", sw.npmFailed, out)
		}
		if _, err := os.Stat(filepath.Join(root, NPMRecordPath)); !os.IsNotExist(err) {
			t.Errorf("a record was written after a failed install: %v", err)
		}
	})
}

func TestReadNPMRecord(t *testing.T) {
	write := func(t *testing.T, data string) string {
		t.Helper()
		root := t.TempDir()
		p := filepath.Join(root, NPMRecordPath)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return root
	}
	want := []string{"@openai/codex", "opencode-ai"}
	t.Run("ok", func(t *testing.T) {
		root := write(t, `{"name": "lib", "problems": ["x"], "dependencies": {
			"@openai/codex": {"version": "0.20.0", "overridden": false},
			"opencode-ai": {"version": "0.0.0-beta-17236"},
			"evil": {"version": "1.0\u001b[2J"},
			"Bad Name": {"version": "1.0.0"}}}`)
		got, err := readNPMRecord(root, want)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got["@openai/codex"] != "0.20.0" || got["opencode-ai"] != "0.0.0-beta-17236" {
			t.Fatalf("record = %q, want the two wanted packages only (the others' names or versions are not plain)", got)
		}
	})
	t.Run("missing package", func(t *testing.T) {
		root := write(t, `{"dependencies": {"@openai/codex": {"version": "0.20.0"}}}`)
		if _, err := readNPMRecord(root, want); err == nil || !strings.Contains(err.Error(), "opencode-ai") {
			t.Fatalf("err = %v, want one naming opencode-ai", err)
		}
	})
	t.Run("not json", func(t *testing.T) {
		if _, err := readNPMRecord(write(t, "npm error"), want); err == nil {
			t.Fatal("read a record that is not JSON")
		}
	})
	t.Run("no record", func(t *testing.T) {
		if _, err := readNPMRecord(t.TempDir(), want); err == nil {
			t.Fatal("no error without a record")
		}
	})
	t.Run("nothing wanted", func(t *testing.T) {
		got, err := readNPMRecord(t.TempDir(), nil)
		if got != nil || err != nil {
			t.Fatalf("readNPMRecord(nil) = %v, %v; want nothing read", got, err)
		}
	})
}
