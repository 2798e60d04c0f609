package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type rw struct {
	io.Reader
	io.Writer
}

func TestConn_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		data []byte
	}{
		{"empty stdin eof", StdinEOF, nil},
		{"small stdout", Stdout, []byte("hello\n")},
		{"stderr", Stderr, []byte("oops")},
		{"resize", Resize, EncodeResize(120, 40)},
		{"signal", Signal, []byte("TERM")},
		{"exit", Exit, EncodeExit(3, "")},
		{"error", Error, []byte("no such file")},
		{"max size", Stdin, bytes.Repeat([]byte{'x'}, DefaultMaxFrameSize)},
		{"big", Stdout, bytes.Repeat([]byte{'y'}, 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := NewConn(&buf)
			if err := c.WriteFrame(tt.kind, tt.data); err != nil {
				t.Fatal(err)
			}
			if got, want := buf.Len(), HeaderSize+len(tt.data); got != want {
				t.Fatalf("encoded %d bytes, want %d", got, want)
			}
			f, err := c.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if f.Kind != tt.kind || !bytes.Equal(f.Data, tt.data) {
				t.Fatalf("got %s %d bytes, want %s %d bytes", f.Kind, len(f.Data), tt.kind, len(tt.data))
			}
			if _, err := c.ReadFrame(); err != io.EOF {
				t.Fatalf("after last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestConn_ReadFrameErrors(t *testing.T) {
	hdr := func(k Kind, n uint32) []byte {
		b := []byte{byte(k), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	tests := []struct {
		name    string
		input   []byte
		max     int
		wantIs  error
		wantMsg string
	}{
		{"oversized", hdr(Stdout, DefaultMaxFrameSize+1), 0, ErrFrameTooLarge, "declared length 1048577"},
		{"huge length", hdr(Stdout, 0xffffffff), 0, ErrFrameTooLarge, "limit 1048576"},
		{"custom limit", hdr(Stdin, 11), 10, ErrFrameTooLarge, "limit 10"},
		{"truncated header", []byte{2, 0, 0}, 0, io.ErrUnexpectedEOF, "header"},
		{"truncated payload", append(hdr(Stdout, 10), 'a', 'b'), 0, io.ErrUnexpectedEOF, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConn(rw{bytes.NewReader(tt.input), io.Discard})
			c.SetMaxFrameSize(tt.max)
			_, err := c.ReadFrame()
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("err = %v, want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestConn_WriteFrameTooLarge(t *testing.T) {
	c := NewConn(rw{nil, io.Discard})
	c.SetMaxFrameSize(8)
	if err := c.WriteFrame(Stdout, make([]byte, 9)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}

func TestConn_ConcurrentWriters(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	c := NewConn(rw{nil, writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})})
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			payload := bytes.Repeat([]byte{byte('a' + i)}, 100+i*1000)
			for j := 0; j < each; j++ {
				if err := c.WriteFrame(Stdout, payload); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	r := NewConn(rw{&buf, nil})
	count := 0
	for {
		f, err := r.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat(f.Data[:1], len(f.Data))
		if !bytes.Equal(f.Data, want) || len(f.Data) != 100+int(f.Data[0]-'a')*1000 {
			t.Fatalf("frame %d interleaved", count)
		}
		count++
	}
	if count != writers*each {
		t.Fatalf("read %d frames, want %d", count, writers*each)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestConn_PumpWriterAndDemux(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	src := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB
	ca, cb := NewConn(a), NewConn(b)
	errc := make(chan error, 1)
	go func() {
		if _, err := ca.Pump(Stdout, bytes.NewReader(src)); err != nil {
			errc <- err
			return
		}
		if _, err := ca.Writer(Stderr).Write(make([]byte, ChunkSize*2+1)); err != nil {
			errc <- err
			return
		}
		errc <- ca.WriteFrame(Exit, EncodeExit(-1, "SIGKILL"))
		a.Close()
	}()
	var out bytes.Buffer
	var errBytes, stderrFrames int
	var code int32
	var sig string
	err := cb.Demux(map[Kind]func(Frame) error{
		Stdout: func(f Frame) error {
			if len(f.Data) > ChunkSize {
				t.Errorf("stdout frame of %d bytes > chunk size", len(f.Data))
			}
			return Sink{W: &out}.Deliver(f)
		},
		Stderr: func(f Frame) error { errBytes += len(f.Data); stderrFrames++; return nil },
		Exit: func(f Frame) (err error) {
			code, sig, err = DecodeExit(f.Data)
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), src) {
		t.Fatalf("stdout mismatch: %d bytes, want %d", out.Len(), len(src))
	}
	if errBytes != ChunkSize*2+1 || stderrFrames != 3 {
		t.Fatalf("stderr: %d bytes in %d frames", errBytes, stderrFrames)
	}
	if code != -1 || sig != "SIGKILL" {
		t.Fatalf("exit = %d %q", code, sig)
	}
}

func TestConn_DemuxUnexpectedKind(t *testing.T) {
	var buf bytes.Buffer
	c := NewConn(&buf)
	_ = c.WriteFrame(Kind(99), []byte("x"))
	err := c.Demux(map[Kind]func(Frame) error{Stdout: func(Frame) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "unexpected kind(99) frame") {
		t.Fatalf("err = %v", err)
	}
}

// TestConn_Backpressure checks that a writer whose peer stops reading
// blocks instead of buffering: over a synchronous pipe, Pump makes no
// progress past the unread frame.
func TestConn_Backpressure(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ca := NewConn(a)
	var read int64
	var mu sync.Mutex
	src := readerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		read += int64(len(p))
		return len(p), nil
	})
	done := make(chan struct{})
	go func() {
		_, _ = ca.Pump(Stdin, src)
		close(done)
	}()
	// Let the pump run into the unread pipe.
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	got := read
	mu.Unlock()
	if got > 2*ChunkSize {
		t.Fatalf("pump consumed %d bytes with nobody reading; want at most %d", got, 2*ChunkSize)
	}
	a.Close()
	<-done
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestResizeExitCodec(t *testing.T) {
	cols, rows, err := DecodeResize(EncodeResize(211, 57))
	if err != nil || cols != 211 || rows != 57 {
		t.Fatalf("resize = %d %d %v", cols, rows, err)
	}
	if _, _, err := DecodeResize([]byte{1, 2, 3}); err == nil {
		t.Fatal("short resize accepted")
	}
	code, sig, err := DecodeExit(EncodeExit(137, "SIGKILL"))
	if err != nil || code != 137 || sig != "SIGKILL" {
		t.Fatalf("exit = %d %q %v", code, sig, err)
	}
	if _, _, err := DecodeExit([]byte{0}); err == nil {
		t.Fatal("short exit accepted")
	}
}

func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	c := NewConn(&seed)
	_ = c.WriteFrame(Stdout, []byte("hello"))
	_ = c.WriteFrame(Resize, EncodeResize(80, 24))
	f.Add(seed.Bytes())
	f.Add([]byte{7, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := NewConn(rw{bytes.NewReader(in), io.Discard})
		c.SetMaxFrameSize(1 << 12)
		consumed := 0
		for {
			fr, err := c.ReadFrame()
			if err != nil {
				if len(in)-consumed >= HeaderSize && err == io.EOF {
					t.Fatalf("EOF with %d unread bytes", len(in)-consumed)
				}
				return
			}
			if len(fr.Data) > 1<<12 {
				t.Fatalf("frame of %d bytes over limit", len(fr.Data))
			}
			consumed += HeaderSize + len(fr.Data)
			if consumed > len(in) {
				t.Fatalf("consumed %d of %d bytes", consumed, len(in))
			}
			if fr.Kind == Resize {
				_, _, _ = DecodeResize(fr.Data)
			}
			if fr.Kind == Exit {
				_, _, _ = DecodeExit(fr.Data)
			}
		}
	})
}
