package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"unsafe"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), receiver side.
// The parsers work on the bytes the loop has already read, may be handed any prefix
// of a header (a header split across reads), and never allocate. They answer one of
// three things: more bytes are needed (n == 0, err == nil), the header is complete
// (n > 0: its length), or the bytes are not a valid header (err != nil). Any prefix of
// a valid header is "more bytes needed", so a split header parses exactly as a whole
// one (FuzzProxyV1 and FuzzProxyV2 check it).

const (
	// maxProxyV1 is the spec's bound on a v1 line, CRLF included
	// ("PROXY TCP6 " + two full IPv6 addresses + two ports).
	maxProxyV1 = 107
	// maxProxyHeader bounds a v2 header: 16 fixed bytes and 520 bytes of addresses
	// and TLVs. The spec allows up to 16+65535; 536 holds every address family with
	// room for the TLVs load balancers add (HAProxy's SSL and unique-id TLVs, AWS
	// NLB's VPC endpoint id), and is what the spec suggests a receiver reads at most.
	// Longer headers are refused (proxy_invalid).
	maxProxyHeader = 536
	proxyV2Fixed   = 16
)

var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

	errProxyMissing = errors.New("transport: no PROXY protocol header")
	errProxyInvalid = errors.New("transport: malformed PROXY protocol header")
	errProxyTooLong = errors.New("transport: PROXY protocol header too long")
	errProxyFamily  = errors.New("transport: PROXY protocol address family not supported")
)

// proxyHeader is what a complete PROXY header says.
type proxyHeader struct {
	// local: the connection's own peer address stands (a v2 LOCAL command, a v1
	// UNKNOWN line, or v2 UNSPEC): load balancers send these for their health checks.
	local bool
	src   netip.AddrPort // the client, when !local (IPv4-mapped IPv6 unmapped)
}

type sigMatch uint8

const (
	sigNone    sigMatch = iota // b cannot start a PROXY header
	sigPartial                 // b is a strict prefix of a signature: more bytes needed
	sigV1                      // b starts with "PROXY "
	sigV2                      // b starts with the 12-byte v2 signature
)

// proxySignature says whether b starts with a PROXY header signature.
func proxySignature(b []byte) sigMatch {
	m1, m2 := prefixMatch(b, proxyV1Sig), prefixMatch(b, proxyV2Sig)
	switch {
	case m1 == sigV1:
		return sigV1
	case m2 == sigV1:
		return sigV2
	case m1 == sigPartial || m2 == sigPartial:
		return sigPartial
	}
	return sigNone
}

// prefixMatch reports sigV1 when b starts with sig, sigPartial when b is a strict
// prefix of it, sigNone otherwise.
func prefixMatch(b, sig []byte) sigMatch {
	if len(b) >= len(sig) {
		if bytes.Equal(b[:len(sig)], sig) {
			return sigV1
		}
		return sigNone
	}
	if bytes.Equal(b, sig[:len(b)]) {
		return sigPartial
	}
	return sigNone
}

// parseProxy parses the PROXY header (either version) at the start of b.
// errProxyMissing means b does not start with a signature.
func parseProxy(b []byte) (proxyHeader, int, error) {
	switch proxySignature(b) {
	case sigV1:
		return parseProxyV1(b)
	case sigV2:
		return parseProxyV2(b)
	case sigPartial:
		return proxyHeader{}, 0, nil
	}
	return proxyHeader{}, 0, errProxyMissing
}

