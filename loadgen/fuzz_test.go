package loadgen

import (
	"bytes"
	"testing"
)

// FuzzClientFrame feeds arbitrary server bytes to the frame parser, whole and split at
// an arbitrary point as a non-blocking read would split them, and checks that both
// give the same frames, that nothing panics, and that consumed lengths add up.
func FuzzClientFrame(f *testing.F) {
	f.Add(serverFrame(true, opText, []byte(`{"event":"e","channel":"c","data":"seq:1:ts:2:"}`)), 3)
	f.Add(append(serverFrame(false, opText, []byte("ab")), serverFrame(true, opContinuation, []byte("cd"))...), 1)
	f.Add(serverFrame(true, opBinary, bytes.Repeat([]byte{1}, 300)), 2)
	f.Add(serverFrame(true, opClose, []byte{0x10, 0x68}), 0)
	f.Add([]byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}, 5)
	f.Add([]byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, 1)
	const max = 4096
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		whole, wholeErr := parseAll(data, len(data), max)
		if split < 0 {
			split = -split
		}
		parts, partsErr := parseAll(data, split%(len(data)+1), max)
		if (wholeErr == nil) != (partsErr == nil) {
			t.Fatalf("whole err %v, split err %v", wholeErr, partsErr)
		}
		if len(whole) != len(parts) {
			t.Fatalf("whole gave %d frames, split %d", len(whole), len(parts))
		}
		for i := range whole {
			if whole[i] != parts[i] {
				t.Fatalf("frame %d: %q vs %q", i, whole[i], parts[i])
			}
		}
		// The message scanner must not panic on any payload.
		for _, p := range whole {
			_, _ = scanMessage([]byte(p[2:]))
			_, _, _ = ParsePayload([]byte(p[2:]))
		}
	})
}

// parseAll parses frames from data delivered in two reads (data[:split], then the
// rest), keeping partial bytes between them as the loop does. Frames are returned as
// "fin op payload" strings.
func parseAll(data []byte, split, max int) ([]string, error) {
	var out []string
	var pending []byte
	for _, chunk := range [][]byte{data[:split], data[split:]} {
		pending = append(pending, chunk...)
		for {
			f, n, err := parseFrame(pending, max)
			if err != nil {
				return out, err
			}
			if n == 0 {
				break
			}
			if n > len(pending) || len(f.payload) > max || len(f.payload) > n {
				panic("parseFrame: inconsistent lengths")
			}
			fin := byte('0')
			if f.fin {
				fin = '1'
			}
			out = append(out, string([]byte{fin, '0' + f.op})+string(f.payload))
			pending = pending[n:]
		}
	}
	return out, nil
}
