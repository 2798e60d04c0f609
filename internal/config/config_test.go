package config

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad_invalid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // error text after "config <path>"
	}{
		{"unknown top-level key", "log_level = \"info\"\nlog_levle = \"debug\"\n", `:2: unknown key "log_levle"`},
		{"unknown nested key", "[network]\nbridge = \"bg0\"\n\n# typo below\nbrige = \"x\"\n", `:5: unknown key "network.brige"`},
		{"unknown table", "[netwrk]\nbridge = \"x\"\n", `:1: unknown key "netwrk"`},
		{"unknown dotted key", "network.brige = \"x\"\n", `:1: unknown key "network.brige"`},
		{"unknown key in file_sync entry", "[[file_sync]]\nhost = \"~/a\"\nguest = \"~/a\"\n[[file_sync]]\nhost = \"~/b\"\nguest = \"~/b\"\nmdoe = \"0600\"\n", `:7: unknown key "file_sync[1].mdoe"`},
		{"unknown key after multiline", "catalogs = [\n  \"/srv/a\",\n  \"/srv/b = c\",\n]\ndesc = \"\"\"\nx = 1\n\"\"\"\n", `:5: unknown key "desc"`},
		{"wrong type string for int", "[network]\ntap_pool_size = \"2\"\n", `:2: network.tap_pool_size: wrong type: expected integer, got string`},
		{"wrong type int for string", "\nvmm = 3\n", `:2: vmm: wrong type: expected string, got integer`},
		{"wrong type table for array", "file_sync = 1\n", `:1: file_sync: wrong type: expected array, got integer`},
		{"syntax error", "log_level = \n", `:1: `},
		{"bad value in multi-line string", "\nlog_level = \"\"\"\nverbose\"\"\"\n", `:2: log_level: slog: level string "verbose": unknown name`},
		{"bad log_level", "log_level = \"verbose\"\n", `:1: log_level: slog: level string "verbose": unknown name`},
		{"bad vmm", "# c\nvmm = \"kvmtool\"\n", `:2: vmm "kvmtool": must be one of auto, firecracker, qemu`},
		{"bad accel", "accel = \"hvf\"\n", `:1: accel "hvf": must be one of auto, kvm, tcg`},
		{"bad warm_templates", "warm_templates = \"always\"\n", `:1: warm_templates "always": must be one of auto, manual`},
		{"firecracker with tcg", "vmm = \"firecracker\"\naccel = \"tcg\"\n", `:2: accel "tcg": firecracker needs KVM`},
		{"relative qemu_bin", "qemu_bin = \"bin/qemu\"\n", `:1: qemu_bin "bin/qemu": must be an absolute path`},
		{"relative ssh_key", "ssh_key = \"id_rsa\"\n", `:1: ssh_key "id_rsa": must be absolute`},
		{"relative jailer_bin", "jailer_bin = \"fc/jailer\"\n", `:1: jailer_bin "fc/jailer": must be an absolute path`},
		{"negative jailer_uid", "jailer_uid = -1\n", `:1: jailer_uid -1: must be a uid or gid above 0`},
		{"empty default_image", "default_image = \"\"\n", `:1: default_image "": must be an image name`},
		{"bad catalog", "catalogs = [\"/ok\", \"ftp://x/y\"]\n", `:1: catalogs[1] "ftp://x/y": must be an http(s) URL or an absolute path`},
		{"bad subnet syntax", "[network]\nsubnet = \"10.77.0.0\"\n", `:2: network.subnet: netip.ParsePrefix("10.77.0.0"): no '/'`},
		{"empty subnet", "[network]\nsubnet = \"\"\n", `:2: network.subnet "": must be an IPv4 prefix`},
		{"ipv6 subnet", "[network]\nsubnet = \"fd00::/64\"\n", `:2: network.subnet "fd00::/64": must be an IPv4 prefix`},
		{"subnet too large", "[network]\nsubnet = \"10.0.0.0/8\"\n", `:2: network.subnet "10.0.0.0/8": prefix length must be between /16 and /29`},
		{"subnet too small", "[network]\nsubnet = \"10.0.0.0/30\"\n", `:2: network.subnet "10.0.0.0/30": prefix length must be between /16 and /29`},
		{"subnet host bits", "[network]\nsubnet = \"10.77.0.1/24\"\n", `:2: network.subnet "10.77.0.1/24": host bits are set; did you mean "10.77.0.0/24"?`},
		{"bridge too long", "[network]\nbridge = \"banger-bridge-01\"\n", `:2: network.bridge "banger-bridge-01": must be a Linux interface name`},
		{"bridge bad char", "[network]\nbridge = \"br/0\"\n", `:2: network.bridge "br/0": must be a Linux interface name`},
		{"bridge not ours", "[network]\nbridge = \"docker0\"\n", `:2: network.bridge "docker0": must start with "banger" or "bg"`},
		{"bad dns_listen", "[network]\ndns_listen = \"localhost:53\"\n", `:2: network.dns_listen "localhost:53": must be an address and port`},
		{"bad dns_upstream", "[network]\ndns_upstream = [\"192.0.2.1\", \"dns.example\"]\n", `:2: network.dns_upstream[1] "dns.example": must be an IP address`},
		{"allow not a prefix", "[network]\nallow = [\"10.0.0.0/8\", \"lan\"]\n", `:2: network.allow[1] "lan": must be an IPv4 address or network prefix`},
		{"allow host bits", "[network]\nallow = [\"10.0.0.1/8\"]\n", `:2: network.allow[0] "10.0.0.1/8": must be an IPv4`},
		{"vcpu zero", "[vm_defaults]\nvcpu = 0\n", `:2: vm_defaults.vcpu 0: must be between 1 and 32`},
		{"vcpu too many", "[vm_defaults]\nvcpu = 33\n", `:2: vm_defaults.vcpu 33: must be between 1 and 32`},
		{"memory too small", "[vm_defaults]\nmemory_mib = 128\n", `:2: vm_defaults.memory_mib 128: must be at least 256 MiB`},
		{"memory zero", "[vm_defaults]\n\nmemory_mib = 0\n", `:3: vm_defaults.memory_mib 0: must be at least 256`},
		{"disk unparsable", "[vm_defaults]\ndisk_size = \"8 gigs\"\n", `:2: vm_defaults.disk_size: size "8 gigs": want a number with an optional unit`},
		{"disk too small", "[vm_defaults]\ndisk_size = \"512M\"\n", `:2: vm_defaults.disk_size "512M": must be at least 1G`},
		{"disk empty", "[vm_defaults]\ndisk_size = \"\"\n", `:2: vm_defaults.disk_size: size "": want a number`},
		{"disk zero", "[vm_defaults]\n\ndisk_size = \"0\"\n", `:3: vm_defaults.disk_size 0: must be at least 1G`},
		{"disk wrong type", "[vm_defaults]\ndisk_size = true\n", `:2: vm_defaults.disk_size: size "true": want a number`},
		{"console log unparsable", "[limits]\nconsole_log = \"lots\"\n", `:2: limits.console_log: size "lots": want a number`},
		{"console log zero", "[limits]\nconsole_log = \"0\"\n", `:2: limits.console_log 0: must be at least 64K`},
		{"console log too small", "\n[limits]\nconsole_log = \"1K\"\n", `:3: limits.console_log "1K": must be at least 64K`},
		{"file_sync empty host", "[[file_sync]]\nhost = \"\"\nguest = \"~/a\"\n", `:2: file_sync[0].host "": must not be empty`},
		{"file_sync missing host", "[[file_sync]]\nguest = \"~/a\"\n", `:1: file_sync[0].host "": must not be empty`},
		{"file_sync empty guest", "[[file_sync]]\nhost = \"~/a\"\nguest = \"\"\n", `:3: file_sync[0].guest "": must not be empty`},
		{"file_sync relative host", fileSync2("a/b", "~/b", ""), `:6: file_sync[1].host "a/b": must be absolute or start with "~/"`},
		{"file_sync dotdot host", fileSync2("~/../etc/shadow", "~/x", ""), `:6: file_sync[1].host "~/../etc/shadow": must not contain ".."`},
		{"file_sync dotdot guest", fileSync2("~/x", "~/a/../../etc/x", ""), `:7: file_sync[1].guest "~/a/../../etc/x": must not contain ".."`},
		{"file_sync tilde user host", fileSync2("~bob/x", "~/x", ""), `:6: file_sync[1].host "~bob/x": "~user" paths are not supported`},
		{"file_sync tilde user guest", fileSync2("~/x", "~bob/x", ""), `:7: file_sync[1].guest "~bob/x": "~user" paths are not supported`},
		{"file_sync guest outside root", fileSync2("~/x", "/etc/x", ""), `:7: file_sync[1].guest "/etc/x": guest path must be under ~/ or /root/`},
		{"file_sync guest relative", fileSync2("~/x", "x", ""), `:7: file_sync[1].guest "x": guest path must be under ~/ or /root/`},
		{"file_sync guest rootish prefix", fileSync2("~/x", "/rootkit/x", ""), `:7: file_sync[1].guest "/rootkit/x": guest path must be under ~/ or /root/`},
		{"file_sync guest is home", fileSync2("~/x", "/root", ""), `:7: file_sync[1].guest "/root": must name a path below the home directory`},
		{"file_sync host is home", fileSync2("~", "~/x", ""), `:6: file_sync[1].host "~": must name a path below the home directory`},
		{"file_sync mode 999", fileSync2("~/x", "~/x", "999"), `:8: file_sync[1].mode: mode "999": want an octal permission`},
		{"file_sync mode abc", fileSync2("~/x", "~/x", "abc"), `:8: file_sync[1].mode: mode "abc": want an octal permission`},
		{"file_sync mode setuid", fileSync2("~/x", "~/x", "4755"), `:8: file_sync[1].mode: mode "4755": above 0777`},
		{"file_sync mode too long", fileSync2("~/x", "~/x", "000755"), `:8: file_sync[1].mode: mode "000755": want an octal permission`},
		{"file_sync mode negative", fileSync2("~/x", "~/x", "-755"), `:8: file_sync[1].mode: mode "-755": want an octal permission`},
		{"file_sync mode wrong type", fileSync2("~/x", "~/x", "") + "mode = [1]\n", `:8: file_sync[1].mode: wrong type`},
		// The decoder keeps one position per dotted key (the last entry's):
		// an error in an earlier entry must still name that entry's line.
		{"file_sync mode in first of three", "[[file_sync]]\nhost = \"~/a\"\nguest = \"~/a\"\nmode = \"888\"\n" + fileSync2("~/b", "~/b", "0600"), `:4: file_sync[0].mode: mode "888": want an octal permission`},
		{"file_sync guest in first of three", "[[file_sync]]\nhost = \"~/a\"\nguest = \"/etc/a\"\n" + fileSync2("~/b", "~/b", ""), `:3: file_sync[0].guest "/etc/a": guest path must be under`},
		{"file_sync missing host in middle", "[[file_sync]]\nhost = \"~/b\"\nguest = \"~/b\"\n\n[[file_sync]]\nguest = \"~/c\"\n\n[[file_sync]]\nhost = \"~/d\"\nguest = \"~/d\"\n", `:5: file_sync[1].host "": must not be empty`},
		{"unknown key in first file_sync entry", "[[file_sync]]\nhost = \"~/a\"\nguest = \"~/a\"\nmdoe = \"0600\"\n" + fileSync2("~/b", "~/b", ""), `:4: unknown key "file_sync[0].mdoe"`},
		{"secret in first of two", "[[secret]]\nname = \"a\"\nhosts = [\"x.example\"]\n\n[[secret]]\nname = \"b\"\nfrom_env = \"B\"\nhosts = [\"y.example\"]\n", `:1: secret[0].from_env "": exactly one of`},
		{"file_sync inline entry", "file_sync = [{host = \"~/a\", guest = \"/etc/a\"}]\n", `:1: file_sync[0].guest "/etc/a": guest path must be under ~/ or /root/`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			c, err := Load(p)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			msg := err.Error()
			prefix := "config " + p
			if !strings.HasPrefix(msg, prefix) {
				t.Fatalf("error %q does not start with %q", msg, prefix)
			}
			if !strings.HasPrefix(msg[len(prefix):], tt.want) {
				t.Errorf("error %q\nwant prefix %q after the path", msg, prefix+tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
		})
	}
}

