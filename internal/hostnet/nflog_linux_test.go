package hostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/testenv"
)

// TestRefusedLog_Netns logs a packet with the same rule shape the ruleset
// uses and reads it back: addresses, protocol and port.
func TestRefusedLog_Netns(t *testing.T) {
	testenv.RequireCommand(t, "nft")
	ns := testenv.NewNetns(t)
	ctx := context.Background()
	for _, s := range [][]string{
		{"ip", "link", "add", "bgtest9", "type", "bridge"},
		{"ip", "addr", "add", "198.51.100.1/24", "dev", "bgtest9"},
		{"ip", "link", "set", "bgtest9", "up"},
		{"nft", "add table inet t; add chain inet t out { type filter hook output priority 0; }; add rule inet t out udp dport 9999 limit rate 50/second burst 100 packets log group " + strconv.Itoa(RefusedLogGroup) + " drop"},
	} {
		if out, err := ns.Run(ctx, s...); err != nil {
			t.Fatalf("%v: %v: %s", s, err, out)
		}
	}
	var l *RefusedLog
	if err := ns.Do(func() (err error) { l, err = OpenRefusedLog(config.DefaultBridge); return err }); err != nil {
		t.Fatal(err)
	}
	got := make(chan Refused, 8)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Watch(wctx, func(r Refused) { got <- r }) }()
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", "198.51.100.7:9999")
		if err != nil {
			return err
		}
		defer c.Close()
		// The rule drops it: a local sender hears EPERM.
		if _, err := c.Write([]byte("refused")); err != nil && !errors.Is(err, syscall.EPERM) {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		want := Refused{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("198.51.100.7"), Proto: "udp", Port: 9999}
		if r != want {
			t.Errorf("logged %+v, want %+v", r, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the refused packet never reached the log")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// TestParseNflog_hostileBytes feeds truncated and lying messages: the
// payload is the guest's, so nothing in it may crash the daemon.
func TestParseNflog_hostileBytes(t *testing.T) {
	pkt := make([]byte, 28)
	pkt[0] = 0x45
	pkt[9] = 6
	copy(pkt[12:], []byte{10, 77, 0, 2, 203, 0, 113, 9})
	binary.BigEndian.PutUint16(pkt[22:], 443)
	msg := func(payload []byte, attrLen int) []byte {
		a := make([]byte, 4+len(payload))
		binary.NativeEndian.PutUint16(a[0:], uint16(attrLen))
		binary.NativeEndian.PutUint16(a[2:], nfulaPayload)
		copy(a[4:], payload)
		body := append([]byte{2, 0, 0, 0}, a...)
		m := make([]byte, 16+len(body))
		binary.NativeEndian.PutUint32(m[0:], uint32(len(m)))
		binary.NativeEndian.PutUint16(m[4:], nfnlSubsysULOG<<8|nfulnlMsgPacket)
		copy(m[16:], body)
		return m
	}
	rs := parseNflog(msg(pkt, 4+len(pkt)))
	want := Refused{Src: netip.MustParseAddr("10.77.0.2"), Dst: netip.MustParseAddr("203.0.113.9"), Proto: "tcp", Port: 443}
	if len(rs) != 1 || rs[0] != want {
		t.Errorf("parse = %+v, want %+v", rs, want)
	}
	for _, bad := range [][]byte{
		msg(pkt, 2000),       // attribute longer than the message
		msg(pkt, 1),          // shorter than its header
		msg(pkt[:10], 14),    // truncated IP header
		msg([]byte{0x4f}, 5), // IHL beyond the bytes
		msg([]byte{0x60}, 5), // IPv6
		{1, 2, 3},            // not netlink
		msg(append([]byte{0x46}, pkt[1:]...), 4+len(pkt)), // options: port beyond? still bounded
	} {
		parseNflog(bad) // must not panic
	}
}

// FuzzParseNflog: no input panics.
func FuzzParseNflog(f *testing.F) {
	f.Add([]byte{20, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) { parseNflog(b) })
}
