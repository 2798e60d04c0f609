package vmm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/units"
)

// DescribeState returns the size and SHA-256 of each named file in dir, for
// a driver's SavedState.
func DescribeState(dir string, names ...string) ([]StateFile, error) {
	out := make([]StateFile, 0, len(names))
	for _, n := range names {
		size, sum, err := hashFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("describe saved state: %w", err)
		}
		out = append(out, StateFile{Name: n, Size: size, SHA256: sum})
	}
	return out, nil
}

// VerifyState checks that every file of st exists in dir with its recorded
// size and checksum, so a truncated, corrupt or swapped state file is
// refused before a VMM parses it (the VMM's loader is not written for
// hostile input, and a guest could have influenced nothing here but the
// host's disk can).
func VerifyState(dir string, st SavedState) error {
	if len(st.Files) == 0 {
		return fmt.Errorf("saved state in %s lists no files", dir)
	}
	for _, f := range st.Files {
		if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
			return fmt.Errorf("saved state in %s: bad file name %q", dir, f.Name)
		}
		p := filepath.Join(dir, f.Name)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("saved state: %w", err)
		}
		if fi.Size() != f.Size {
			return fmt.Errorf("saved state %s is %d bytes, recorded %d: truncated or replaced", p, fi.Size(), f.Size)
		}
		_, sum, err := hashFile(p)
		if err != nil {
			return fmt.Errorf("saved state: %w", err)
		}
		if sum != f.SHA256 {
			return fmt.Errorf("saved state %s: checksum %s does not match the recorded %s: corrupt", p, units.ShortID(sum), units.ShortID(f.SHA256))
		}
	}
	return nil
}

func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
