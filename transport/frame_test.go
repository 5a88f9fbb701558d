package transport

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func TestParseFrameHeader(t *testing.T) {
	text := clientFrame(finText, []byte("hello"))
	cases := []struct {
		name   string
		in     []byte
		budget int
		hdr    int
		fail   *CloseReason
	}{
		{name: "empty", in: nil, budget: 100},
		{name: "one byte", in: text[:1], budget: 100},
		{name: "no mask yet", in: text[:5], budget: 100},
		{name: "whole header", in: text, budget: 100, hdr: 6},
		{name: "16-bit length", in: clientFrameLen(finText, nil, 300)[:8], budget: 1000, hdr: 8},
		{name: "16-bit length partial", in: clientFrameLen(finText, nil, 300)[:3], budget: 1000},
		{name: "64-bit length", in: clientFrameLen(finText, nil, 70000)[:14], budget: 100000, hdr: 14},
		{name: "64-bit MSB", in: []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, budget: 100, fail: &CloseProtocolError},
		{name: "too big, decided before the mask", in: clientFrameLen(finText, nil, 70000)[:10], budget: 1000, fail: &CloseTooBig},
		{name: "exactly the budget", in: clientFrameLen(finText, nil, 1000)[:8], budget: 1000, hdr: 8},
		{name: "unmasked", in: []byte{0x81, 0x05}, budget: 100, fail: &CloseProtocolError},
		{name: "rsv1", in: []byte{0xc1, 0x85}, budget: 100, fail: &CloseProtocolError},
		{name: "rsv3", in: []byte{0x91, 0x85}, budget: 100, fail: &CloseProtocolError},
		{name: "opcode 3", in: []byte{0x83, 0x80}, budget: 100, fail: &CloseProtocolError},
		{name: "opcode 11", in: []byte{0x8b, 0x80}, budget: 100, fail: &CloseProtocolError},
		{name: "ping 126", in: []byte{0x89, 0xfe, 0, 126}, budget: 1000, fail: &CloseProtocolError},
		{name: "ping 125", in: clientFrame(finPing, bytes.Repeat([]byte("p"), 125)), budget: 0, hdr: 6},
		{name: "fragmented close", in: []byte{0x08, 0x80}, budget: 100, fail: &CloseProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, fail := parseFrameHeader(tc.in, tc.budget)
			if fail != tc.fail || h.hdrLen != tc.hdr {
				t.Fatalf("got hdrLen=%d fail=%v, want %d %v", h.hdrLen, fail, tc.hdr, tc.fail)
			}
		})
	}
}

func TestAppendTextFrameMatchesGobwas(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		p := bytes.Repeat([]byte("a"), n)
		var want bytes.Buffer
		if err := ws.WriteFrame(&want, ws.NewTextFrame(p)); err != nil {
			t.Fatal(err)
		}
		if got := AppendTextFrame(nil, p); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("n=%d: header %x, want %x", n, got[:min(len(got), 10)], want.Bytes()[:min(want.Len(), 10)])
		}
	}
}

// TestCipherMatchesNaive guards the dependency's vectorised unmasking against a
// byte-by-byte XOR, for every length around the block sizes and every offset.
func TestCipherMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		for off := range 4 {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			mask := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			want := bytes.Clone(p)
			for i := range want {
				want[i] ^= mask[(off+i)%4]
			}
			ws.Cipher(p, mask, off)
			if !bytes.Equal(p, want) {
				t.Fatalf("n=%d offset=%d: mismatch", n, off)
			}
		}
	}
}

func TestCloseFrames(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	f := appendCloseFrame(nil, 1001, long)
	if len(f) > 2+125 || !utf8.Valid(f[4:]) {
		t.Fatalf("close frame %d bytes, reason valid=%t", len(f), utf8.Valid(f[4:]))
	}
	for _, tc := range []struct {
		p    []byte
		code uint16
		fail *CloseReason
	}{
		{p: nil},
		{p: []byte{3}, fail: &CloseProtocolError},
		{p: closePayload(1000, "ok"), code: 1000},
		{p: closePayload(4999, ""), code: 4999},
		{p: closePayload(999, ""), fail: &CloseProtocolError},
		{p: closePayload(1004, ""), fail: &CloseProtocolError},
		{p: closePayload(1005, ""), fail: &CloseProtocolError},
		{p: closePayload(1006, ""), fail: &CloseProtocolError},
		{p: closePayload(1015, ""), fail: &CloseProtocolError},
		{p: closePayload(2999, ""), fail: &CloseProtocolError},
		{p: closePayload(5000, ""), fail: &CloseProtocolError},
		{p: closePayload(1000, "\xc3"), fail: &CloseInvalidUTF8},
	} {
		code, fail := parseClosePayload(tc.p)
		if code != tc.code || fail != tc.fail {
			t.Errorf("%x: got %d %v, want %d %v", tc.p, code, fail, tc.code, tc.fail)
		}
	}
}

// FuzzParseFrame checks the frame header parser against gobwas/ws's (blocking)
// header reader: whatever we accept, it reads the same way; nothing panics; a
// header that needs more bytes still needs them (or fails the same way) when it
// is cut shorter.
func FuzzParseFrame(f *testing.F) {
	f.Add(clientFrame(finText, []byte("hello")), uint16(1024))
	f.Add(clientFrameLen(finText, nil, 300)[:8], uint16(1024))
	f.Add(clientFrameLen(finText, nil, 70000)[:14], uint16(65535))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, uint16(10))
	f.Add(clientFrame(finClose, closePayload(1000, "bye")), uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, budget uint16) {
		h, fail := parseFrameHeader(b, int(budget))
		if fail != nil {
			if h.hdrLen != 0 {
				t.Fatal("failed with a header length")
			}
			switch fail {
			case &CloseProtocolError, &CloseTooBig:
			default:
				t.Fatalf("unexpected reason %+v", fail)
			}
			return
		}
		if h.hdrLen == 0 {
			if len(b) >= 14 {
				t.Fatalf("needs more than 14 bytes: %x", b)
			}
			return
		}
		if h.hdrLen > len(b) || h.hdrLen > ws.MaxHeaderSize || h.payLen < 0 {
			t.Fatalf("hdrLen %d payLen %d for %d bytes", h.hdrLen, h.payLen, len(b))
		}
		if h.op.IsControl() && (h.payLen > 125 || !h.fin) {
			t.Fatal("bad control frame accepted")
		}
		if !h.op.IsControl() && h.payLen > int(budget) {
			t.Fatal("budget ignored")
		}
		r := bytes.NewReader(b)
		g, err := ws.ReadHeader(r)
		if err != nil {
			t.Fatalf("gobwas refuses what we accept: %v", err)
		}
		if consumed := len(b) - r.Len(); consumed != h.hdrLen {
			t.Fatalf("header length %d, gobwas %d", h.hdrLen, consumed)
		}
		if g.Fin != h.fin || g.OpCode != h.op || g.Length != int64(h.payLen) || !g.Masked || g.Mask != h.mask || g.Rsv != 0 {
			t.Fatalf("got %+v, gobwas %+v", h, g)
		}
		// Any prefix of an accepted header is incomplete, never a different verdict
		// other than an early refusal of the same frame.
		for i := range h.hdrLen {
			p, pf := parseFrameHeader(b[:i], int(budget))
			if p.hdrLen != 0 || pf != nil {
				t.Fatalf("prefix %d: hdrLen %d fail %v", i, p.hdrLen, pf)
			}
		}
	})
}
