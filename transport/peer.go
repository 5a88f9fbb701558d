package transport

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// peer is a connection's client address and what the transport knows about it. The
// loop keeps one per slab slot (loop.peers, parallel to loop.slab) only when
// something needs the address after accept: the PROXY protocol (the kernel's peer is
// then the load balancer) or a per-IP limit (the address must be known again at
// close). Otherwise loop.peers is nil and RemoteAddr asks the kernel. It is kept
// out of Conn, which must stay in its size class, and holds no pointer, so the GC
// does not scan the array.
type peer struct {
	ip   [16]byte // IPv4 in its IPv4-mapped form, so one key serves both
	port uint16
	bits peerBits
}

type peerBits uint8

const (
	peerValid   peerBits = 1 << iota // ip and port are set
	peerTrusted                      // the kernel's peer may (and must) send a PROXY header
	peerProxied                      // ip and port came from a PROXY header
	peerHeld                         // holds a connection in the per-IP table (release once)
)

func peerFromSockaddr(sa unix.Sockaddr) peer {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return peerFrom(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *unix.SockaddrInet6:
		return peerFrom(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)))
	}
	return peer{}
}

func peerFrom(ap netip.AddrPort) peer {
	return peer{ip: ap.Addr().As16(), port: ap.Port(), bits: peerValid}
}

// addr is the address, IPv4 unmapped.
func (p *peer) addr() netip.Addr { return netip.AddrFrom16(p.ip).Unmap() }

func (p *peer) addrPort() netip.AddrPort {
	if p.bits&peerValid == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(p.addr(), p.port)
}

// normalizePrefixes masks each prefix and turns IPv4-mapped IPv6 prefixes into IPv4
// ones, because addresses are compared unmapped. An invalid prefix reports false.
func normalizePrefixes(in []netip.Prefix) ([]netip.Prefix, bool) {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			return nil, false
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, false
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, true
}

// trusts reports whether a PROXY header is accepted from a (the kernel's peer). With
// no TrustedProxies every source must send one.
func (s *Server) trusts(a netip.Addr) bool {
	if len(s.trusted) == 0 {
		return true
	}
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
