package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAgentsImage builds the agents image for real (Debian packages and
// the coding-agent CLIs from the npm registry, through the host's
// network) and runs each CLI in a guest booted from it. It is the one
// test that proves the recipe still builds and its CLIs still run on
// Debian's Node.js; it needs the registry, as `vm run --image agents`
// does.
func TestAgentsImage(t *testing.T) {
	e := newEnv(t)
	start := time.Now()
	e.must(e.bangerHost("image", "build", "agents"))
	t.Logf("agents image built in %s", time.Since(start).Round(time.Second))
	show := e.must(e.bangerHost("image", "show", "agents")).stdout
	for _, p := range []string{"@anthropic-ai/claude-code", "@openai/codex", "opencode-ai"} {
		if !strings.Contains(show, p+" ") {
			t.Errorf("image show lacks the version of %s:\n%s", p, show)
		}
	}
	e.must(e.bangerHost("daemon", "stop"))

	r := e.must(e.banger("", "vm", "run", "--rm", "--image", "agents", "--", "sh", "-c",
		"node --version && claude --version && opencode --version && codex --version && for c in rg jq python3 tmux gcc git; do command -v $c || echo missing $c; done"))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^v\d+\.\d+\.\d+$`),                // node
		regexp.MustCompile(`(?m)^\d+\.\d+\.\d+ \(Claude Code\)$`), // claude
		regexp.MustCompile(`(?m)^\d+\.\d+\.\d+$`),                 // opencode
		regexp.MustCompile(`(?m)^codex-cli \d+\.\d+\.\d+$`),       // codex
		regexp.MustCompile(`(?m)^/usr/bin/gcc$`),
		regexp.MustCompile(`(?m)^/usr/bin/git$`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("guest output lacks %s:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "missing") {
		t.Errorf("tools missing in the agents image:\n%s", r.stdout)
	}
}
