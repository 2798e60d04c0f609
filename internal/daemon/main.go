package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"banger/internal/buildinfo"
)

// Main is bangerd's entry point: it parses args (without the program
// name), runs the daemon until SIGINT, SIGTERM or an API stop request,
// and returns the exit status. Errors, an invalid config first among
// them, are printed once to stderr (the daemon log file when the CLI
// started the daemon).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bangerd [--log-level LEVEL] [--config FILE]\n\n"+
			"bangerd is banger's daemon; the banger CLI starts it when needed.\n\n")
		fs.PrintDefaults()
	}
	logLevel := fs.String("log-level", "", "log level: debug, info, warn or error (default: config log_level, else info)")
	configPath := fs.String("config", "", "config file (default: $BANGER_CONFIG or $XDG_CONFIG_HOME/banger/config.toml)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bangerd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *version {
		fmt.Fprintf(stdout, "bangerd %s (built %s)\n", buildinfo.Version(), buildinfo.BuildStamp().Format("2006-01-02T15:04:05Z07:00"))
		return 0
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d := New(Options{ConfigPath: *configPath, LogLevel: *logLevel})
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "bangerd: %v\n", err)
		return 1
	}
	return 0
}
