// Package stream is banger's framing for interactive byte streams (exec
// stdio between the daemon and the guest agent, attach streams between
// the CLI and the daemon): length-prefixed, typed frames over any byte
// stream.
//
// A frame is a 5-byte header — one byte Kind and a 4-byte big-endian
// payload length — followed by the payload. Frames larger than the
// reader's limit (default 1 MiB) are rejected before the payload is read,
// so a hostile peer cannot make the reader allocate unbounded memory.
//
// Backpressure is end to end: writers block while the underlying stream
// is full, and the helpers here copy one chunk at a time without queueing.
package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Kind says what a frame carries.
type Kind byte

// Frame kinds. The numeric values are part of the wire protocol.
const (
	// Stdin carries bytes for the remote process's standard input.
	Stdin Kind = 1
	// Stdout carries bytes the remote process wrote to standard output
	// (or to its terminal, for a PTY).
	Stdout Kind = 2
	// Stderr carries bytes the remote process wrote to standard error.
	Stderr Kind = 3
	// StdinEOF closes the remote process's standard input; no payload.
	StdinEOF Kind = 4
	// Resize carries a terminal size: cols then rows, uint16 big endian.
	Resize Kind = 5
	// Signal carries a signal to deliver, by name ("TERM", "SIGINT") or
	// decimal number ("15").
	Signal Kind = 6
	// Exit ends a stream with the process's exit status: an int32 big
	// endian exit code, optionally followed by a signal name.
	Exit Kind = 7
	// Error ends a stream with a failure message (UTF-8 text).
	Error Kind = 8
)

// String names the kind for errors and logs.
func (k Kind) String() string {
	switch k {
	case Stdin:
		return "stdin"
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	case StdinEOF:
		return "stdin-eof"
	case Resize:
		return "resize"
	case Signal:
		return "signal"
	case Exit:
		return "exit"
	case Error:
		return "error"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 5

// DefaultMaxFrameSize is the largest payload ReadFrame accepts unless the
// Conn says otherwise.
const DefaultMaxFrameSize = 1 << 20

// ChunkSize is how much the copy helpers put in one frame.
const ChunkSize = 32 << 10

// ErrFrameTooLarge is returned (wrapped) by ReadFrame for a frame whose
// declared length exceeds the limit.
var ErrFrameTooLarge = errors.New("frame too large")

// Frame is one decoded frame.
type Frame struct {
	Kind Kind
	Data []byte
}

// Conn reads and writes frames on a byte stream. WriteFrame is safe for
// concurrent use; ReadFrame must be called from one goroutine at a time.
type Conn struct {
	r   *bufio.Reader
	w   io.Writer
	max int

	wmu sync.Mutex
	hdr [HeaderSize]byte
}

// NewConn returns a Conn over rw with the default frame limit.
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, 64<<10), w: rw, max: DefaultMaxFrameSize}
}

// SetMaxFrameSize changes the largest payload ReadFrame accepts (and the
// largest WriteFrame sends). Call it before any I/O.
func (c *Conn) SetMaxFrameSize(n int) {
	if n > 0 {
		c.max = n
	}
}

