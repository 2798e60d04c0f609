package units

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10},
}

// ParseSize parses a size with an optional binary unit: "8G" is 8 GiB.
// Units are K, M, G and T (powers of 1024), case-insensitive, optionally
// followed by "i", "iB" or "B" ("8GiB", "8gb" and "8G" are the same); a
// bare number is bytes. A decimal fraction is allowed ("1.5G") and the
// result is rounded down to a whole byte. Negative, empty and
// overflowing sizes are errors.
func ParseSize(s string) (int64, error) {
	bad := fmt.Errorf("size %q: want a number with an optional unit K, M, G or T, such as \"8G\"", s)
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	unitAt := func(t string) bool { return len(t) > 1 && strings.ContainsRune("KMGT", rune(t[len(t)-1])) }
	if strings.HasSuffix(t, "I") && unitAt(t[:len(t)-1]) {
		t = t[:len(t)-1]
	}
	var shift uint
	if unitAt(t) {
		for _, u := range sizeUnits {
			if strings.HasSuffix(t, u.suffix) {
				shift = u.shift
			}
		}
		t = t[:len(t)-1]
	}
	if !sizeNumberRe.MatchString(t) {
		return 0, bad
	}
	r, ok := new(big.Rat).SetString(t)
	if !ok {
		return 0, bad
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n.Int64(), nil
}

var sizeNumberRe = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// FormatSize renders n bytes in the largest unit that represents it
// exactly ("8G", "1536M", "4097"), so ParseSize(FormatSize(n)) == n.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if unit := int64(1) << u.shift; n%unit == 0 {
			return fmt.Sprintf("%d%s", n/unit, u.suffix)
		}
	}
	return fmt.Sprintf("%d", n)
}
