// Package config loads banger's optional TOML configuration, resolves the
// XDG paths banger uses on disk, validates every key with errors that name
// the file, line and key, and resolves the default VM shape (vcpu, memory,
// disk) with the provenance of each value. banger never writes the config
// file: it only reads it.
package config

import (
	"banger/internal/units"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the decoded and validated content of config.toml. The zero
// value is not useful; start from Default or Load.
type Config struct {
	LogLevel       slog.Level `toml:"log_level"`       // debug|info|warn|error (default info)
	VMM            string     `toml:"vmm"`             // auto|firecracker|qemu (default auto)
	Accel          string     `toml:"accel"`           // auto|kvm|tcg (default auto)
	FirecrackerBin string     `toml:"firecracker_bin"` // absolute path or command name; "" = PATH lookup
	QEMUBin        string     `toml:"qemu_bin"`        // absolute path or command name; "" = PATH lookup
	JailerBin      string     `toml:"jailer_bin"`      // Firecracker's jailer: absolute path or command name; "" = PATH lookup; "none" = never
	JailerUID      int        `toml:"jailer_uid"`      // uid Firecracker runs as in its jail (default 65534)
	JailerGID      int        `toml:"jailer_gid"`      // gid Firecracker runs as in its jail (default 65534)
	SSHKey         string     `toml:"ssh_key"`         // private key path (absolute or ~/...); "" = generated under DataDir/ssh
	DefaultImage   string     `toml:"default_image"`   // default "debian-12"
	WarmTemplates  string     `toml:"warm_templates"`  // auto|manual (default auto): see WarmAuto
	Catalogs       []string   `toml:"catalogs"`        // extra image catalogs: http(s) URLs or absolute paths
	Network        Network    `toml:"network"`
	VMDefaults     VMDefaults `toml:"vm_defaults"`
	Limits         Limits     `toml:"limits"`
	FileSync       []FileSync `toml:"file_sync"`
	Secrets        []Secret   `toml:"secret"`
	Path           string     `toml:"-"` // file loaded; "" when none existed

	// loc finds the lines of keys of the file at Path for error
	// messages; nil when the config did not come from a file.
	loc *locator
	// netSet records which per-instance network keys the file sets;
	// ForInstance fills the others.
	netSet netKeys
}

// Network configures the host bridge, the guest subnet, the .vm DNS server
// and the pool of pre-created tap devices.
type Network struct {
	Bridge      string       `toml:"bridge"`       // default "banger0"; a Linux interface name
	Subnet      netip.Prefix `toml:"subnet"`       // default "10.77.0.0/24"; IPv4 prefix between /16 and /29
	DNSListen   string       `toml:"dns_listen"`   // default "127.0.0.1:42069"
	DNSUpstream []string     `toml:"dns_upstream"` // default: nameservers from /etc/resolv.conf
	// TapPoolSize is ignored: taps are made per VM, named after it. The
	// key is still read so config files that set it keep loading.
	TapPoolSize int `toml:"tap_pool_size"`
	// Allow opens destinations guests may not reach by default (private
	// ranges, link-local, the host's other networks): IPv4 addresses or
	// prefixes such as "192.168.1.10" or "10.20.0.0/16".
	Allow []string `toml:"allow"`
	// GuestToGuest lets guests reach each other on the bridge; by default
	// every guest's tap is an isolated port and guests see only the host
	// and the outside.
	GuestToGuest bool `toml:"guest_to_guest"`
	// Net is the egress mode of VMs created without --net: "open" (the
	// default: the internet less the deny set), "allow" (only NetAllow)
	// or "none".
	Net string `toml:"net"`
	// NetAllow are the allow rules of VMs created with mode allow and no
	// --allow: HOST, *.DOMAIN, IPV4 or CIDR, each with an optional :PORT,
	// or @PRESET.
	NetAllow []string `toml:"net_allow"`
	// Presets are named lists of allow rules, used as @NAME; they add to
	// the built-in ones (github, model-apis) and may replace them.
	Presets map[string][]string `toml:"presets"`
}

// Limits bound what a guest can make the host keep. Empty means the
// built-in default.
type Limits struct {
	// ConsoleLog bounds each VM's console.log and its one rotated copy
	// (ParseSize syntax; default DefaultConsoleLog).
	ConsoleLog Size `toml:"console_log"`
}

// DefaultConsoleLog is the console log bound when [limits] console_log is
// not set; MinConsoleLog is the smallest accepted.
const (
	DefaultConsoleLog = 4 << 20
	MinConsoleLog     = 64 << 10
)

// ConsoleLogBytes returns the console log bound in bytes.
func (l Limits) ConsoleLogBytes() int64 {
	if l.ConsoleLog != 0 {
		return int64(l.ConsoleLog)
	}
	return DefaultConsoleLog
}

// VMDefaults overrides the default VM shape. A zero field (or an absent
// key) means "not set": the resolver then uses the host heuristic or the
// built-in constant. See ResolveVMDefaults.
type VMDefaults struct {
	VCPU      int  `toml:"vcpu"`
	MemoryMiB int  `toml:"memory_mib"`
	DiskSize  Size `toml:"disk_size"` // ParseSize syntax, e.g. "16G"
}

// Default values for keys absent from config.toml.
const (
	DefaultLogLevel = slog.LevelInfo
	DefaultVMM      = "auto"
	DefaultAccel    = "auto"
	// WarmAuto makes an image's warm template for a machine shape on the
	// first cold create of that shape (the new VM is saved once its agent
	// answers); WarmManual leaves it to `banger image warm`.
	WarmAuto         = "auto"
	WarmManual       = "manual"
	DefaultImageName = "debian-12"
	DefaultBridge    = "banger0"
	DefaultSubnet    = "10.77.0.0/24"
	DefaultDNSListen = "127.0.0.1:42069"
	resolvConfPath   = "/etc/resolv.conf"
)

// Default returns the configuration used when no config file exists.
// DNSUpstream is read from /etc/resolv.conf (empty when unreadable).
func Default() *Config {
	return &Config{
		LogLevel:      DefaultLogLevel,
		VMM:           DefaultVMM,
		Accel:         DefaultAccel,
		WarmTemplates: WarmAuto,
		DefaultImage:  DefaultImageName,
		Network: Network{
			Bridge:      DefaultBridge,
			Subnet:      netip.MustParsePrefix(DefaultSubnet),
			DNSListen:   DefaultDNSListen,
			DNSUpstream: SystemNameservers(resolvConfPath),
		},
	}
}

// SystemNameservers returns the "nameserver" addresses listed in a
// resolv.conf file, in order. A missing or unreadable file yields nil (the
// DNS server then answers only .vm names).
func SystemNameservers(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseResolvConf(data)
}

func parseResolvConf(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		addr, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, addr.WithZone("").String())
	}
	return out
}

