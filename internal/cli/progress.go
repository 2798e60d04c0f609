package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/units"
)

// Progress renders an operation's events for people: one permanent line
// per finished stage with its duration, and, on a terminal, an animated
// status line for the running stage: a bar with its figures when the
// stage's work has a known size ("[====>     ]  45% 12.3 MiB/27.1 MiB"),
// else a spinner, what is counted so far and the elapsed time. Without a
// terminal it prints plain lines only (a line per quarter of a sized
// stage, no redraws, no control characters), so logs and CI output stay
// readable. Use NewProgress, feed it every Event, and Close it.
type Progress struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu        sync.Mutex
	stages    map[int]api.Stage // latest state by stage index
	announced map[int]bool      // plain mode: "→ name" printed
	quarter   map[int]int       // plain mode: quarters of a sized stage printed
	running   []int             // running stage indexes, oldest first
	frame     int
	drawn     bool // a status line is on screen
	ticker    *time.Ticker
	stop      chan struct{}
	stopped   chan struct{}
}

// Progress glyphs.
const (
	glyphStart   = "→"
	glyphDone    = "✓"
	glyphFailed  = "✗"
	glyphSkipped = "·"
	redraw       = 100 * time.Millisecond
	barWidth     = 20
	maxDetail    = 60
	clearLine    = "\r\033[K"
)

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// NewProgress returns a renderer writing to w; tty animates a status line.
func NewProgress(w io.Writer, tty bool) *Progress {
	return &Progress{w: w, tty: tty, now: time.Now, stages: map[int]api.Stage{}, announced: map[int]bool{}, quarter: map[int]int{}}
}

// Event renders one operation event.
func (p *Progress) Event(ev api.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Type {
	case api.EventStage:
		if ev.Stage != nil {
			p.stageLocked(ev.StageIndex, *ev.Stage)
		}
	case api.EventLog:
		p.printLocked("  " + ev.Message)
	case api.EventDone:
		p.running = nil
		p.clearLocked()
	}
}

func (p *Progress) stageLocked(i int, s api.Stage) {
	prev, seen := p.stages[i]
	p.stages[i] = s
	switch s.State {
	case api.StagePending:
	case api.StageRunning:
		if !containsInt(p.running, i) {
			p.running = append(p.running, i)
		}
		if p.tty {
			p.startTickerLocked()
			p.drawLocked()
			return
		}
		if !p.announced[i] {
			p.announced[i] = true
			p.printLocked(fmt.Sprintf("%s %s", glyphStart, s.Name))
		}
		if s.Detail != "" && (!seen || prev.Detail != s.Detail) {
			p.printLocked(fmt.Sprintf("  %s: %s", s.Name, s.Detail))
		}
		// A sized stage prints a line as it passes 25%, 50% and 75%; its
		// end is the ✓ line.
		if pr := s.Progress; pr != nil && pr.Total > 0 {
			if q := quarterOf(*pr); q > p.quarter[i] && q < 4 {
				p.quarter[i] = q
				p.printLocked(fmt.Sprintf("  %s: %3d%% %s", s.Name, percent(*pr), progressAmount(*pr)))
			}
		}
	case api.StageDone:
		p.endLocked(i, fmt.Sprintf("%s %s %s", glyphDone, s.Name, formatDuration(s.Duration)))
	case api.StageFailed:
		// The error itself is printed once, by the command.
		p.endLocked(i, fmt.Sprintf("%s %s %s", glyphFailed, s.Name, formatDuration(s.Duration)))
	case api.StageSkipped:
		// Stages never started are skipped silently when the operation ends.
		if s.Started.IsZero() && s.Detail == "" {
			p.endLocked(i, "")
			return
		}
		line := fmt.Sprintf("%s %s skipped", glyphSkipped, s.Name)
		if s.Detail != "" {
			line += ": " + s.Detail
		}
		p.endLocked(i, line)
	}
}

