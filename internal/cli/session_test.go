package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"banger/internal/api"
)

func TestParseDetachKeys(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{in: "ctrl-p,ctrl-q", want: []byte{0x10, 0x11}},
		{in: "ctrl-]", want: []byte{0x1d}},
		{in: "Ctrl-A, x", want: []byte{0x01, 'x'}},
		{in: "ctrl-@", want: []byte{0x00}},
		{in: "", want: nil},
		{in: "ctrl-1", wantErr: true},
		{in: "ctrl-pq", wantErr: true},
		{in: "alt-x", wantErr: true},
		{in: "ctrl-p,,ctrl-q", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseDetachKeys(tt.in)
		if (err != nil) != tt.wantErr || !bytes.Equal(got, tt.want) {
			t.Errorf("parseDetachKeys(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDetachFilter(t *testing.T) {
	seq := []byte{0x10, 0x11} // ctrl-p ctrl-q
	tests := []struct {
		name   string
		chunks []string
		out    string
		detach bool
	}{
		{name: "plain input passes", chunks: []string{"hello\n"}, out: "hello\n"},
		{name: "sequence detaches, later bytes dropped", chunks: []string{"ab\x10\x11cd"}, out: "ab", detach: true},
		{name: "sequence split across reads", chunks: []string{"ab\x10", "\x11"}, out: "ab", detach: true},
		{name: "half a sequence is input", chunks: []string{"a\x10b"}, out: "a\x10b"},
		{name: "repeated first key", chunks: []string{"\x10\x10\x11"}, out: "\x10", detach: true},
		{name: "held byte at the end", chunks: []string{"x\x10"}, out: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := detachFilter{seq: seq}
			var out []byte
			detached := false
			for _, c := range tt.chunks {
				o, d := f.Feed([]byte(c))
				out = append(out, o...)
				if d {
					detached = true
					break
				}
			}
			if string(out) != tt.out || detached != tt.detach {
				t.Errorf("out %q detach %v; want %q %v", out, detached, tt.out, tt.detach)
			}
		})
	}
	f := detachFilter{}
	if o, d := f.Feed([]byte("\x10\x11")); d || string(o) != "\x10\x11" {
		t.Errorf("disabled filter: %q %v", o, d)
	}
}

// TestDetachReader: the reader forwards input, stops at the sequence and
// calls onDetach once; at EOF it hands over held-back bytes.
func TestDetachReader(t *testing.T) {
	calls := 0
	r := &detachReader{r: iotest.OneByteReader(strings.NewReader("ls\n\x10\x11rm -rf /\n")), f: detachFilter{seq: []byte{0x10, 0x11}}, onDetach: func() { calls++ }}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "ls\n" || calls != 1 {
		t.Errorf("got %q, %v, %d detach calls", got, err, calls)
	}
	r = &detachReader{r: strings.NewReader("tail\x10"), f: detachFilter{seq: []byte{0x10, 0x11}}, onDetach: func() { calls++ }}
	got, err = io.ReadAll(r)
	if err != nil || string(got) != "tail\x10" || calls != 1 {
		t.Errorf("at EOF: got %q, %v, %d detach calls", got, err, calls)
	}
}

func TestWriteSessionTable(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	code7, code143 := 7, 143
	list := []api.Session{
		{Name: "agent", Command: []string{"sh", "-c", "while :; do date; sleep 1; done"}, State: api.SessionRunning, PID: 321, StartedAt: now.Add(-90 * time.Second)},
		{Name: "s2", Command: []string{"make"}, State: api.SessionExited, PID: 400, StartedAt: now.Add(-2 * time.Hour), ExitCode: &code7},
		{Name: "s3", Command: []string{"sleep", "9"}, State: api.SessionExited, StartedAt: now, ExitCode: &code143, Signal: "SIGTERM"},
	}
	var b bytes.Buffer
	if err := writeSessionTable(&b, list, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, want := range [][]string{
		{"agent", "running", "321", "sh -c while"},
		{"s2", "exited", "-", " 7 ", "make"},
		{"s3", "143 (SIGTERM)", "sleep 9"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("row %d %q lacks %q", i+1, lines[i+1], w)
			}
		}
	}
}
