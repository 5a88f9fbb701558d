package transport

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	cases := []struct {
		head    string
		upgrade bool
		bad     bool
	}{
		{head: upgradeRequest("/app/k"), upgrade: true},
		{head: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{head: "GET / HTTP/1.1\r\nupgrade: h2c, WebSocket\r\n\r\n", upgrade: true},
		{head: "GET / HTTP/1.1\r\nUpgrade: websocketx\r\n\r\n"},
		{head: "POST /apps/1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"},
		{head: "GET / HTTP/1.0\r\n\r\n"},
		{head: "\r\n\r\n", bad: true},
		{head: "GET /\r\n\r\n", bad: true},
		{head: "GET  / HTTP/1.1\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1 \r\n\r\n", bad: true},
		{head: "G(T / HTTP/1.1\r\n\r\n", bad: true},
		{head: "GET / HTTP/x.1\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\n: empty name\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\nX: a\nb\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\nX: a\x00\r\n\r\n", bad: true},
		{head: "GET / HTTP/1.1\r\n\r\n\r\n", bad: true},
	}
	for _, tc := range cases {
		up, err := parseHead([]byte(tc.head))
		if up != tc.upgrade || (err != nil) != tc.bad {
			t.Errorf("%q: upgrade=%t err=%v", tc.head, up, err)
		}
	}
}

func TestSplitTarget(t *testing.T) {
	for _, tc := range []struct{ in, path, query string }{
		{"/app/key?protocol=7&client=js", "/app/key", "protocol=7&client=js"},
		{"/app/k%20ey", "/app/k ey", ""},
		{"http://host/app/key?x=1", "/app/key", "x=1"},
		{"*", "*", ""},
	} {
		p, q := splitTarget([]byte(tc.in))
		if p != tc.path || q != tc.query {
			t.Errorf("%q: %q %q", tc.in, p, q)
		}
	}
}

func TestUpgradeRequestFields(t *testing.T) {
	var got *UpgradeRequest
	u := newUpgrader(acceptFunc(func(r *UpgradeRequest) (any, error) { got = r; return "v", nil }))
	req := strings.Replace(upgradeRequest("/app/key?protocol=7"), "Origin: http://example.com", "origin: https://a.example", 1)
	resp, v, _, _, ok := u.upgrade([]byte(req), "127.0.0.1:5000")
	if !ok || v != "v" || !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 Switching Protocols\r\n")) {
		t.Fatalf("ok=%t v=%v resp=%q", ok, v, resp)
	}
	want := UpgradeRequest{Path: "/app/key", RawQuery: "protocol=7", Origin: "https://a.example", RemoteAddr: "127.0.0.1:5000"}
	if *got != want {
		t.Fatalf("got %+v", *got)
	}
}

type acceptFunc func(*UpgradeRequest) (any, error)

func (f acceptFunc) Accept(r *UpgradeRequest) (any, error) { return f(r) }
func (acceptFunc) OnOpen(*Conn)                            {}
func (acceptFunc) OnMessage(*Conn, []byte)                 {}
func (acceptFunc) OnIdle(*Conn)                            {}
func (acceptFunc) OnClose(*Conn, CloseReason)              {}

// FuzzHandshake runs arbitrary bytes through the head path the loop uses: find the
// end of the head, parse it, and for an upgrade run gobwas/ws's Upgrader over it.
// Nothing may panic; an upgrade either yields a 101 or an error status, and Accept
// only ever sees a request gobwas found valid.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(upgradeRequest("/app/key?protocol=7")))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("GET /app/k HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n"))
	f.Add([]byte(upgradeRequest("/app/forbidden")))
	f.Add([]byte("\x00\x01garbage\r\n\r\n"))
	h := newTestHandler()
	u := newUpgrader(h)
	f.Fuzz(func(t *testing.T, b []byte) {
		end := bytes.Index(b, headEnd)
		if end < 0 {
			return
		}
		head := b[:end+len(headEnd)]
		upgrade, err := parseHead(head)
		if err != nil || !upgrade {
			return
		}
		resp, _, status, _, ok := u.upgrade(bytes.Clone(head), "192.0.2.1:1")
		switch {
		case ok:
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")) || !bytes.HasSuffix(resp, headEnd) {
				t.Fatalf("101 response %q", resp)
			}
		case status < 400 || status > 599:
			t.Fatalf("status %d", status)
		default:
			r := appendHTTPError(nil, status, "x")
			if !bytes.HasPrefix(r, []byte("HTTP/1.1 ")) || http.StatusText(status) == "" && !bytes.Contains(r, []byte(" Error\r\n")) {
				t.Fatalf("error response %q", r)
			}
		}
	})
}