func (p *Progress) endLocked(i int, line string) {
	p.running = removeInt(p.running, i)
	if line != "" {
		p.printLocked(line)
	}
	if p.tty && len(p.running) > 0 {
		p.drawLocked()
	}
}

// Notef prints a permanent line, e.g. "canceling…".
func (p *Progress) Notef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printLocked(fmt.Sprintf(format, args...))
	if p.tty && len(p.running) > 0 {
		p.drawLocked()
	}
}

// printLocked prints a permanent line above the status line.
func (p *Progress) printLocked(line string) {
	p.clearLocked()
	fmt.Fprintln(p.w, line)
}

func (p *Progress) clearLocked() {
	if p.drawn {
		io.WriteString(p.w, clearLine)
		p.drawn = false
	}
}

// drawLocked redraws the status line for the running stage that shows
// best: the newest with a sized progress (a download running beside the
// unpacking that consumes it), else the newest.
func (p *Progress) drawLocked() {
	if len(p.running) == 0 {
		p.clearLocked()
		return
	}
	s := p.stages[p.running[len(p.running)-1]]
	for j := len(p.running) - 1; j >= 0; j-- {
		if c := p.stages[p.running[j]]; c.Progress != nil && c.Progress.Total > 0 {
			s = c
			break
		}
	}
	var elapsed time.Duration
	if !s.Started.IsZero() {
		elapsed = p.now().Sub(s.Started)
	}
	io.WriteString(p.w, clearLine+statusLine(s, p.frame, elapsed))
	p.drawn = true
}

// statusLine is the terminal's line for a running stage: spinner, name,
// detail, then a bar with its figures when the size is known, or the
// amount so far when only that is, then the elapsed time (none when
// elapsed is 0).
func statusLine(s api.Stage, frame int, elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", spinner[frame%len(spinner)], s.Name)
	if d := s.Detail; d != "" {
		if r := []rune(d); len(r) > maxDetail {
			d = string(r[:maxDetail-1]) + "…"
		}
		b.WriteString("  " + d)
	}
	if pr := s.Progress; pr != nil && pr.Total > 0 {
		b.WriteString("  " + progressBar(*pr, barWidth))
	} else if pr != nil && pr.Done > 0 {
		b.WriteString("  " + progressAmount(*pr))
	}
	if elapsed > 0 {
		fmt.Fprintf(&b, "  %s", formatDuration(elapsed.Round(100*time.Millisecond)))
	}
	return b.String()
}

// progressBar renders a sized progress as a bar of width cells (at least
// 3), the percentage and the figures: "[====>     ]  45% 12.3 MiB/27.1 MiB".
// p.Total must be positive.
func progressBar(p api.Progress, width int) string {
	width = max(width, 3)
	full := int(fraction(p) * float64(width))
	bar := strings.Repeat("=", full)
	if full < width {
		if p.Done > 0 {
			bar += ">"
		}
		bar += strings.Repeat(" ", width-len(bar))
	}
	return fmt.Sprintf("[%s] %3d%% %s", bar, percent(p), progressAmount(p))
}

// fraction is how much of a sized progress is done, within [0, 1].
func fraction(p api.Progress) float64 {
	if p.Total <= 0 {
		return 0
	}
	return min(1, max(0, float64(p.Done)/float64(p.Total)))
}

// percent is the whole percentage done, rounded down so that 100% means
// finished.
func percent(p api.Progress) int {
	if p.Total > 0 && p.Done >= p.Total {
		return 100
	}
	return min(99, int(fraction(p)*100))
}

// quarterOf is how many quarters of a sized progress are done (0 to 4).
func quarterOf(p api.Progress) int {
	if p.Total > 0 && p.Done >= p.Total {
		return 4
	}
	return min(3, int(fraction(p)*4))
}