// fileSync2 returns a file with a valid entry 0 and entry 1 built from
// the arguments; entry 1's host is on line 6, guest on 7, mode on 8.
func fileSync2(host, guest, mode string) string {
	s := "[[file_sync]]\nhost = \"~/ok\"\nguest = \"~/ok\"\n\n[[file_sync]]\nhost = \"" + host + "\"\nguest = \"" + guest + "\"\n"
	if mode != "" {
		s += "mode = \"" + mode + "\"\n"
	}
	return s
}

const fullConfig = `# every key
log_level = "debug"
vmm = "qemu"
accel = "tcg"
firecracker_bin = "/opt/fc/firecracker"
qemu_bin = "qemu-system-x86_64"
ssh_key = "~/.ssh/id_ed25519"
default_image = "debian-12-dev"
warm_templates = "manual"
catalogs = ["https://images.example.org/catalog.json", "/srv/catalog.json"]

[network]
bridge = "bgn0"
subnet = "192.0.2.0/28"
dns_listen = "127.0.0.1:5353"
dns_upstream = ["192.0.2.53", "198.51.100.53:5353"]
tap_pool_size = 0

[vm_defaults]
vcpu = 3
memory_mib = 3072
disk_size = "20G"

[limits]
console_log = "1M"

[[file_sync]]
host = "~/.local/share/opencode/auth.json"
guest = "~/.local/share/opencode/auth.json"

[[file_sync]]
host = "/etc/gitconfig"
guest = "/root/.gitconfig"
mode = "0644"
`

