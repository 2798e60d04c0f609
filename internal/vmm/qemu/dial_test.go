package qemu

import (
	"context"
	"net"
)

type netDialer struct{ net.Dialer }

func (d *netDialer) dial(ctx context.Context, path string) (net.Conn, error) {
	return d.DialContext(ctx, "unix", path)
}
