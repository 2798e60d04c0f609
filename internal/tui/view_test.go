package tui

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"banger/internal/api"
)

// checkFrame asserts the frame fills exactly w x h without wider lines.
func checkFrame(t *testing.T, name, screen string, w, h int) {
	t.Helper()
	ls := lines(screen)
	if len(ls) != h {
		t.Errorf("%s: %d lines, want %d:\n%s", name, len(ls), h, screen)
	}
	for i, l := range ls {
		if got := ansi.StringWidth(l); got > w {
			t.Errorf("%s: line %d is %d columns (> %d): %q", name, i+1, got, w, l)
		}
	}
}

// busyHarness is a dashboard with long names, a running operation with
// many stages, sessions and a long console line: everything that could
// overflow a small terminal.
func busyHarness(t *testing.T, opt ...func(*Options)) *harness {
	long := testVM("id-long", "a-very-long-vm-name-that-goes-on-and-on", "running", 4242)
	long.LastError = strings.Repeat("the guest agent did not answer in time; ", 5)
	f := newFake(testVM("id-a", "alpha", "running", 0), long, testVM("id-c", "charlie", "stopped", 0))
	f.images = []api.Image{{ID: "img1", Name: "debian-12", Source: api.ImageSource{Kind: "recipe", Ref: "debian-12"}, SizeBytes: 812 << 20, UsedBy: []string{"alpha", "charlie"}}}
	f.sessions["id-long"] = []api.Session{{Name: "build", Command: []string{"sh", "-c", strings.Repeat("make all; ", 20)}, State: api.SessionRunning, PID: 7}}
	f.logs["id-long"] = strings.Repeat("x", 300) + "\n\ttabbed\x07 line\n"
	var evs []api.Event
	for i, n := range []string{"image", "disks", "network", "config drive", "boot", "agent ready", "dns", "extra one", "extra two"} {
		evs = append(evs, stageEv(i+1, i, n, api.StageDone))
	}
	evs = append(evs, stageEv(20, 9, "wait", api.StageRunning))
	evs[9].Stage.Detail = strings.Repeat("waiting for the agent on the virtio-serial port ", 3)
	f.script["op1"] = evs
	h := newHarness(t, f, opt...)
	h.setProc(4242, ProcSample{CPUTicks: 10, RSSBytes: 123456789})
	h.refresh()
	h.press("down", "r")
	return h
}

func TestView_80x24(t *testing.T) {
	h := busyHarness(t)
	screens := map[string]func(){
		"vms":      func() { h.press("1") },
		"images":   func() { h.press("2") },
		"sessions": func() { h.press("3") },
		"logs":     func() { h.press("4") },
		"help":     func() { h.press("?") },
		"form":     func() { h.press("esc", "1", "c") },
		"confirm":  func() { h.press("esc", "d") },
		"error":    func() { h.press("n", "s") },
	}
	order := []string{"vms", "images", "sessions", "logs", "help", "form", "confirm", "error"}
	for _, name := range order {
		screens[name]()
		s := h.screen()
		checkFrame(t, name, s, 80, 24)
		if name != "help" && name != "form" && name != "confirm" && (!strings.Contains(s, "? keys") || !strings.Contains(s, "q quit")) {
			t.Errorf("%s: key hints missing:\n%s", name, s)
		}
		if name == "help" && !strings.Contains(s, "q / ctrl+c") {
			t.Errorf("help: the key list does not fit:\n%s", s)
		}
		if name == "vms" && !strings.Contains(s, "restart a-very-long-vm-name") {
			t.Errorf("vms: no operation panel:\n%s", s)
		}
	}
	if !strings.Contains(h.screen(), "an operation is running") {
		t.Errorf("error screen:\n%s", h.screen())
	}
}

