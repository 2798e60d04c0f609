// Package vmname validates user-given VM names and generates friendly
// ones ("brave-otter") when none is given. A VM name is also its DNS label
// in the .vm zone, so names follow DNS label rules.
package vmname

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"unicode/utf8"
)

// MaxLen is the longest valid name (a DNS label).
const MaxLen = 63

// Validate reports whether name is a usable VM name: 1-63 characters of
// lowercase letters, digits and hyphens, not starting or ending with a
// hyphen. The error names the rule that failed.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid vm name: must not be empty")
	case len(name) > MaxLen:
		return fmt.Errorf("invalid vm name %q: %d characters, at most %d allowed", name, len(name), MaxLen)
	case name[0] == '-':
		return fmt.Errorf("invalid vm name %q: must not start with a hyphen", name)
	case name[len(name)-1] == '-':
		return fmt.Errorf("invalid vm name %q: must not end with a hyphen", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			return fmt.Errorf("invalid vm name %q: uppercase letter %q; use lowercase", name, c)
		}
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("invalid vm name %q: character %q at position %d; use lowercase letters, digits and hyphens", name, r, utf8.RuneCountInString(name[:i])+1)
	}
	return nil
}

// Generate returns a random adjective-noun name for which taken reports
// false. When random picks keep colliding (the space is nearly used up) it
// walks every pair in order, and when all pairs are taken it appends a
// numeric suffix ("brave-otter-2"). taken may be nil.
func Generate(taken func(string) bool) string {
	if taken == nil {
		taken = func(string) bool { return false }
	}
	const randomTries = 32
	for range randomTries {
		if n := pair(rand.IntN(len(adjectives)), rand.IntN(len(nouns))); !taken(n) {
			return n
		}
	}
	// Exhaustive walk from a random start so results stay varied.
	total := len(adjectives) * len(nouns)
	start := rand.IntN(total)
	for i := range total {
		k := (start + i) % total
		if n := pair(k/len(nouns), k%len(nouns)); !taken(n) {
			return n
		}
	}
	base := pair(rand.IntN(len(adjectives)), rand.IntN(len(nouns)))
	for s := 2; ; s++ {
		if n := base + "-" + strconv.Itoa(s); !taken(n) {
			return n
		}
	}
}

func pair(a, n int) string { return adjectives[a] + "-" + nouns[n] }

var adjectives = []string{
	"able", "agile", "amber", "ample", "azure", "bold", "brave", "brisk", "bright", "calm",
	"clever", "cosmic", "crisp", "curious", "daring", "deft", "eager", "early", "fancy", "fast",
	"fierce", "fluffy", "gentle", "giddy", "glad", "golden", "grand", "happy", "hardy", "honest",
	"humble", "jolly", "keen", "kind", "lively", "lucky", "mellow", "merry", "mighty", "misty",
	"nimble", "noble", "plucky", "polite", "proud", "quick", "quiet", "rapid", "rosy", "rustic",
	"shiny", "silent", "silver", "sleepy", "snappy", "solid", "spry", "steady", "sunny", "swift",
	"tidy", "tiny", "trusty", "vivid", "warm", "wild", "wise", "witty", "zany", "zesty",
}

var nouns = []string{
	"badger", "beaver", "bison", "bobcat", "condor", "cougar", "coyote", "crane", "dingo", "dolphin",
	"eagle", "falcon", "ferret", "finch", "fox", "gazelle", "gecko", "heron", "hornet", "ibex",
	"jackal", "jaguar", "koala", "lemur", "lynx", "magpie", "marmot", "marten", "mink", "moose",
	"narwhal", "newt", "ocelot", "orca", "osprey", "otter", "owl", "panda", "panther", "pelican",
	"penguin", "puffin", "quail", "rabbit", "raven", "robin", "salmon", "seal", "shrew", "sparrow",
	"stoat", "swan", "tapir", "tiger", "toucan", "turtle", "viper", "walrus", "weasel", "wombat",
	"wren", "yak", "zebra",
}
