// Package suggest finds the names close to a mistyped one, for "did you
// mean" hints in errors about unknown VMs and images.
package suggest

import (
	"sort"
	"strings"
)

// Max is how many suggestions Closest returns at most.
const Max = 5

// Closest returns the names close to ref: those sharing a prefix with it
// (either way round, case-insensitively) or within an edit distance (see
// Distance) that grows with ref's length. Closest first, then by name; at
// most Max, without duplicates.
func Closest(ref string, names []string) []string {
	r := strings.ToLower(ref)
	maxDist := 1 + len(r)/4
	type cand struct {
		name string
		dist int
	}
	var cs []cand
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		l := strings.ToLower(n)
		d := Distance(r, l)
		switch {
		case d <= maxDist:
		case strings.HasPrefix(l, r) || strings.HasPrefix(r, l) && len(l) >= 2:
		default:
			continue
		}
		cs = append(cs, cand{n, d})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].dist != cs[j].dist {
			return cs[i].dist < cs[j].dist
		}
		return cs[i].name < cs[j].name
	})
	if len(cs) > Max {
		cs = cs[:Max]
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.name)
	}
	return out
}

// Distance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and adjacent transpositions ("wbe"
// for "web") each cost one. Counted in bytes: names are ASCII.
func Distance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
