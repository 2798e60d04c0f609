package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestScanKeyLines(t *testing.T) {
	doc := `# header
top = 1
"quoted.key" = 'x'
a.b = [
  "not = a key",
  { c = 1 },
]
s = """
fake = 1
"""
[t]
k = 'v' # comment = no
[[arr]]
x = 1
[arr.sub]
y = 2
[[arr]]
x = 2
[t2]  # trailing comment
z = 3`
	got := scanKeyLines([]byte(doc))
	want := []keyLine{
		{"top", "top", 2},
		{"quoted.key", "quoted.key", 3},
		{"a.b", "a.b", 4},
		{"s", "s", 8},
		{"t", "t", 11},
		{"t.k", "t.k", 12},
		{"arr", "arr[0]", 13},
		{"arr.x", "arr[0].x", 14},
		{"arr.sub", "arr[0].sub", 15},
		{"arr.sub.y", "arr[0].sub.y", 16},
		{"arr", "arr[1]", 17},
		{"arr.x", "arr[1].x", 18},
		{"t2", "t2", 19},
		{"t2.z", "t2.z", 20},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(keyLine{})); diff != "" {
		t.Errorf("scanKeyLines mismatch (-want +got):\n%s", diff)
	}
}
