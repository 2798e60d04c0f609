package agentclient

import (
	"testing"

	"banger/internal/agent/agentserver"
	"banger/internal/agent/agenttest"
)

var _ Dialer = agenttest.UnixDialer{}

func testServer(t *testing.T) *agentserver.Server {
	t.Helper()
	return &agentserver.Server{Token: agenttest.Token, Version: "test-1", HomeDir: t.TempDir()}
}
