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
	args := os.Args[1:]
	if os.Getpid() == 1 && os.Args[0] == "/init" {
		// The kernel runs the initramfs's /init with no arguments.
		args = []string{"initramfs"}
	}
	code := guest.Main(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
