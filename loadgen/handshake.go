package loadgen

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// maxHandshakeResponse bounds the 101 response headers a connection buffers.
const maxHandshakeResponse = 4096

// websocketGUID is the fixed suffix of RFC 6455 section 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// keyLen is the length of a base64 Sec-WebSocket-Key (16 bytes encoded).
const keyLen = 24

// requestTemplate is a handshake request with a keyLen-byte placeholder for the key, so
// that each dial copies the template and overwrites the key without formatting.
type requestTemplate struct {
	b      []byte
	keyOff int
}

func newRequestTemplate(host, path string) requestTemplate {
	var b []byte
	b = append(b, "GET "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	off := len(b)
	b = append(b, bytes.Repeat([]byte{'A'}, keyLen)...)
	b = append(b, "\r\n\r\n"...)
	return requestTemplate{b: b, keyOff: off}
}

// appendRequest appends the request for key (keyLen bytes) to dst.
func (t requestTemplate) appendRequest(dst []byte, key []byte) []byte {
	start := len(dst)
	dst = append(dst, t.b...)
	copy(dst[start+t.keyOff:], key)
	return dst
}

// connKey derives connection id's Sec-WebSocket-Key from the pool's random seed, so
// that no key has to be stored while the handshake is in flight.
func connKey(dst *[keyLen]byte, seed *[16]byte, id uint64) {
	var in [24]byte
	copy(in[:16], seed[:])
	binary.LittleEndian.PutUint64(in[16:], id)
	sum := sha256.Sum256(in[:])
	base64.StdEncoding.Encode(dst[:], sum[:16])
}

// acceptKey is the Sec-WebSocket-Accept value a server must answer for key.
func acceptKey(dst *[28]byte, key []byte) {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte(websocketGUID))
	var sum [sha1.Size]byte
	base64.StdEncoding.Encode(dst[:], h.Sum(sum[:0]))
}

// parseHandshakeResponse checks the server's answer to an upgrade request. It returns
// how many bytes of b the response headers span (frames may follow them in the same
// read), or n == 0 when the headers are not complete yet.
func parseHandshakeResponse(b []byte, accept []byte) (n int, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > maxHandshakeResponse {
			return 0, fmt.Errorf("%w: headers longer than %d bytes", ErrHandshake, maxHandshakeResponse)
		}
		return 0, nil
	}
	if end > maxHandshakeResponse {
		return 0, fmt.Errorf("%w: headers longer than %d bytes", ErrHandshake, maxHandshakeResponse)
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"; the reason phrase is free text.
	proto, status, _ := bytes.Cut(line, []byte(" "))
	code, _, _ := bytes.Cut(status, []byte(" "))
	if !bytes.Equal(proto, []byte("HTTP/1.1")) {
		return 0, fmt.Errorf("%w: status line %q", ErrHandshake, truncate(line))
	}
	if !bytes.Equal(code, []byte("101")) {
		return 0, fmt.Errorf("%w: %q", ErrHandshakeStatus, truncate(line))
	}
	var upgrade, connection, acceptOK bool
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok || len(name) == 0 {
			return 0, fmt.Errorf("%w: header line %q", ErrHandshake, truncate(h))
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(value, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			connection = hasToken(value, "upgrade")
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			acceptOK = bytes.Equal(value, accept)
			if !acceptOK {
				return 0, fmt.Errorf("%w: Sec-WebSocket-Accept %q, want %q", ErrHandshake, truncate(value), accept)
			}
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Extensions")),
			bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			// The client offered neither; RFC 6455 4.1 says fail the connection.
			return 0, fmt.Errorf("%w: unrequested %s", ErrHandshake, truncate(name))
		}
	}
	switch {
	case !upgrade:
		return 0, fmt.Errorf("%w: no Upgrade: websocket", ErrHandshake)
	case !connection:
		return 0, fmt.Errorf("%w: no Connection: upgrade", ErrHandshake)
	case !acceptOK:
		return 0, fmt.Errorf("%w: no Sec-WebSocket-Accept", ErrHandshake)
	}
	return end + 4, nil
}

// hasToken reports whether the comma-separated header value lists token (ASCII case
// insensitive).
func hasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var t []byte
		t, value, _ = bytes.Cut(value, []byte(","))
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(token)) {
			return true
		}
	}
	return false
}

// truncate keeps error messages short when a peer sends garbage.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