// WriteFrame writes one frame. Concurrent calls never interleave bytes.
func (c *Conn) WriteFrame(kind Kind, data []byte) error {
	if len(data) > c.max {
		return fmt.Errorf("write %s frame of %d bytes: %w (limit %d)", kind, len(data), ErrFrameTooLarge, c.max)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hdr[0] = byte(kind)
	binary.BigEndian.PutUint32(c.hdr[1:], uint32(len(data)))
	if len(data) <= 4096 {
		// One write keeps small frames in one packet.
		buf := make([]byte, HeaderSize+len(data))
		copy(buf, c.hdr[:])
		copy(buf[HeaderSize:], data)
		if _, err := c.w.Write(buf); err != nil {
			return fmt.Errorf("write %s frame: %w", kind, err)
		}
		return nil
	}
	if _, err := c.w.Write(c.hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", kind, err)
	}
	if _, err := c.w.Write(data); err != nil {
		return fmt.Errorf("write %s frame: %w", kind, err)
	}
	return nil
}

// ReadFrame reads the next frame. It returns io.EOF when the stream ends
// cleanly between frames, io.ErrUnexpectedEOF when it ends inside one, and
// an error wrapping ErrFrameTooLarge for an oversized frame (after which
// the Conn is out of sync and must be closed).
func (c *Conn) ReadFrame() (Frame, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	kind := Kind(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(c.max) {
		return Frame{}, fmt.Errorf("read %s frame: declared length %d: %w (limit %d)", kind, n, ErrFrameTooLarge, c.max)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.r, data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read %s frame payload: %w", kind, err)
	}
	return Frame{Kind: kind, Data: data}, nil
}

// Writer returns an io.Writer that sends everything written to it as
// frames of the given kind, split into chunks no larger than ChunkSize.
func (c *Conn) Writer(kind Kind) io.Writer { return &frameWriter{c: c, kind: kind} }

type frameWriter struct {
	c    *Conn
	kind Kind
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > ChunkSize {
			chunk = chunk[:ChunkSize]
		}
		if err := w.c.WriteFrame(w.kind, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Pump copies r into frames of the given kind until r returns io.EOF
// (Pump then returns nil) or an error. It sends nothing at EOF; callers
// send their own end marker (StdinEOF, Exit). One chunk is in flight at a
// time, so a slow peer slows the reader down instead of growing a buffer.
func (c *Conn) Pump(kind Kind, r io.Reader) (int64, error) {
	buf := make([]byte, ChunkSize)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := c.WriteFrame(kind, buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", kind, err)
		}
	}
}

// Sink writes frame payloads into an io.Writer synchronously: Write blocks
// until w accepts the bytes, so the frame reader (and through it the
// peer) waits for a slow consumer rather than buffering.
type Sink struct {
	W io.Writer
}

// Deliver writes f's payload to the sink's writer. A nil writer discards.
func (s Sink) Deliver(f Frame) error {
	if s.W == nil || len(f.Data) == 0 {
		return nil
	}
	if _, err := s.W.Write(f.Data); err != nil {
		return fmt.Errorf("deliver %s: %w", f.Kind, err)
	}
	return nil
}

// Demux reads frames from c and hands each to the handler registered for
// its kind, in order, until the stream ends, a handler returns an error,
// or a frame of an unregistered kind arrives (an error). io.EOF at a frame
// boundary returns nil. Handlers run on the reading goroutine, which is
// what gives backpressure: a blocked handler stops reading.
func (c *Conn) Demux(handlers map[Kind]func(Frame) error) error {
	for {
		f, err := c.ReadFrame()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		h, ok := handlers[f.Kind]
		if !ok {
			return fmt.Errorf("unexpected %s frame", f.Kind)
		}
		if err := h(f); err != nil {
			return err
		}
	}
}

// EncodeResize builds a Resize payload.
func EncodeResize(cols, rows uint16) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, cols)
	binary.BigEndian.PutUint16(b[2:], rows)
	return b
}

// DecodeResize parses a Resize payload.
func DecodeResize(b []byte) (cols, rows uint16, err error) {
	if len(b) != 4 {
		return 0, 0, fmt.Errorf("resize frame: want 4 bytes, got %d", len(b))
	}
	return binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]), nil
}

// EncodeExit builds an Exit payload: the exit code and, when the process
// died of a signal, the signal's name.
func EncodeExit(code int32, signal string) []byte {
	b := make([]byte, 4+len(signal))
	binary.BigEndian.PutUint32(b, uint32(code))
	copy(b[4:], signal)
	return b
}

// DecodeExit parses an Exit payload.
func DecodeExit(b []byte) (code int32, signal string, err error) {
	if len(b) < 4 {
		return 0, "", fmt.Errorf("exit frame: want at least 4 bytes, got %d", len(b))
	}
	return int32(binary.BigEndian.Uint32(b)), string(b[4:]), nil
}