func TestLoad_full(t *testing.T) {
	p := writeConfig(t, fullConfig)
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		LogLevel: slog.LevelDebug, VMM: "qemu", Accel: "tcg",
		FirecrackerBin: "/opt/fc/firecracker", QEMUBin: "qemu-system-x86_64",
		SSHKey: "~/.ssh/id_ed25519", DefaultImage: "debian-12-dev", WarmTemplates: "manual",
		Catalogs: []string{"https://images.example.org/catalog.json", "/srv/catalog.json"},
		Network: Network{
			Bridge: "bgn0", Subnet: netip.MustParsePrefix("192.0.2.0/28"), DNSListen: "127.0.0.1:5353",
			DNSUpstream: []string{"192.0.2.53", "198.51.100.53:5353"}, TapPoolSize: 0,
		},
		VMDefaults: VMDefaults{VCPU: 3, MemoryMiB: 3072, DiskSize: 20 << 30},
		Limits:     Limits{ConsoleLog: 1 << 20},
		FileSync: []FileSync{
			{Host: "~/.local/share/opencode/auth.json", Guest: "~/.local/share/opencode/auth.json"},
			{Host: "/etc/gitconfig", Guest: "/root/.gitconfig", Mode: "0644"},
		},
		Path: p,
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("Load mismatch (-want +got):\n%s", diff)
	}
	if g := got.Network.Gateway().String(); g != "192.0.2.1" {
		t.Errorf("Gateway = %s, want 192.0.2.1", g)
	}
	if pf := got.Network.Prefix().String(); pf != "192.0.2.0/28" {
		t.Errorf("Prefix = %s", pf)
	}
	r := ResolveVMDefaults(got, HostInfo{CPUs: 64, MemoryMiB: 1 << 20})
	if r.SpecLine() != "spec: 3 vcpu · 3072 MiB · 20G disk" {
		t.Errorf("SpecLine = %q", r.SpecLine())
	}
}

