package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guestcontract"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----"

func TestApplyTrust_addsReplacesAndRemovesOnlyItsBlock(t *testing.T) {
	root := t.TempDir()
	bundle := filepath.Join(root, guestcontract.CABundle)
	os.MkdirAll(filepath.Dir(bundle), 0o755)
	system := "-----BEGIN CERTIFICATE-----\nMIIBsystem\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(bundle, []byte(system), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 { // applying twice changes nothing
		if err := applyTrust(root, []string{testCA}); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(bundle)
	want := system + guestcontract.CABundleBegin + "\n" + testCA + "\n" + guestcontract.CABundleEnd + "\n"
	if string(got) != want {
		t.Errorf("bundle:\n%s\nwant:\n%s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(root, guestcontract.CAFile)); err != nil || string(b) != testCA+"\n" {
		t.Errorf("CA file %q, %v", b, err)
	}
	// Another CA replaces it; none removes it and leaves the system's.
	other := strings.Replace(testCA, "fake", "other", 1)
	if err := applyTrust(root, []string{other}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(bundle); strings.Contains(string(got), "MIIBfake") || !strings.Contains(string(got), "MIIBother") {
		t.Errorf("bundle after a new CA:\n%s", got)
	}
	if err := applyTrust(root, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(bundle); string(got) != system {
		t.Errorf("bundle after none:\n%s\nwant the system's only", got)
	}
	if _, err := os.Stat(filepath.Join(root, guestcontract.CAFile)); !os.IsNotExist(err) {
		t.Errorf("CA file left: %v", err)
	}
	if err := applyTrust(root, []string{"not a certificate"}); err == nil {
		t.Error("a non-PEM CA was taken")
	}
}

func TestApplyEnv_quotesAndRefuses(t *testing.T) {
	root := t.TempDir()
	if err := applyEnv(root, []string{"API_KEY=banger-secret-api", "ODD=it's"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, guestcontract.EnvFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "export API_KEY='banger-secret-api'\n") || !strings.Contains(string(b), `export ODD='it'\''s'`) {
		t.Errorf("env file:\n%s", b)
	}
	for _, bad := range []string{"1X=y", "X=a\nrm -rf /", "NOEQUALS", "A B=c"} {
		if err := applyEnv(root, []string{bad}); err == nil {
			t.Errorf("applyEnv(%q) = nil, want an error", bad)
		}
	}
	if err := applyEnv(root, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, guestcontract.EnvFile)); !os.IsNotExist(err) {
		t.Errorf("env file left after an identity without env: %v", err)
	}
}
