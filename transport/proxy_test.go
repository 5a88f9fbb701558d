package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseProxyV1(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		in    string
		src   netip.AddrPort
		local bool
		err   error
	}{
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001\r\n", src: ap("203.0.113.7:51234")},
		{in: "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", src: ap("0.0.0.0:0")},
		{in: "PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n", src: ap("[2001:db8::7]:40000")},
		{in: "PROXY TCP6 ::ffff:198.51.100.9 ::1 1 2\r\n", src: ap("198.51.100.9:1")},
		{in: "PROXY UNKNOWN\r\n", local: true},
		{in: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", local: true},
		// The longest line the spec allows is 107 bytes, CRLF included.
		{in: "PROXY UNKNOWN " + strings.Repeat("x", 107-16) + "\r\n", local: true},
		{in: "PROXY UNKNOWN " + strings.Repeat("x", 108-16) + "\r\n", err: errProxyTooLong},
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001\n", err: errProxyInvalid},                         // LF alone
		{in: "PROXY TCP4 203.0.113.7  10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                      // two spaces
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001 \r\n", err: errProxyInvalid},                      // trailing space
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n", err: errProxyInvalid},                            // a field short
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001 7\r\n", err: errProxyInvalid},                     // one too many
		{in: "PROXY TCP4 2001:db8::7 10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                       // family mismatch
		{in: "PROXY TCP6 203.0.113.7 2001:db8::1 51234 6001\r\n", err: errProxyInvalid},                    // family mismatch
		{in: "PROXY TCP6 fe80::1%eth0 2001:db8::1 51234 6001\r\n", err: errProxyInvalid},                   // zone
		{in: "PROXY TCP4 203.0.113.007 10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                     // leading zero
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 65536 6001\r\n", err: errProxyInvalid},                       // port range
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 051234 6001\r\n", err: errProxyInvalid},                      // port leading zero
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 +1234 6001\r\n", err: errProxyInvalid},                       // sign
		{in: "PROXY TCP5 203.0.113.7 10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                       // protocol
		{in: "PROXY tcp4 203.0.113.7 10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                       // case
		{in: "PROXY UNKNOWNX\r\n", err: errProxyInvalid},                                                   // protocol
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001\r\r\n", err: errProxyInvalid},                     // stray CR
		{in: "PROXY TCP4 203.0.113.7\x0010.0.0.1 51234 6001\r\n", err: errProxyInvalid},                    // NUL
		{in: "PROXY  TCP4 203.0.113.7 10.0.0.1 51234 6001\r\n", err: errProxyInvalid},                      // two spaces
		{in: "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001\r\nGET / HTTP/1.1", src: ap("203.0.113.7:51234")}, // followed by the request
	}
	for _, tc := range cases {
		h, n, err := parseProxyV1([]byte(tc.in))
		if !errors.Is(err, tc.err) {
			t.Errorf("%q: err %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if want := strings.Index(tc.in, "\r\n") + 2; n != want || h.local != tc.local || h.src != tc.src {
			t.Errorf("%q: n=%d local=%t src=%v", tc.in, n, h.local, h.src)
		}
		checkPrefixes(t, []byte(tc.in[:n]), parseProxyV1)
	}
}

func TestParseProxyV2(t *testing.T) {
	ap := netip.MustParseAddrPort
	big := make([]byte, maxProxyHeader-16-12)
	cases := []struct {
		name  string
		in    []byte
		src   netip.AddrPort
		local bool
		err   error
	}{
		{name: "tcp4", in: v2Client, src: ap("198.51.100.20:40001")},
		{name: "tcp6", in: v2Client6, src: ap("[2001:db8::20]:40002")},
		{name: "tcp6_mapped", in: proxyV2(1, 0x21, v2Addrs("::ffff:192.0.2.1", "::1", 7, 8, nil)), src: ap("192.0.2.1:7")},
		{name: "tlvs", in: proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, v2TLVs)), src: ap("198.51.100.20:40001")},
		{name: "largest", in: proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, big)), src: ap("198.51.100.20:40001")},
		{name: "local", in: v2Local, local: true},
		{name: "local_unix", in: proxyV2(0, 0x31, make([]byte, 216)), local: true},
		{name: "local_empty", in: proxyV2(0, 0x00, nil), local: true},
		{name: "unspec", in: proxyV2(1, 0x00, []byte("ignored")), local: true},
		{name: "too_long", in: proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, append(big, 0))), err: errProxyTooLong},
		{name: "too_long_by_length", in: append(proxyV2(1, 0x11, nil)[:14], 0xff, 0xff), err: errProxyTooLong},
		{name: "version1", in: append(bytes.Clone(proxyV2Sig), 0x11, 0x11, 0, 0), err: errProxyInvalid},
		{name: "command2", in: append(bytes.Clone(proxyV2Sig), 0x22, 0x11, 0, 0), err: errProxyInvalid},
		{name: "udp4", in: proxyV2(1, 0x12, v2Addrs("198.51.100.20", "10.0.0.1", 1, 2, nil)), err: errProxyFamily},
		{name: "udp6", in: proxyV2(1, 0x22, v2Addrs("2001:db8::1", "2001:db8::2", 1, 2, nil)), err: errProxyFamily},
		{name: "unix_stream", in: proxyV2(1, 0x31, make([]byte, 216)), err: errProxyFamily},
		{name: "unix_dgram", in: proxyV2(1, 0x32, make([]byte, 216)), err: errProxyFamily},
		{name: "family_unknown", in: proxyV2(1, 0x41, make([]byte, 36)), err: errProxyInvalid},
		{name: "tcp4_short", in: proxyV2(1, 0x11, make([]byte, 11)), err: errProxyInvalid},
		{name: "tcp6_short", in: proxyV2(1, 0x21, make([]byte, 35)), err: errProxyInvalid},
		{name: "bad_signature", in: append([]byte("\r\n\r\n\x00\r\nQUIT\r"), 0x21, 0x11, 0, 0), err: errProxyInvalid},
	}
	for _, tc := range cases {
		h, n, err := parseProxyV2(tc.in)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if n != len(tc.in) || h.local != tc.local || h.src != tc.src {
			t.Errorf("%s: n=%d/%d local=%t src=%v", tc.name, n, len(tc.in), h.local, h.src)
		}
		checkPrefixes(t, tc.in, parseProxyV2)
		// What follows the header is not the parser's business.
		if _, n2, err := parseProxyV2(append(bytes.Clone(tc.in), "GET /"...)); n2 != n || err != nil {
			t.Errorf("%s: with a request behind: n=%d err=%v", tc.name, n2, err)
		}
	}
}

