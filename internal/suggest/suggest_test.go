package suggest

import (
	"slices"
	"testing"
)

func TestClosest(t *testing.T) {
	names := []string{"web", "worker", "db", "database", "alpha-one"}
	tests := []struct {
		ref  string
		want []string
	}{
		{"wbe", []string{"web"}},
		{"dat", []string{"database"}},
		{"alpha-onr", []string{"alpha-one"}},
		{"xyzzy", nil},
		{"d", []string{"db", "database"}},
	}
	for _, tt := range tests {
		if got := Closest(tt.ref, names); !slices.Equal(got, tt.want) {
			t.Errorf("Closest(%q) = %v, want %v", tt.ref, got, tt.want)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"web", "web", 0}, {"wbe", "web", 1}, {"kitten", "sitting", 3}, {"", "abc", 3}} {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
