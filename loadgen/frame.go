package loadgen

import (
	"encoding/binary"
	"fmt"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// frame is one server frame. payload aliases the buffer it was parsed from.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// parseFrame parses the server frame at the start of b. It returns the frame and how
// many bytes of b it spans, or n == 0 (and no error) when b holds only part of a frame;
// the caller keeps those bytes and calls again with more. max bounds the payload length.
//
// Server frames are never masked and, since the client offers no extension, never have
// a reserved bit set; control frames are final and at most 125 bytes; lengths use the
// minimal encoding. Anything else is ErrFrame.
func parseFrame(b []byte, max int) (f frame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return f, 0, fmt.Errorf("%w: reserved bits 0x%02x", ErrFrame, b0&0x70)
	}
	if b1&0x80 != 0 {
		return f, 0, fmt.Errorf("%w: masked", ErrFrame)
	}
	f.fin = b0&0x80 != 0
	f.op = b0 & 0x0f
	switch f.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !f.fin {
			return f, 0, fmt.Errorf("%w: fragmented control frame", ErrFrame)
		}
	default:
		return f, 0, fmt.Errorf("%w: opcode 0x%x", ErrFrame, f.op)
	}
	length := uint64(b1 & 0x7f)
	hdr := 2
	switch length {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		length = uint64(binary.BigEndian.Uint16(b[2:4]))
		if length < 126 {
			return f, 0, fmt.Errorf("%w: non-minimal 16-bit length %d", ErrFrame, length)
		}
		hdr = 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		length = binary.BigEndian.Uint64(b[2:10])
		if length>>63 != 0 {
			return f, 0, fmt.Errorf("%w: 64-bit length with the top bit set", ErrFrame)
		}
		if length <= 0xffff {
			return f, 0, fmt.Errorf("%w: non-minimal 64-bit length %d", ErrFrame, length)
		}
		hdr = 10
	}
	if f.op >= opClose && length > 125 {
		return f, 0, fmt.Errorf("%w: control frame of %d bytes", ErrFrame, length)
	}
	if length > uint64(max) {
		return f, 0, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrFrameTooBig, length, max)
	}
	end := hdr + int(length)
	if len(b) < end {
		return f, 0, nil
	}
	f.payload = b[hdr:end:end]
	return f, end, nil
}

// appendClientFrame appends a final, masked client frame with the given opcode and
// payload to dst.
func appendClientFrame(dst []byte, op byte, payload []byte, mask [4]byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= mask[i&3]
	}
	return dst
}

// closePayload returns the status code of a close frame's payload: 1005 (no status)
// when it is empty. A one-byte payload is invalid (RFC 6455 section 5.5.1).
func closePayload(p []byte) (code uint16, err error) {
	switch len(p) {
	case 0:
		return 1005, nil
	case 1:
		return 0, fmt.Errorf("%w: one-byte close payload", ErrFrame)
	}
	return binary.BigEndian.Uint16(p), nil
}
