package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"banger/internal/api"
)

// Upgrade switches the request's connection to the banger-stream protocol
// (see api.UpgradeProtocol): it checks the Upgrade headers, takes the
// connection over, answers 101 and returns it, ready for stream frames.
// The handler then owns the conn: it must Close it and return nil. The
// conn is closed for it when the daemon shuts down.
func (d *Daemon) Upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if !api.IsUpgrade(r) {
		return nil, api.Errorf(api.CodeInvalid, "%s %s needs \"Connection: Upgrade\" and \"Upgrade: %s\"", r.Method, r.URL.Path, api.UpgradeProtocol)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("upgrade %s: %w", r.URL.Path, err)
	}
	if rec, ok := w.(*recorder); ok {
		rec.hijacked = true
		rec.status = http.StatusSwitchingProtocols
	}
	_ = conn.SetDeadline(time.Time{})
	if err := api.WriteUpgradeResponse(brw.Writer); err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade %s: %w", r.URL.Path, err)
	}
	uc := &upgradedConn{Conn: api.NewBufferedConn(conn, brw.Reader)}
	uc.stop = context.AfterFunc(d.streamCtx, func() { uc.Conn.Close() })
	return uc, nil
}

// upgradedConn unregisters its shutdown hook when closed.
type upgradedConn struct {
	net.Conn
	stop func() bool
	once sync.Once
}

func (c *upgradedConn) Close() error {
	c.once.Do(func() { c.stop() })
	return c.Conn.Close()
}
