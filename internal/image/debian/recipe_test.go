package debian

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestDefault(t *testing.T) {
	r := Default()
	if r.Name != "debian-12" || r.Suite != "bookworm" || r.Mirror != DefaultMirror {
		t.Fatalf("Default() = %+v", r)
	}
	for _, p := range []string{"systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "iproute2",
		"ca-certificates", "sudo", "curl", "git", "tmux", "linux-image-cloud-amd64", "initramfs-tools"} {
		if !slices.Contains(r.Packages, p) {
			t.Errorf("Default() lacks package %s", p)
		}
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if tr := Trixie(); tr.Name != "debian-13" || tr.Suite != "trixie" || tr.Hash() == r.Hash() {
		t.Fatalf("Trixie() = %+v", tr)
	}
	// Default returns a fresh slice each time.
	r.Packages[0] = "changed"
	if Default().Packages[0] == "changed" {
		t.Fatal("Default() shares its package slice")
	}
}

func TestRecipe_Hash(t *testing.T) {
	base := Default()
	h := base.Hash()
	if len(h) != 64 {
		t.Fatalf("hash %q is not hex sha256", h)
	}
	if base.Hash() != h {
		t.Fatal("hash is not stable")
	}
	reordered := Default()
	slices.Reverse(reordered.Packages)
	if reordered.Hash() != h {
		t.Error("package order changed the hash")
	}
	tests := []struct {
		name   string
		change func(*Recipe)
	}{
		{"suite", func(r *Recipe) { r.Suite = "trixie" }},
		{"mirror", func(r *Recipe) { r.Mirror = "http://mirror.example/debian" }},
		{"name", func(r *Recipe) { r.Name = "other" }},
		{"package", func(r *Recipe) { r.Packages = append(r.Packages, "jq") }},
		{"extra package", func(r *Recipe) { r.ExtraPackages = []string{"jq"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Default()
			tt.change(&r)
			if r.Hash() == h {
				t.Fatalf("changing %s kept hash %s", tt.name, h)
			}
		})
	}
	t.Run("modules", func(t *testing.T) {
		saved := InitramfsModules
		t.Cleanup(func() { InitramfsModules = saved })
		InitramfsModules = append(slices.Clone(saved), "nvme")
		if Default().Hash() == h {
			t.Fatal("changing the initramfs modules kept the hash")
		}
	})
}

func TestRecipe_Validate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Recipe)
		ok     bool
	}{
		{"default", func(*Recipe) {}, true},
		{"no suite", func(r *Recipe) { r.Suite = "" }, false},
		{"no packages", func(r *Recipe) { r.Packages = nil }, false},
		{"option as package", func(r *Recipe) { r.ExtraPackages = []string{"--variant=extract"} }, false},
		{"comma in package", func(r *Recipe) { r.ExtraPackages = []string{"jq,vim"} }, false},
		{"shell in package", func(r *Recipe) { r.ExtraPackages = []string{"jq;reboot"} }, false},
		{"extra package", func(r *Recipe) { r.ExtraPackages = []string{"jq", "python3"} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Default()
			tt.change(&r)
			if err := r.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestBootstrapArgs(t *testing.T) {
	r := Default()
	r.ExtraPackages = []string{"jq", "curl"}
	args := BootstrapArgs(r, "/f", "/out.tar")
	if args[0] != "mmdebstrap" || !slices.Contains(args, "--variant=minbase") {
		t.Fatalf("argv %q", args)
	}
	n := len(args)
	if args[n-3] != "bookworm" || args[n-2] != "/out.tar" || args[n-1] != DefaultMirror {
		t.Fatalf("positional args %q", args[n-3:])
	}
	var include string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--include="); ok {
			include = v
		}
	}
	pk := strings.Split(include, ",")
	if !slices.Contains(pk, "jq") || !slices.Contains(pk, "linux-image-cloud-amd64") {
		t.Fatalf("--include=%s", include)
	}
	if strings.Count(include, "curl") != 1 {
		t.Fatalf("duplicate package in --include=%s", include)
	}
	for _, want := range []string{"upload /f/banger-overlay " + guestOverlayScript, "upload /f/modules " + guestModulesFile} {
		if !slices.Contains(args, "--essential-hook="+want) {
			t.Errorf("no essential hook %q in %q", want, args)
		}
	}
}

func TestModulesFile(t *testing.T) {
	lines := strings.Split(string(modulesFile()), "\n")
	for _, m := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_pci", "virtio_console",
		"vmw_vsock_virtio_transport", "vsock", "overlay", "ext4"} {
		if !slices.Contains(lines, m) {
			t.Errorf("modules file lacks %s", m)
		}
	}
}

// TestOverlayScript_Syntax parses the initramfs script with every shell
// that may run it and lints it with shellcheck when installed.
func TestOverlayScript_Syntax(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger-overlay")
	if err := os.WriteFile(path, OverlayScript(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, sh := range [][]string{{"sh", "-n"}, {"dash", "-n"}, {"busybox", "sh", "-n"}} {
		if _, err := exec.LookPath(sh[0]); err != nil {
			continue
		}
		if out, err := exec.Command(sh[0], append(sh[1:], path)...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(sh, " "), err, out)
		}
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Log("shellcheck not installed; lint skipped")
		return
	}
	// SC1091: /scripts/functions exists only inside the initramfs.
	if out, err := exec.Command("shellcheck", "-s", "sh", "-e", "SC1091", path).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

func TestInstallLinks(t *testing.T) {
	unit := "[Unit]\nWantedBy=wrong.target\n[Install]\nWantedBy=multi-user.target sockets.target\nRequiredBy=x.target\nAlias=y.service\n"
	got := InstallLinks(unit)
	want := []string{"multi-user.target.wants", "sockets.target.wants", "x.target.requires"}
	if !slices.Equal(got, want) {
		t.Fatalf("InstallLinks = %q, want %q", got, want)
	}
}
