package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/config"
)

// PlaceholderPrefix starts every placeholder: a guest given secret NAME
// holds "banger-secret-NAME" where the value would be. Placeholders are
// not secret; they are the same for every VM, so a VM restored from
// another's snapshot holds the right ones.
const PlaceholderPrefix = "banger-secret-"

// Placeholder is what a guest holds for secret name.
func Placeholder(name string) string { return PlaceholderPrefix + name }

// Secret is a [[secret]] as the proxy uses it.
type Secret struct {
	Name  string
	Hosts []Rule
	// HeaderName and HeaderTemplate set a header on requests to Hosts
	// ({} is the value); empty when the placeholder is only replaced.
	HeaderName, HeaderTemplate string
	def                        config.Secret
}

// Placeholder is what the guest holds for the secret.
func (s Secret) Placeholder() string { return Placeholder(s.Name) }

// Covers reports whether the secret may be sent to host.
func (s Secret) Covers(host string) bool {
	for _, r := range s.Hosts {
		if r.MatchName(host) {
			return true
		}
	}
	return false
}

// valueTTL is how long a value read from a file or a command is reused
// before it is read again (a rotated key is picked up within it).
const valueTTL = 5 * time.Minute

// commandTimeout bounds a from_command run.
const commandTimeout = 10 * time.Second

// maxSecret bounds a value (a header must stay a header).
const maxSecret = 16 << 10

// Secrets are the configured secrets and a short-lived cache of their
// values. Values live only in this process's memory: never on a disk,
// in the store, a log or a flow.
type Secrets struct {
	home string
	defs map[string]Secret

	mu    sync.Mutex
	cache map[string]cachedValue
}

type cachedValue struct {
	v     string
	until time.Time
}

// NewSecrets checks the [[secret]] entries (their hosts as allow rules)
// and returns them. home expands "~/" in from_file.
func NewSecrets(defs []config.Secret, home string) (*Secrets, error) {
	s := &Secrets{home: home, defs: map[string]Secret{}, cache: map[string]cachedValue{}}
	for _, d := range defs {
		sec := Secret{Name: d.Name, def: d}
		for _, h := range d.Hosts {
			r, err := ParseRule(h)
			if err != nil || r.Host == "" {
				return nil, fmt.Errorf("secret %q: hosts: %q must be a host name or *.domain", d.Name, h)
			}
			sec.Hosts = append(sec.Hosts, r)
		}
		if d.Header != "" {
			sec.HeaderName, sec.HeaderTemplate, _ = d.HeaderParts()
		}
		s.defs[d.Name] = sec
	}
	return s, nil
}

// Lookup returns the secret called name.
func (s *Secrets) Lookup(name string) (Secret, bool) {
	if s == nil {
		return Secret{}, false
	}
	sec, ok := s.defs[name]
	return sec, ok
}

// Value returns the secret's value, read from its source (or the cache).
// Errors never carry the value.
func (s *Secrets) Value(ctx context.Context, name string) (string, error) {
	sec, ok := s.Lookup(name)
	if !ok {
		return "", fmt.Errorf("secret %q: not configured", name)
	}
	s.mu.Lock()
	c, ok := s.cache[name]
	s.mu.Unlock()
	if ok && time.Now().Before(c.until) {
		return c.v, nil
	}
	v, err := s.read(ctx, sec.def)
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	v = strings.TrimRight(v, "\r\n")
	switch {
	case v == "":
		return "", fmt.Errorf("secret %q: its source gave an empty value", name)
	case len(v) > maxSecret:
		return "", fmt.Errorf("secret %q: value longer than %d bytes", name, maxSecret)
	case strings.ContainsAny(v, "\r\n\x00"):
		return "", fmt.Errorf("secret %q: value holds a line break or NUL, which no header may carry", name)
	}
	s.mu.Lock()
	s.cache[name] = cachedValue{v: v, until: time.Now().Add(valueTTL)}
	s.mu.Unlock()
	return v, nil
}

func (s *Secrets) read(ctx context.Context, d config.Secret) (string, error) {
	switch {
	case d.FromEnv != "":
		v, ok := os.LookupEnv(d.FromEnv)
		if !ok {
			return "", fmt.Errorf("from_env %s: not set in bangerd's environment", d.FromEnv)
		}
		return v, nil
	case d.FromFile != "":
		p := d.FromFile
		if rest, ok := strings.CutPrefix(p, "~/"); ok {
			p = filepath.Join(s.home, rest)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("from_file: %w", err)
		}
		return string(b), nil
	case len(d.FromCommand) > 0:
		ctx, cancel := context.WithTimeout(ctx, commandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, d.FromCommand[0], d.FromCommand[1:]...)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("from_command %s: exit %d", d.FromCommand[0], ee.ExitCode())
			}
			return "", fmt.Errorf("from_command %s: %w", d.FromCommand[0], err)
		}
		return out.String(), nil
	}
	return "", errors.New("no source")
}