func TestLoad_partialKeepsDefaults(t *testing.T) {
	p := writeConfig(t, "[network]\nbridge = \"bgx\"\n")
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Network.Bridge = "bgx"
	want.Path = p
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestLoad_missingFileIsDefaults(t *testing.T) {
	got, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Default(), got, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if got.Path != "" {
		t.Errorf("Path = %q, want empty", got.Path)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestLoad_envOverride(t *testing.T) {
	p := writeConfig(t, "log_level = \"warn\"\n")
	t.Setenv("BANGER_CONFIG", p)
	got, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got.LogLevel != slog.LevelWarn || got.Path != p {
		t.Errorf("Load(\"\") = level %q path %q, want warn %q", got.LogLevel, got.Path, p)
	}
	t.Setenv("BANGER_CONFIG", writeConfig(t, "log_level = 1\n"))
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), ":1: log_level: ") {
		t.Errorf("Load(\"\") with bad BANGER_CONFIG: %v", err)
	}
}

func TestLoad_unreadable(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.HasPrefix(err.Error(), "config "+dir+": ") {
		t.Errorf("Load(dir) = %v", err)
	}
}

func TestValidate_programmatic(t *testing.T) {
	c := Default()
	c.FileSync = []FileSync{{Host: "~/a", Guest: "/etc/a"}}
	err := c.Validate()
	want := `config (defaults): file_sync[0].guest "/etc/a": guest path must be under ~/ or /root/`
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %q", err, want)
	}
}

func TestParseResolvConf(t *testing.T) {
	got := parseResolvConf([]byte("# comment\nsearch example.org\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\nnameserver 198.51.100.7\n"))
	want := []string{"192.0.2.1", "fe80::1", "198.51.100.7"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}
