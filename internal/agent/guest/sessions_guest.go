package guest

import (
	"log/slog"

	"banger/internal/agent/agentserver"
)

// SessionsDir is where a guest keeps session state and output logs. It is
// on /run (tmpfs): sessions do not survive a reboot, and their processes
// would not either.
const SessionsDir = "/run/banger/sessions"

// NewSessionsForGuest returns the session manager of a real guest.
func NewSessionsForGuest(log *slog.Logger) (*agentserver.Sessions, error) {
	return agentserver.NewSessions(SessionsDir, agentserver.DefaultSessionLogSize)
}
