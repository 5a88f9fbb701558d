package transport

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// A transcript is what a raw TCP client sends, byte for byte, and the golden file
// holds what the server answered until it closed the connection, rendered readably
// but losslessly (HTTP lines quoted, each frame with its exact header bytes).
type transcript struct {
	name    string
	cfg     func(*Config)
	steps   []step
	onClose string // label OnClose must get; "" when no WebSocket opens
	from    string // client source address (127.0.0.x); "" for the default
	hello   bool   // OnOpen writes the connection's remote addresses first
	refused string // the Stats.Refused label this transcript must count once
	// before runs once the server is up, before the transcript's client connects
	// (only for transcripts that open no WebSocket themselves).
	before func(t *testing.T, s *Server)
}

type step struct {
	send  []byte
	sleep time.Duration
}

func send(b ...[]byte) step          { return step{send: bytes.Join(b, nil)} }
func sendS(s string) step            { return step{send: []byte(s)} }
func pause(d time.Duration) step     { return step{sleep: d} }
func frame(b0 byte, p string) []byte { return clientFrame(b0, []byte(p)) }

var (
	hs        = []byte(upgradeRequest("/app/key"))
	closeBye  = clientFrame(finClose, closePayload(1000, "bye"))
	smallMsgs = func(c *Config) { c.MaxMessageBytes = 1024 }
)

