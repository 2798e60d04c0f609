package vmctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"banger/internal/agent"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/guestcontract"
	"banger/internal/layout"
	"banger/internal/sshkey"
	"banger/internal/store"
)

// configDriveSlack is room left on the config drive beyond its content, so
// mke2fs has space for its metadata.
const configDriveSlack = 8 << 20

// hostKey returns the VM's ssh host key pair (HostKeyFile in its
// directory), making it on first use.
func (m *Manager) hostKey(ctx context.Context, vm store.VM) (priv, pub string, err error) {
	p := filepath.Join(m.vmDir(vm.ID), layout.HostKeyFile)
	b, err := os.ReadFile(p)
	pb, perr := os.ReadFile(p + ".pub")
	if err == nil && perr == nil && len(b) > 0 && len(pb) > 0 {
		return string(b), strings.TrimSpace(string(pb)), nil
	}
	if priv, pub, err = sshkey.NewHostKey(ctx); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(p+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("save ssh host key: %w", err)
	}
	if err := os.WriteFile(p, []byte(priv), 0o600); err != nil {
		return "", "", fmt.Errorf("save ssh host key: %w", err)
	}
	return priv, pub, nil
}

// fileSyncNow is fileSyncDigest of the configured entries.
func (m *Manager) fileSyncNow() (string, error) {
	home, _ := os.UserHomeDir()
	return fileSyncDigest(m.opt.Config.FileSync, home)
}

// Identity builds the per-VM identity the agent applies at boot.
func (m *Manager) Identity(vm store.VM) (agent.Identity, error) {
	ip, err := netip.ParseAddr(vm.IP)
	if err != nil {
		return agent.Identity{}, fmt.Errorf("vm %s address %q: %w", vm.Name, vm.IP, err)
	}
	n := m.opt.Config.Network
	pub, err := m.opt.SSHKey.PublicKey()
	if err != nil {
		return agent.Identity{}, err
	}
	gw := n.Gateway()
	id := agent.Identity{
		VMID:           vm.ID,
		Hostname:       vm.Name,
		Address:        netip.PrefixFrom(ip, n.Prefix().Bits()).String(),
		Gateway:        gw.String(),
		DNS:            []string{gw.String()},
		MAC:            vm.MAC,
		AuthorizedKeys: []string{pub},
		Token:          vm.AgentToken,
	}
	if err := m.secretIdentity(vm, &id); err != nil {
		return agent.Identity{}, err
	}
	return id, nil
}

// writeConfigDrive builds the VM's config drive at path: identity.json and
// the [[file_sync]] payload under files/, made into a small ext4 with
// mkfs.ext4 -d (no mount). Missing host paths are skipped and returned as
// warnings; any other file_sync error fails, naming the entry.
func (m *Manager) writeConfigDrive(ctx context.Context, vm store.VM, path string) ([]string, error) {
	id, err := m.Identity(vm)
	if err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(filepath.Dir(path), ".config-")
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	defer removeStaging(staging)
	// The host makes the guest's ssh host key (once per VM) and pins it
	// before the guest runs: ssh-keygen in the guest is slow under
	// software emulation, and the key the host trusts is then its own.
	priv, pub, err := m.hostKey(ctx, vm)
	if err != nil {
		return nil, err
	}
	id.HostKeys = []agent.HostKey{{Type: "ed25519", Private: priv, Public: pub}}
	if m.opt.KnownHosts != nil {
		if err := m.opt.KnownHosts.Set(vm.Name+".vm", []string{pub}); err != nil {
			return nil, fmt.Errorf("pin ssh host key: %w", err)
		}
	}
	home, _ := os.UserHomeDir()
	files, warnings, size, err := stageFileSync(m.opt.Config.FileSync, home, filepath.Join(staging, guestcontract.FilesDir))
	if err != nil {
		return warnings, err
	}
	id.Files = files
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return warnings, err
	}
	if err := os.WriteFile(filepath.Join(staging, guestcontract.IdentityFile), b, 0o600); err != nil {
		return warnings, fmt.Errorf("config drive: %w", err)
	}
	if err := disk.MakeExt4(ctx, path, size+int64(len(b))+configDriveSlack, guestcontract.LabelConfig, staging); err != nil {
		return warnings, fmt.Errorf("config drive: %w", err)
	}
	// The token and the file_sync payload belong to root in the guest,
	// whoever runs the daemon: a guest user sharing the host user's uid
	// must not read them.
	if err := disk.ChownRoot(ctx, path, staging); err != nil {
		return warnings, fmt.Errorf("config drive: %w", err)
	}
	return warnings, nil
}

