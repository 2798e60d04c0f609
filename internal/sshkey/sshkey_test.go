package sshkey

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/testenv"
)

func TestEnsure_GeneratesOnceAndNeverOverwrites(t *testing.T) {
	testenv.RequireCommand(t, "ssh-keygen")
	dir := filepath.Join(t.TempDir(), "ssh")
	k1, err := Ensure(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	pub1, err := k1.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub1, "ssh-ed25519 ") {
		t.Fatalf("public key %q is not ed25519", pub1)
	}
	st, err := os.Stat(k1.Private)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := Ensure(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	pub2, _ := k2.PublicKey()
	if pub1 != pub2 {
		t.Fatal("second Ensure replaced the existing key")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".keygen-") {
			t.Fatalf("temporary %s left behind", e.Name())
		}
	}
}

func TestEnsure_ConfiguredKeyMustExist(t *testing.T) {
	_, err := Ensure(context.Background(), "/nonexistent/key", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "ssh_key /nonexistent/key") {
		t.Fatalf("err = %v, want one naming ssh_key", err)
	}
}

func TestKnownHosts_SetReplaceRemove(t *testing.T) {
	h := &KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	if err := h.Set("a.vm", []string{"ssh-ed25519 AAAA1 root@a", "ecdsa-sha2-nistp256 BBBB1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Set("b.vm", []string{"ssh-ed25519 CCCC"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Set("a.vm", []string{"ssh-ed25519 AAAA2"}); err != nil {
		t.Fatal(err)
	}
	got := readLines(t, h.Path)
	want := []string{"b.vm ssh-ed25519 CCCC", "a.vm ssh-ed25519 AAAA2"}
	if !slices.Equal(got, want) {
		t.Fatalf("known_hosts = %q, want %q", got, want)
	}
	if err := h.Remove("a.vm"); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, h.Path); !slices.Equal(got, want[:1]) {
		t.Fatalf("after remove = %q", got)
	}
	if err := h.Set("c.vm", []string{"garbage"}); err == nil {
		t.Fatal("malformed host key accepted")
	}
}

func readLines(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
