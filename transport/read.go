package transport

import (
	"bytes"
	"net"
	"os"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// onReadable reads once into the loop's buffer and hands the bytes to the head or
// frame parser. The event is level-triggered, so data left in the socket brings the
// loop back on its next wake-up; one read per connection per wake-up keeps loops fair.
func (l *loop) onReadable(c *Conn) {
	n, err := unix.Read(int(c.fd), l.buf)
	if err != nil {
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		l.finish(c, CloseConnLost)
		return
	}
	if n <= 0 { // EOF
		l.finish(c, CloseConnLost)
		return
	}
	bump(&l.st.bytesIn, uint64(n))
	c.lastRead = l.tickNow()
	c.flags &^= fPinged // any input answers a ping
	data := l.buf[:n]
	switch {
	case c.flags&fReadDead != 0:
		// discarding until EOF or the close timeout
	case c.state == stHandshake:
		l.readHead(c, data)
	default:
		l.readFrames(c, data)
	}
}

// --- request head ------------------------------------------------------------------

func (l *loop) readHead(c *Conn, data []byte) {
	buf, from := data, 0
	x := c.ext
	inExt := x != nil && len(x.in) > 0 // buf is x.in
	if inExt {
		from = max(len(x.in)-3, 0) // the terminator may straddle the two reads
		x.in = append(x.in, data...)
		buf = x.in
	}
	if c.flags&fProxy != 0 {
		n, st := l.readProxy(c, buf)
		switch st {
		case proxyMore:
			l.keepHead(c, buf, inExt)
			return
		case proxyRefused:
			return
		}
		from = 0
		if n > 0 {
			buf = buf[n:]
			if inExt {
				x.in = x.in[:copy(x.in, buf)]
				buf = x.in
			}
			if len(buf) == 0 {
				if inExt {
					x.in = nil
					c.maybeRelease()
				}
				return
			}
		}
	}
	end := bytes.Index(buf[from:], headEnd)
	if end < 0 {
		if len(buf) > l.cfg.MaxHeaderBytes {
			l.rejectHead(c, refHeadTooLarge, 431, "request header fields too large")
			return
		}
		l.keepHead(c, buf, inExt)
		return
	}
	headLen := from + end + len(headEnd)
	if headLen > l.cfg.MaxHeaderBytes {
		l.rejectHead(c, refHeadTooLarge, 431, "request header fields too large")
		return
	}
	if x != nil {
		x.in = nil // buf still holds the bytes; the partial buffer is done
		c.maybeRelease()
	}
	head := buf[:headLen]
	upgrade, err := parseHead(head)
	switch {
	case err != nil:
		l.rejectHead(c, refBadRequest, 400, "malformed request")
	case !upgrade:
		l.handoff(c, buf)
	default:
		l.upgrade(c, head, buf[headLen:])
	}
}

// keepHead keeps a partial head for the next read, unless it is kept already.
func (l *loop) keepHead(c *Conn, buf []byte, inExt bool) {
	if inExt {
		return
	}
	x := c.extOrNew()
	x.in = append(make([]byte, 0, min(2*len(buf), l.cfg.MaxHeaderBytes+readBufSize)), buf...)
}

type proxyStage uint8

const (
	proxyDone    proxyStage = iota // header consumed, or none from an untrusted source: go on with HTTP
	proxyMore                      // more bytes needed
	proxyRefused                   // the connection is being closed
)

// readProxy runs the PROXY stage of the handshake on the head bytes read so far and
// returns the length of the header to skip.
func (l *loop) readProxy(c *Conn, buf []byte) (int, proxyStage) {
	p := &l.peers[c.slot]
	if p.bits&peerTrusted == 0 {
		switch proxySignature(buf) {
		case sigNone:
			c.flags &^= fProxy
			return 0, proxyDone
		case sigPartial:
			return 0, proxyMore
		}
		l.rejectHead(c, refProxyUntrusted, 0, "")
		return 0, proxyRefused
	}
	h, n, err := parseProxy(buf)
	switch {
	case err == errProxyMissing:
		l.rejectHead(c, refProxyMissing, 0, "")
		return 0, proxyRefused
	case err != nil:
		l.log.Debug("transport: PROXY header refused", "from", p.addrPort(), "err", err)
		l.rejectHead(c, refProxyInvalid, 0, "")
		return 0, proxyRefused
	case n == 0:
		return 0, proxyMore
	}
	c.flags &^= fProxy
	if !h.local {
		*p = peerFrom(h.src)
		p.bits |= peerTrusted | peerProxied
	}
	return n, proxyDone
}

// rejectHead refuses a handshake, counted under why: an HTTP error when status is
// not 0 (the PROXY refusals send nothing, as the spec asks), then the close.
func (l *loop) rejectHead(c *Conn, why refusal, status int, msg string) {
	bump(&l.st.refused[why], 1)
	c.flags |= fReadDead
	if x := c.ext; x != nil {
		x.in = nil
	}
	if status != 0 {
		l.closeBuf = appendHTTPError(l.closeBuf[:0], status, msg)
		l.send(c, l.closeBuf, true)
	}
	if c.state == stHandshake {
		l.beginClose(c, CloseReason{}, 0, "")
	}
}

// releaseIP gives back the per-IP connection c holds, if any (exactly once).
func (l *loop) releaseIP(c *Conn) {
	if l.peers == nil {
		return
	}
	if p := &l.peers[c.slot]; p.bits&peerHeld != 0 {
		p.bits &^= peerHeld
		l.srv.limits.release(p.ip, l.now)
	}
}

func (l *loop) upgrade(c *Conn, head, rest []byte) {
	if l.draining {
		l.rejectHead(c, refDraining, 503, "server draining; reconnect")
		return
	}
	if lim := l.srv.limits; lim != nil {
		p := &l.peers[c.slot]
		held, why, ok := lim.admit(p.ip, l.now)
		if !ok {
			msg := "too many connections from this address"
			if why == refUpgradesPerIP {
				msg = "too many connection attempts from this address"
			}
			l.rejectHead(c, why, 429, msg)
			return
		}
		if held {
			p.bits |= peerHeld
		}
	}
	resp, value, status, msg, ok := l.up.upgrade(head, c.RemoteAddr())
	if !ok {
		l.releaseIP(c)
		why := refBadRequest
		if l.up.acceptEr != nil {
			why = refRejected
		}
		l.rejectHead(c, why, status, msg)
		return
	}
	c.value = value
	c.state = stOpen
	l.send(c, resp, true)
	if c.state != stOpen {
		return // the write failed before OnOpen: no OnClose either
	}
	c.flags |= fOpened
	bump(&l.st.upgraded, 1)
	l.st.open.Add(1)
	if l.cfg.IdleTimeout > 0 {
		l.schedule(c, l.now+int64(l.cfg.IdleTimeout))
	}
	l.cfg.Handler.OnOpen(c)
	if len(rest) > 0 && c.state != stDead && c.flags&fReadDead == 0 {
		l.readFrames(c, rest) // a frame pipelined behind the head
	}
}

// handoff gives a plain HTTP connection to the net/http server: the fd leaves the
// epoll set and this loop, becomes a net.Conn, and the bytes already read are
// replayed before the socket's.
func (l *loop) handoff(c *Conn, read []byte) {
	pre := bytes.Clone(read)
	var remote net.Addr
	if l.peers != nil {
		if p := &l.peers[c.slot]; p.bits&peerProxied != 0 {
			remote = net.TCPAddrFromAddrPort(p.addrPort())
		}
	}
	fd := int(c.fd)
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	l.freeSlot(c.slot)
	c.state, c.fd, c.ext = stDead, -1, nil
	l.nconns--
	bump(&l.st.httpReqs, 1)

	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // dups fd
	_ = f.Close()
	if err != nil {
		l.log.Debug("transport: http handoff failed", "err", err)
		bump(&l.st.httpRefused, 1)
		return
	}
	if !l.srv.httpLn.push(&prefixConn{Conn: nc, pre: pre, remote: remote}) {
		bump(&l.st.httpRefused, 1)
	}
}

// --- frames ------------------------------------------------------------------------

// readFrames parses and handles the frames in data. What is left of a partial frame
// is kept in c.ext.in until the rest arrives.
func (l *loop) readFrames(c *Conn, data []byte) {
	buf, fromExt := data, false
	if x := c.ext; x != nil && len(x.in) > 0 {
		x.in = append(x.in, data...)
		buf, fromExt = x.in, true
	}
	off := 0
	for off < len(buf) && c.state != stDead && c.flags&fReadDead == 0 {
		n := l.frame(c, buf[off:])
		if n == 0 {
			break
		}
		off += n
	}
	if c.state == stDead {
		return
	}
	rest := buf[off:]
	if c.flags&fReadDead != 0 {
		rest = nil
	}
	switch x := c.ext; {
	case len(rest) == 0:
		if fromExt && x != nil {
			x.in = nil
			c.maybeRelease()
		}
	case fromExt:
		x.in = x.in[:copy(x.in, rest)]
	default:
		x = c.extOrNew()
		x.in = append(make([]byte, 0, max(len(rest), 256)), rest...)
	}
}

// frame handles the frame at the start of b and returns its length, or 0 when b
// does not hold all of it yet (or the connection failed).
func (l *loop) frame(c *Conn, b []byte) int {
	x := c.ext
	active := x != nil && x.msgActive
	budget := l.cfg.MaxMessageBytes
	if active {
		budget -= len(x.msg)
	}
	h, fail := parseFrameHeader(b, budget)
	if fail != nil {
		l.fail(c, *fail)
		return 0
	}
	if len(b) >= 2 && c.state == stOpen {
		// Refuse a frame out of sequence before buffering its payload.
		switch op := ws.OpCode(b[0] & 0x0f); {
		case op == ws.OpContinuation && !active, (op == ws.OpText || op == ws.OpBinary) && active:
			l.fail(c, CloseProtocolError)
			return 0
		case op == ws.OpBinary:
			l.fail(c, CloseUnsupported) // Pusher is text only
			return 0
		}
	}
	if h.hdrLen == 0 || len(b) < h.hdrLen+h.payLen {
		return 0
	}
	n := h.hdrLen + h.payLen
	p := b[h.hdrLen:n]
	ws.Cipher(p, h.mask, 0)
	bump(&l.st.framesIn, 1)
	if c.state != stOpen {
		// Closing: only the peer's close frame matters now.
		if h.op == ws.OpClose {
			l.onClose(c, p)
		}
		return n
	}
	switch h.op {
	case ws.OpText:
		if !h.fin {
			x = c.extOrNew()
			x.msg, x.msgActive = append(x.msg[:0], p...), true
			return n
		}
		l.deliver(c, p)
	case ws.OpContinuation:
		x.msg = append(x.msg, p...)
		if h.fin {
			msg := x.msg
			x.msg, x.msgActive = nil, false
			l.deliver(c, msg)
			c.maybeRelease()
		}
	case ws.OpPing:
		l.closeBuf = appendPong(l.closeBuf[:0], p)
		l.send(c, l.closeBuf, true)
	case ws.OpPong:
	case ws.OpClose:
		l.onClose(c, p)
	}
	return n
}

func (l *loop) deliver(c *Conn, msg []byte) {
	if !utf8.Valid(msg) {
		l.fail(c, CloseInvalidUTF8)
		return
	}
	l.cfg.Handler.OnMessage(c, msg)
}

// onClose handles the peer's close frame.
func (l *loop) onClose(c *Conn, p []byte) {
	code, fail := parseClosePayload(p)
	if fail != nil {
		l.fail(c, *fail)
		return
	}
	c.flags |= fCloseRcvd | fReadDead
	switch c.state {
	case stOpen:
		l.beginClose(c, ClosePeer, code, "") // echo the peer's code
	case stClosing:
		// afterFlush finishes once our close frame is out
	case stLinger:
		l.finish(c, c.ext.reason)
	}
}

// fail closes c for bad input and discards what it sends from now on.
func (l *loop) fail(c *Conn, reason CloseReason) {
	if c.state == stOpen {
		l.beginClose(c, reason, reason.Code, reason.Text)
	}
	c.flags |= fReadDead
	if x := c.ext; x != nil {
		x.in, x.msg, x.msgActive = nil, nil, false
	}
}