func transcripts() []transcript {
	return []transcript{
		{name: "upgrade_echo", onClose: "peer_close", steps: []step{
			send(hs), pause(50 * time.Millisecond),
			send(frame(finText, "hello"), frame(finPing, "p"), closeBye),
		}},
		{name: "pipelined_frame", onClose: "peer_close", steps: []step{send(hs, frame(finText, "right behind the head"), closeBye)}},
		{name: "split_writes", onClose: "peer_close", steps: []step{
			// The head and a frame arrive in pieces: partial head, then a frame
			// header split from its payload.
			sendS(string(hs[:20])), pause(30 * time.Millisecond), send(hs[20:]), pause(30 * time.Millisecond),
			send(frame(finText, "split frame")[:3]), pause(30 * time.Millisecond),
			send(frame(finText, "split frame")[3:], closeBye),
		}},
		{name: "unmasked_frame", onClose: "protocol_error", steps: []step{send(hs, []byte{0x81, 0x02, 'h', 'i'})}},
		{name: "rsv_bit", onClose: "protocol_error", steps: []step{send(hs, frame(finText|0x40, "compressed?"))}},
		{name: "reserved_opcode", onClose: "protocol_error", steps: []step{send(hs, frame(0x83, "op 3"))}},
		{name: "control_too_long", onClose: "protocol_error", steps: []step{send(hs, clientFrame(finPing, bytes.Repeat([]byte("x"), 126)))}},
		{name: "fragmented_ping", onClose: "protocol_error", steps: []step{send(hs, frame(0x09, "ping without FIN"))}},
		{name: "continuation_without_start", onClose: "protocol_error", steps: []step{send(hs, frame(finCont, "orphan"))}},
		{name: "text_inside_fragmented", onClose: "protocol_error", steps: []step{send(hs, frame(fragText, "a"), frame(finText, "b"))}},
		{name: "binary_unsupported", onClose: "unsupported_data", steps: []step{send(hs, frame(finBin, "\x00\x01"))}},
		{name: "invalid_utf8_text", onClose: "invalid_payload", steps: []step{send(hs, frame(finText, "bad \xff byte"))}},
		{name: "invalid_utf8_fragments", onClose: "invalid_payload", steps: []step{
			// Each fragment is valid UTF-8 alone up to the split; the whole is not.
			send(hs, frame(fragText, "ok \xe2\x82"), frame(finCont, "\xff"))}},
		{name: "utf8_split_across_fragments", onClose: "peer_close", steps: []step{
			// "héllo": the two bytes of é sit in different fragments.
			send(hs, frame(fragText, "h\xc3"), frame(finCont, "\xa9llo"), closeBye)}},
		{name: "invalid_utf8_close_reason", onClose: "invalid_payload", steps: []step{send(hs, clientFrame(finClose, closePayload(1000, "\xff")))}},
		{name: "close_one_byte", onClose: "protocol_error", steps: []step{send(hs, frame(finClose, "x"))}},
		{name: "close_invalid_code", onClose: "protocol_error", steps: []step{send(hs, clientFrame(finClose, closePayload(1005, "")))}},
		{name: "close_echo", onClose: "peer_close", steps: []step{send(hs, clientFrame(finClose, closePayload(1001, "going")))}},
		{name: "close_empty", onClose: "peer_close", steps: []step{send(hs, frame(finClose, ""))}},
		{name: "too_big_by_header", onClose: "message_too_big", cfg: smallMsgs, steps: []step{
			// Only the header is sent: the server must refuse before the payload.
			send(hs, clientFrameLen(finText, nil, 1<<20)[:14])}},
		{name: "too_big_by_reassembly", onClose: "message_too_big", cfg: smallMsgs, steps: []step{
			send(hs, frame(fragText, strings.Repeat("a", 600)), frame(finCont, strings.Repeat("b", 600)))}},
		{name: "fragmented_with_ping", onClose: "peer_close", steps: []step{
			send(hs, frame(fragText, "Hel"), frame(finPing, "between")),
			pause(30 * time.Millisecond),
			send(frame(fragCont, "l"), frame(finCont, "o"), closeBye)}},
		{name: "head_too_large", steps: []step{
			sendS("GET /app/key HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 17<<10) + "\r\n\r\n")}},
		{name: "head_too_large_unterminated", steps: []step{sendS("GET /app/key HTTP/1.1\r\nX: " + strings.Repeat("a", 20<<10))}},
		{name: "head_timeout", cfg: func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond }, steps: []step{
			sendS("GET /app/key HTTP/1.1\r\nHost: x\r\n")}},
		{name: "garbage_head", steps: []step{sendS("\x00\x01\x02 garbage\r\n\r\n")}},
		{name: "bad_header_line", steps: []step{sendS("GET /app/key HTTP/1.1\r\nno colon here\r\n\r\n")}},
		{name: "bad_ws_version", steps: []step{sendS(strings.Replace(string(hs), "Version: 13", "Version: 8", 1))}},
		{name: "missing_ws_key", steps: []step{sendS(strings.Replace(string(hs), "Sec-WebSocket-Key", "X-Key", 1))}},
		{name: "reject_forbidden", steps: []step{sendS(upgradeRequest("/app/forbidden"))}},
		{name: "reject_not_found", steps: []step{sendS(upgradeRequest("/nope"))}},
		{name: "reject_other_error", steps: []step{sendS(upgradeRequest("/app/fail"))}},
		{name: "http_keepalive", cfg: withEchoHTTP, steps: []step{
			sendS("GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"), pause(50 * time.Millisecond),
			sendS("POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\":\"b\"}\r\n"), pause(50 * time.Millisecond),
			sendS("GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")}},
		{name: "http_pipelined_post", cfg: withEchoHTTP, steps: []step{
			sendS("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyGET /q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")}},
		{name: "http_nil_handler", steps: []step{sendS("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")}},
	}
}

// Sources on loopback for the PROXY protocol transcripts: the load balancer, a
// client connecting directly, and a client for the per-IP limits.
const (
	srcLB     = "127.0.0.2"
	srcDirect = "127.0.0.3"
	srcClient = "127.0.0.4"
	v1Client  = "PROXY TCP4 203.0.113.7 10.0.0.1 51234 6001\r\n"
)

func proxyOn(c *Config) {
	c.ProxyProtocol = true
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(srcLB + "/32")}
}

func withProxy(more func(*Config)) func(*Config) {
	return func(c *Config) { proxyOn(c); more(c) }
}

// proxyV2 builds a v2 header: cmd 0 LOCAL, 1 PROXY; fam the family/protocol byte.
func proxyV2(cmd, fam byte, body []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// v2Addrs is an address block: src, dst, sport, dport, then extra (TLVs).
func v2Addrs(src, dst string, sport, dport uint16, extra []byte) []byte {
	b := append(netip.MustParseAddr(src).AsSlice(), netip.MustParseAddr(dst).AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	return append(b, extra...)
}

var (
	v2Client  = proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, nil))
	v2Client6 = proxyV2(1, 0x21, v2Addrs("2001:db8::20", "2001:db8::1", 40002, 443, nil))
	// TLVs: PP2_TYPE_UNIQUE_ID "abc", a NOOP with 3 bytes, AWS's 0xEA VPC endpoint id.
	v2TLVs   = []byte("\x05\x00\x03abc\x04\x00\x03\x00\x00\x00\xea\x00\x0d\x01vpce-0123abc")
	v2Local  = proxyV2(0, 0x11, v2Addrs("192.0.2.99", "10.0.0.1", 1, 2, nil))
	getClose = "GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
)

func proxyTranscripts() []transcript {
	bye := []byte(frame(finText, "hi"))
	bye = append(bye, closeBye...)
	v1split := []byte(v1Client)
	return []transcript{
		// A trusted load balancer's header: the client's address is the connection's.
		{name: "proxy_v1_tcp4", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send([]byte(v1Client), hs, bye)}},
		{name: "proxy_v1_tcp6", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			sendS("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"), send(hs, bye)}},
		{name: "proxy_v1_tcp6_mapped", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			sendS("PROXY TCP6 ::ffff:198.51.100.9 ::ffff:10.0.0.1 40000 6001\r\n"), send(hs, bye)}},
		{name: "proxy_v2_tcp4_tlvs", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(proxyV2(1, 0x11, v2Addrs("198.51.100.20", "10.0.0.1", 40001, 6001, v2TLVs)), hs, bye)}},
		{name: "proxy_v2_tcp6", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(v2Client6, hs, bye)}},
		// Headers split across reads, and the header and the request head sharing one.
		{name: "proxy_v1_split", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(v1split[:3]), pause(30 * time.Millisecond), send(v1split[3:25]), pause(30 * time.Millisecond),
			send(v1split[25 : len(v1split)-1]), pause(30 * time.Millisecond),
			send(v1split[len(v1split)-1:], hs[:10]), pause(30 * time.Millisecond), send(hs[10:], bye)}},
		{name: "proxy_v2_split", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(v2Client[:5]), pause(30 * time.Millisecond), send(v2Client[5:14]), pause(30 * time.Millisecond),
			send(v2Client[14:20]), pause(30 * time.Millisecond), send(v2Client[20:]), pause(30 * time.Millisecond),
			send(hs, bye)}},
		// Health checks: the connection keeps the balancer's own address.
		{name: "proxy_v2_local", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(v2Local, hs, bye)}},
		{name: "proxy_v2_unspec", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			send(proxyV2(1, 0x00, nil), hs, bye)}},
		{name: "proxy_v1_unknown", cfg: proxyOn, from: srcLB, hello: true, onClose: "peer_close", steps: []step{
			sendS("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), send(hs, bye)}},
		// Refusals: the connection is closed without a byte, as the spec asks.
		{name: "proxy_missing", cfg: proxyOn, from: srcLB, refused: RefusedProxyMissing, steps: []step{send(hs)}},
		{name: "proxy_v1_untrusted", cfg: proxyOn, from: srcDirect, refused: RefusedProxyUntrusted, steps: []step{
			send([]byte(v1Client), hs)}},
		{name: "proxy_v2_untrusted", cfg: proxyOn, from: srcDirect, refused: RefusedProxyUntrusted, steps: []step{
			send(v2Client[:7]), pause(30 * time.Millisecond), send(v2Client[7:], hs)}},
		{name: "proxy_v1_invalid", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			sendS("PROXY TCP4 203.0.113.300 10.0.0.1 51234 6001\r\n"), send(hs)}},
		{name: "proxy_v1_oversize", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			sendS("PROXY UNKNOWN " + strings.Repeat("x", 60)), pause(30 * time.Millisecond), sendS(strings.Repeat("y", 60))}},
		{name: "proxy_v2_oversize", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			// Refused from the length field: the 1,000 bytes it announces are never awaited.
			send(append(proxyV2(1, 0x11, nil)[:14], 0x03, 0xe8))}},
		{name: "proxy_v2_unix", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			send(proxyV2(1, 0x31, make([]byte, 216)), hs)}},
		{name: "proxy_v2_udp", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			send(proxyV2(1, 0x12, v2Addrs("198.51.100.20", "10.0.0.1", 53, 53, nil)), hs)}},
		{name: "proxy_v2_bad_version", cfg: proxyOn, from: srcLB, refused: RefusedProxyInvalid, steps: []step{
			send(append(bytes.Clone(proxyV2Sig), 0x11), hs)}},
		// A client behind the balancer prefixing its own header: it is just bytes
		// after the balancer's header, and fails as HTTP.
		{name: "proxy_spoof_behind_lb", cfg: proxyOn, from: srcLB, refused: RefusedBadRequest, steps: []step{
			sendS(v1Client + "PROXY TCP4 6.6.6.6 10.0.0.1 1 6001\r\n"), send(hs)}},
		// A direct client without a header is served as before, under its own address.
		{name: "proxy_direct_plain", cfg: proxyOn, from: srcDirect, hello: true, onClose: "peer_close", steps: []step{send(hs, bye)}},
		// With the protocol off, a header is a bad request.
		{name: "proxy_off_v1", refused: RefusedBadRequest, steps: []step{send([]byte(v1Client), hs)}},
		{name: "proxy_off_v2", refused: RefusedBadRequest, steps: []step{send(v2Client, hs)}},
		// The HTTP API sees the client's address too.
		{name: "proxy_http_remote", cfg: withProxy(withRemoteHTTP), from: srcLB, steps: []step{sendS(v1Client + getClose)}},
		{name: "proxy_http_local", cfg: withProxy(withRemoteHTTP), from: srcLB, steps: []step{send(v2Local, []byte(getClose))}},
		// Per-IP limits answer 429 before the upgrade.
		{name: "ip_conns_429", cfg: func(c *Config) { c.MaxConnectionsPerIP = 1 }, from: srcClient,
			refused: RefusedConnsPerIP, before: holdWS(srcClient, nil), steps: []step{send(hs)}},
		{name: "ip_conns_429_proxied", cfg: withProxy(func(c *Config) { c.MaxConnectionsPerIP = 1 }), from: srcLB,
			// The same client (another port) through the same balancer.
			refused: RefusedConnsPerIP, before: holdWS(srcLB, []byte(v1Client)), steps: []step{
				sendS("PROXY TCP4 203.0.113.7 10.0.0.1 51299 6001\r\n"), send(hs)}},
		{name: "ip_upgrades_429", cfg: func(c *Config) { c.MaxUpgradesPerIPPerSecond = 1 }, from: srcClient,
			refused: RefusedUpgradesPerIP, before: holdWS(srcClient, nil), steps: []step{send(hs)}},
	}
}

