package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// completionTimeout bounds one completion's talk with the daemon: a tab
// press must not hang when bangerd is busy or gone.
const completionTimeout = 500 * time.Millisecond

// completionClient reaches a running daemon for completions; it never
// starts one, and prints nothing when there is none.
func (a *app) completionClient() *api.Client {
	if a.pathsErr != nil {
		return nil
	}
	return &api.Client{Socket: a.paths.Socket}
}

// names completes the names list returns that start with toComplete.
func (a *app) names(toComplete string, list func(context.Context, *api.Client) ([]string, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	c := a.completionClient()
	if c == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	all, err := list(ctx, c)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range all {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func vmNames(ctx context.Context, c *api.Client) ([]string, error) {
	vms, err := c.ListVMs(ctx)
	var out []string
	for _, v := range vms {
		out = append(out, v.Name)
	}
	return out, err
}

func imageNames(ctx context.Context, c *api.Client) ([]string, error) {
	imgs, err := c.Images(ctx)
	var out []string
	for _, i := range imgs {
		out = append(out, i.Name)
	}
	return out, err
}

func sessionNames(vm string) func(context.Context, *api.Client) ([]string, error) {
	return func(ctx context.Context, c *api.Client) ([]string, error) {
		ss, err := c.Sessions(ctx, vm)
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out, err
	}
}

// wireCompletion gives every command that names a VM, an image or a
// session its dynamic completion, read from its usage line: under `vm`, a
// first argument NAME is a VM and a second SESSION a session; under
// `image`, NAME is an image. "NAME..." completes every argument.
func wireCompletion(a *app, root *cobra.Command) {
	var walk func(c *cobra.Command, group string)
	walk = func(c *cobra.Command, group string) {
		for _, sub := range c.Commands() {
			g := group
			if c == root {
				g = sub.Name()
			}
			walk(sub, g)
		}
		// image pull NAME names a catalog entry, not a local image.
		if c == root || c.ValidArgsFunction != nil || group == "image" && c.Name() == "pull" {
			return
		}
		f := strings.Fields(c.Use)
		if len(f) < 2 || !strings.HasPrefix(f[1], "NAME") {
			return
		}
		many := f[1] == "NAME..."
		session := len(f) > 2 && f[2] == "SESSION"
		var list func(context.Context, *api.Client) ([]string, error)
		switch group {
		case "vm":
			list = vmNames
		case "image":
			list = imageNames
		default:
			return
		}
		c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0 || many:
				return a.names(toComplete, list)
			case len(args) == 1 && session:
				return a.names(toComplete, sessionNames(args[0]))
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	walk(root, "")
}
