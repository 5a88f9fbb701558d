package loadgen

import (
	"bytes"
	"errors"
	"testing"
)

// serverFrame builds an unmasked frame by hand, with the minimal length encoding.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

func TestParseFrame(t *testing.T) {
	long := bytes.Repeat([]byte("y"), 300)
	huge := bytes.Repeat([]byte("z"), 70000)
	for _, tc := range []struct {
		name    string
		in      []byte
		fin     bool
		op      byte
		payload []byte
	}{
		{"empty text", serverFrame(true, opText, nil), true, opText, []byte{}},
		{"short text", serverFrame(true, opText, []byte("hello")), true, opText, []byte("hello")},
		{"16-bit length", serverFrame(true, opBinary, long), true, opBinary, long},
		{"64-bit length", serverFrame(true, opText, huge), true, opText, huge},
		{"first fragment", serverFrame(false, opText, []byte("ab")), false, opText, []byte("ab")},
		{"continuation", serverFrame(true, opContinuation, []byte("cd")), true, opContinuation, []byte("cd")},
		{"ping", serverFrame(true, opPing, []byte("p")), true, opPing, []byte("p")},
		{"pong", serverFrame(true, opPong, nil), true, opPong, []byte{}},
		{"close", serverFrame(true, opClose, []byte{0x03, 0xe8}), true, opClose, []byte{0x03, 0xe8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every prefix is incomplete, never an error.
			for i := 0; i < len(tc.in); i++ {
				_, n, err := parseFrame(tc.in[:i], 1<<20)
				if n != 0 || err != nil {
					t.Fatalf("prefix %d/%d: n=%d err=%v, want 0, nil", i, len(tc.in), n, err)
				}
			}
			trailing := append(append([]byte(nil), tc.in...), 0x81, 0x00)
			f, n, err := parseFrame(trailing, 1<<20)
			if err != nil || n != len(tc.in) {
				t.Fatalf("n=%d err=%v, want %d", n, err, len(tc.in))
			}
			if f.fin != tc.fin || f.op != tc.op || !bytes.Equal(f.payload, tc.payload) {
				t.Fatalf("got fin=%v op=%d len=%d", f.fin, f.op, len(f.payload))
			}
		})
	}
}

func TestParseFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"masked", []byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, ErrFrame},
		{"rsv1", []byte{0xc1, 0x00}, ErrFrame},
		{"rsv3", []byte{0x91, 0x00}, ErrFrame},
		{"opcode 3", []byte{0x83, 0x00}, ErrFrame},
		{"opcode 0xb", []byte{0x8b, 0x00}, ErrFrame},
		{"fragmented ping", []byte{0x09, 0x00}, ErrFrame},
		{"long close", append([]byte{0x88, 126, 0, 126}, make([]byte, 126)...), ErrFrame},
		{"non-minimal 16", []byte{0x81, 126, 0, 5}, ErrFrame},
		{"non-minimal 64", []byte{0x81, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, ErrFrame},
		{"top bit 64", []byte{0x81, 127, 0x80, 0, 0, 0, 0, 1, 0, 0}, ErrFrame},
		{"over limit", []byte{0x81, 126, 0x10, 0x00}, ErrFrameTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseFrame(tc.in, 1024)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err=%v, want %v", err, tc.want)
			}
		})
	}
}

func TestAppendClientFrame(t *testing.T) {
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	// RFC 6455 section 5.7: a masked "Hello".
	got := appendClientFrame(nil, opText, []byte("Hello"), mask)
	want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	for _, n := range []int{125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{'a'}, n)
		b := appendClientFrame(nil, opBinary, p, mask)
		// Unmask and parse as if it were a server frame.
		hdr := len(b) - n - 4
		m := b[hdr : hdr+4]
		un := append([]byte{b[0], b[1] &^ 0x80}, b[2:hdr]...)
		for i := 0; i < n; i++ {
			un = append(un, b[hdr+4+i]^m[i&3])
		}
		f, used, err := parseFrame(un, 1<<20)
		if err != nil || used != len(un) || !bytes.Equal(f.payload, p) {
			t.Fatalf("n=%d: used=%d err=%v", n, used, err)
		}
	}
}

func TestClosePayload(t *testing.T) {
	if c, err := closePayload(nil); c != 1005 || err != nil {
		t.Fatalf("empty: %d %v", c, err)
	}
	if _, err := closePayload([]byte{3}); !errors.Is(err, ErrFrame) {
		t.Fatalf("one byte: %v", err)
	}
	if c, err := closePayload([]byte{0x10, 0x68, 'x'}); c != 4200 || err != nil {
		t.Fatalf("4200: %d %v", c, err)
	}
}
