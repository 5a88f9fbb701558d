package transport

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
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

func withEchoHTTP(c *Config) {
	c.HTTP = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s body=%q\n", r.Method, r.URL.RequestURI(), body)
	})
}

func TestTranscripts(t *testing.T) {
	for _, tc := range transcripts() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHandler()
			cfg := Config{Handler: h, Loops: 1}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := startServer(t, cfg)
			nc, err := net.Dial("tcp", s.Addr())
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
			if tc.onClose == "" {
				if st.Upgraded != 0 {
					t.Errorf("Upgraded = %d, want 0", st.Upgraded)
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
