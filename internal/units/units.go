// Package units renders sizes and ids for people: one byte format and one
// short-id length, so the CLI, the TUI, the daemon's progress details and
// its errors all show the same thing for the same value. Standard library
// only, so every binary can link it.
package units

import (
	"fmt"
	"strconv"
)

// binaryUnits are the IEC units Bytes steps through, each 1024 times the
// one before.
var binaryUnits = [...]string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Bytes renders n bytes with a binary unit and one decimal: "512 B",
// "1.5 KiB", "12.0 MiB", "3.0 GiB". The unit is the largest one in which
// the rounded value stays under 1024, so 1 MiB less one byte reads
// "1.0 MiB", never "1024.0 KiB".
func Bytes(n int64) string {
	if n > -1024 && n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, u := float64(n)/1024, 0
	for u < len(binaryUnits)-1 && (v >= 1023.95 || v <= -1023.95) {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s", v, binaryUnits[u])
}

// ShortIDLen is how many leading characters of an id (image, VM,
// operation, recipe hash, git commit, checksum) are shown where a full
// one would not fit. Twelve hex digits keep collisions unlikely among
// the thousands of objects one host holds.
const ShortIDLen = 12

// ShortID is the first ShortIDLen bytes of id, or id when it is shorter.
func ShortID(id string) string {
	if len(id) > ShortIDLen {
		return id[:ShortIDLen]
	}
	return id
}
