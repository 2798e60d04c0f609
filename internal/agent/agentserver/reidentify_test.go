package agentserver

import (
	"context"
	"strings"
	"testing"

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
		if err := old.Reidentify(ctx, bad); err == nil {
			t.Fatalf("Reidentify(%+v) accepted", bad.Identity)
		}
		if _, err := old.Health(ctx); err != nil {
			t.Fatalf("old token refused after a refused reidentify: %v", err)
		}
	}
	if err := old.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "clone", Token: newTok}}); err != nil {
		t.Fatal(err)
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
	if err := c.Reidentify(ctx, agent.Reidentify{Identity: agent.Identity{Hostname: "x", Token: newTok}}); err == nil {
		t.Fatal("an agent without the hook took an identity")
	}
}