// holdWS opens a WebSocket from src (after prefix) and holds it until the test ends.
func holdWS(src string, prefix []byte) func(t *testing.T, s *Server) {
	return func(t *testing.T, s *Server) {
		n := s.Stats().Upgraded
		c, status := dialWSFrom(t, s.Addr(), src, prefix)
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", status)
		}
		t.Cleanup(func() { _ = c.Close() })
		for s.Stats().Upgraded == n { // counted just after the 101 is written
			time.Sleep(time.Millisecond)
		}
	}
}

func withRemoteHTTP(c *Config) {
	c.HTTP = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "remote=%s\n", showAddr(r.RemoteAddr))
	})
}

// showAddr hides the ephemeral port of a loopback address, so that golden files
// are stable.
func showAddr(s string) string {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().IsLoopback() {
		return s
	}
	return ap.Addr().String() + ":PORT"
}

func withEchoHTTP(c *Config) {
	c.HTTP = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s body=%q\n", r.Method, r.URL.RequestURI(), body)
	})
}

func TestTranscripts(t *testing.T) {
	for _, tc := range append(transcripts(), proxyTranscripts()...) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHandler()
			if tc.hello {
				h.onOpen = func(c *Conn) {
					c.WriteText(fmt.Appendf(nil, "remote=%s accept=%s",
						showAddr(c.RemoteAddr()), showAddr(c.Value().(*UpgradeRequest).RemoteAddr)))
				}
			}
			cfg := Config{Handler: h, Loops: 1}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := startServer(t, cfg)
			if tc.before != nil {
				tc.before(t, s)
			}
			st0 := s.Stats()
			nc, err := dialFrom(s.Addr(), tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			for _, st := range tc.steps {
				time.Sleep(st.sleep)
				if len(st.send) > 0 {
					if _, err := nc.Write(st.send); err != nil {
						t.Fatalf("write: %v", err)
					}
				}
			}
			_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(nc) // the server always ends the transcript
			if err != nil {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			checkGolden(t, tc.name, render(got))
			_ = nc.Close()
			st := s.Stats()
			if tc.refused != "" {
				if n := st.Refused[tc.refused] - st0.Refused[tc.refused]; n != 1 {
					t.Errorf("Refused[%s] = %d, want 1 (%v)", tc.refused, n, st.Refused)
				}
				if n := st.HandshakeFailed - st0.HandshakeFailed; n != 1 {
					t.Errorf("HandshakeFailed = %d, want 1", n)
				}
			}
			if tc.onClose == "" {
				if st.Upgraded != st0.Upgraded {
					t.Errorf("Upgraded = %d, want %d", st.Upgraded, st0.Upgraded)
				}
				return
			}
			c := h.waitOpen(t)
			if r := h.waitClose(t, c.ID()); r.Label != tc.onClose {
				t.Errorf("OnClose got %+v, want label %q", r, tc.onClose)
			}
		})
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("server output differs from %s\n--- got\n%s--- want\n%s", path, got, want)
	}
}

