// Command banger-agent is banger's guest agent: baked into every image,
// it applies the VM's identity at boot and serves the agent API over
// vsock or virtio-serial. See internal/agent/guest.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/agent/guest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := guest.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