// parseProxyV1 parses "PROXY TCP4|TCP6 src dst sport dport\r\n" or
// "PROXY UNKNOWN[ anything]\r\n" at the start of b. Fields are separated by exactly one
// space; addresses must be of the declared family (TCP6 takes IPv4-mapped ones, no
// zones); ports are 0-65535 without leading zeros.
func parseProxyV1(b []byte) (h proxyHeader, n int, err error) {
	if m := prefixMatch(b, proxyV1Sig); m != sigV1 {
		if m == sigPartial {
			return h, 0, nil
		}
		return h, 0, errProxyInvalid
	}
	end := bytes.IndexByte(b[:min(len(b), maxProxyV1)], '\n')
	if end < 0 {
		if len(b) >= maxProxyV1 {
			return h, 0, errProxyTooLong
		}
		return h, 0, nil
	}
	if b[end-1] != '\r' {
		return h, 0, errProxyInvalid
	}
	line := b[len(proxyV1Sig) : end-1]
	proto, rest, _ := bytes.Cut(line, []byte(" "))
	var v6 bool
	switch string(proto) { // no allocation: the compiler compares in place
	case "UNKNOWN": // the rest of the line is to be ignored (spec 2.1)
		return proxyHeader{local: true}, end + 1, nil
	case "TCP4":
	case "TCP6":
		v6 = true
	default:
		return h, 0, errProxyInvalid
	}
	var f [4][]byte
	for i := range f {
		var ok bool
		f[i], rest, ok = bytes.Cut(rest, []byte(" "))
		if ok != (i < 3) || len(f[i]) == 0 {
			return h, 0, errProxyInvalid
		}
	}
	src, ok1 := parseV1Addr(f[0], v6)
	_, ok2 := parseV1Addr(f[1], v6)
	sport, ok3 := parseV1Port(f[2])
	_, ok4 := parseV1Port(f[3])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return h, 0, errProxyInvalid
	}
	return proxyHeader{src: netip.AddrPortFrom(src.Unmap(), sport)}, end + 1, nil
}

func parseV1Addr(b []byte, v6 bool) (netip.Addr, bool) {
	if len(b) > 45 || bytes.IndexByte(b, '%') >= 0 { // no zones
		return netip.Addr{}, false
	}
	// The string shares b's bytes: ParseAddr keeps nothing of its argument once zones
	// are excluded, so this saves an allocation per connection.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil || a.Is6() != v6 {
		return netip.Addr{}, false
	}
	return a, true
}

func parseV1Port(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	if v > 0xffff {
		return 0, false
	}
	return uint16(v), true
}

// parseProxyV2 parses a binary header at the start of b: the signature, version 2,
// the LOCAL or PROXY command, the family byte and the length of what follows. With
// PROXY, TCP over IPv4 and IPv6 give the client's address; UNSPEC counts as LOCAL (the
// spec lets the receiver use the real endpoints); UDP and UNIX families are refused
// (errProxyFamily): a TCP stream cannot carry UDP, and a UNIX client has no address to
// key per-IP limits on, so falling back to the proxy's own address would silently
// merge every such client into one. TLVs are skipped, unchecked.
func parseProxyV2(b []byte) (h proxyHeader, n int, err error) {
	switch prefixMatch(b, proxyV2Sig) {
	case sigPartial:
		return h, 0, nil
	case sigNone:
		return h, 0, errProxyInvalid
	}
	// Decide from each byte as it arrives, so that garbage is refused early.
	if len(b) > 12 && (b[12]>>4 != 2 || b[12]&0x0f > 1) {
		return h, 0, errProxyInvalid // version 2; command 0 (LOCAL) or 1 (PROXY)
	}
	if len(b) < proxyV2Fixed {
		return h, 0, nil
	}
	local, fam := b[12]&0x0f == 0, b[13]
	total := proxyV2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
	if total > maxProxyHeader {
		return h, 0, errProxyTooLong
	}
	if len(b) < total {
		return h, 0, nil
	}
	body := b[proxyV2Fixed:total]
	switch {
	case local, fam == 0x00:
		return proxyHeader{local: true}, total, nil
	case fam == 0x11: // TCP over IPv4: src, dst, sport, dport
		if len(body) < 12 {
			return h, 0, errProxyInvalid
		}
		ip := netip.AddrFrom4([4]byte(body[0:4]))
		return proxyHeader{src: netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10]))}, total, nil
	case fam == 0x21: // TCP over IPv6
		if len(body) < 36 {
			return h, 0, errProxyInvalid
		}
		ip := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return proxyHeader{src: netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34]))}, total, nil
	case fam == 0x12, fam == 0x22, fam == 0x31, fam == 0x32:
		return h, 0, errProxyFamily
	}
	return h, 0, errProxyInvalid
}