var dateLine = regexp.MustCompile(`(?m)^< "Date: [^"]*\\r\\n"$`)

// render turns what the server sent into the golden text: HTTP text as quoted lines
// ("<" prefix), then each WebSocket frame with its header bytes in hex.
func render(b []byte) string {
	var sb strings.Builder
	if bytes.HasPrefix(b, []byte("HTTP/")) {
		upgraded := bytes.HasPrefix(b, []byte("HTTP/1.1 101 "))
		text := b
		if upgraded {
			i := bytes.Index(b, []byte("\r\n\r\n"))
			text, b = b[:i+4], b[i+4:]
		} else {
			b = nil
		}
		for len(text) > 0 {
			line, rest, found := bytes.Cut(text, []byte("\n"))
			if found {
				line = append(line, '\n')
			}
			fmt.Fprintf(&sb, "< %q\n", line)
			text = rest
		}
	}
	for len(b) > 0 {
		n, desc := describeFrame(b)
		if n == 0 {
			fmt.Fprintf(&sb, "raw %q\n", b)
			break
		}
		sb.WriteString(desc)
		b = b[n:]
	}
	sb.WriteString("EOF\n")
	return dateLine.ReplaceAllString(sb.String(), `< "Date: (normalized)\r\n"`)
}

func describeFrame(b []byte) (int, string) {
	if len(b) < 2 {
		return 0, ""
	}
	hdr, n := 2, int(b[1]&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return 0, ""
		}
		hdr, n = 4, int(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0, ""
		}
		hdr, n = 10, int(binary.BigEndian.Uint64(b[2:]))
	}
	if b[1]&0x80 != 0 || len(b) < hdr+n {
		return 0, ""
	}
	ops := map[byte]string{0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
	p := b[hdr : hdr+n]
	desc := fmt.Sprintf("frame hdr=%x op=%s fin=%t len=%d", b[:hdr], ops[b[0]&0x0f], b[0]&0x80 != 0, n)
	if b[0]&0x0f == 8 && n >= 2 {
		desc += fmt.Sprintf(" code=%d reason=%q\n", binary.BigEndian.Uint16(p), p[2:])
	} else {
		desc += fmt.Sprintf(" payload=%q\n", p)
	}
	return hdr + n, desc
}
