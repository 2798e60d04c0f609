package stream

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestBridge_ControlFramesPassBlockedStdin: a process that does not read
// stdin must still get the resize and signal frames sent after its stdin.
func TestBridge_ControlFramesPassBlockedStdin(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()

	release := make(chan struct{})
	var got bytes.Buffer
	resized := make(chan [2]uint16, 1)
	signalled := make(chan string, 1)
	closed := make(chan struct{})
	runDone := make(chan error, 1)
	go func() {
		runDone <- Bridge{
			Stdin: func(p []byte) error {
				<-release // a reader that is not reading
				got.Write(p)
				return nil
			},
			CloseStdin: func() { close(closed) },
			Resize:     func(c, r uint16) { resized <- [2]uint16{c, r} },
			Signal:     func(s string) { signalled <- s },
		}.Run(NewConn(server))
	}()

	pc := NewConn(client)
	payload := bytes.Repeat([]byte("x"), 256<<10)
	if _, err := pc.Writer(Stdin).Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := pc.WriteFrame(Resize, EncodeResize(80, 24)); err != nil {
		t.Fatal(err)
	}
	if err := pc.WriteFrame(Signal, []byte("INT")); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	select {
	case sz := <-resized:
		if sz != [2]uint16{80, 24} {
			t.Fatalf("resize %v", sz)
		}
	case <-timeout:
		t.Fatal("resize stuck behind stdin")
	}
	select {
	case s := <-signalled:
		if s != "INT" {
			t.Fatalf("signal %q", s)
		}
	case <-timeout:
		t.Fatal("signal stuck behind stdin")
	}

	// Stdin is still delivered in full, in order, then closed.
	if err := pc.WriteFrame(StdinEOF, nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case <-closed:
	case <-timeout:
		t.Fatal("stdin not closed")
	}
	if !bytes.Equal(got.Bytes(), payload) {
		t.Fatalf("stdin got %d bytes, want %d", got.Len(), len(payload))
	}
	client.Close()
	if err := <-runDone; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestBridge_UnknownFrame ends Run unless Other accepts it.
func TestBridge_UnknownFrame(t *testing.T) {
	for _, other := range []func(Frame) error{nil, func(Frame) error { return nil }} {
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- Bridge{Other: other}.Run(NewConn(server)) }()
		pc := NewConn(client)
		if err := pc.WriteFrame(Stdout, []byte("?")); err != nil {
			t.Fatal(err)
		}
		if other != nil {
			client.Close()
		}
		err := <-done
		if (err == nil) != (other != nil) {
			t.Fatalf("other=%v: err = %v", other != nil, err)
		}
		client.Close()
		server.Close()
	}
}
