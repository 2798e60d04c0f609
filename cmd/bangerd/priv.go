package main

import "banger/internal/hostnet"

// privMain runs `bangerd priv ARGS`, the privileged host-network helper
// that a non-root bangerd invokes through `sudo -n`.
func privMain(args []string) int { return hostnet.PrivMain(args) }
