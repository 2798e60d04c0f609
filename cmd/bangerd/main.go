// Command bangerd is banger's daemon. The banger CLI starts it on demand;
// see package daemon. `bangerd priv ...` runs the privileged host-network
// helper.
package main

import (
	"context"
	"os"

	"banger/internal/daemon"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "priv" {
		os.Exit(privMain(args[1:]))
	}
	os.Exit(daemon.Main(context.Background(), args, os.Stdout, os.Stderr))
}
