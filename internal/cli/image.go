package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/units"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build, pull, import, list and remove images",
		Long: "Images are the boot sets VMs start from: a kernel, an initramfs, a shared read-only\n" +
			"root filesystem and the seed of /root. The default image (debian-12) is built from\n" +
			"Debian packages the first time a VM needs it.",
	}
	cmd.AddCommand(
		newImageBuildCmd(a),
		newImagePullCmd(a),
		newImageImportCmd(a),
		newImageListCmd(a),
		newImageShowCmd(a),
		newImageRmCmd(a),
		newImageExportCmd(a),
		newImageWarmCmd(a),
	)
	return cmd
}

func newImageWarmCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "warm [IMAGE]",
		Short: "Boot an image once and save it, so VMs of that shape restore in about a second instead of booting",
		Long: "warm boots a VM of the image with the given (or default) shape until its agent answers,\n" +
			"saves its memory and disks as the image's warm template for that shape, and deletes\n" +
			"the VM. From then on `vm create` and `vm run` with the same image, vcpu, memory and\n" +
			"disk size restore from the template and give the guest its own identity (name, MAC,\n" +
			"address, ssh host keys, agent token, clock, random pool); --cold boots instead.\n" +
			"Running warm again replaces the template.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) == 1 {
				f.image = args[0]
			}
			if f.from != "" {
				return errors.New("--from: a warm template is made from an image, not a snapshot")
			}
			req, spec, err := f.request()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.streams.ErrOut, spec.SpecLine())
			c, err := a.client(ctx)
			if err != nil {
				return err
			}
			ref, err := c.Warm(ctx, req)
			if err != nil {
				return err
			}
			t, err := followResult[api.WarmTemplate](ctx, a, c, ref, "template")
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, t)
			}
			fmt.Fprintf(a.streams.Out, "%s warm for %d vcpu · %d MiB · %s disk (%s of saved state)\n", t.Image, t.Spec.VCPU, t.Spec.MemoryMiB,
				units.FormatSize(t.Spec.DiskBytes), units.FormatSize(t.StateBytes))
			return nil
		},
	}
	a.addVMFlags(cmd, &f)
	_ = cmd.Flags().MarkHidden("name")
	_ = cmd.Flags().MarkHidden("cold")
	_ = cmd.Flags().MarkHidden("from")
	return cmd
}

func newImageBuildCmd(a *app) *cobra.Command {
	var req api.BuildImageRequest
	cmd := &cobra.Command{
		Use:   "build (debian | debian-13 | agents | -f Dockerfile [CONTEXT])",
		Short: "Build an image from a Debian recipe or a Dockerfile",
		Long: "Build an image from a Debian recipe (`debian` is the default recipe, debian-12) or,\n" +
			"with -f, from a Dockerfile built with podman or docker on top of the default image\n" +
			"(FROM banger/debian-12 keeps its kernel, agent and init). The full build log is\n" +
			"written to a file named in the output.",
		Example: "  banger image build debian\n" +
			"  banger image build debian-13 --package htop --package jq --name tools\n" +
			"  banger image build agents\n" +
			"  banger image build -f ./Dockerfile --name web .",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Dockerfile != "" {
				if len(req.Packages) > 0 {
					return &usageError{cmd: cmd.CommandPath(), err: errors.New("--package applies to recipe builds; install packages in the Dockerfile")}
				}
				var err error
				if req.Dockerfile, err = filepath.Abs(req.Dockerfile); err != nil {
					return err
				}
				if len(args) == 1 {
					if req.Context, err = filepath.Abs(args[0]); err != nil {
						return err
					}
				}
			} else {
				if len(args) != 1 {
					return &usageError{cmd: cmd.CommandPath(), err: errors.New("name a recipe (debian, debian-13, agents) or a Dockerfile with -f")}
				}
				req.Recipe = args[0]
			}
			return a.imageOperation(cmd.Context(), func(ctx context.Context, c *api.Client) (api.OperationRef, error) {
				return c.BuildImage(ctx, req)
			})
		},
	}
	cmd.Flags().StringVarP(&req.Dockerfile, "file", "f", "", "build from this Dockerfile (CONTEXT defaults to its directory)")
	cmd.Flags().StringArrayVar(&req.Packages, "package", nil, "extra Debian package for a recipe build (repeatable)")
	cmd.Flags().StringVar(&req.Name, "name", "", "image name (default: the recipe name, or the context directory's name)")
	return cmd
}

func newImagePullCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pull NAME",
		Short: "Download (or build) an image listed in a catalog",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.imageOperation(cmd.Context(), func(ctx context.Context, c *api.Client) (api.OperationRef, error) {
				return c.PullImage(ctx, api.PullImageRequest{Name: args[0]})
			})
		},
	}
}