// progressAmount formats a progress's figures in its unit: "12.3 MiB/27.1
// MiB", "120/345 packages", "7/10"; only the amount done when the total is
// unknown.
func progressAmount(p api.Progress) string {
	if p.Unit == api.UnitBytes {
		if p.Total > 0 {
			return units.Bytes(p.Done) + "/" + units.Bytes(p.Total)
		}
		return units.Bytes(p.Done)
	}
	out := strconv.FormatInt(p.Done, 10)
	if p.Total > 0 {
		out += "/" + strconv.FormatInt(p.Total, 10)
	}
	if p.Unit != "" {
		out += " " + string(p.Unit)
	}
	return out
}

func (p *Progress) startTickerLocked() {
	if p.ticker != nil {
		return
	}
	ticker, stop, stopped := time.NewTicker(redraw), make(chan struct{}), make(chan struct{})
	p.ticker, p.stop, p.stopped = ticker, stop, stopped
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
				p.mu.Lock()
				p.frame++
				if len(p.running) > 0 {
					p.drawLocked()
				}
				p.mu.Unlock()
			}
		}
	}()
}

// Close stops the animation and clears the status line.
func (p *Progress) Close() {
	p.mu.Lock()
	t, stop, stopped := p.ticker, p.stop, p.stopped
	p.ticker = nil
	p.mu.Unlock()
	if t != nil {
		t.Stop()
		close(stop)
		<-stopped
	}
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func removeInt(s []int, v int) []int {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// exitInterrupted is the status after Ctrl-C canceled an operation.
const exitInterrupted = 130

// followOperation renders the events of ref on stderr until the operation
// finishes and returns its result. The first Ctrl-C asks the daemon to
// cancel and keeps following, so the rollback is shown and awaited; a
// second Ctrl-C stops waiting (the daemon still finishes the rollback).
func (a *app) followOperation(ctx context.Context, c *api.Client, ref api.OperationRef) (json.RawMessage, error) {
	events, err := c.OperationEvents(ctx, ref.ID)
	if err != nil {
		return nil, err
	}
	defer events.Close()
	prog := NewProgress(a.streams.ErrOut, a.streams.ErrTTY)
	defer prog.Close()

	interrupt := a.streams.Interrupt
	if interrupt == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, os.Interrupt)
		defer signal.Stop(ch)
		interrupt = ch
	}

	type next struct {
		ev  api.Event
		err error
	}
	evc := make(chan next)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			ev, err := events.Next()
			select {
			case evc <- next{ev, err}:
			case <-quit:
				return
			}
			if err != nil || ev.Type == api.EventDone {
				return
			}
		}
	}()

	canceled := false
	for {
		select {
		case <-interrupt:
			if canceled {
				prog.Notef("stopped waiting; bangerd finishes rolling back %s", ref.ID)
				return nil, &exitError{code: exitInterrupted}
			}
			canceled = true
			prog.Notef("canceling %s: rolling back (Ctrl-C again to stop waiting)", ref.Kind)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
			err := c.CancelOperation(cctx, ref.ID)
			cancel()
			if err != nil && !errors.Is(err, api.ErrNotFound) {
				prog.Notef("cancel %s: %v", ref.ID, err)
			}
		case n := <-evc:
			if n.err != nil {
				return nil, fmt.Errorf("follow %s %s: %w", ref.Kind, ref.ID, n.err)
			}
			prog.Event(n.ev)
			if n.ev.Type != api.EventDone {
				continue
			}
			if n.ev.Error != nil {
				if canceled && errors.Is(n.ev.Error, api.ErrCanceled) {
					prog.Notef("%s canceled and rolled back", ref.Kind)
					return nil, &exitError{code: exitInterrupted}
				}
				return nil, n.ev.Error
			}
			return n.ev.Result, nil
		}
	}
}

// followResult is followOperation decoding the operation's result into a
// T; what names the result in a decode error.
func followResult[T any](ctx context.Context, a *app, c *api.Client, ref api.OperationRef, what string) (T, error) {
	var out T
	res, err := a.followOperation(ctx, c, ref)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return out, fmt.Errorf("decode %s: %w", what, err)
	}
	return out, nil
}
