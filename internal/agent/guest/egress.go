package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"banger/internal/agent"
	"banger/internal/guestcontract"
)

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// applyTrust makes the guest trust exactly the given CA certificates of
// banger (none: any trust an earlier identity gave is removed): the CA
// file for Node, and a marked block at the end of the system bundle, so
// every client that reads the bundle trusts them without a rebuild.
func applyTrust(root string, cas []string) error {
	var pemText strings.Builder
	for _, c := range cas {
		c = strings.TrimSpace(c)
		if !strings.HasPrefix(c, "-----BEGIN CERTIFICATE-----") || !strings.HasSuffix(c, "-----END CERTIFICATE-----") {
			return errors.New("a trust CA is not one PEM certificate")
		}
		pemText.WriteString(c + "\n")
	}
	caFile := filepath.Join(root, guestcontract.CAFile)
	if len(cas) == 0 {
		if err := os.Remove(caFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(caFile), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(caFile, []byte(pemText.String()), 0o644); err != nil {
			return err
		}
	}
	bundle := filepath.Join(root, guestcontract.CABundle)
	old, err := os.ReadFile(bundle)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if errors.Is(err, os.ErrNotExist) && len(cas) == 0 {
		return nil
	}
	text := stripBlock(string(old), guestcontract.CABundleBegin, guestcontract.CABundleEnd)
	if len(cas) > 0 {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += guestcontract.CABundleBegin + "\n" + pemText.String() + guestcontract.CABundleEnd + "\n"
	}
	if text == string(old) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(bundle), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(bundle, []byte(text), 0o644)
}

// stripBlock removes the lines from begin to end (inclusive).
func stripBlock(text, begin, end string) string {
	var out strings.Builder
	in := false
	for _, line := range strings.SplitAfter(text, "\n") {
		t := strings.TrimRight(line, "\n")
		switch {
		case t == begin:
			in = true
		case t == end && in:
			in = false
		case !in:
			out.WriteString(line)
		}
	}
	return out.String()
}

// applyEnv exports env (KEY=VALUE) to login shells through the profile
// file, or removes the file when env is empty.
func applyEnv(root string, env []string) error {
	file := filepath.Join(root, guestcontract.EnvFile)
	if len(env) == 0 {
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	var b strings.Builder
	b.WriteString("# Written by banger-agent from the VM's identity; replaced at every boot.\n")
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE.MatchString(k) || strings.ContainsAny(v, "\n\r\x00") {
			return fmt.Errorf("environment entry %q: want KEY=VALUE on one line", kv)
		}
		fmt.Fprintf(&b, "export %s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(file, []byte(b.String()), 0o644)
}

// maxInlineFile bounds one inline file.
const maxInlineFile = 64 << 10

// applyInlineFile writes f below root, creating its parent directories.
func applyInlineFile(root string, f agent.InlineFile, sys System) error {
	if len(f.Content) > maxInlineFile {
		return fmt.Errorf("%d bytes, at most %d", len(f.Content), maxInlineFile)
	}
	dst, err := guestPath(root, f.Guest)
	if err != nil {
		return err
	}
	if err := mkdirParents(root, filepath.Dir(dst), sys); err != nil {
		return err
	}
	mode := os.FileMode(f.Mode & 0o777)
	if mode == 0 {
		mode = 0o600
	}
	return writeFileAtomic(dst, []byte(f.Content), mode)
}
