package units

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"8G", 8 << 30, true},
		{"8g", 8 << 30, true},
		{"8GiB", 8 << 30, true},
		{"8Gi", 8 << 30, true},
		{"8GB", 8 << 30, true},
		{"512M", 512 << 20, true},
		{"1T", 1 << 40, true},
		{"4K", 4096, true},
		{"1.5G", 1536 << 20, true},
		{"0.5K", 512, true},
		{"1.0001K", 1024, true}, // rounded down to whole bytes
		{"4096", 4096, true},
		{"4096B", 4096, true},
		{" 2G ", 2 << 30, true},
		{"0", 0, true},
		{"", 0, false},
		{"G", 0, false},
		{"-1G", 0, false},
		{"1e3", 0, false},
		{"1/2G", 0, false},
		{"8 gigs", 0, false},
		{"8I", 0, false},
		{"8P", 0, false},
		{"9999999999T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.ok && (err != nil || got != tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if !tt.ok && err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", tt.in, got)
		}
	}
}

func TestFormatSize_roundTrip(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {8 << 30, "8G"}, {1536 << 20, "1536M"}, {1 << 40, "1T"}, {3 << 10, "3K"}, {4097, "4097"}, {1<<62 + 1, "4611686018427387905"},
	} {
		if got := FormatSize(tt.n); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
		back, err := ParseSize(FormatSize(tt.n))
		if err != nil || back != tt.n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.n, back, err)
		}
	}
	for _, s := range []string{"8G", "512M", "1T", "7K", "123"} {
		n, err := ParseSize(s)
		if err != nil || FormatSize(n) != s {
			t.Errorf("FormatSize(ParseSize(%q)) = %q, %v", s, FormatSize(n), err)
		}
	}
}
