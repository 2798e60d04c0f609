package hostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Refused is one packet a policed guest sent that the firewall dropped
// (see RefusedLogGroup).
type Refused struct {
	Src, Dst netip.Addr
	Proto    string // "tcp", "udp", "icmp" or the protocol number
	Port     uint16 // destination port (tcp, udp)
}

// NFLOG over netfilter netlink (linux/netfilter/nfnetlink_log.h). Written
// by hand on x/sys/unix: the two messages and three attributes needed do
// not warrant a dependency, and no maintained Go NFLOG library is at hand.
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulnlCfgCmdBind = 1
	nfulnlCopyPacket = 2
	nfulaPayload     = 9
	nlaTypeMask      = 0x3fff
	// copyRange is how much of each packet the kernel sends: an IPv4
	// header with options and the ports.
	copyRange = 64
)

// RefusedLog is the firewall's log of refused packets, bound in the
// network namespace it was opened in.
type RefusedLog struct {
	fd int
	f  *os.File
}

// OpenRefusedLog binds the NFLOG group of the daemon whose bridge is
// bridge (RefusedLogGroupFor). It needs CAP_NET_ADMIN (bangerd as root);
// without it the error wraps os.ErrPermission.
func OpenRefusedLog(bridge string) (*RefusedLog, error) {
	group := RefusedLogGroupFor(bridge)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nflog socket: %w", err)
	}
	l := &RefusedLog{fd: fd, f: os.NewFile(uintptr(fd), "nflog")}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("nflog bind: %w", err)
	}
	if err := nflogConfig(fd, group, nfulaCfgCmd, []byte{nfulnlCfgCmdBind}); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("nflog bind group %d: %w", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, copyRange)
	mode[4] = nfulnlCopyPacket
	if err := nflogConfig(fd, group, nfulaCfgMode, mode); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("nflog copy mode: %w", err)
	}
	return l, nil
}

// Watch calls fn for each refused packet until ctx ends (or the log
// fails), then closes the log.
func (l *RefusedLog) Watch(ctx context.Context, fn func(Refused)) error {
	defer l.f.Close()
	fd := l.fd
	// Reads wake at least twice a second to notice ctx ending (closing or
	// shutting down a netlink socket does not end a blocked read).
	tv := unix.NsecToTimeval((500 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("nflog read timeout: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if ctx.Err() != nil || n == 0 && err == nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EINTR) {
				continue // a wake-up, or the kernel dropped some under load: fine for a log
			}
			return fmt.Errorf("nflog read: %w", err)
		}
		for _, r := range parseNflog(buf[:n]) {
			fn(r)
		}
	}
}

// nflogConfig sends one NFULNL_MSG_CONFIG for group with one attribute
// and waits for the kernel's acknowledgement.
func nflogConfig(fd int, group, attr uint16, val []byte) error {
	alen := 4 + len(val)
	msg := make([]byte, unix.NLMSG_HDRLEN+4+nlaAlign(alen))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1) // seq
	g := msg[unix.NLMSG_HDRLEN:]
	g[0] = unix.AF_UNSPEC // nfgenmsg: family, version, res_id (the group, big endian)
	g[1] = 0
	binary.BigEndian.PutUint16(g[2:], group)
	a := g[4:]
	binary.NativeEndian.PutUint16(a[0:], uint16(alen))
	binary.NativeEndian.PutUint16(a[2:], attr)
	copy(a[4:], val)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
		}
	}
	return nil
}

func nlaAlign(n int) int { return (n + 3) &^ 3 }

// parseNflog reads the packets of NFULNL_MSG_PACKET messages in b;
// anything malformed is skipped.
func parseNflog(b []byte) []Refused {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil
	}
	var out []Refused
	for _, m := range msgs {
		if m.Header.Type != nfnlSubsysULOG<<8|nfulnlMsgPacket || len(m.Data) < 4 {
			continue
		}
		attrs := m.Data[4:] // after nfgenmsg
		for len(attrs) >= 4 {
			l := int(binary.NativeEndian.Uint16(attrs[0:]))
			t := binary.NativeEndian.Uint16(attrs[2:]) & nlaTypeMask
			if l < 4 || l > len(attrs) {
				break
			}
			if t == nfulaPayload {
				if r, ok := parseIPv4(attrs[4:l]); ok {
					out = append(out, r)
				}
			}
			attrs = attrs[min(nlaAlign(l), len(attrs)):]
		}
	}
	return out
}

// parseIPv4 reads the addresses, protocol and destination port of an
// IPv4 packet's start.
func parseIPv4(p []byte) (Refused, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return Refused{}, false
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl {
		return Refused{}, false
	}
	r := Refused{
		Src: netip.AddrFrom4([4]byte(p[12:16])),
		Dst: netip.AddrFrom4([4]byte(p[16:20])),
	}
	switch p[9] {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		r.Proto = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[p[9]]
		if len(p) >= ihl+4 {
			r.Port = binary.BigEndian.Uint16(p[ihl+2:])
		}
	case unix.IPPROTO_ICMP:
		r.Proto = "icmp"
	default:
		r.Proto = fmt.Sprint(p[9])
	}
	return r, true
}