// stageFileSync copies every file_sync source into dir/<index> and
// describes it for the agent. It returns the bytes copied.
func stageFileSync(entries []config.FileSync, home, dir string) ([]agent.SyncFile, []string, int64, error) {
	var (
		out      []agent.SyncFile
		warnings []string
		total    int64
	)
	for i, e := range entries {
		host, guest, mode, err := e.Resolve(home)
		if err != nil {
			return out, warnings, total, fmt.Errorf("file_sync[%d]: %w", i, err)
		}
		// A symlinked entry (~/.aws -> elsewhere) syncs what it points to.
		real, err := filepath.EvalSymlinks(host)
		if errors.Is(err, fs.ErrNotExist) {
			warnings = append(warnings, fmt.Sprintf("file_sync[%d]: %s does not exist, skipped", i, host))
			continue
		}
		if err != nil {
			return out, warnings, total, fmt.Errorf("file_sync[%d] %s: %w", i, host, err)
		}
		st, err := os.Stat(real)
		if err != nil {
			return out, warnings, total, fmt.Errorf("file_sync[%d] %s: %w", i, host, err)
		}
		if !st.IsDir() && !st.Mode().IsRegular() {
			return out, warnings, total, fmt.Errorf("file_sync[%d] %s: not a regular file or directory", i, host)
		}
		src := strconv.Itoa(i)
		dst := filepath.Join(dir, src)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return out, warnings, total, err
		}
		var n int64
		if st.IsDir() {
			n, err = copyTree(real, dst)
		} else {
			n, err = copyFile(real, dst, 0o600)
		}
		if err != nil {
			return out, warnings, total, fmt.Errorf("file_sync[%d] %s: %w", i, host, err)
		}
		total += n
		out = append(out, agent.SyncFile{Source: src, Guest: guest, Mode: uint32(mode.Perm()), Dir: st.IsDir()})
	}
	return out, warnings, total, nil
}

// copyTree copies the directory src to dst keeping each file's and each
// directory's mode (directories get their modes last, so read-only ones
// can still be filled). Symlinks, sockets and devices inside are skipped.
func copyTree(src, dst string) (int64, error) {
	var total int64
	type dirMode struct {
		path string
		mode fs.FileMode
	}
	var dirs []dirMode
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, dirMode{target, info.Mode().Perm()})
			return os.MkdirAll(target, 0o700)
		case info.Mode().IsRegular():
			n, err := copyFile(p, target, info.Mode().Perm())
			total += n
			return err
		default:
			return nil // sockets, devices and symlinks are not synced
		}
	})
	if err != nil {
		return total, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i].path, dirs[i].mode); err != nil {
			return total, err
		}
	}
	return total, nil
}

// removeStaging removes a staging tree whose directories may have lost
// their owner write bit (copyTree keeps source modes).
func removeStaging(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

func copyFile(src, dst string, mode os.FileMode) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, mode)
	}
	return n, err
}

// fileSyncDigest fingerprints what [[file_sync]] would put in a new VM
// now: each entry's guest path and mode, and every synced file's relative
// path, mode and content (a missing source counts as missing). A warm
// template records it: a guest restored from a template does not read its
// config drive, so a template made before the user changed a synced file
// would hand out the old content; a different digest makes it unusable.
func fileSyncDigest(entries []config.FileSync, home string) (string, error) {
	h := sha256.New()
	for i, e := range entries {
		host, guest, mode, err := e.Resolve(home)
		if err != nil {
			return "", fmt.Errorf("file_sync[%d]: %w", i, err)
		}
		fmt.Fprintf(h, "entry %d %s %o\n", i, guest, mode.Perm())
		real, err := filepath.EvalSymlinks(host)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(h, "missing\n")
			continue
		}
		if err != nil {
			return "", fmt.Errorf("file_sync[%d] %s: %w", i, host, err)
		}
		err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(real, p)
			switch {
			case d.IsDir():
				fmt.Fprintf(h, "dir %q %o\n", rel, info.Mode().Perm())
			case info.Mode().IsRegular():
				fmt.Fprintf(h, "file %q %o %d\n", rel, info.Mode().Perm(), info.Size())
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := io.Copy(h, f); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("file_sync[%d] %s: %w", i, host, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
