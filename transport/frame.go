package transport

import (
	"encoding/binary"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// frameHeader is a parsed client frame header.
type frameHeader struct {
	fin    bool
	op     ws.OpCode
	mask   [4]byte
	hdrLen int // header bytes, 0 while more bytes are needed
	payLen int // payload bytes
}

// maxControlPayload is RFC 6455's limit for ping, pong and close payloads.
const maxControlPayload = 125

// parseFrameHeader parses the client frame header at the start of b, which may hold
// only part of it. budget is how many payload bytes a data frame may still carry
// (MaxMessageBytes minus what is already reassembled).
//
// It returns hdrLen == 0 and fail == nil while more bytes are needed. fail, when not
// nil, is the close reason for a frame the server must refuse (RFC 6455 section 5).
// Everything that can be decided from the bytes at hand is decided at once, so a bad
// or oversized frame is refused before its payload is buffered.
func parseFrameHeader(b []byte, budget int) (h frameHeader, fail *CloseReason) {
	if len(b) < 2 {
		return h, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	h.op = ws.OpCode(b0 & 0x0f)
	if b0&0x70 != 0 { // RSV1-3: no extension is ever negotiated
		return h, &CloseProtocolError
	}
	switch h.op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
	default:
		return h, &CloseProtocolError
	}
	if b1&0x80 == 0 { // clients must mask (section 5.1)
		return h, &CloseProtocolError
	}
	l7 := int(b1 & 0x7f)
	control := h.op.IsControl()
	if control && (!h.fin || l7 > maxControlPayload) {
		return h, &CloseProtocolError
	}
	n := 2
	var length uint64
	switch l7 {
	case 126:
		if len(b) < 4 {
			return h, nil
		}
		length = uint64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, nil
		}
		length = binary.BigEndian.Uint64(b[2:])
		if length>>63 != 0 { // the most significant bit must be 0
			return h, &CloseProtocolError
		}
		n = 10
	default:
		length = uint64(l7)
	}
	if !control && length > uint64(max(budget, 0)) {
		return h, &CloseTooBig
	}
	if len(b) < n+4 {
		return h, nil
	}
	copy(h.mask[:], b[n:n+4])
	h.hdrLen = n + 4
	h.payLen = int(length)
	return h, nil
}

// AppendTextFrame appends an unmasked, unfragmented server text frame holding payload to
// dst and returns the extended slice. Build a frame once and hand the same bytes to
// every recipient with Server.Fanout or Conn.WriteFrame.
func AppendTextFrame(dst, payload []byte) []byte {
	return append(appendHeader(dst, 0x80|byte(ws.OpText), len(payload)), payload...)
}

// appendHeader appends an unmasked server frame header.
func appendHeader(dst []byte, b0 byte, n int) []byte {
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// appendCloseFrame appends a close frame; code 0 means an empty payload.
func appendCloseFrame(dst []byte, code uint16, text string) []byte {
	if code == 0 {
		return append(dst, 0x80|byte(ws.OpClose), 0)
	}
	text = truncateUTF8(strings.ToValidUTF8(text, ""), maxControlPayload-2)
	dst = append(dst, 0x80|byte(ws.OpClose), byte(2+len(text)), byte(code>>8), byte(code))
	return append(dst, text...)
}

// appendPong appends a pong frame answering a ping with payload p (at most 125 bytes).
func appendPong(dst, p []byte) []byte {
	return append(append(dst, 0x80|byte(ws.OpPong), byte(len(p))), p...)
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 section 7.4 and the IANA registry).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// parseClosePayload checks a received close payload. It returns the peer's code
// (0 when the payload is empty) or the reason to fail the connection with.
func parseClosePayload(p []byte) (code uint16, fail *CloseReason) {
	switch {
	case len(p) == 0:
		return 0, nil
	case len(p) == 1:
		return 0, &CloseProtocolError
	}
	code = binary.BigEndian.Uint16(p)
	if !validCloseCode(code) {
		return 0, &CloseProtocolError
	}
	if !utf8.Valid(p[2:]) {
		return 0, &CloseInvalidUTF8
	}
	return code, nil
}