func TestView_Sizes(t *testing.T) {
	tests := []struct {
		w, h    int
		want    []string
		notWant []string
	}{
		// Narrow: the DNS column is dropped (it is in the details line).
		{80, 24, []string{"NAME", "STATE", "IP", "CPU%", "RSS"}, []string{" DNS "}},
		{200, 50, []string{"NAME", "STATE", "IMAGE", "IP", "DNS", "VCPU", "RAM", "DISK", "AGE", "CPU%", "RSS", "alpha.vm"}, nil},
		{40, 12, []string{"NAME", "STATE"}, nil},
	}
	for _, tt := range tests {
		h := busyHarness(t)
		h.send(windowSize(tt.w, tt.h))
		s := h.screen()
		checkFrame(t, "size", s, tt.w, tt.h)
		hdr := ""
		for _, l := range lines(s) {
			if strings.Contains(l, "NAME") {
				hdr = l
			}
		}
		for _, w := range tt.want {
			if !strings.Contains(hdr, w) && !strings.Contains(s, w) {
				t.Errorf("%dx%d: %q missing:\n%s", tt.w, tt.h, w, s)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(hdr, w) {
				t.Errorf("%dx%d: header has %q: %s", tt.w, tt.h, w, hdr)
			}
		}
	}
}

// fakeEnviron is the environment termenv sees.
type fakeEnviron map[string]string

func (e fakeEnviron) Environ() []string {
	var out []string
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}
func (e fakeEnviron) Getenv(k string) string { return e[k] }

func TestView_NoColor(t *testing.T) {
	tests := []struct {
		name  string
		env   fakeEnviron
		color bool
	}{
		{"colour terminal", fakeEnviron{"TERM": "xterm-256color"}, true},
		{"NO_COLOR", fakeEnviron{"TERM": "xterm-256color", "NO_COLOR": "1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := lipgloss.NewRenderer(io.Discard, termenv.WithTTY(true), termenv.WithEnvironment(tt.env))
			h := busyHarness(t, func(o *Options) { o.Renderer = r })
			s := h.screen()
			checkFrame(t, tt.name, s, 80, 24)
			if got := strings.Contains(s, "\x1b["); got != tt.color {
				t.Errorf("escape sequences in the frame: %v, want %v", got, tt.color)
			}
			// The selection and the active tab are visible without colour.
			if !strings.Contains(ansi.Strip(s), cursorMark+" a-very-long") || !strings.Contains(s, "[1 VMs]") {
				t.Errorf("selection or tab not marked:\n%s", ansi.Strip(s))
			}
		})
	}
}

// TestView_NoColorDefaultRenderer checks that the renderer Run uses by
// default honours NO_COLOR from the process environment.
func TestView_NoColorDefaultRenderer(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	t.Setenv("TERM", "xterm-256color")
	r := lipgloss.NewRenderer(os.Stdout, termenv.WithTTY(true))
	if p := r.ColorProfile(); p != termenv.Ascii {
		t.Fatalf("profile under NO_COLOR = %v, want Ascii", p)
	}
}

func windowSize(w, h int) tea.WindowSizeMsg { return tea.WindowSizeMsg{Width: w, Height: h} }

func TestLayout(t *testing.T) {
	cols := []column{{title: "A", max: 5, prio: 0}, {title: "B", max: 10, prio: 2}, {title: "C", max: 3, prio: 1}}
	rows := [][]string{{"aaaaaaaa", "bbbbbbbbbb", "c"}}
	tests := []struct {
		width int
		kept  []int
	}{
		{100, []int{0, 1, 2}},
		{14, []int{0, 2}}, // 2 + 6 + 2 fits; B (11) does not
		{8, []int{0}},
	}
	for _, tt := range tests {
		kept, widths := layout(cols, rows, tt.width)
		if len(kept) != len(tt.kept) {
			t.Errorf("width %d: kept %v, want %v", tt.width, kept, tt.kept)
			continue
		}
		for i := range kept {
			if kept[i] != tt.kept[i] {
				t.Errorf("width %d: kept %v, want %v", tt.width, kept, tt.kept)
			}
		}
		if widths[0] != 5 || widths[2] != 1 {
			t.Errorf("widths %v: want A capped at 5 and C at its content", widths)
		}
	}
}

func TestAge(t *testing.T) {
	for _, tt := range []struct {
		ago  string
		want string
	}{{"30s", "30s"}, {"5m", "5m"}, {"3h", "3h"}, {"72h", "3d"}} {
		d, _ := time.ParseDuration(tt.ago)
		if got := age(testNow.Add(-d), testNow); got != tt.want {
			t.Errorf("age(%s) = %q, want %q", tt.ago, got, tt.want)
		}
	}
}