// checkPrefixes: every strict prefix of a complete header asks for more bytes, so a
// header split anywhere across reads parses as the whole one does.
func checkPrefixes(t *testing.T, whole []byte, parse func([]byte) (proxyHeader, int, error)) {
	t.Helper()
	for k := range len(whole) {
		if _, n, err := parse(whole[:k]); n != 0 || err != nil {
			t.Fatalf("%q: prefix of %d bytes gave n=%d err=%v, want more-needed", whole, k, n, err)
		}
	}
}

func TestProxySignature(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sigMatch
	}{
		{"", sigPartial}, {"P", sigPartial}, {"PROXY", sigPartial}, {"PROXY ", sigV1}, {"PROXY TCP4", sigV1},
		{"\r\n\r\n", sigPartial}, {string(proxyV2Sig[:11]), sigPartial}, {string(proxyV2Sig), sigV2},
		{"GET / HTTP/1.1\r\n", sigNone}, {"POST", sigNone}, {"PROPFIND", sigNone}, {"PROXY\t", sigNone},
		{"\r\n\r\nGET", sigNone}, {"\r\n", sigPartial},
	} {
		if got := proxySignature([]byte(tc.in)); got != tc.want {
			t.Errorf("%q: %d, want %d", tc.in, got, tc.want)
		}
	}
	if _, _, err := parseProxy([]byte("GET / HTTP/1.1\r\n")); err != errProxyMissing {
		t.Errorf("plain request: %v", err)
	}
}

// TestParseProxyNoAlloc pins the parsers as allocation-free: they run once per
// connection on every node behind a load balancer.
func TestParseProxyNoAlloc(t *testing.T) {
	v1 := []byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\nGET / HTTP/1.1\r\n")
	v2 := proxyV2(1, 0x21, v2Addrs("2001:db8::20", "2001:db8::1", 40002, 443, v2TLVs))
	var sink proxyHeader
	if n := testing.AllocsPerRun(1000, func() { sink, _, _ = parseProxy(v1) }); n != 0 {
		t.Errorf("v1: %.1f allocations per parse", n)
	}
	if n := testing.AllocsPerRun(1000, func() { sink, _, _ = parseProxy(v2) }); n != 0 {
		t.Errorf("v2: %.1f allocations per parse", n)
	}
	_ = sink
}

