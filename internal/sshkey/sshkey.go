// Package sshkey manages banger's ssh identity on the host: the key pair
// that banger injects into every guest, and the known_hosts file that pins
// each guest's host key so `banger vm ssh` never disables host-key checks.
package sshkey

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"banger/internal/atomicfile"
	"banger/internal/cmdrun"
	"banger/internal/layout"
)

// Key names the files of an ssh identity.
type Key struct {
	// Private is the private key path; Public is Private + ".pub".
	Private, Public string
}

// Ensure returns the identity to use. When configured is set (config
// `ssh_key`), that key must exist and is never modified. Otherwise an
// ed25519 key is generated once at dir/id_ed25519 and reused after that;
// an existing key is never overwritten.
func Ensure(ctx context.Context, configured, dir string) (Key, error) {
	if configured != "" {
		k := Key{Private: configured, Public: configured + ".pub"}
		if _, err := os.Stat(k.Private); err != nil {
			return Key{}, fmt.Errorf("ssh_key %s: %w", configured, err)
		}
		if _, err := os.Stat(k.Public); err != nil {
			return Key{}, fmt.Errorf("ssh_key %s: public key %s: %w", configured, k.Public, err)
		}
		return k, nil
	}
	k := Key{Private: filepath.Join(dir, layout.SSHKeyFile)}
	k.Public = k.Private + ".pub"
	if _, err := os.Stat(k.Private); err == nil {
		if _, err := os.Stat(k.Public); err != nil {
			return Key{}, fmt.Errorf("ssh key %s exists but its public half is missing: %w", k.Private, err)
		}
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, fmt.Errorf("create ssh dir: %w", err)
	}
	// Generate beside the target and install atomically, so a crash never
	// leaves a half-written key that a later run would refuse to overwrite.
	tmp, err := os.MkdirTemp(dir, ".keygen-")
	if err != nil {
		return Key{}, fmt.Errorf("create ssh key: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpKey := filepath.Join(tmp, layout.SSHKeyFile)
	if err := cmdrun.Run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f", tmpKey); err != nil {
		return Key{}, fmt.Errorf("create ssh key: %w", err)
	}
	// ssh-keygen does not fsync; atomicfile does. The private half goes
	// last: its presence is what says the pair is complete.
	pub, err := os.ReadFile(tmpKey + ".pub")
	if err != nil {
		return Key{}, fmt.Errorf("install ssh public key: %w", err)
	}
	priv, err := os.ReadFile(tmpKey)
	if err != nil {
		return Key{}, fmt.Errorf("install ssh private key: %w", err)
	}
	if err := atomicfile.Write(k.Public, pub, 0o644); err != nil {
		return Key{}, fmt.Errorf("install ssh public key: %w", err)
	}
	if err := atomicfile.Write(k.Private, priv, 0o600); err != nil {
		return Key{}, fmt.Errorf("install ssh private key: %w", err)
	}
	return k, nil
}

// PublicKey returns the authorized_keys line of k.
func (k Key) PublicKey() (string, error) {
	b, err := os.ReadFile(k.Public)
	if err != nil {
		return "", fmt.Errorf("read ssh public key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// KnownHosts is banger's own known_hosts file. Entries are keyed by a
// host alias (the VM's DNS name) so a reused IP never matches a stale key.
type KnownHosts struct {
	Path string
	mu   sync.Mutex
}

// Set replaces every entry for alias with the given host public keys
// ("type base64 [comment]" lines, as the guest's /etc/ssh/*.pub hold).
func (h *KnownHosts) Set(alias string, hostKeys []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	lines, err := h.readOthers(alias)
	if err != nil {
		return err
	}
	for _, k := range hostKeys {
		f := strings.Fields(k)
		if len(f) < 2 {
			return fmt.Errorf("known_hosts %s: malformed host key %q", alias, k)
		}
		lines = append(lines, alias+" "+f[0]+" "+f[1])
	}
	return h.write(lines)
}

// Remove drops every entry for alias; missing entries are not an error.
func (h *KnownHosts) Remove(alias string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	lines, err := h.readOthers(alias)
	if err != nil {
		return err
	}
	return h.write(lines)
}

func (h *KnownHosts) readOthers(alias string) ([]string, error) {
	b, err := os.ReadFile(h.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	var keep []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && f[0] == alias {
			continue
		}
		if strings.TrimSpace(line) != "" {
			keep = append(keep, line)
		}
	}
	return keep, sc.Err()
}

func (h *KnownHosts) write(lines []string) error {
	if err := os.MkdirAll(filepath.Dir(h.Path), 0o700); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	if err := atomicfile.Write(h.Path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	return nil
}

// SSHArgs returns the ssh(1) arguments that connect to a guest as root
// with banger's key and strict host-key checking against banger's
// known_hosts, before any remote command.
func SSHArgs(k Key, knownHosts, alias, ip string) []string {
	return []string{
		"-i", k.Private,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + alias,
		"-o", "LogLevel=ERROR",
		"root@" + ip,
	}
}

// NewHostKey generates an ed25519 ssh host key pair for a guest with
// ssh-keygen, returning the private key file's and the public key file's
// contents. The host makes a restored guest's keys itself so it can pin
// them before the guest answers (and ssh-keygen on the host is far faster
// than in a guest under emulation).
func NewHostKey(ctx context.Context) (private, public string, err error) {
	dir, err := os.MkdirTemp("", "banger-hostkey-")
	if err != nil {
		return "", "", fmt.Errorf("host key: %w", err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "key")
	if err := cmdrun.Run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@banger", "-f", p); err != nil {
		return "", "", fmt.Errorf("host key: %w", err)
	}
	priv, err := os.ReadFile(p)
	if err != nil {
		return "", "", err
	}
	pub, err := os.ReadFile(p + ".pub")
	if err != nil {
		return "", "", err
	}
	return string(priv), strings.TrimSpace(string(pub)), nil
}
