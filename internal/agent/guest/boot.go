package guest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"banger/internal/agent"
	"banger/internal/guestcontract"
)

// ConfigMountPoint is where the config drive is mounted read-only.
const ConfigMountPoint = "/run/banger/config"

// BootConfig says where Boot looks and what it touches.
type BootConfig struct {
	// Root is the guest's filesystem root ("/").
	Root string
	// ConfigDir is where the config drive is mounted (ConfigMountPoint).
	ConfigDir string
	// Wait bounds the wait for the config drive to appear.
	Wait time.Duration
	// Sys performs the privileged operations.
	Sys System
}

// Boot finds the config drive (label banger-config), mounts it read-only,
// reads identity.json, applies it and unmounts the drive again: the agent
// token and the file_sync payload then live only in the agent's memory and
// in the files Apply wrote with their own owners and modes, never in a
// mounted tree another guest user could read. It returns the identity
// whenever it could be read (so the agent can serve with its token even
// when a step of the apply failed), together with the apply's error.
func Boot(ctx context.Context, cfg BootConfig) (id agent.Identity, err error) {
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if cfg.ConfigDir == "" {
		cfg.ConfigDir = ConfigMountPoint
	}
	if cfg.Wait == 0 {
		cfg.Wait = 30 * time.Second
	}
	mounted, err := cfg.Sys.IsMounted(cfg.ConfigDir)
	if err != nil {
		return agent.Identity{}, fmt.Errorf("boot: %w", err)
	}
	if !mounted {
		wctx, cancel := context.WithTimeout(ctx, cfg.Wait)
		defer cancel()
		var dev string
		var findErr error
		err := waitFor(wctx, func() bool {
			dev, findErr = cfg.Sys.FindLabel(guestcontract.LabelConfig)
			return dev != ""
		})
		if err != nil {
			return agent.Identity{}, fmt.Errorf("boot: no filesystem labelled %s after %s: %w", guestcontract.LabelConfig, cfg.Wait, errors.Join(err, findErr))
		}
		if err := cfg.Sys.Mount(dev, cfg.ConfigDir, true); err != nil {
			return agent.Identity{}, fmt.Errorf("boot: %w", err)
		}
	}
	defer func() {
		if uerr := cfg.Sys.Unmount(cfg.ConfigDir); uerr != nil {
			err = errors.Join(err, fmt.Errorf("boot: %w", uerr))
		}
	}()
	id, err = LoadIdentity(filepath.Join(cfg.ConfigDir, guestcontract.IdentityFile))
	if err != nil {
		return agent.Identity{}, fmt.Errorf("boot: %w", err)
	}
	if err := Apply(cfg.Root, cfg.ConfigDir, id, cfg.Sys); err != nil {
		return id, fmt.Errorf("boot: apply identity: %w", err)
	}
	return id, nil
}
