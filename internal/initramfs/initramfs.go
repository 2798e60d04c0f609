// Package initramfs builds banger's initramfs: banger-agent as /init, the
// kernel modules it loads to reach the root drives, and nothing else.
//
// A distribution initramfs (initramfs-tools) starts udev, coldplugs every
// device, waits for it to settle and runs shell scripts before it mounts
// the root; under software emulation that is seconds of every cold boot
// for hardware banger already knows (virtio only). banger-agent's
// initramfs mode (guest.RunInitramfs) loads the listed modules in order,
// finds the drives by label through /sys, mounts the overlay root and
// switches to it.
package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"banger/internal/guestcontract"
)

// OrderFile is where the initramfs lists the modules /init loads.
const OrderFile = guestcontract.InitramfsModuleOrder

// ModuleOrder resolves names (as modprobe takes them) against the module
// tree modDir (/lib/modules/RELEASE): the paths, relative to modDir, of
// every module to load, each after the modules it depends on. Modules
// built into the kernel (modules.builtin) need no loading and are left
// out; a name that is neither is an error.
func ModuleOrder(modDir string, names []string) ([]string, error) {
	deps, err := readDeps(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, err := readBuiltin(filepath.Join(modDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for p := range deps {
		byName[moduleName(p)] = p
	}
	var order []string
	seen := map[string]bool{}
	var visit func(p string, depth int) error
	visit = func(p string, depth int) error {
		if seen[p] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("modules.dep: dependency loop at %s", p)
		}
		seen[p] = true
		// modules.dep lists a module's dependencies so that loading them
		// from last to first works; a depth-first walk gives the same
		// guarantee whatever their order.
		for _, d := range deps[p] {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		n = normalise(n)
		p, ok := byName[n]
		switch {
		case ok:
			if err := visit(p, 0); err != nil {
				return nil, err
			}
		case builtin[n]:
		default:
			return nil, fmt.Errorf("module %s: neither in %s/modules.dep nor built in", n, modDir)
		}
	}
	return order, nil
}

// moduleName is the name modprobe knows the module file p by.
func moduleName(p string) string {
	base := path.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return normalise(strings.TrimSuffix(base, ".ko"))
}

// normalise makes a module name canonical: the kernel treats - and _ alike.
func normalise(n string) string { return strings.ReplaceAll(n, "-", "_") }

// readDeps parses modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko".
func readDeps(file string) (map[string][]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read module dependencies: %w", err)
	}
	deps := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(mod) == "" {
			continue
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return deps, nil
}

// readBuiltin parses modules.builtin (one module path per line); a
// missing file means nothing is built in.
func readBuiltin(file string) (map[string]bool, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read built-in modules: %w", err)
	}
	builtin := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		builtin[moduleName(l)] = true
	}
	return builtin, nil
}

// readModule reads the module p of modDir. The tree is a guest root
// filesystem: p must stay inside modDir and be a regular file, not a
// link that would read a host file into the image.
func readModule(modDir, p string) ([]byte, error) {
	if !filepath.IsLocal(p) {
		return nil, fmt.Errorf("module %s: path leaves %s", p, modDir)
	}
	full := filepath.Join(modDir, p)
	fi, err := os.Lstat(full)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("module %s: not a regular file", p)
	}
	b, err := os.ReadFile(full)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	return b, nil
}

// Build writes the initramfs, an uncompressed newc archive (the kernel
// unpacks it with a copy; decompressing would cost more than the bytes it
// saves are worth at boot), to w: initBin as /init, the modules of
// ModuleOrder(modDir, modules) under /lib/modules/RELEASE with their load
// order in OrderFile, and the directories and /dev/console /init needs
// before it mounts anything (the kernel opens the console for /init).
func Build(w io.Writer, initBin []byte, modDir string, modules []string) error {
	order, err := ModuleOrder(modDir, modules)
	if err != nil {
		return err
	}
	release := filepath.Base(modDir)
	a := newWriter(w)
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", "lib", "lib/modules", "lib/modules/" + release} {
		a.dir(d)
	}
	a.charDev("dev/console", 0o600, 5, 1)
	a.file("init", 0o755, initBin)
	var list strings.Builder
	for _, p := range order {
		b, err := readModule(modDir, p)
		if err != nil {
			return err
		}
		dst := path.Join("lib/modules", release, p)
		a.dirsFor(dst)
		a.file(dst, 0o644, b)
		list.WriteString("/" + dst + "\n")
	}
	a.file(strings.TrimPrefix(OrderFile, "/"), 0o644, []byte(list.String()))
	return a.close()
}
