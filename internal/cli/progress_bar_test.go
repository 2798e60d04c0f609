package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

func TestProgressBar(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		p     api.Progress
		width int
		want  string
	}{
		{"zero", api.Progress{Done: 0, Total: 10}, 10, "[          ]   0% 0/10"},
		{"partial", api.Progress{Done: 45, Total: 100, Unit: api.UnitPackages}, 10, "[====>     ]  45% 45/100 packages"},
		{"bytes", api.Progress{Done: 12*mib + 300<<10, Total: 27*mib + 100<<10, Unit: api.UnitBytes}, 20,
			"[=========>          ]  45% 12.3 MiB/27.1 MiB"},
		{"almost", api.Progress{Done: 999, Total: 1000}, 10, "[=========>]  99% 999/1000"},
		{"full", api.Progress{Done: 7, Total: 7, Unit: api.UnitFiles}, 10, "[==========] 100% 7/7 files"},
		{"beyond the total", api.Progress{Done: 12, Total: 7}, 5, "[=====] 100% 12/7"},
		{"narrow", api.Progress{Done: 1, Total: 2}, 1, "[=> ]  50% 1/2"},
		{"wide", api.Progress{Done: 1, Total: 4}, 40, "[==========>                             ]  25% 1/4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := progressBar(tc.p, tc.width); got != tc.want {
				t.Errorf("progressBar(%+v, %d)\n got %q\nwant %q", tc.p, tc.width, got, tc.want)
			}
		})
	}
}

func TestStatusLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       api.Stage
		elapsed time.Duration
		want    string
	}{
		{"unknown size", api.Stage{Name: "bootstrap"}, 3200 * time.Millisecond, "⠋ bootstrap  3.2s"},
		{"bytes so far, total unknown", api.Stage{Name: "fetch", Progress: &api.Progress{Done: 3 << 20, Unit: api.UnitBytes}},
			time.Second, "⠋ fetch  3.0 MiB  1.0s"},
		{"nothing counted yet", api.Stage{Name: "fetch", Progress: &api.Progress{Unit: api.UnitBytes}}, time.Second, "⠋ fetch  1.0s"},
		{"sized", api.Stage{Name: "download", Detail: "rootfs.ext4", Progress: &api.Progress{Done: 1, Total: 4, Unit: api.UnitFiles}},
			0, "⠋ download  rootfs.ext4  [=====>              ]  25% 1/4 files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusLine(tc.s, 0, tc.elapsed); got != tc.want {
				t.Errorf("statusLine\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// sizedEvents is a fetch measured in bytes running beside the extract
// that consumes it.
func sizedEvents(t0 time.Time) []api.Event {
	prog := func(done int64) *api.Progress {
		return &api.Progress{Done: done, Total: 8 << 20, Unit: api.UnitBytes}
	}
	return []api.Event{
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", nil),
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", prog(0)),
		stageEv(1, "extract", api.StageRunning, t0, 0, "", nil),
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", prog(1<<20)),
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", prog(3<<20)),
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", prog(3<<20+1)),
		stageEv(0, "fetch", api.StageRunning, t0, 0, "", prog(7<<20)),
		stageEv(0, "fetch", api.StageDone, t0, 2*time.Second, "", prog(8<<20)),
		stageEv(1, "extract", api.StageDone, t0, 2100*time.Millisecond, "", nil),
		{Type: api.EventDone, State: api.OpSucceeded},
	}
}

func TestProgress_PlainSized(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, false)
	for _, ev := range sizedEvents(time.Now()) {
		p.Event(ev)
	}
	p.Close()
	want := strings.Join([]string{
		"→ fetch",
		"→ extract",
		"  fetch:  37% 3.0 MiB/8.0 MiB",
		"  fetch:  87% 7.0 MiB/8.0 MiB",
		"✓ fetch 2.0s",
		"✓ extract 2.1s",
		"",
	}, "\n")
	if buf.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", buf.String(), want)
	}
	if strings.ContainsAny(buf.String(), "\r\033") {
		t.Errorf("plain progress has control characters: %q", buf.String())
	}
}

func TestProgress_TTYShowsTheSizedStage(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, true)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return t0.Add(time.Second) }
	for _, ev := range sizedEvents(t0) {
		p.Event(ev)
	}
	p.Close()
	out := buf.String()
	// extract started last, but fetch has the size to show.
	for _, want := range []string{
		"\r\033[K⠋ fetch  1.0s\r\033[K⠋ fetch  [                    ]   0% 0 B/8.0 MiB  1.0s",
		"\r\033[K⠋ fetch  [==>                 ]  12% 1.0 MiB/8.0 MiB  1.0s",
		"\r\033[K⠋ fetch  [=================>  ]  87% 7.0 MiB/8.0 MiB  1.0s",
		"\r\033[K✓ fetch 2.0s\n\r\033[K⠋ extract  1.0s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tty progress lacks %q:\n%q", want, out)
		}
	}
	if !strings.HasSuffix(out, "✓ extract 2.1s\n") {
		t.Errorf("tty progress does not end cleanly:\n%q", out)
	}
}

func TestTransferLine(t *testing.T) {
	for _, tc := range []struct {
		name          string
		bytes, totalB int64
		files, totalF int64
		tty           bool
		want          string
	}{
		{"terminal", 3 << 20, 12 << 20, 40, 100, true, "workspace: [=====>              ]  25% 3.0 MiB/12.0 MiB, 40/100 files"},
		{"plain", 3 << 20, 12 << 20, 40, 100, false, "workspace: sent 25% 3.0 MiB/12.0 MiB, 40/100 files"},
		{"only empty files", 0, 0, 3, 4, true, "workspace: [===============>    ]  75% 3/4 files, 0 B"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := transferLine(tc.bytes, tc.totalB, tc.files, tc.totalF, tc.tty)
			if got != tc.want {
				t.Errorf("transferLine\n got %q\nwant %q", got, tc.want)
			}
			if strings.ContainsAny(got, "\r\033\n") {
				t.Errorf("transferLine has control characters: %q", got)
			}
		})
	}
}
