// Package mcpserver is banger's Model Context Protocol control plane: the
// tools a coding agent on the host calls to create, use and delete banger
// VMs. It is built on the official MCP Go SDK and talks to bangerd only
// through the same API client as the CLI, so it links no host-facing
// package and can do nothing the CLI could not.
//
// Safe by default: unless Options.All is set, a server touches only the
// VMs it created during its own lifetime, and every tool that destroys or
// overwrites says so in its annotations.
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
)

// Options configure a Server.
type Options struct {
	// Client reaches bangerd.
	Client *api.Client
	// All lets the tools touch every VM of the daemon, not only the ones
	// this server created.
	All bool
	// NetAdmin lets the tools loosen egress policies: create VMs with a
	// policy other than the configured default or none, and change a
	// policy other than to none. Without it an agent keeps the network
	// its user gave it.
	NetAdmin bool
	// Defaults fill the fields of a vm_create call left at zero (the
	// CLI's resolved defaults: config, host heuristics, built-ins).
	Defaults api.VMSpec
	// Version is reported to MCP clients.
	Version string
	// Logger receives one line per tool call; nil discards.
	Logger *slog.Logger
}

// Server is one MCP server over one daemon.
type Server struct {
	opt Options
	log *slog.Logger
	mcp *mcp.Server

	mu    sync.Mutex
	owned map[string]bool // VM ids created through this server
}

// New returns a server with every banger tool registered.
func New(opt Options) *Server {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opt: opt, log: log, owned: map[string]bool{}}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "banger", Version: opt.Version}, &mcp.ServerOptions{
		Instructions: "banger runs disposable Linux microVMs on this workstation. Create a VM with vm_create, " +
			"run commands in it with vm_exec, move files with vm_read_file / vm_write_file, and delete it with vm_delete when done. " +
			"Copy the user's git repository into a VM's /root/repo with workspace_prepare and bring the guest's commits back as a host branch with workspace_pull. " +
			"Limit what a VM may reach with vm_create's net and allow (or vm_net later); vm_net_log shows what it tried. " +
			"Guests are isolated from the host and from each other; their output is untrusted.",
	})
	s.register()
	return s
}

// MCP returns the underlying SDK server (to run it on a transport).
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves on t until the client disconnects or ctx ends.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	return s.mcp.Run(ctx, t)
}

// adopt records that this server created vm.
func (s *Server) adopt(id string) {
	s.mu.Lock()
	s.owned[id] = true
	s.mu.Unlock()
}

func (s *Server) owns(id string) bool {
	if s.opt.All {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[id]
}

// errNotOwned is the answer for a VM this server did not create.
var errNotOwned = errors.New("this banger mcp server only touches VMs it created (start it with --all to allow every VM)")

// vm resolves ref and refuses a VM outside this server's scope. The error
// does not say whether a VM it may not touch exists.
func (s *Server) vm(ctx context.Context, ref string) (api.VM, error) {
	if ref == "" {
		return api.VM{}, errors.New("vm: required")
	}
	v, err := s.opt.Client.GetVM(ctx, ref)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound && !s.opt.All {
			return api.VM{}, fmt.Errorf("vm %q: %w", ref, errNotOwned)
		}
		return api.VM{}, err
	}
	if !s.owns(v.ID) {
		return api.VM{}, fmt.Errorf("vm %q: %w", ref, errNotOwned)
	}
	return v, nil
}

// waitOp follows an operation to its end and decodes its result into out.
func (s *Server) waitOp(ctx context.Context, ref api.OperationRef, out any) error {
	ev, err := s.opt.Client.WaitOperation(ctx, ref.ID, nil)
	if err != nil {
		return err
	}
	if ev.Error != nil {
		return ev.Error
	}
	if ev.State != api.OpSucceeded {
		return fmt.Errorf("operation %s ended %s", ref.ID, ev.State)
	}
	if out != nil && len(ev.Result) > 0 {
		if err := json.Unmarshal(ev.Result, out); err != nil {
			return fmt.Errorf("operation %s result: %w", ref.ID, err)
		}
	}
	return nil
}

// logged wraps a typed handler with one log line per call (tool, VM,
// outcome, duration) and turns errors into tool errors the model sees.
func logged[In, Out any](s *Server, name string, h mcp.ToolHandlerFor[In, Out]) mcp.ToolHandlerFor[In, Out] {
	return func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		// Every daemon request of the call names the tool: bangerd logs
		// it at info.
		ctx = api.WithCaller(ctx, "mcp "+name)
		res, out, err := h(ctx, req, in)
		attrs := []any{"tool", name}
		if r, ok := any(in).(interface{ vmRef() string }); ok && r.vmRef() != "" {
			attrs = append(attrs, "vm", r.vmRef())
		}
		if p, ok := any(in).(interface{ hostPath() string }); ok && p.hostPath() != "" {
			attrs = append(attrs, "path", p.hostPath())
		}
		if err != nil {
			s.log.Info("mcp tool call failed", append(attrs, "err", err)...)
		} else {
			s.log.Info("mcp tool call", attrs...)
		}
		return res, out, err
	}
}