func BenchmarkParseProxy(b *testing.B) {
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"v1_tcp4", []byte(v1Client)},
		{"v1_tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n")},
		{"v2_tcp4", v2Client},
		{"v2_tcp6_tlvs", proxyV2(1, 0x21, v2Addrs("2001:db8::20", "2001:db8::1", 40002, 443, v2TLVs))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, n, err := parseProxy(bc.in); n == 0 || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// fuzzProxyCommon checks what holds of either parser on any input.
func fuzzProxyCommon(t *testing.T, b []byte, limit int, sig sigMatch, parse func([]byte) (proxyHeader, int, error)) (proxyHeader, int, error) {
	h, n, err := parse(b)
	switch {
	case n < 0 || n > len(b) || n > limit:
		t.Fatalf("n=%d for %d bytes", n, len(b))
	case err != nil && n != 0:
		t.Fatalf("n=%d with err %v", n, err)
	case err == nil && n == 0 && len(b) >= limit:
		t.Fatalf("asks for more bytes after %d", len(b))
	case n > 0 && !h.local && !h.src.Addr().IsValid():
		t.Fatalf("no source address")
	case n > 0 && h.src.Addr().Is4In6():
		t.Fatalf("mapped address %v", h.src)
	}
	if n > 0 {
		checkPrefixes(t, b[:n], parse)
		if h2, n2, err2 := parse(b[:n]); h2 != h || n2 != n || err2 != nil {
			t.Fatalf("the header alone parses differently")
		}
	}
	// On its own signature, the combined parser is this one.
	if proxySignature(b) == sig {
		if hc, nc, errc := parseProxy(b); hc != h || nc != n || errc != err {
			t.Fatalf("parseProxy disagrees: %v %d %v vs %v %d %v", hc, nc, errc, h, n, err)
		}
	}
	return h, n, err
}

func FuzzProxyV1(f *testing.F) {
	for _, s := range []string{
		v1Client, "PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n", "PROXY UNKNOWN\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
		"PROXY TCP6 ::ffff:1.2.3.4 ::1 0 65535\r\n", "PROXY UNKNOWN " + strings.Repeat("z", 100),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, _ := fuzzProxyCommon(t, b, maxProxyV1, sigV1, parseProxyV1)
		if n == 0 {
			return
		}
		if !bytes.HasSuffix(b[:n], []byte("\r\n")) || !bytes.HasPrefix(b, []byte("PROXY ")) {
			t.Fatalf("accepted %q", b[:n])
		}
		proto, _, _ := bytes.Cut(b[6:n], []byte(" "))
		switch string(bytes.TrimSuffix(proto, []byte("\r\n"))) {
		case "UNKNOWN":
			if !h.local {
				t.Fatal("UNKNOWN not local")
			}
		case "TCP4":
			if !h.src.Addr().Is4() {
				t.Fatalf("TCP4 gave %v", h.src)
			}
		case "TCP6":
		default:
			t.Fatalf("accepted protocol %q", proto)
		}
	})
}

func FuzzProxyV2(f *testing.F) {
	for _, s := range [][]byte{
		v2Client, v2Client6, v2Local, proxyV2(1, 0x00, nil), proxyV2(1, 0x31, make([]byte, 216)),
		proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, v2TLVs)),
		append(proxyV2(1, 0x11, nil)[:14], 0x02, 0x10),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, _ := fuzzProxyCommon(t, b, maxProxyHeader, sigV2, parseProxyV2)
		if n == 0 || h.local {
			return
		}
		if b[12] != 0x21 {
			t.Fatalf("PROXY source from command byte %#x", b[12])
		}
		switch want := h.src.Addr().Unmap(); b[13] {
		case 0x11:
			if want != netip.AddrFrom4([4]byte(b[16:20])) {
				t.Fatalf("tcp4 source %v", h.src)
			}
		case 0x21:
			if want != netip.AddrFrom16([16]byte(b[16:32])).Unmap() {
				t.Fatalf("tcp6 source %v", h.src)
			}
		default:
			t.Fatalf("source from family %#x", b[13])
		}
	})
}

