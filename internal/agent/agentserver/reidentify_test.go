package agentserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
)

// TestReidentify: after POST /identity only the new token opens the
// agent; a short token, file_sync entries or a failing apply are refused
// and the old token keeps working.
func TestReidentify(t *testing.T) {
	srv := testServer(t)
	var applied []string
	srv.Reidentify = func(r agent.Reidentify) error {
		if r.Identity.Hostname == "fail" {
			return context.DeadlineExceeded
		}
		applied = append(applied, r.Identity.Hostname)
		return nil
	}
	path := agenttest.ServeUnix(t, srv)
	old := agentclient.NewClient(agenttest.UnixDialer{Path: path}, agenttest.Token)
	ctx := context.Background()
	newTok := strings.Repeat("n", 40)

	for _, bad := range []agent.Reidentify{
		{Identity: agent.Identity{Hostname: "x", Token: "short"}},
		{Identity: agent.Identity{Hostname: "x", Token: newTok, Files: []agent.SyncFile{{Source: "0", Guest: "/x"}}}},
		{Identity: agent.Identity{Hostname: "fail", Token: newTok}},
	} {
		if _, err := old.Reidentify(ctx, bad); err == nil {
			t.Fatalf("Reidentify(%+v) accepted", bad.Identity)
		}
		if _, err := old.Health(ctx); err != nil {
			t.Fatalf("old token refused after a refused reidentify: %v", err)
		}
	}
	res, err := old.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "clone", Token: newTok}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Thaw != nil {
		t.Fatalf("a thaw result without a thaw asked: %+v", res.Thaw)
	}
	if len(applied) != 1 || applied[0] != "clone" {
		t.Fatalf("applied %v", applied)
	}
	if _, err := old.Health(ctx); err == nil {
		t.Fatal("the template's token still opens the agent")
	}
	if _, err := agentclient.NewClient(agenttest.UnixDialer{Path: path}, newTok).Health(ctx); err != nil {
		t.Fatalf("new token: %v", err)
	}

	srv2 := testServer(t)
	c := agentclient.NewClient(agenttest.UnixDialer{Path: agenttest.ServeUnix(t, srv2)}, agenttest.Token)
	if _, err := c.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "x", Token: newTok}}); err == nil {
		t.Fatal("an agent without the hook took an identity")
	}
}

// TestReidentify_Thaw: a thaw sent with the identity steps the clock and
// reseeds the pool before the identity is applied, and its result comes
// back; a bad thaw (no time, too much entropy) refuses the whole request,
// applies no identity and keeps the old token.
func TestReidentify_Thaw(t *testing.T) {
	srv := testServer(t)
	var order []string
	var gotTime time.Time
	srv.SetClock = func(tm time.Time) error { gotTime = tm; order = append(order, "clock"); return nil }
	srv.AddEntropy = func(b []byte) error { order = append(order, "entropy"); return nil }
	srv.Reidentify = func(r agent.Reidentify) error { order = append(order, "identity "+r.Identity.Hostname); return nil }
	path := agenttest.ServeUnix(t, srv)
	old := agentclient.NewClient(agenttest.UnixDialer{Path: path}, agenttest.Token)
	ctx := context.Background()
	newTok := strings.Repeat("n", 40)

	for _, bad := range []*agent.Thaw{
		{},
		{Time: time.Now(), Entropy: make([]byte, agent.MaxThawEntropy+1)},
	} {
		if _, err := old.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "x", Token: newTok}, Thaw: bad}); err == nil {
			t.Fatalf("bad thaw %+v accepted", bad)
		}
	}
	if len(order) != 0 {
		t.Fatalf("a refused request applied %v", order)
	}
	if _, err := old.Health(ctx); err != nil {
		t.Fatalf("old token refused after a refused thaw: %v", err)
	}
	ahead := time.Now().Add(time.Hour)
	res, err := old.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "clone", Token: newTok}, Thaw: &agent.Thaw{Time: ahead, Entropy: []byte("seed")}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"entropy", "clock", "identity clone"}; !slices.Equal(order, want) {
		t.Fatalf("applied %v, want %v", order, want)
	}
	if !gotTime.Equal(ahead) {
		t.Fatalf("clock set to %v, want %v", gotTime, ahead)
	}
	if res.Thaw == nil || res.Thaw.ClockStep < 59*time.Minute {
		t.Fatalf("thaw result %+v", res.Thaw)
	}
}
