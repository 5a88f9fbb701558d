package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestAcceptKeyRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	var got [28]byte
	acceptKey(&got, []byte("dGhlIHNhbXBsZSBub25jZQ=="))
	if string(got[:]) != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("got %s", got)
	}
}

func TestRequestTemplate(t *testing.T) {
	tmpl := newRequestTemplate("127.0.0.1:6001", "/app/KEY?protocol=7")
	var seed [16]byte
	var k1, k2 [keyLen]byte
	connKey(&k1, &seed, 1)
	connKey(&k2, &seed, 2)
	if k1 == k2 {
		t.Fatal("two connections share a key")
	}
	b := tmpl.appendRequest([]byte("junk"), k1[:])[4:]
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "GET" || req.URL.String() != "/app/KEY?protocol=7" || req.Host != "127.0.0.1:6001" ||
		req.Header.Get("Sec-WebSocket-Key") != string(k1[:]) || req.Header.Get("Sec-WebSocket-Version") != "13" ||
		req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Connection") != "Upgrade" {
		t.Fatalf("request %+v", req)
	}
}

func TestParseHandshakeResponse(t *testing.T) {
	const accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	ok := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	for _, tc := range []struct {
		name string
		resp string
		n    int
		err  error
	}{
		{"ok", ok, len(ok), nil},
		{"ok with frame after", ok + "\x81\x00", len(ok), nil},
		{"header case and tokens", "HTTP/1.1 101 OK\r\nupgrade:  WebSocket \r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept:" + accept + "\r\nX-Other: 1\r\n\r\n", -1, nil},
		{"partial", ok[:len(ok)-2], 0, nil},
		{"404", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0, ErrHandshakeStatus},
		{"200", "HTTP/1.1 200 OK\r\n\r\n", 0, ErrHandshakeStatus},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", 0, ErrHandshake},
		{"wrong accept", strings.Replace(ok, accept, "AAAAMBiTxaQ9kYGzzhZRbK+xOo=", 1), 0, ErrHandshake},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0, ErrHandshake},
		{"no upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", 0, ErrHandshake},
		{"no connection", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", 0, ErrHandshake},
		{"extension", strings.Replace(ok, "\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", 1), 0, ErrHandshake},
		{"bad header line", strings.Replace(ok, "\r\n\r\n", "\r\nnocolon\r\n\r\n", 1), 0, ErrHandshake},
		{"too long", "HTTP/1.1 101 X\r\n" + strings.Repeat("a", maxHandshakeResponse), 0, ErrHandshake},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := parseHandshakeResponse([]byte(tc.resp), []byte(accept))
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err=%v, want %v", err, tc.err)
			}
			want := tc.n
			if want < 0 {
				want = len(tc.resp)
			}
			if tc.err == nil && n != want {
				t.Fatalf("n=%d, want %d", n, want)
			}
		})
	}
}
