package transport

// The conformance suite's raw client (see conformance_test.go): it dials, upgrades,
// writes exact bytes, and turns what the server sends into events, checking the
// server's own frames against RFC 6455 on the way.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// --- the client -----------------------------------------------------------------------

// confConn is a raw client connection. A goroutine reads everything the server sends
// as it arrives, so that a reset after the server's last bytes cannot discard them;
// the test goroutine parses the bytes into events after its writes.
type confConn struct {
	nc   net.Conn
	wake chan struct{} // a token after each read
	done chan struct{} // closed when the reader returns

	mu  sync.Mutex
	buf []byte // read, not yet parsed
	got int    // bytes read in all
	err error  // how the stream ended

	// The events parsed so far, and the parser's state (the test goroutine only).
	evs          []event
	ended        bool // evs ends with evEnd
	msg          []byte
	msgOp        ws.OpCode
	inMsg        bool
	clientClosed bool // the client has sent a close frame: it does not answer the server's
}

func dialConf(addr string, deadline time.Time) (*confConn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(deadline)
	if _, err := io.WriteString(nc, upgradeRequest("/app/conformance")); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("upgrade request: %w", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("upgrade response: %w", err)
	}
	_ = resp.Body.Close()
	// The accept value for RFC 6455's sample key (section 1.3).
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		_ = nc.Close()
		return nil, fmt.Errorf("upgrade: status %d, Sec-WebSocket-Accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	pre, _ := br.Peek(br.Buffered())
	c := &confConn{nc: nc, wake: make(chan struct{}, 1), done: make(chan struct{}), buf: bytes.Clone(pre)}
	go c.read()
	return c, nil
}

func (c *confConn) read() {
	defer close(c.done)
	b := make([]byte, 32<<10)
	for {
		n, err := c.nc.Read(b)
		c.mu.Lock()
		c.buf = append(c.buf, b[:n]...)
		c.got += n
		if err != nil {
			c.err = err
		}
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// received reports how many bytes the server has sent so far.
func (c *confConn) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

func (c *confConn) close() {
	_ = c.nc.Close()
	<-c.done
}

// serverFrame is a parsed server frame.
type serverFrame struct {
	fin bool
	op  ws.OpCode
	p   []byte
}

// errProtocol marks a server frame that breaks RFC 6455 itself.
var errProtocol = errors.New("server broke RFC 6455")

// parseServerFrame parses the frame at the start of b: n = 0 while more bytes are
// needed. It checks what RFC 6455 asks of a server's frames (section 5.2: no RSV bit
// without an extension, known opcodes, the minimal length encoding and a zero top
// bit; 5.1: unmasked; 5.5: control frames unfragmented and at most 125 bytes).
func parseServerFrame(b []byte) (f serverFrame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	f.fin, f.op = b[0]&0x80 != 0, ws.OpCode(b[0]&0x0f)
	if b[0]&0x70 != 0 {
		return f, 0, fmt.Errorf("%w (5.2): RSV bits set in %#02x", errProtocol, b[0])
	}
	switch f.op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
	default:
		return f, 0, fmt.Errorf("%w (5.2): reserved opcode %d", errProtocol, f.op)
	}
	if b[1]&0x80 != 0 {
		return f, 0, fmt.Errorf("%w (5.1): masked server frame", errProtocol)
	}
	hdr, l := 2, uint64(b[1]&0x7f)
	switch l {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		hdr, l = 4, uint64(binary.BigEndian.Uint16(b[2:]))
		if l < 126 {
			return f, 0, fmt.Errorf("%w (5.2): length %d not in the minimal encoding", errProtocol, l)
		}
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		hdr, l = 10, binary.BigEndian.Uint64(b[2:])
		if l>>63 != 0 || l <= 0xffff {
			return f, 0, fmt.Errorf("%w (5.2): 64-bit length %#x", errProtocol, l)
		}
	}
	if f.op.IsControl() && (!f.fin || l > 125) {
		return f, 0, fmt.Errorf("%w (5.5): control frame fin=%t length %d", errProtocol, f.fin, l)
	}
	if uint64(len(b)-hdr) < l {
		return f, 0, nil
	}
	n = hdr + int(l)
	f.p = bytes.Clone(b[hdr:n])
	return f, n, nil
}

type evKind uint8

const (
	evText evKind = iota
	evBinary
	evPing
	evPong
	evClose
	evEnd // the stream ended: err nil for a clean EOF
)

// event is one thing the server did: a whole message (fragments joined), a control
// frame, or the end of the stream.
type event struct {
	kind evKind
	p    []byte // message or control payload
	code uint16 // evClose: the status code, 0 without one
	err  error  // evEnd: nil for EOF; a timeout, reset or broken frame otherwise
}

func (e event) String() string {
	switch e.kind {
	case evText:
		return "text" + showPayload(e.p)
	case evBinary:
		return "binary" + showPayload(e.p)
	case evPing:
		return "ping" + showPayload(e.p)
	case evPong:
		return "pong" + showPayload(e.p)
	case evClose:
		if len(e.p) == 0 {
			return "close (no status)"
		}
		return fmt.Sprintf("close %d %q", e.code, e.p[2:])
	}
	if e.err == nil {
		return "EOF"
	}
	return "end: " + e.err.Error()
}

func showPayload(p []byte) string {
	if len(p) > 40 {
		return fmt.Sprintf("(%d bytes) %q…", len(p), p[:40])
	}
	return fmt.Sprintf("(%d bytes) %q", len(p), p)
}

// errNoFrame is nextFrame's timeout.
var errNoFrame = errors.New("no frame")

// nextFrame waits until deadline for the next whole server frame.
func (c *confConn) nextFrame(deadline time.Time) (serverFrame, error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		c.mu.Lock()
		f, n, err := parseServerFrame(c.buf)
		end, partial := c.err, len(c.buf)
		if n > 0 {
			c.buf = c.buf[n:]
		}
		c.mu.Unlock()
		switch {
		case err != nil:
			return f, err
		case n > 0:
			return f, nil
		case end != nil && partial > 0:
			return f, fmt.Errorf("stream ended inside a frame (%d bytes): %w", partial, end)
		case end != nil:
			return f, end
		}
		select {
		case <-c.wake:
		case <-timer.C:
			return f, errNoFrame
		}
	}
}

// pump turns what the server has sent into events until enough says so, the stream
// ends, or deadline passes. final: the deadline is the case's, so passing it ends
// the stream (a server that never closes). It answers the server's close frame with
// one of its own (echoing the code) unless the client has sent a close already.
func (c *confConn) pump(deadline time.Time, final bool, enough func() bool) {
	for !c.ended && !enough() {
		f, err := c.nextFrame(deadline)
		switch {
		case errors.Is(err, errNoFrame) && !final:
			return
		case errors.Is(err, errNoFrame):
			c.end(fmt.Errorf("no frame and no EOF within %v", confTimeout))
			return
		case errors.Is(err, io.EOF):
			c.end(nil)
			return
		case err != nil:
			c.end(err)
			return
		}
		c.handle(f)
	}
}

func (c *confConn) end(err error) {
	c.evs = append(c.evs, event{kind: evEnd, err: err})
	c.ended = true
}

func (c *confConn) handle(f serverFrame) {
	switch f.op {
	case ws.OpText, ws.OpBinary, ws.OpContinuation:
		if (f.op == ws.OpContinuation) != c.inMsg {
			c.end(fmt.Errorf("%w (5.4): data frame op %d, fin %t, with a message in progress %t", errProtocol, f.op, f.fin, c.inMsg))
			return
		}
		if !c.inMsg {
			c.msgOp, c.msg = f.op, nil
		}
		c.msg, c.inMsg = append(c.msg, f.p...), !f.fin
		switch {
		case c.inMsg:
		case c.msgOp == ws.OpBinary:
			c.evs = append(c.evs, event{kind: evBinary, p: c.msg})
		case !utf8.Valid(c.msg):
			c.end(fmt.Errorf("%w (8.1): text message of invalid UTF-8 %s", errProtocol, showPayload(c.msg)))
		default:
			c.evs = append(c.evs, event{kind: evText, p: c.msg})
		}
	case ws.OpPing:
		c.evs = append(c.evs, event{kind: evPing, p: f.p})
	case ws.OpPong:
		c.evs = append(c.evs, event{kind: evPong, p: f.p})
	case ws.OpClose:
		e := event{kind: evClose, p: f.p}
		switch {
		case len(f.p) == 1:
			c.end(fmt.Errorf("%w (5.5.1): close payload of 1 byte", errProtocol))
			return
		case len(f.p) >= 2:
			e.code = binary.BigEndian.Uint16(f.p)
			if !validCloseToSend(e.code) {
				c.end(fmt.Errorf("%w (7.4): close code %d", errProtocol, e.code))
				return
			}
			if !utf8.Valid(f.p[2:]) {
				c.end(fmt.Errorf("%w (5.5.1): close reason of invalid UTF-8 %q", errProtocol, f.p[2:]))
				return
			}
		}
		c.evs = append(c.evs, e)
		if !c.clientClosed {
			var reply []byte
			if e.code != 0 {
				reply = binary.BigEndian.AppendUint16(nil, e.code)
			}
			_, _ = c.nc.Write(clientFrame(finClose, reply)) // the server may be gone; the end event tells
			c.clientClosed = true
		}
	}
}

// validCloseToSend is the test's own copy of RFC 6455 7.4's rule (not frame.go's): the
// codes an endpoint may put in a close frame.
func validCloseToSend(code uint16) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

// sentClose reports whether the client's bytes hold a close frame (with no RSV bit),
// in which case the client does not answer the server's close.
func sentClose(writes []confWrite) bool {
	var all []byte
	for _, w := range writes {
		all = append(all, w.b...)
	}
	for len(all) >= 2 {
		if all[0]&0x7f == 0x08 {
			return true
		}
		hdr, l := 2, uint64(all[1]&0x7f)
		switch {
		case l == 126 && len(all) >= 4:
			hdr, l = 4, uint64(binary.BigEndian.Uint16(all[2:]))
		case l == 127 && len(all) >= 10:
			hdr, l = 10, binary.BigEndian.Uint64(all[2:])
		case l >= 126:
			return false
		}
		if all[1]&0x80 != 0 {
			hdr += 4
		}
		if uint64(len(all)-hdr) < l {
			return false
		}
		all = all[hdr+int(l):]
	}
	return false
}
