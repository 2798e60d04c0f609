package vmname

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		want string // substring of the error; "" means valid
	}{
		{"a", ""},
		{"brave-otter", ""},
		{"vm-1", ""},
		{"0day", ""},
		{"a-b-c-9", ""},
		{strings.Repeat("a", 63), ""},
		{"", "must not be empty"},
		{strings.Repeat("a", 64), "64 characters, at most 63"},
		{"-vm", "must not start with a hyphen"},
		{"vm-", "must not end with a hyphen"},
		{"-", "must not start with a hyphen"},
		{"MyVM", "uppercase letter 'M'; use lowercase"},
		{"my_vm", "character '_' at position 3"},
		{"my.vm", "character '.' at position 3"},
		{"my vm", "character ' ' at position 3"},
		{"café", "character 'é' at position 4"},
		{"añb", "character 'ñ' at position 2"},
	}
	for _, tt := range tests {
		err := Validate(tt.name)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%q) = %v, want nil", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%q) = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestGenerate_valid(t *testing.T) {
	for range 500 {
		n := Generate(nil)
		if err := Validate(n); err != nil {
			t.Fatalf("Generate() = %q: %v", n, err)
		}
		if strings.Count(n, "-") != 1 {
			t.Fatalf("Generate() = %q, want adjective-noun", n)
		}
	}
}

func TestGenerate_neverTaken(t *testing.T) {
	taken := map[string]bool{}
	total := len(adjectives) * len(nouns)
	// Use up the whole adjective-noun space, then some suffixed names.
	for i := range total + 50 {
		n := Generate(func(s string) bool { return taken[s] })
		if taken[n] {
			t.Fatalf("iteration %d: Generate returned taken name %q", i, n)
		}
		if err := Validate(n); err != nil {
			t.Fatalf("Generate() = %q: %v", n, err)
		}
		if i < total && strings.Count(n, "-") != 1 {
			t.Fatalf("iteration %d: %q has a suffix before the space was exhausted", i, n)
		}
		if i >= total && strings.Count(n, "-") != 2 {
			t.Fatalf("iteration %d: %q, want a suffixed name once the space is exhausted", i, n)
		}
		taken[n] = true
	}
}

func TestWordLists(t *testing.T) {
	seen := map[string]bool{}
	for _, w := range append(append([]string{}, adjectives...), nouns...) {
		if seen[w] || strings.Contains(w, "-") || Validate(w) != nil {
			t.Errorf("bad or duplicate word %q", w)
		}
		seen[w] = true
	}
	// The longest pair plus a suffix must still be a valid label.
	longest := func(ws []string) (n int) {
		for _, w := range ws {
			n = max(n, len(w))
		}
		return n
	}
	if n := longest(adjectives) + longest(nouns) + len("--99999"); n > MaxLen {
		t.Errorf("names can reach %d characters", n)
	}
}

func BenchmarkGenerate(b *testing.B) {
	taken := map[string]bool{}
	for i := range adjectives {
		for j := range nouns[:len(nouns)-1] {
			taken[pair(i, j)] = true
		}
	}
	for b.Loop() {
		Generate(func(s string) bool { return taken[s] })
	}
}
