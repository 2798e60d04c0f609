package cli

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func completionDaemon(t *testing.T) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVMs, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]api.VM{{Name: "alpha"}, {Name: "beta"}, {Name: "apex"}})
	})
	mux.HandleFunc("GET "+api.PathImages, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]api.Image{{Name: "debian-12"}, {Name: "agents"}})
	})
	mux.HandleFunc("GET "+api.PathVMSessions, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]api.Session{{Name: "s-" + r.PathValue("ref")}})
	})
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.VersionInfo{Version: "test", PID: 1, BuildStamp: time.Now().Add(time.Hour)})
	})
	mux.HandleFunc("DELETE "+api.PathVM, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("ref") != "alpha" {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.Errorf(api.CodeNotFound, "vm %q not found", r.PathValue("ref")))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	serveFakeDaemon(t, mux)
}

func TestVMDelete_JSON(t *testing.T) {
	completionDaemon(t)
	out, _, code := runMain(t, "vm", "delete", "--json", "alpha", "nope")
	var got []deleteResult
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("vm delete --json printed %q: %v", out, err)
	}
	if code != 1 || len(got) != 2 || !got[0].Deleted || got[1].Deleted || !strings.Contains(got[1].Error, "not found") {
		t.Errorf("exit %d, %+v", code, got)
	}
}

// completions runs cobra's hidden __complete command, as the shell
// scripts do, and returns the candidates (the directive line dropped).
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	out, errOut, code := runMain(t, append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, ":") {
			got = append(got, l)
		}
	}
	return got
}

func TestCompletion_namesFromTheDaemon(t *testing.T) {
	completionDaemon(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "show", "a"}, "alpha apex"},
		{[]string{"vm", "delete", "alpha", ""}, "alpha beta apex"}, // NAME...: every argument
		{[]string{"vm", "show", "alpha", ""}, ""},                  // one NAME only
		{[]string{"vm", "exec", "b"}, "beta"},
		{[]string{"vm", "session", "attach", "beta", ""}, "s-beta"},
		{[]string{"vm", "workspace", "pull", ""}, "alpha beta apex"},
		{[]string{"vm", "net", "a"}, "alpha apex"},
		{[]string{"vm", "net", "alpha", ""}, "allow deny mode"},
		{[]string{"vm", "net", "alpha", "mode", "n"}, "none"},
		{[]string{"vm", "net", "alpha", "allow", ""}, ""},
		{[]string{"vm", "net", "log", "b"}, "beta"},
		{[]string{"image", "rm", "d"}, "debian-12"},
		{[]string{"image", "show", ""}, "debian-12 agents"},
	} {
		if got := strings.Join(completions(t, tc.args...), " "); got != tc.want {
			t.Errorf("complete %v = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestCompletion_silentAndFastWithoutADaemon(t *testing.T) {
	t.Setenv("BANGER_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	start := time.Now()
	out, errOut, code := runMain(t, "__complete", "vm", "show", "")
	// cobra itself reports the directive on stderr (the shell scripts
	// discard it); anything else there would be banger talking.
	errOut = strings.TrimPrefix(errOut, "Completion ended with directive: ShellCompDirectiveNoFileComp\n")
	if code != 0 || errOut != "" || strings.TrimSpace(out) != ":4" || time.Since(start) > 2*time.Second {
		t.Errorf("without a daemon: exit %d, out %q, err %q after %s", code, out, errOut, time.Since(start))
	}
}

// TestEveryCommandHasExamples walks the command tree: every runnable
// command of banger's own has an Example section, and no entry of the
// examples table names a command that does not exist.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRootCmd(newApp(IOStreams{}))
	seen := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		seen[c.CommandPath()] = true
		if c.Runnable() && c.Name() != "help" && !strings.HasPrefix(c.CommandPath(), "banger completion") && strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root.InitDefaultCompletionCmd()
	walk(root)
	for path, ex := range examples {
		if !seen[path] {
			t.Errorf("examples names %q, which is not a command", path)
		}
		// Every example line parses: the command exists and its flags do.
		for _, line := range strings.Split(ex, "\n") {
			line, _, _ = strings.Cut(line, " | ")
			if !strings.HasPrefix(line, "banger ") {
				continue
			}
			args := strings.Fields(strings.TrimPrefix(line, "banger "))
			if i := slices.Index(args, "--"); i >= 0 {
				args = args[:i]
			}
			r := newRootCmd(newApp(IOStreams{}))
			c, rest, err := r.Find(args)
			if err != nil || c.CommandPath() != path {
				t.Errorf("%s: example %q runs %q (%v)", path, line, c.CommandPath(), err)
				continue
			}
			if err := c.ParseFlags(rest); err != nil {
				t.Errorf("%s: example %q: %v", path, line, err)
			}
		}
	}
}
