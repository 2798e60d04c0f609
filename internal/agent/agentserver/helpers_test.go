package agentserver

import (
	"testing"

	"banger/internal/agent/agentclient"
	"banger/internal/agent/agenttest"
)

var _ agentclient.Dialer = agenttest.UnixDialer{}

func testServer(t *testing.T) *Server {
	t.Helper()
	return &Server{Token: agenttest.Token, Version: "test-1", HomeDir: t.TempDir()}
}
