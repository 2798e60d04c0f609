package config

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Secret is one [[secret]] entry: a credential the VMs given it use
// without holding it. Its value comes from exactly one of FromEnv (a
// variable of bangerd's environment), FromFile (a host file; "~/" is the
// user's home) or FromCommand (run on the host, e.g. a keychain tool;
// its output, trimmed, is the value). A guest sees only the placeholder
// ("banger-secret-NAME") in the environment variable Env and, when set,
// in the file File; banger's proxy puts the value in place of the
// placeholder in the headers of HTTPS requests to Hosts, or sets Header
// ("x-api-key: {}", "Authorization: Bearer {}"; {} is the value).
type Secret struct {
	Name        string   `toml:"name"`
	FromEnv     string   `toml:"from_env"`
	FromFile    string   `toml:"from_file"`
	FromCommand []string `toml:"from_command"`
	Hosts       []string `toml:"hosts"`
	Header      string   `toml:"header"`
	Env         string   `toml:"env"`
	File        string   `toml:"file"`
	// Default gives the secret to every VM created without --secret.
	Default bool `toml:"default"`
}

var (
	secretNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	headerNameRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]{1,64}$`)
)

// EnvName is the guest variable holding the placeholder: Env, or the
// name upper-cased with '-' as '_'.
func (s Secret) EnvName() string {
	if s.Env != "" {
		return s.Env
	}
	return strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
}

// HeaderParts splits Header into a header name and its value template.
func (s Secret) HeaderParts() (name, template string, ok bool) {
	name, template, ok = strings.Cut(s.Header, ":")
	return strings.TrimSpace(name), strings.TrimSpace(template), ok
}

// check returns the first invalid field and why ("" when valid). Host
// rules are checked by the egress package when the daemon starts.
func (s Secret) check() (field, reason string) {
	sources := 0
	for _, set := range []bool{s.FromEnv != "", s.FromFile != "", len(s.FromCommand) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case !secretNameRE.MatchString(s.Name):
		return "name", "must be 1-40 of a-z, 0-9, '-', '_', starting with a letter or digit"
	case sources != 1:
		return "from_env", "exactly one of from_env, from_file and from_command must be set"
	case s.FromEnv != "" && !envNameRE.MatchString(s.FromEnv):
		return "from_env", "must be an environment variable name"
	case len(s.Hosts) == 0:
		return "hosts", "must name the hosts the secret may be sent to"
	case !envNameRE.MatchString(s.EnvName()):
		return "env", "must be an environment variable name"
	}
	if s.FromFile != "" && !strings.HasPrefix(s.FromFile, "~/") && !path.IsAbs(s.FromFile) {
		return "from_file", `must be an absolute path or start with "~/"`
	}
	if s.Header != "" {
		name, tmpl, ok := s.HeaderParts()
		if !ok || !headerNameRE.MatchString(name) || !strings.Contains(tmpl, "{}") || strings.ContainsAny(tmpl, "\r\n") {
			return "header", `must be "Name: template" with {} where the value goes, e.g. "Authorization: Bearer {}"`
		}
	}
	if s.File != "" {
		g := s.File
		if strings.HasPrefix(g, "~/") {
			g = GuestHome + "/" + g[2:]
		}
		if !path.IsAbs(g) || path.Clean(g) != g || g == "/" {
			return "file", `must be a clean absolute guest path or start with "~/"`
		}
	}
	return "", ""
}

// GuestFile is File as an absolute guest path ("" when unset).
func (s Secret) GuestFile() string {
	if strings.HasPrefix(s.File, "~/") {
		return GuestHome + "/" + s.File[2:]
	}
	return s.File
}

// validateSecrets checks every [[secret]] and that names are unique.
func (c *Config) validateSecrets() error {
	seen := map[string]bool{}
	for i, s := range c.Secrets {
		if field, reason := s.check(); field != "" {
			val := map[string]string{"name": s.Name, "from_env": s.FromEnv, "from_file": s.FromFile, "hosts": fmt.Sprint(s.Hosts),
				"env": s.EnvName(), "header": s.Header, "file": s.File}[field]
			return c.keyErr(fmt.Sprintf("secret[%d].%s", i, field), strconv.Quote(val), reason)
		}
		if seen[s.Name] {
			return c.keyErr(fmt.Sprintf("secret[%d].name", i), strconv.Quote(s.Name), "is used by an earlier [[secret]]")
		}
		seen[s.Name] = true
	}
	return nil
}

// SecretNamed returns the [[secret]] called name.
func (c *Config) SecretNamed(name string) (Secret, bool) {
	for _, s := range c.Secrets {
		if s.Name == name {
			return s, true
		}
	}
	return Secret{}, false
}
