package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/mcpserver"
)

func newMCPCmd(a *app) *cobra.Command {
	var all, netAdmin bool
	var listen string
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve banger's VM tools to a coding agent over MCP (stdio by default)",
		Long: `Serve banger's tools over the Model Context Protocol: create, list, show and
delete VMs, exec with separate capped stdout/stderr, read/write files, list
directories, ports, console logs, sessions, and each VM's egress policy and
flow log.

By default the server only touches VMs it created during its own lifetime;
--all lets it use every VM of the daemon. Destructive tools say so in their
MCP annotations. Every call is logged to standard error.

Without --listen it speaks MCP on stdin/stdout, as agents expect of a
command. --listen serves the streamable HTTP transport instead, on a unix
socket (unix:PATH, created 0600) or a loopback address (127.0.0.1:PORT).`,
		Example: `  # Claude Code
  claude mcp add banger -- banger mcp

  # opencode (opencode.json): "mcp": {"banger": {"type": "local", "command": ["banger", "mcp"]}}

  # any client of the streamable HTTP transport
  banger mcp --listen unix:$XDG_RUNTIME_DIR/banger-mcp.sock`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			d := config.ResolveVMDefaults(a.cfg, a.host)
			srv := mcpserver.New(mcpserver.Options{
				Client:   c,
				All:      all,
				NetAdmin: netAdmin,
				Version:  buildinfo.Version(),
				Defaults: api.VMSpec{VCPU: d.VCPU, MemoryMiB: d.MemoryMiB, DiskBytes: d.DiskBytes},
				Logger:   slog.New(slog.NewTextHandler(a.streams.ErrOut, nil)),
			})
			if listen == "" {
				return srv.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(a.streams.In), Writer: nopWriteCloser{a.streams.Out}})
			}
			return serveMCPHTTP(ctx, srv, listen, a.streams.ErrOut)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "let the tools use every VM, not only those this server created")
	cmd.Flags().BoolVar(&netAdmin, "net-admin", false, "let the tools loosen egress policy (create with net open or allow rules, vm_net allow or mode); tightening is always allowed")
	cmd.Flags().StringVar(&listen, "listen", "", "serve streamable HTTP on unix:PATH or a loopback HOST:PORT instead of stdio")
	return cmd
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// mcpListener opens where --listen says. Only a unix socket or a loopback
// address is accepted: the tools run code in VMs, so the port must not be
// reachable from another machine.
func mcpListener(listen string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		if path == "" {
			return nil, errors.New("--listen unix:PATH: empty path")
		}
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path) // a stale socket of an earlier server
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: %w", listen, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("--listen %s: %w", listen, err)
		}
		return l, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want unix:PATH or HOST:PORT: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--listen %q: only loopback addresses or unix sockets are served", listen)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	return l, nil
}

func serveMCPHTTP(ctx context.Context, srv *mcpserver.Server, listen string, log io.Writer) error {
	l, err := mcpListener(listen)
	if err != nil {
		return &usageError{cmd: "banger mcp", err: err}
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv.MCP() }, nil)
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { hs.Close() })
	defer stop()
	fmt.Fprintf(log, "banger mcp: serving streamable HTTP on %s\n", l.Addr())
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