// Load reads the config file at path ("" means DefaultPaths().ConfigFile).
// A missing file yields Default() with Path "". A present file is decoded
// strictly: unknown keys, wrong types and invalid values are errors of
// one line naming the file, the line and the key. The result is validated.
func Load(path string) (*Config, error) {
	if path == "" {
		p, err := DefaultPaths()
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		path = p.ConfigFile
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes and validates config text; path is used in errors and
// recorded as Config.Path.
func Parse(path string, data []byte) (*Config, error) {
	c := Default()
	c.Path = path
	c.loc = newLocator(data)
	// Decode into a fresh slice so defaults never merge with file values.
	c.Network.DNSUpstream = nil
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, decodeError(path, data, md, err)
	}
	if !md.IsDefined("network", "dns_upstream") {
		c.Network.DNSUpstream = Default().Network.DNSUpstream
	}
	c.netSet = netKeys{
		bridge:    md.IsDefined("network", "bridge"),
		subnet:    md.IsDefined("network", "subnet"),
		dnsListen: md.IsDefined("network", "dns_listen"),
	}
	if und := md.Undecoded(); len(und) > 0 {
		name := indexedKey(md, und[0])
		return nil, fmt.Errorf("config %s: unknown key %q", location(path, c.loc.line(name)), name)
	}
	// An explicit zero is a mistake, not "unset": say so.
	for _, z := range []struct {
		key  []string
		zero bool
		rule string
	}{
		{[]string{"vm_defaults", "vcpu"}, c.VMDefaults.VCPU == 0, fmt.Sprintf("must be between 1 and %d", MaxVCPU)},
		{[]string{"vm_defaults", "memory_mib"}, c.VMDefaults.MemoryMiB == 0, fmt.Sprintf("must be at least %d", MinMemoryMiB)},
		{[]string{"vm_defaults", "disk_size"}, c.VMDefaults.DiskSize == 0, "must be at least " + units.FormatSize(MinDiskBytes)},
		{[]string{"limits", "console_log"}, c.Limits.ConsoleLog == 0, "must be at least " + units.FormatSize(MinConsoleLog)},
	} {
		if md.IsDefined(z.key...) && z.zero {
			return nil, c.keyErr(strings.Join(z.key, "."), "0", z.rule+" (remove the key to use the automatic default)")
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// location renders "path:line" or just "path" when the line is unknown.
func location(path string, line int) string {
	if path == "" {
		path = "(defaults)"
	}
	if line > 0 {
		return fmt.Sprintf("%s:%d", path, line)
	}
	return path
}

var (
	libLineRe  = regexp.MustCompile(`^toml: line (\d+)(?: \(last key "([^"]*)"\))?: (.*)$`)
	libTypesRe = regexp.MustCompile(`incompatible types: TOML value has type (.+); destination has type (.+)$`)
)

// decodeError turns the TOML decoder's error (syntax, a wrong type, or a
// value a typed field's UnmarshalText refused) into one line
// "config FILE:LINE: KEY: reason". The decoder holds one position per
// dotted key, so for a key inside an array of tables the file is decoded
// again up to each entry in turn: the first prefix that fails ends with
// the failing entry, whose index and line are then known.
func decodeError(path string, data []byte, md toml.MetaData, err error) error {
	line, key, reason := splitDecodeError(data, err)
	if top, rest, _ := strings.Cut(key, "."); key != "" && md.Type(top) == "ArrayHash" {
		if l := newLocator(data); l != nil {
			starts := l.entryStarts([]string{top})
			for i := range starts {
				end := len(data)
				if i+1 < len(starts) {
					end = starts[i+1]
				}
				if _, perr := toml.NewDecoder(bytes.NewReader(data[:end])).Decode(Default()); perr != nil {
					line, _, reason = splitDecodeError(data[:end], perr)
					key = fmt.Sprintf("%s[%d]", top, i)
					if rest != "" {
						key += "." + rest
					}
					break
				}
			}
		}
	}
	if key != "" {
		reason = key + ": " + reason
	}
	return fmt.Errorf("config %s: %s", location(path, line), reason)
}

// splitDecodeError reads the line, the last key and the reason from an
// error of the TOML decoder for doc.
func splitDecodeError(doc []byte, err error) (line int, key, reason string) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if pe.LastKey == "" { // a syntax error: the position is the error's own
			return pe.Position.Line, "", pe.Message
		}
		return lineAt(doc, pe.Position), pe.LastKey, pe.Message
	}
	m := libLineRe.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, "", strings.TrimPrefix(err.Error(), "toml: ")
	}
	line, _ = strconv.Atoi(m[1])
	reason = m[3]
	if t := libTypesRe.FindStringSubmatch(reason); t != nil {
		reason = fmt.Sprintf("wrong type: expected %s, got %s", tomlTypeName(t[2]), tomlTypeName(t[1]))
	}
	return line, m[2], reason
}

// tomlTypeName maps the decoder's Go/TOML type words to TOML vocabulary.
func tomlTypeName(s string) string {
	switch s {
	case "int", "int64", "integer":
		return "integer"
	case "slice", "array":
		return "array"
	case "map", "struct", "hash", "table":
		return "table"
	}
	return strings.ToLower(s)
}

// keyErr formats a validation error for key (rendered with index, e.g.
// "file_sync[2].guest") whose value is val.
func (c *Config) keyErr(key, val, reason string) error {
	line := c.loc.line(key)
	if val == "" {
		return fmt.Errorf("config %s: %s: %s", location(c.Path, line), key, reason)
	}
	return fmt.Errorf("config %s: %s %s: %s", location(c.Path, line), key, val, reason)
}

// DefaultJailerID is the uid and gid Firecracker runs as in its jail when
// jailer_uid and jailer_gid are unset (nobody:nogroup on Debian).
const DefaultJailerID = 65534

// JailerIDs returns the uid and gid Firecracker runs as in its jail.
func (c *Config) JailerIDs() (uid, gid int) {
	uid, gid = c.JailerUID, c.JailerGID
	if uid == 0 {
		uid = DefaultJailerID
	}
	if gid == 0 {
		gid = DefaultJailerID
	}
	return uid, gid
}
