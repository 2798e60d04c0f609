package agentserver

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
)

// TestThaw: the clock is stepped to the host's time and the entropy goes
// to the pool; the step is reported; oversized entropy and a missing time
// are refused without touching either.
func TestThaw(t *testing.T) {
	srv := testServer(t)
	var gotTime time.Time
	var gotEntropy []byte
	srv.SetClock = func(t time.Time) error { gotTime = t; return nil }
	srv.AddEntropy = func(b []byte) error { gotEntropy = append([]byte(nil), b...); return nil }
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, srv)}, agenttest.Token)
	ctx := context.Background()

	host := time.Now().Add(15 * time.Second)
	res, err := c.Thaw(ctx, agent.Thaw{Time: host, Entropy: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	if !gotTime.Equal(host) || string(gotEntropy) != "0123456789abcdef" {
		t.Fatalf("clock %v entropy %q; want %v and the 16 bytes sent", gotTime, gotEntropy, host)
	}
	if res.ClockStep < 14*time.Second || res.ClockStep > 15*time.Second {
		t.Fatalf("clock step %v, want about 15s", res.ClockStep)
	}

	gotTime, gotEntropy = time.Time{}, nil
	for _, bad := range []agent.Thaw{
		{Time: host, Entropy: bytes.Repeat([]byte{1}, agent.MaxThawEntropy+1)},
		{Entropy: []byte{1}},
	} {
		if _, err := c.Thaw(ctx, bad); err == nil || !strings.Contains(err.Error(), "thaw") {
			t.Fatalf("Thaw(%d bytes, time %v) = %v; want a refusal", len(bad.Entropy), bad.Time, err)
		}
	}
	if !gotTime.IsZero() || gotEntropy != nil {
		t.Fatal("a refused thaw touched the clock or the pool")
	}
}
