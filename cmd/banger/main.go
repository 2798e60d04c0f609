// Command banger is the banger command line; see package cli.
package main

import (
	"context"
	"os"

	"banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.StdStreams()))
}
