package agentserver

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"banger/internal/agent"
)

// procSocket is one row of /proc/net/{tcp,udp}[6].
type procSocket struct {
	agent.Port
	inode uint64
}

// parseProcNet parses a /proc/net/{tcp,tcp6,udp,udp6} table and keeps the
// listening sockets: TCP rows in state LISTEN (0A), UDP rows that are not
// connected (remote port 0).
func parseProcNet(r io.Reader, proto string, v6 bool) ([]procSocket, error) {
	var out []procSocket
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		local, remote, state := f[1], f[2], f[3]
		if proto == "tcp" && state != "0A" {
			continue
		}
		if proto == "udp" && !strings.HasSuffix(remote, ":0000") {
			continue
		}
		addr, port, err := parseProcAddr(local, v6)
		if err != nil {
			return nil, fmt.Errorf("parse %s row %q: %w", proto, sc.Text(), err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse %s inode %q: %w", proto, f[9], err)
		}
		fam := "ipv4"
		if v6 {
			fam = "ipv6"
		}
		out = append(out, procSocket{Port: agent.Port{Proto: proto, Family: fam, Address: addr.String(), Port: port}, inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s table: %w", proto, err)
	}
	return out, nil
}

// parseProcAddr decodes "0100007F:1F90" (IPv4) or a 32-hex-digit IPv6
// address, each 32-bit word in host (little-endian) byte order.
func parseProcAddr(s string, v6 bool) (netip.Addr, uint16, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("port %q: %w", hexPort, err)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("address %q: %w", hexAddr, err)
	}
	want := 4
	if v6 {
		want = 16
	}
	if len(raw) != want {
		return netip.Addr{}, 0, fmt.Errorf("address %q: want %d bytes", hexAddr, want)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return addr.Unmap(), uint16(port), nil
}

// socketOwners maps socket inodes to the PID and command name of a process
// holding them, scanning procRoot/*/fd.
func socketOwners(procRoot string) map[uint64][2]string {
	owners := map[uint64][2]string{}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return owners
	}
	for _, e := range entries {
		pid := e.Name()
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, pid, "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			rest, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, seen := owners[inode]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(procRoot, pid, "comm"))
				comm = strings.TrimSpace(string(b))
			}
			owners[inode] = [2]string{pid, comm}
		}
	}
	return owners
}

// ListPorts returns the listening TCP and UDP sockets (IPv4 and IPv6) of
// the system whose proc filesystem is at procRoot, with owning processes,
// sorted by protocol, port and address.
func ListPorts(procRoot string) ([]agent.Port, error) {
	var socks []procSocket
	for _, t := range []struct {
		file, proto string
		v6          bool
	}{
		{"tcp", "tcp", false}, {"tcp6", "tcp", true},
		{"udp", "udp", false}, {"udp6", "udp", true},
	} {
		f, err := os.Open(filepath.Join(procRoot, "net", t.file))
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		rows, err := parseProcNet(f, t.proto, t.v6)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		socks = append(socks, rows...)
	}
	owners := socketOwners(procRoot)
	ports := make([]agent.Port, 0, len(socks))
	for _, s := range socks {
		p := s.Port
		if o, ok := owners[s.inode]; ok {
			p.PID, _ = strconv.Atoi(o[0])
			p.Process = o[1]
		}
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool {
		a, b := ports[i], ports[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Address < b.Address
	})
	return ports, nil
}
