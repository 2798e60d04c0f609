package agentclient

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/guestcontract"
)

// scriptedVMM accepts one connection at a time on a unix socket and runs
// script on it.
func scriptedVMM(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	path := filepath.Join(agenttest.ShortTempDir(t), "v.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); script(c) }()
		}
	}()
	return path
}

func readLine(c net.Conn) string {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil || b[0] == '\n' {
			return string(line)
		}
		line = append(line, b[0])
	}
}

func TestVsockDialer_Handshake(t *testing.T) {
	tests := []struct {
		name    string
		script  func(t *testing.T, c net.Conn)
		ctxTO   time.Duration
		wantErr string
		// wantGuest is what the guest sends after the ack; the dialed
		// connection must deliver it intact.
		wantGuest string
	}{
		{
			name: "ok then guest bytes in one write",
			script: func(t *testing.T, c net.Conn) {
				if got := readLine(c); got != "CONNECT 1024" {
					t.Errorf("request line %q", got)
					return
				}
				_, _ = c.Write([]byte("OK 1073741824\nHTTP/1.1 hello from the guest"))
				time.Sleep(200 * time.Millisecond)
			},
			wantGuest: "HTTP/1.1 hello from the guest",
		},
		{
			name: "ok split across writes",
			script: func(t *testing.T, c net.Conn) {
				readLine(c)
				for _, s := range []string{"O", "K 5", "\n", "guest"} {
					_, _ = c.Write([]byte(s))
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(200 * time.Millisecond)
			},
			wantGuest: "guest",
		},
		{
			name:    "rejected: VMM closes",
			script:  func(t *testing.T, c net.Conn) { readLine(c) },
			wantErr: "closed by the VMM",
		},
		{
			name: "garbage acknowledgement",
			script: func(t *testing.T, c net.Conn) {
				readLine(c)
				_, _ = c.Write([]byte("NOPE\n"))
			},
			wantErr: `unexpected acknowledgement "NOPE"`,
		},
		{
			name: "OK without a number",
			script: func(t *testing.T, c net.Conn) {
				readLine(c)
				_, _ = c.Write([]byte("OK x\n"))
			},
			wantErr: "unexpected acknowledgement",
		},
		{
			name: "endless line",
			script: func(t *testing.T, c net.Conn) {
				readLine(c)
				_, _ = c.Write([]byte(strings.Repeat("O", 4096)))
			},
			wantErr: "longer than 64 bytes",
		},
		{
			name: "never answers",
			script: func(t *testing.T, c net.Conn) {
				readLine(c)
				time.Sleep(2 * time.Second)
			},
			ctxTO:   200 * time.Millisecond,
			wantErr: "deadline exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := scriptedVMM(t, func(c net.Conn) { tt.script(t, c) })
			d := NewVsockDialer(path, guestcontract.AgentVsockPort)
			defer d.Close()
			ctx := context.Background()
			if tt.ctxTO > 0 {
				ctx = agenttest.CtxTimeout(t, tt.ctxTO)
			}
			start := time.Now()
			conn, err := d.DialContext(ctx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if time.Since(start) > 3*time.Second {
					t.Fatalf("dial took %s", time.Since(start))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			got := make([]byte, len(tt.wantGuest))
			if _, err := io.ReadFull(conn, got); err != nil {
				t.Fatalf("read guest bytes: %v", err)
			}
			if string(got) != tt.wantGuest {
				t.Fatalf("guest bytes %q, want %q", got, tt.wantGuest)
			}
		})
	}
}

func TestVsockDialer_NoSocketAndClosed(t *testing.T) {
	d := NewVsockDialer(filepath.Join(t.TempDir(), "missing.sock"), guestcontract.AgentVsockPort)
	if _, err := d.DialContext(context.Background()); err == nil || !strings.Contains(err.Error(), "dial vsock socket") {
		t.Fatalf("err = %v", err)
	}
	d.Close()
	if _, err := d.DialContext(context.Background()); !errors.Is(err, ErrDialerClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestVsockDialer_EndToEnd(t *testing.T) {
	srv := testServer(t)
	gl := agenttest.NewChanListener()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, gl) }()
	t.Cleanup(func() { cancel(); <-done })
	path := agenttest.FakeFirecracker(t, map[uint32]*agenttest.ChanListener{guestcontract.AgentVsockPort: gl})

	c := NewClient(NewVsockDialer(path, guestcontract.AgentVsockPort), agenttest.Token)
	defer c.Close()
	h, err := c.Health(agenttest.CtxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != "test-1" {
		t.Fatalf("version %q", h.Version)
	}
	// A port nobody listens on: the VMM closes the connection.
	c2 := NewClient(NewVsockDialer(path, 9999), agenttest.Token)
	defer c2.Close()
	if _, err := c2.Health(agenttest.CtxTimeout(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "closed by the VMM") {
		t.Fatalf("unlistened port: %v", err)
	}
}

func TestSerialDialer_ReconnectAfterDrop(t *testing.T) {
	srv := testServer(t)
	path, sessions := agenttest.YamuxGuest(t, srv)
	c := NewClient(NewSerialDialer(path), agenttest.Token)
	defer c.Close()

	for round := 0; round < 3; round++ {
		h, err := c.Health(agenttest.CtxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if h.Version != "test-1" {
			t.Fatalf("round %d: version %q", round, h.Version)
		}
		var sess interface{ Close() error }
		select {
		case sess = <-sessions:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: no new session; the dialer reused a dead one", round)
		}
		// Several requests share the session's streams.
		for i := 0; i < 3; i++ {
			if _, err := c.Ports(agenttest.CtxTimeout(t, 10*time.Second)); err != nil {
				t.Fatalf("round %d request %d: %v", round, i, err)
			}
		}
		// The guest side drops (agent restart): the next call must
		// reconnect with a new session.
		sess.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSerialDialer_NoSocket(t *testing.T) {
	d := NewSerialDialer(filepath.Join(t.TempDir(), "none.sock"))
	defer d.Close()
	if _, err := d.DialContext(context.Background()); err == nil || !strings.Contains(err.Error(), "dial serial socket") {
		t.Fatalf("err = %v", err)
	}
	d.Close()
	if _, err := d.DialContext(context.Background()); !errors.Is(err, ErrDialerClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