// FuzzProxyHead runs arbitrary bytes through the loop's whole head path with the
// PROXY protocol on (the PROXY stage, then the HTTP head), once in one read and once
// in chunks, from a trusted or an untrusted source. Nothing may panic, the partial
// head stays bounded, and the outcome (which refusal, whether it upgraded or went to
// the HTTP server, and the client address Accept saw) does not depend on how the
// bytes were split.
func FuzzProxyHead(f *testing.F) {
	f.Add([]byte(v1Client+upgradeRequest("/app/k")), uint8(7), true)
	f.Add(append(bytes.Clone(v2Client), upgradeRequest("/app/k")...), uint8(3), true)
	f.Add(append(bytes.Clone(v2Local), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"...), uint8(5), true)
	f.Add([]byte(upgradeRequest("/app/k")), uint8(9), false)
	f.Add([]byte(v1Client+upgradeRequest("/app/k")), uint8(1), false)
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nPROXY TCP4 6.6.6.6 5.6.7.8 1 2\r\n\r\n"), uint8(11), true)
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, trusted bool) {
		whole := runHead(t, in, len(in)+1, trusted)
		split := runHead(t, in, int(chunk)%40+1, trusted)
		if whole != split {
			t.Fatalf("outcome depends on the split:\nwhole %+v\nsplit %+v", whole, split)
		}
	})
}

type headOutcome struct {
	refused  [numRefusals]uint64
	upgraded uint64
	http     uint64
	remote   string
}

// runHead feeds in to a fresh handshake connection, step bytes per read.
func runHead(t *testing.T, in []byte, step int, trusted bool) headOutcome {
	var remote string
	h := acceptFunc(func(r *UpgradeRequest) (any, error) { remote = r.RemoteAddr; return nil, nil })
	c, l, _ := newDetachedHandshake(t, Config{
		Handler: h, ProxyProtocol: true, MaxHeaderBytes: 1024,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}, netip.MustParseAddrPort("192.0.2.1:4000"), trusted)
	for len(in) > 0 && c.state == stHandshake && c.flags&fReadDead == 0 {
		n := min(step, len(in))
		l.readHead(c, bytes.Clone(in[:n]))
		in = in[n:]
		if x := c.ext; x != nil && len(x.in) > l.cfg.MaxHeaderBytes+maxProxyHeader+n {
			t.Fatalf("partial head of %d bytes", len(x.in))
		}
	}
	out := headOutcome{upgraded: l.st.upgraded.Load(), http: l.st.httpReqs.Load(), remote: remote}
	for i := range out.refused {
		out.refused[i] = l.st.refused[i].Load()
	}
	return out
}