func newImageImportCmd(a *app) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import REF",
		Short: "Import an OCI image, an OCI layout, a docker-save/OCI tar, or a banger export",
		Long: "Import an image from a registry reference (alpine:3.20), an OCI layout directory,\n" +
			"a `docker save` or OCI tar archive, or an archive written by `banger image export`.\n" +
			"OCI images get the default image's kernel, initrd and agent; images without\n" +
			"systemd boot with banger-agent as init.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			// A path on this host is sent absolute; anything else is a
			// registry reference.
			if _, err := os.Stat(ref); err == nil {
				abs, err := filepath.Abs(ref)
				if err != nil {
					return err
				}
				ref = abs
			}
			return a.imageOperation(cmd.Context(), func(ctx context.Context, c *api.Client) (api.OperationRef, error) {
				return c.ImportImage(ctx, api.ImportImageRequest{Ref: ref, Name: name})
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "image name (default: from the archive or the reference)")
	return cmd
}

// imageOperation starts an image operation, follows its stages and prints
// the image it made (or, with --json, the image as JSON).
func (a *app) imageOperation(ctx context.Context, start func(context.Context, *api.Client) (api.OperationRef, error)) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	ref, err := start(ctx, c)
	if err != nil {
		return err
	}
	img, err := followResult[api.Image](ctx, a, c, ref, "image")
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.streams.Out, img)
	}
	fmt.Fprintf(a.streams.Out, "image %s ready (id %s, %s)\n", img.Name, units.ShortID(img.ID), units.Bytes(img.SizeBytes))
	fmt.Fprintf(a.streams.Out, "next: banger vm run --image %s\n", img.Name)
	return nil
}

func newImageListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOut {
				if imgs == nil {
					imgs = []api.Image{}
				}
				return printJSON(a.streams.Out, imgs)
			}
			if len(imgs) == 0 {
				fmt.Fprintln(a.streams.ErrOut, "no images yet; `banger image build debian` makes the default one (or just `banger vm run`)")
				return nil
			}
			return writeImageTable(a.streams.Out, imgs, time.Now())
		},
	}
}

// writeImageTable prints one row per image: name, short id, size, age,
// source.
func writeImageTable(w io.Writer, imgs []api.Image, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSIZE\tCREATED\tSOURCE")
	for _, img := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.Name, units.ShortID(img.ID), units.Bytes(img.SizeBytes), age(img.Created, now), img.Source)
	}
	return tw.Flush()
}

func newImageShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show an image's details",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			img, err := c.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOut {
				return printJSON(a.streams.Out, img)
			}
			return printFields(a.streams.Out, imageRows(img))
		},
	}
}

// imageRows are the fields `image show` prints.
func imageRows(img api.Image) [][2]string {
	usedBy := "-"
	if len(img.UsedBy) > 0 {
		usedBy = strings.Join(img.UsedBy, ", ")
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	return [][2]string{
		{"name", img.Name},
		{"id", img.ID},
		{"source", img.Source.String()},
		{"size", units.Bytes(img.SizeBytes)},
		{"created", img.Created.Local().Format(time.RFC3339)},
		{"kernel", orDash(img.KernelVersion)},
		{"agent", orDash(img.AgentVersion)},
		{"init", orDash(img.Init)},
		{"npm packages", orDash(npmList(img.NPMPackages))},
		{"dir", img.Dir},
		{"used by", usedBy},
	}
}

// npmList renders an image's npm packages as "name version, ...".
func npmList(pkgs []api.NPMPackage) string {
	var s []string
	for _, p := range pkgs {
		s = append(s, p.Name+" "+p.Version)
	}
	return strings.Join(s, ", ")
}

// imageRemoveResult is one entry of `image rm --json`.
type imageRemoveResult struct {
	Image   string `json:"image"`
	Removed bool   `json:"removed"`
	Error   string `json:"error,omitempty"`
}

func newImageRmCmd(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images",
		Long: "Remove images. An image a VM uses is never removed: delete the VMs first.\n" +
			"--force also removes a damaged or half-registered image.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			results := []imageRemoveResult{}
			for _, ref := range args {
				if err := c.RemoveImage(cmd.Context(), ref, force); err != nil {
					errs = append(errs, err)
					results = append(results, imageRemoveResult{Image: ref, Error: err.Error()})
					continue
				}
				results = append(results, imageRemoveResult{Image: ref, Removed: true})
				if !a.jsonOut {
					fmt.Fprintf(a.streams.Out, "removed %s\n", ref)
				}
			}
			if a.jsonOut {
				if err := printJSON(a.streams.Out, results); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also remove a damaged or half-registered image (never one a VM uses)")
	return cmd
}

func newImageExportCmd(a *app) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export NAME [-o FILE]",
		Short: "Write an image as a tar archive that `image import` accepts",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" && isTerminal(a.streams.Out) {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("refusing to write an archive to a terminal: use -o FILE or redirect stdout")}
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			rc, err := c.ExportImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer rc.Close()
			if out == "" {
				if _, err := io.Copy(a.streams.Out, rc); err != nil {
					return fmt.Errorf("export %s: %w", args[0], err)
				}
				return nil
			}
			// Through a temp file beside out, so a failed export never
			// leaves a truncated archive under the name.
			if err := atomicfile.WriteFrom(out, rc, 0o644); err != nil {
				return fmt.Errorf("export %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exactArgs is cobra.ExactArgs reported as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return &usageError{cmd: cmd.CommandPath(), err: err}
		}
		return nil
	}
}

// age renders how long ago t was ("5m ago"), or "-" for the zero time.
func age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
