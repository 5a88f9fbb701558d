package transport

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// Conn is one WebSocket connection, owned by one loop.
//
// It is deliberately small (see TestConnSize): an idle connection is this struct, a
// slab slot and one timer-wheel entry. Everything that exists only while a
// connection is busy (a partial frame, a message being reassembled, output the
// kernel did not take, a close in progress) lives in ext, allocated on demand and
// dropped when the connection is idle again.
//
// Times are loop ticks (tick = 100 ms since the server started) in 32 bits, which
// last six years; the peer address is not stored here (RemoteAddr asks the kernel, or
// reads the loop's slot-indexed address table when the PROXY protocol or a per-IP
// limit needs one). Both keep the struct in the 64-byte size class.
type Conn struct {
	l        *loop
	ext      *connExt
	value    any
	id       uint64
	lastRead int32 // tick of the last read that returned data
	mark     int32 // handshake: accept tick; open: OnIdle tick; closing: Close tick
	timerAt  int32 // tick of this conn's live timer-wheel entry, 0 for none
	fd       int32
	slot     uint32 // index in the owner loop's slab
	state    connState
	flags    connFlags
}

// connExt is the state of a busy connection.
type connExt struct {
	in        []byte   // unparsed input: a partial head or a partial frame
	msg       []byte   // fragments of a text message being reassembled
	out       [][]byte // frames the kernel has not taken yet; shared, never modified
	outOff    int      // bytes of out[0] already written
	outBytes  int      // pending bytes in out
	reason    CloseReason
	msgActive bool // a fragmented message is in progress
	headRest  bool // out[0] is the rest of a frame whose start went out (the peer is mid-frame)
}

type connState uint8

const (
	stHandshake connState = iota // reading the request head
	stOpen                       // WebSocket open
	stClosing                    // Close called: flushing output, close frame last
	stLinger                     // write side shut: waiting for the peer's close or EOF
	stDead                       // fd closed
)

type connFlags uint8

const (
	fOpened    connFlags = 1 << iota // handshake completed: OnClose is owed
	fOutArmed                        // EPOLLOUT is in the interest set
	fCloseRcvd                       // the peer's close frame arrived
	fReadDead                        // input is discarded until EOF (after a protocol error)
	fPinged                          // OnIdle ran; waiting for any input
	fProxy                           // handshake: a PROXY header is still to be read (trusted source) or checked for (untrusted)
	fGathered                        // has frames gathered in this mailbox batch (gather.go); its slab entry says where
)

// ID is unique within this Server for its lifetime (starts at 1).
func (c *Conn) ID() uint64 { return c.id }

// Loop is the index of the owner loop.
func (c *Conn) Loop() int { return c.l.idx }

// Value is what Handler.Accept returned; SetValue replaces it (owner loop only).
func (c *Conn) Value() any     { return c.value }
func (c *Conn) SetValue(v any) { c.value = v }

// RemoteAddr is the client's "ip:port" (owner loop only); "" once the socket is gone.
// Behind a trusted proxy it is the address from the PROXY header (the proxy's own for
// a LOCAL or UNKNOWN header). With neither the PROXY protocol nor a per-IP limit
// configured the transport keeps no address and asks the kernel on each call.
func (c *Conn) RemoteAddr() string {
	if c.state == stDead {
		return ""
	}
	if p := c.l.peers; p != nil {
		if ap := p[c.slot].addrPort(); ap.IsValid() {
			return ap.String()
		}
		return ""
	}
	sa, err := unix.Getpeername(int(c.fd))
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)).String()
	}
	return ""
}

// WriteText frames payload as one text message and writes or queues it (owner loop only).
func (c *Conn) WriteText(payload []byte) {
	if c.state != stOpen {
		return
	}
	l := c.l
	// Frame into the loop's scratch buffer: when the kernel takes it all, as it
	// does for an idle connection, nothing is allocated. A remainder is copied.
	if len(payload) > scratchKeep {
		l.send(c, AppendTextFrame(nil, payload), false)
		return
	}
	l.scratch = AppendTextFrame(l.scratch[:0], payload)
	l.send(c, l.scratch, true)
}

// WriteFrame writes or queues a prebuilt frame (owner loop only). The frame must not be
// modified afterwards.
func (c *Conn) WriteFrame(frame []byte) {
	if c.state != stOpen {
		return
	}
	c.l.send(c, frame, false)
}

// Close starts the close handshake with reason (owner loop only). Queued output is
// flushed first; OnClose follows once the socket is gone. Further writes are dropped.
func (c *Conn) Close(reason CloseReason) {
	if c.state != stOpen {
		return
	}
	c.l.beginClose(c, reason, reason.Code, reason.Text)
}

// Closed reports whether Close was called or the socket failed (owner loop only).
func (c *Conn) Closed() bool { return c.state != stOpen }

func (c *Conn) extOrNew() *connExt {
	if c.ext == nil {
		c.ext = &connExt{}
	}
	return c.ext
}

// maybeRelease drops ext once the connection is idle again.
func (c *Conn) maybeRelease() {
	x := c.ext
	if x != nil && c.state <= stOpen && len(x.in) == 0 && !x.msgActive && len(x.out) == 0 {
		c.ext = nil
	}
}
