package main

import (
	"fmt"
	"os"
)

// privMain runs `bangerd priv ARGS`, the privileged host-network helper.
// This build has none: the host-network package provides it.
func privMain(args []string) int {
	fmt.Fprintln(os.Stderr, "bangerd priv: the privileged network helper is not available in this build")
	return 2
}
