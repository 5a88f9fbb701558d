package transport

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxIovecs   = 1024     // IOV_MAX on Linux
	scratchKeep = 64 << 10 // frames larger than this are not built in the loop's scratch buffer
)

// send writes frame to c, or queues it behind what is already queued. copyRest says
// frame is borrowed (the loop's scratch buffer) and must be copied if it is queued.
// Only the owner loop calls it: it is the one writer of c. Frames gathered for c in
// this turn (gather.go) go out first, so that c's frames keep their order.
func (l *loop) send(c *Conn, frame []byte, copyRest bool) {
	if len(frame) == 0 || c.state == stDead {
		return
	}
	if c.flags&fGathered != 0 {
		st := c.state
		l.flushGathered(c)
		if c.state != st {
			return // cut as a slow consumer, or the socket failed: nothing follows
		}
	}
	bump(&l.st.framesOut, 1)
	l.put(c, frame, copyRest)
}

// put is send without the gathered frames: the write path of one frame.
func (l *loop) put(c *Conn, frame []byte, copyRest bool) {
	x := c.ext
	if x == nil || len(x.out) == 0 {
		// Nothing queued: one write syscall, no allocation when the kernel takes it all.
		n, err := unix.Write(int(c.fd), frame)
		bump(&l.st.writes, 1)
		if n < 0 {
			n = 0
		}
		bump(&l.st.bytesOut, uint64(n))
		if n == len(frame) {
			return
		}
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			l.finish(c, CloseConnLost)
			return
		}
		frame = frame[n:]
		x = c.extOrNew()
		x.headRest = n > 0
	}
	if copyRest {
		frame = append([]byte(nil), frame...)
	}
	x.out = append(x.out, frame)
	x.outBytes += len(frame)
	if c.state == stOpen && x.outBytes > l.cfg.MaxPendingBytes {
		l.cutSlow(c)
		return
	}
	l.armOut(c)
}

