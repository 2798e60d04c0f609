package stream

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultStdinBuffer is how many stdin bytes a Bridge queues for a
// process that is not reading them before it stops reading frames.
const DefaultStdinBuffer = 1 << 20

// Bridge routes the frames a peer sends to an interactive process (exec
// or attach): Stdin, StdinEOF, Resize and Signal.
//
// Stdin bytes are written on a goroutine of their own, fed through a
// bounded queue, so a process that does not read its standard input
// delays neither the Resize and Signal frames behind them nor the peer's
// ability to stop it. Only when the queue is full does the frame reader
// wait, which is the stream's backpressure.
type Bridge struct {
	// Stdin writes one chunk to the process; nil discards stdin. After
	// it returns an error the rest of the stream's stdin is discarded.
	// It runs on the stdin goroutine, never on the frame reader.
	Stdin func([]byte) error
	// CloseStdin, when set, makes a StdinEOF frame end the stdin queue;
	// it runs on the stdin goroutine once everything queued before the
	// end of stdin (or of the stream) was written. When nil, StdinEOF
	// frames are ignored.
	CloseStdin func()
	// Resize applies a terminal size; nil ignores Resize frames.
	Resize func(cols, rows uint16)
	// Signal delivers a signal by the name the peer sent; nil ignores
	// Signal frames.
	Signal func(name string)
	// Other handles frames of any other kind; when nil such a frame
	// ends Run with an error.
	Other func(Frame) error
	// Done, when closed, makes the frame reader drop stdin instead of
	// waiting for room in a full queue (the process is gone).
	Done <-chan struct{}
	// StdinBuffer bounds the queued stdin bytes; zero means
	// DefaultStdinBuffer.
	StdinBuffer int
}

// Run reads frames from c until the stream ends (nil), a read fails, or
// Other rejects a frame. It does not wait for the stdin goroutine: that
// one ends once its queued bytes are written or Stdin fails.
func (b Bridge) Run(c *Conn) error {
	limit := b.StdinBuffer
	if limit <= 0 {
		limit = DefaultStdinBuffer
	}
	queue := make(chan []byte, max(1, limit/ChunkSize))
	var endOnce sync.Once
	ended := false // only touched by the frame reader
	end := func() { endOnce.Do(func() { ended = true; close(queue) }) }
	defer end()

	go func() {
		broken := b.Stdin == nil
		for p := range queue {
			if broken {
				continue
			}
			if err := b.Stdin(p); err != nil {
				broken = true
			}
		}
		if b.CloseStdin != nil {
			b.CloseStdin()
		}
	}()

	for {
		f, err := c.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch f.Kind {
		case Stdin:
			b.queueStdin(queue, f.Data, ended)
		case StdinEOF:
			if b.CloseStdin != nil {
				end()
			}
		case Resize:
			if cols, rows, err := DecodeResize(f.Data); err == nil && b.Resize != nil {
				b.Resize(cols, rows)
			}
		case Signal:
			if b.Signal != nil {
				b.Signal(string(f.Data))
			}
		default:
			if b.Other == nil {
				return fmt.Errorf("unexpected %s frame", f.Kind)
			}
			if err := b.Other(f); err != nil {
				return err
			}
		}
	}
}

// queueStdin hands data to the stdin goroutine in chunks of at most
// ChunkSize, so the queue's capacity bounds bytes, not frames.
func (b Bridge) queueStdin(queue chan<- []byte, data []byte, ended bool) {
	if ended || b.Stdin == nil {
		return
	}
	for len(data) > 0 {
		chunk := data[:min(len(data), ChunkSize)]
		select {
		case queue <- chunk:
		case <-b.Done:
			return
		}
		data = data[len(chunk):]
	}
}
