package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"banger/internal/vmm"
	"banger/internal/wait"
)

// MaxLogLine bounds one line copied from vmm.log into the daemon's log;
// the rest of a longer line is cut. How fast lines come is bounded by
// Firecracker itself (the guest's serial output goes to console.log, not
// here).
const MaxLogLine = 4 << 10

// followPoll is how often a followed log is checked for new lines.
const followPoll = 250 * time.Millisecond

// maxFollowRead bounds how much of a log one poll reads; the rest waits
// for the next poll.
const maxFollowRead = 1 << 20

// FollowLog copies the lines Firecracker appends to its log at path
// (vmm.log, written with show_level) into log until ctx ends, each at the
// slog level of its level word ([ERROR] or [...:ERROR], WARN, INFO,
// DEBUG; TRACE as debug; Info when there is none). It starts at the
// current end of the file, cuts lines longer than MaxLogLine, starts over
// when the file is truncated, and returns nil when ctx ends or the file is
// removed. The caller adds the VM's attributes (vm_id) to log.
func FollowLog(ctx context.Context, path string, log *slog.Logger) error {
	off, err := fileSize(path)
	if err != nil {
		return fmt.Errorf("follow %s: %w", path, err)
	}
	t := &tailer{path: path, off: off, log: log}
	return t.run(ctx, nil)
}

// following is the set of logs this process copies (Follow), and where
// the next copy of each starts.
var following = struct {
	sync.Mutex
	m map[string]*followState
}{m: map[string]*followState{}}

type followState struct {
	running bool
	off     int64
}

// noteLogStart records that a VMM is about to write to path from its
// current end, so that Follow copies its lines from the first one even if
// it is called only after the VMM started.
func noteLogStart(path string) {
	off, err := fileSize(path)
	if err != nil {
		return
	}
	following.Lock()
	defer following.Unlock()
	if st := following.m[path]; st == nil || !st.running {
		following.m[path] = &followState{off: off}
	}
}

// Follow copies Firecracker's log of the VM vmID (h.VMMLog) into log, as
// FollowLog does, in the background, unless it is copied already. The copy
// ends when ctx ends, the file is removed, or the VMM of h has exited
// (after a last read). It starts where a VMM this process started began
// writing, or where an earlier copy of the file stopped, else at the end
// of the file (a restarted daemon does not repeat old lines). It is meant
// to be called for every running Firecracker VM whenever the daemon looks
// at them.
func Follow(ctx context.Context, vmID string, h vmm.Handles, log *slog.Logger) {
	if h.VMMLog == "" {
		return
	}
	following.Lock()
	st := following.m[h.VMMLog]
	if st != nil && st.running {
		following.Unlock()
		return
	}
	if st == nil {
		off, err := fileSize(h.VMMLog)
		if err != nil {
			following.Unlock()
			return
		}
		st = &followState{off: off}
		following.m[h.VMMLog] = st
	}
	st.running = true
	off := st.off
	following.Unlock()

	t := &tailer{path: h.VMMLog, off: off, log: log.With("vm_id", vmID)}
	go func() {
		exited := func() bool { return !vmm.Alive(h) }
		if err := t.run(ctx, exited); err != nil {
			t.log.Warn("follow firecracker log", "path", h.VMMLog, "err", err)
		}
		following.Lock()
		defer following.Unlock()
		if _, err := os.Stat(h.VMMLog); errors.Is(err, fs.ErrNotExist) {
			delete(following.m, h.VMMLog)
			return
		}
		following.m[h.VMMLog] = &followState{off: t.off}
	}()
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// tailer reads the lines appended to one file.
type tailer struct {
	path string
	off  int64 // next byte to read
	log  *slog.Logger

	line []byte // the unfinished line, at most MaxLogLine bytes
	cut  bool   // the unfinished line was longer than MaxLogLine
}

// errGone ends a tailer whose file was removed.
var errGone = errors.New("log file removed")

// run polls until ctx ends, the file is removed, or done (when not nil)
// reports true at a poll that found nothing new.
func (t *tailer) run(ctx context.Context, done func() bool) error {
	err := wait.Until(ctx, followPoll, func() (bool, error) {
		n, err := t.poll(ctx)
		if errors.Is(err, errGone) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if n == 0 && done != nil && done() {
			_, err := t.poll(ctx) // what was written just before the exit
			if errors.Is(err, errGone) {
				err = nil
			}
			t.flush(ctx)
			return true, err
		}
		return false, nil
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// poll reads what was appended since the last poll (up to maxFollowRead)
// and logs every complete line. It returns how many bytes it read.
func (t *tailer) poll(ctx context.Context) (int, error) {
	f, err := os.Open(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errGone
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() < t.off {
		// Truncated: what is there now was written after.
		t.off, t.line, t.cut = 0, t.line[:0], false
	}
	if fi.Size() == t.off {
		return 0, nil
	}
	buf := make([]byte, min(fi.Size()-t.off, maxFollowRead))
	n, err := f.ReadAt(buf, t.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	t.off += int64(n)
	t.feed(ctx, buf[:n])
	return n, nil
}

// feed splits b into lines, logging each complete one.
func (t *tailer) feed(ctx context.Context, b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		if room := MaxLogLine - len(t.line); len(part) > room {
			t.line = append(t.line, part[:room]...)
			t.cut = true
		} else {
			t.line = append(t.line, part...)
		}
		if i < 0 {
			return
		}
		t.flush(ctx)
		b = b[i+1:]
	}
}

// flush logs the pending line, if any.
func (t *tailer) flush(ctx context.Context) {
	if len(t.line) == 0 && !t.cut {
		return
	}
	line := strings.ToValidUTF8(string(t.line), "\uFFFD")
	args := []any{"line", line}
	if t.cut {
		args = append(args, "cut", true)
	}
	t.log.Log(ctx, LogLevel(line), "firecracker", args...)
	t.line, t.cut = t.line[:0], false
}

// LogLevel returns the slog level of one line of Firecracker's log: the
// level word in its leading bracketed fields, either alone ("[WARN]") or
// as a colon-separated part ("[vm:main:WARN]", "[vm:fc_api:WARN:src/x.rs:1]").
// A line without one is Info.
func LogLevel(line string) slog.Level {
	// The fields follow the timestamp: the first '[' comes early, and
	// only brackets that follow each other count (a message's own
	// brackets do not).
	i := strings.IndexByte(line, '[')
	if i < 0 || i > maxLevelPrefix {
		return slog.LevelInfo
	}
	rest := line[i:]
	for strings.HasPrefix(rest, "[") {
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			break
		}
		for f := range strings.SplitSeq(rest[1:j], ":") {
			switch strings.TrimSpace(f) {
			case "ERROR":
				return slog.LevelError
			case "WARN", "WARNING":
				return slog.LevelWarn
			case "INFO":
				return slog.LevelInfo
			case "DEBUG", "TRACE":
				return slog.LevelDebug
			}
		}
		rest = strings.TrimLeft(rest[j+1:], " ")
	}
	return slog.LevelInfo
}

// maxLevelPrefix is how far into a line (the timestamp) the first
// bracketed field may start.
const maxLevelPrefix = 48
