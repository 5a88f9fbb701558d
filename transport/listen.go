package transport

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// listen opens a non-blocking listening socket with raw syscalls, so that accepted
// sockets are plain fds owned by the loops (no net.Conn, netFD or pollDesc each).
func listen(addr string, reusePort bool) (fd int, bound string, err error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, "", fmt.Errorf("%w: %s: %w", ErrListen, addr, err)
	}
	var sa unix.Sockaddr
	family, dualStack := unix.AF_INET6, false
	switch ip4 := ta.IP.To4(); {
	case ta.IP == nil || ta.IP.IsUnspecified() && ip4 == nil:
		// ":port" or "[::]:port": one IPv6 socket that also takes IPv4.
		dualStack = true
		sa = &unix.SockaddrInet6{Port: ta.Port}
	case ip4 != nil:
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: ta.Port, Addr: [4]byte(ip4)}
	default:
		sa6 := &unix.SockaddrInet6{Port: ta.Port, Addr: [16]byte(ta.IP.To16())}
		if ta.Zone != "" {
			if ifi, err := net.InterfaceByName(ta.Zone); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			}
		}
		sa = sa6
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil && dualStack { // no IPv6 on this host
		family, dualStack = unix.AF_INET, false
		sa = &unix.SockaddrInet4{Port: ta.Port}
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return -1, "", fmt.Errorf("%w: socket: %w", ErrListen, err)
	}
	fail := func(op string, err error) (int, string, error) {
		_ = unix.Close(fd)
		return -1, "", fmt.Errorf("%w: %s %s: %w", ErrListen, op, addr, err)
	}
	if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if reusePort {
		if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("SO_REUSEPORT", err)
		}
	}
	if dualStack {
		if err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if err = unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err = unix.Listen(fd, 65535); err != nil {
		return fail("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return fd, sockaddrString(got), nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}