// newDetachedHandshake returns a connection in the handshake state from peer on a
// loop that is not running (the test goroutine acts as its owner loop). With
// cfg.ProxyProtocol, trusted says whether its source is a trusted proxy.
func newDetachedHandshake(t testing.TB, cfg Config, from netip.AddrPort, trusted bool) (*Conn, *loop, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quietLogger()
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.trusted, _ = normalizePrefixes(cfg.TrustedProxies)
	s.limits = newIPLimiter(cfg.MaxConnectionsPerIP, cfg.MaxUpgradesPerIPPerSecond)
	s.trackPeers = true
	s.httpLn = newHTTPListener("127.0.0.1:0")
	l, err := newLoop(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.loops = []*loop{l}
	c := &Conn{l: l, fd: int32(fds[0]), state: stHandshake}
	c.slot = l.allocSlot(c)
	l.nconns++
	l.peers[c.slot] = peerFrom(from)
	if cfg.ProxyProtocol {
		c.flags |= fProxy
		if trusted {
			l.peers[c.slot].bits |= peerTrusted
		}
	}
	t.Cleanup(func() {
		if c.state != stDead {
			l.finish(c, CloseConnLost)
		}
		_ = unix.Close(fds[1])
		_ = s.httpLn.Close()
		s.httpLn.drain()
		l.closeFDs()
	})
	return c, l, fds[1]
}

// BenchmarkUpgrade measures complete WebSocket handshakes over loopback (connect,
// request, 101, close) with and without a PROXY header in front of the request, and
// with the per-IP limits on. Each handshake comes from another client address.
func BenchmarkUpgrade(b *testing.B) {
	v1 := func(i uint64) []byte {
		return fmt.Appendf(nil, "PROXY TCP4 10.%d.%d.%d 10.0.0.1 40000 6001\r\n", byte(i>>16), byte(i>>8), byte(i))
	}
	v2 := func(i uint64) []byte {
		body := binary.BigEndian.AppendUint32([]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, 0x0a000001)
		return proxyV2(1, 0x11, append(body, 0x9c, 0x40, 0x17, 0x71))
	}
	for _, bc := range []struct {
		name   string
		header func(uint64) []byte
		limits bool
	}{
		{name: "plain"},
		{name: "proxy_v1", header: v1},
		{name: "proxy_v2", header: v2},
		{name: "proxy_v2_limits", header: v2, limits: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := Config{Handler: &countingHandler{}, Loops: 2}
			if bc.header != nil {
				cfg.ProxyProtocol = true
				cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}
			if bc.limits {
				cfg.MaxConnectionsPerIP, cfg.MaxUpgradesPerIPPerSecond = 10, 10
			}
			s := startServer(b, cfg)
			req := []byte(upgradeRequest("/app/k"))
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				resp := make([]byte, 512)
				for pb.Next() {
					msg := req
					if bc.header != nil {
						msg = append(bc.header(seq.Add(1)), req...)
					}
					nc, err := net.Dial("tcp", s.Addr())
					if err != nil {
						b.Error(err)
						return
					}
					_ = nc.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT to run out of ports
					_, _ = nc.Write(msg)
					n, err := io.ReadAtLeast(nc, resp, 12)
					_ = nc.Close()
					if err != nil || !bytes.HasPrefix(resp[:n], []byte("HTTP/1.1 101")) {
						b.Errorf("%q %v", resp[:n], err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "upgrades/s")
		})
	}
}

// TestRefusalLabels keeps the refusal labels in step: one per refusal, distinct,
// metric-safe, all present in Stats from the start.
func TestRefusalLabels(t *testing.T) {
	exported := []string{
		RefusedProxyMissing, RefusedProxyInvalid, RefusedProxyUntrusted, RefusedConnsPerIP, RefusedUpgradesPerIP,
		RefusedDraining, RefusedHeadTimeout, RefusedHeadTooLarge, RefusedBadRequest, RefusedRejected,
	}
	if len(exported) != int(numRefusals) {
		t.Fatalf("%d exported labels for %d refusals", len(exported), numRefusals)
	}
	seen := map[string]bool{}
	for i, l := range refusalLabels {
		if l != exported[i] || seen[l] || l == "" || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz_") != "" {
			t.Errorf("refusal %d: label %q", i, l)
		}
		seen[l] = true
	}
	s := startServer(t, Config{Handler: newTestHandler()})
	if st := s.Stats(); len(st.Refused) != int(numRefusals) || st.HandshakeFailed != 0 {
		t.Fatalf("fresh Stats: %v, %d failed", st.Refused, st.HandshakeFailed)
	}
}

func TestTrustedProxiesConfig(t *testing.T) {
	bad := Config{Handler: newTestHandler(), Addr: "127.0.0.1:0", ProxyProtocol: true, TrustedProxies: []netip.Prefix{{}}}
	if _, err := New(bad); !errors.Is(err, ErrConfig) {
		t.Fatalf("invalid prefix: %v", err)
	}
	got, ok := normalizePrefixes([]netip.Prefix{
		netip.MustParsePrefix("::ffff:10.1.2.3/120"), netip.MustParsePrefix("192.0.2.77/24"), netip.MustParsePrefix("2001:db8::/32"),
	})
	want := []netip.Prefix{
		netip.MustParsePrefix("10.1.2.0/24"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"),
	}
	if !ok || len(got) != len(want) {
		t.Fatalf("%v %t", got, ok)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%v, want %v", got[i], want[i])
		}
	}
	s := &Server{trusted: got}
	for addr, trusted := range map[string]bool{"10.1.2.9": true, "10.1.3.9": false, "2001:db8::5": true, "192.0.2.1": true} {
		if s.trusts(netip.MustParseAddr(addr)) != trusted {
			t.Errorf("%s: trusted=%t", addr, !trusted)
		}
	}
	// With the protocol on and no list, every source must send a header.
	if !(&Server{}).trusts(netip.MustParseAddr("198.51.100.1")) {
		t.Error("empty list does not trust every source")
	}
}