// writev writes iov in one writev(2) and reports how many bytes the kernel took; ok
// is false when the socket failed (EAGAIN and EINTR are not failures: 0 taken). It
// clears iov afterwards so that the scratch array keeps no frame alive.
func (l *loop) writev(c *Conn, iov []unix.Iovec) (taken int, ok bool) {
	// unix.Writev would build a fresh []Iovec on every call; the loop reuses one.
	r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(c.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	clear(iov)
	bump(&l.st.writes, 1)
	if errno != 0 {
		return 0, errno == unix.EAGAIN || errno == unix.EINTR
	}
	bump(&l.st.bytesOut, uint64(r))
	return int(r), true
}

func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

// flush writes everything queued for c in one writev (up to IOV_MAX frames).
func (l *loop) flush(c *Conn) {
	x := c.ext
	if x == nil || len(x.out) == 0 {
		l.disarmOut(c)
		return
	}
	iov := l.iov[:0]
	for i, b := range x.out {
		if i == 0 {
			b = b[x.outOff:]
		}
		if len(iov) == maxIovecs {
			break
		}
		iov = append(iov, iovec(b))
	}
	n, ok := l.writev(c, iov)
	l.iov = iov[:0]
	if !ok {
		l.finish(c, CloseConnLost)
		return
	}
	x.outBytes -= n
	for n > 0 {
		b := x.out[0][x.outOff:]
		if n < len(b) {
			x.outOff += n
			break
		}
		n -= len(b)
		x.out[0] = nil
		x.out = x.out[1:]
		x.outOff = 0
		x.headRest = false
	}
	if len(x.out) > 0 {
		return
	}
	x.out, x.outOff, x.outBytes, x.headRest = nil, 0, 0, false
	l.disarmOut(c)
	switch c.state {
	case stClosing:
		l.afterFlush(c)
	case stOpen:
		c.maybeRelease()
	}
}

// cutSlow closes a slow consumer: c's queue passed MaxPendingBytes. The queue is
// dropped, and the close frame of Config.SlowConsumer is offered to the kernel once,
// without waiting: with the rest of a frame whose start already went out in front
// of it (the peer must be able to parse up to it), in one writev. If the kernel takes
// it all, the peer will read the close code, and the close goes on as after Close
// (write side shut, CloseTimeout for the peer's answer); otherwise the socket is
// closed at once, and the peer sees the connection end without a close frame (1006
// in a browser). Stats.SlowCloseSent and SlowCloseUnsent count the two outcomes.
func (l *loop) cutSlow(c *Conn) {
	x := c.ext
	r := l.cfg.SlowConsumer
	l.log.Debug("transport: slow consumer", "conn", c.id, "pending", x.outBytes)
	var rest []byte
	if len(x.out) > 0 && (x.headRest || x.outOff > 0) {
		rest = x.out[0][x.outOff:]
	}
	x.out, x.outOff, x.outBytes, x.headRest = nil, 0, 0, false
	if r.Code == 0 {
		bump(&l.st.slowUnsent, 1)
		l.finish(c, r)
		return
	}
	l.closeBuf = appendCloseFrame(l.closeBuf[:0], r.Code, r.Text)
	iov := l.iov[:0]
	if len(rest) > 0 {
		iov = append(iov, iovec(rest))
	}
	iov = append(iov, iovec(l.closeBuf))
	want := len(rest) + len(l.closeBuf)
	n, ok := l.writev(c, iov)
	l.iov = iov[:0]
	if !ok || n < want {
		bump(&l.st.slowUnsent, 1)
		l.finish(c, r)
		return
	}
	bump(&l.st.slowSent, 1)
	bump(&l.st.framesOut, 1)
	l.enterClosing(c, r)
	l.afterFlush(c)
}

func (l *loop) armOut(c *Conn) {
	if c.flags&fOutArmed != 0 {
		return
	}
	c.flags |= fOutArmed
	l.ctl(c, unix.EPOLLIN|unix.EPOLLOUT)
}

func (l *loop) disarmOut(c *Conn) {
	if c.flags&fOutArmed == 0 {
		return
	}
	c.flags &^= fOutArmed
	l.ctl(c, unix.EPOLLIN)
}

func (l *loop) ctl(c *Conn, events uint32) {
	l.ev = unix.EpollEvent{Events: events, Fd: int32(c.slot), Pad: int32(l.slab[c.slot].gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &l.ev); err != nil {
		l.finish(c, CloseConnLost)
	}
}

// beginClose starts closing c: code (when not 0) goes out in a close frame after the
// queued output, then the write side is shut and the peer has CloseTimeout (counted
// from now) to answer before the socket is closed. reason is what OnClose will get.
func (l *loop) beginClose(c *Conn, reason CloseReason, code uint16, text string) {
	if c.flags&fGathered != 0 {
		// The frames gathered for c in this turn go before its close frame.
		l.flushGathered(c)
		if c.state != stOpen {
			return
		}
	}
	x := l.enterClosing(c, reason)
	if code != 0 || c.flags&fCloseRcvd != 0 {
		l.closeBuf = appendCloseFrame(l.closeBuf[:0], code, text)
		l.send(c, l.closeBuf, true)
	}
	if c.state == stClosing && len(x.out) == 0 {
		l.afterFlush(c)
	}
}

// enterClosing moves c to stClosing with reason and starts the CloseTimeout.
func (l *loop) enterClosing(c *Conn, reason CloseReason) *connExt {
	x := c.extOrNew()
	x.reason = reason
	x.msg, x.msgActive = nil, false
	c.state = stClosing
	c.flags &^= fPinged
	c.mark = l.tickNow()
	l.schedule(c, l.now+int64(l.cfg.CloseTimeout))
	return x
}

// afterFlush runs when a closing connection's output is all written.
func (l *loop) afterFlush(c *Conn) {
	if c.flags&fCloseRcvd != 0 {
		// Both close frames are out: the server closes the TCP connection first.
		l.finish(c, c.ext.reason)
		return
	}
	_ = unix.Shutdown(int(c.fd), unix.SHUT_WR)
	c.state = stLinger
}

// finish closes c's socket now. reason is used unless c was already closing, in
// which case the first reason stands. OnClose runs later, from reapClosed, so that
// it never runs inside another callback of the same connection.
func (l *loop) finish(c *Conn, reason CloseReason) {
	if c.state == stDead {
		return
	}
	if c.state >= stClosing && c.ext != nil {
		reason = c.ext.reason
	}
	_ = unix.Close(int(c.fd)) // also removes it from the epoll set
	l.releaseIP(c)
	l.freeSlot(c.slot)
	c.fd = -1
	c.state = stDead
	c.ext = nil
	l.nconns--
	if c.flags&fOpened != 0 {
		l.reap = append(l.reap, reapEntry{c: c, reason: reason})
	}
}

type reapEntry struct {
	c      *Conn
	reason CloseReason
}

// reapClosed calls OnClose for the connections finished since the last call.
func (l *loop) reapClosed() {
	for i := 0; i < len(l.reap); i++ { // OnClose may finish more
		r := l.reap[i]
		l.reap[i] = reapEntry{}
		l.st.open.Add(-1)
		l.srv.countClosed(r.reason.Label)
		l.cfg.Handler.OnClose(r.c, r.reason)
	}
	l.reap = l.reap[:0]
}
