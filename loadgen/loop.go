package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// SeqWindow is how many recent sequence numbers Pool.SeqDeliveries remembers.
const SeqWindow = 1 << 14

const (
	readBufSize  = 64 << 10
	maxPendingTx = 1 << 20 // unsent client bytes per connection before it is dropped
	sweepEvery   = int64(time.Second)
	cmdQueueLen  = 16
	maxEvents    = 256
	reorderSpan  = 64 // sequence numbers a connection tracks behind its latest
)

// Connection states.
const (
	stFree       uint8 = iota
	stConnecting       // connect() in progress
	stUpgrading        // request sent, waiting for 101
	stOpen             // upgraded, waiting for pusher:connection_established
	stReady            // established
	stClosing          // our close frame sent, waiting for the server's close or EOF
)

const (
	flagPingOut    = 1 << iota // pusher:ping sent, nothing received since
	flagSubscribed             // every subscription of a non-empty list succeeded
)

// conn is one connection's state: about 80 bytes, no buffers while idle.
type conn struct {
	fd       int32
	state    uint8
	flags    uint8
	pending  uint16 // subscriptions not yet acknowledged
	id       uint64
	started  int64  // unix ns at socket(), then at the start of the close handshake
	active   uint32 // seconds since the pool's epoch of the last read
	activity uint32 // seconds of silence before pusher:ping

	// Sequence tracking: the first and latest sequence numbers received, a bitmap of
	// the reorderSpan numbers up to latest (bit 0 = latest), unique and duplicate counts.
	firstSeq, lastSeq uint32
	uniq, dups, reord uint32
	window            uint64

	ext *connExt // nil unless something is partial or unsent
}

// connExt holds a connection's bytes only while they are partial or pending.
type connExt struct {
	in     []byte // unparsed tail of what was read (a partial frame or header)
	out    []byte // what the kernel did not take yet
	frag   []byte // fragmented message being reassembled
	fragOp byte
}

func (c *conn) extend() *connExt {
	if c.ext == nil {
		c.ext = &connExt{}
	}
	return c.ext
}

func (c *conn) shrink() {
	if e := c.ext; e != nil && e.in == nil && e.out == nil && e.frag == nil {
		c.ext = nil
	}
}

// seqSlot is one sequence number's deliveries in a loop's ring: unique ones
// (count) and duplicates apart, so that each counter only grows while the slot holds
// seq. Only the loop's goroutine writes it; readers use the atomics.
type seqSlot struct {
	seq   atomic.Uint64
	count atomic.Int64 // unique deliveries (one per connection)
	dups  atomic.Int64 // duplicates
	last  atomic.Int64 // unix ns of the latest delivery
}

// errConnGone tells the read path that the connection was closed while handling it.
var errConnGone = errors.New("loadgen: connection closed")

// loop owns its connections: only its goroutine touches them and its statistics.
// Other goroutines reach it through cmds (bounded) and the atomics.
type loop struct {
	p      *Pool
	epfd   int
	evfd   int
	cmds   chan func(*loop)
	done   chan struct{} // closed when run returns
	events []unix.EpollEvent

	// Copies of the pool's addresses: unix.Connect and unix.Bind write into them.
	dsts []unix.SockaddrInet4
	srcs []unix.SockaddrInet4

	stopRequested atomic.Bool
	delivered     atomic.Int64
	ring          []seqSlot

	conns       []conn
	free        []int32
	buf         []byte
	out         []byte
	rng         *rand.ChaCha8
	toDial      int
	inflight    int
	maxInflight int
	now         int64
	lastSweep   int64
	shutdown    bool

	connectHist, latencyHist *Histogram
	reasons                  map[string]int64
	events0                  int64 // channel events
	members                  int64 // pusher_internal:member_added and member_removed
	membersAdded             int64 // pusher_internal:member_added
	memberHist               *Histogram
	wakes                    int64 // epoll_wait returns, for tests
	cursor                   int   // where Send and Disconnect continue in conns
	dupsClosed, reordClosed  int64 // from connections already closed
}

func newLoop(p *Pool, maxInflight int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadgen: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("loadgen: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd), Pad: -1}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("loadgen: epoll_ctl eventfd: %w", err)
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rand.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], rand.Uint64())
	return &loop{
		p:           p,
		dsts:        append([]unix.SockaddrInet4(nil), p.dsts...),
		srcs:        append([]unix.SockaddrInet4(nil), p.srcs...),
		epfd:        epfd,
		evfd:        evfd,
		cmds:        make(chan func(*loop), cmdQueueLen),
		done:        make(chan struct{}),
		events:      make([]unix.EpollEvent, maxEvents),
		ring:        make([]seqSlot, SeqWindow),
		buf:         make([]byte, readBufSize),
		rng:         rand.NewChaCha8(seed),
		maxInflight: maxInflight,
		connectHist: NewHistogram(),
		latencyHist: NewHistogram(),
		memberHist:  NewHistogram(),
		reasons:     map[string]int64{},
	}, nil
}

func (l *loop) wake() {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(l.evfd, one[:]) // EAGAIN means a wake-up is already pending
}

// release closes every descriptor the loop holds.
func (l *loop) release() {
	for i := range l.conns {
		if c := &l.conns[i]; c.state != stFree {
			unix.Close(int(c.fd))
			c.state, c.fd, c.ext = stFree, -1, nil
		}
	}
	unix.Close(l.epfd)
	unix.Close(l.evfd)
}

func (l *loop) run() {
	defer close(l.done)
	defer l.release()
	l.now = time.Now().UnixNano()
	l.lastSweep = l.now
	for !l.stopRequested.Load() {
		n, err := unix.EpollWait(l.epfd, l.events, 250)
		if err != nil && err != unix.EINTR {
			l.reasons["epoll_wait_"+errnoName(err)]++
			return
		}
		l.now = time.Now().UnixNano()
		l.wakes++
		for i := 0; i < n; i++ {
			ev := l.events[i]
			if ev.Pad < 0 {
				l.drainCommands()
				continue
			}
			c := &l.conns[ev.Pad]
			if c.state == stFree || c.fd != ev.Fd {
				continue // closed earlier in this batch
			}
			l.handle(ev.Pad, c, ev.Events)
		}
		l.dialMore()
		if l.now-l.lastSweep >= sweepEvery {
			l.sweep()
			l.lastSweep = l.now
		}
		if rb := l.p.cfg.ReadBatch; rb > 0 && n > 0 && n < len(l.events) {
			// A plain nanosleep: the thread sleeps once, where time.Sleep would
			// park the goroutine and wake runtime threads several times.
			ts := unix.NsecToTimespec(int64(rb))
			_ = unix.Nanosleep(&ts, nil)
		}
	}
}

func (l *loop) drainCommands() {
	var b [8]byte
	_, _ = unix.Read(l.evfd, b[:])
	for {
		select {
		case f := <-l.cmds:
			f(l)
		default:
			return
		}
	}
}

// dialMore opens connections while there are some to open and room in flight.
func (l *loop) dialMore() {
	for l.toDial > 0 && l.inflight < l.maxInflight && !l.shutdown {
		l.toDial--
		l.dial()
	}
}

func (l *loop) dial() {
	p := l.p
	id := p.nextID.Add(1) - 1
	p.dialed.Add(1)
	started := time.Now().UnixNano() // not l.now: a burst of dials takes a while
	fail := func(fd int, what string, err error) {
		if fd >= 0 {
			unix.Close(fd)
		}
		l.reasons[what+"_"+errnoName(err)]++
		p.failed.Add(1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fail(-1, "socket", err)
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(l.srcs) > 0 {
		// Let connect() pick the port, so that a port is unique per 4-tuple rather than
		// per source address.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &l.srcs[id%uint64(len(l.srcs))]); err != nil {
			fail(fd, "bind", err)
			return
		}
	}
	if err := unix.Connect(fd, &l.dsts[p.addrIndex(id)]); err != nil && err != unix.EINPROGRESS {
		fail(fd, "connect", err)
		return
	}
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		l.conns = append(l.conns, conn{})
		slot = int32(len(l.conns) - 1)
	}
	l.conns[slot] = conn{fd: int32(fd), state: stConnecting, id: id, started: started}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: slot}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.conns[slot] = conn{fd: -1}
		l.free = append(l.free, slot)
		fail(fd, "epoll_ctl", err)
		return
	}
	l.inflight++
}

func (l *loop) handle(slot int32, c *conn, events uint32) {
	if c.state == stConnecting {
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		soerr, err := unix.GetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			l.closeConn(slot, c, "connect_"+errnoName(err))
			return
		case soerr != 0:
			l.closeConn(slot, c, "connect_"+errnoName(unix.Errno(soerr)))
			return
		case events&unix.EPOLLHUP != 0:
			l.closeConn(slot, c, "connect_hup")
			return
		}
		var key [keyLen]byte
		connKey(&key, &l.p.seed, c.id)
		l.out = l.p.tmpls[l.p.addrIndex(c.id)].appendRequest(l.out[:0], key[:])
		c.state = stUpgrading
		if !l.send(slot, c, l.out) {
			return
		}
	} else if events&unix.EPOLLOUT != 0 && c.ext != nil && len(c.ext.out) > 0 {
		if !l.flush(slot, c) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.read(slot, c, events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
}

// read drains the socket. With edge-triggered epoll a read shorter than the buffer
// means the kernel had nothing more, so it stops there without a read that would
// only return EAGAIN, unless the peer hung up (drain), when it reads on to the EOF.
func (l *loop) read(slot int32, c *conn, drain bool) {
	for {
		n, err := unix.Read(int(c.fd), l.buf)
		if err != nil {
			if err == unix.EAGAIN {
				return
			}
			if err == unix.EINTR {
				continue
			}
			l.closeConn(slot, c, "read_"+errnoName(err))
			return
		}
		if n == 0 {
			l.closeConn(slot, c, "eof")
			return
		}
		l.now = time.Now().UnixNano()
		c.active = l.sec()
		c.flags &^= flagPingOut
		data := l.buf[:n]
		var in []byte // the connection's partial bytes, taken while they are parsed
		if c.ext != nil && len(c.ext.in) > 0 {
			in = append(c.ext.in, data...)
			c.ext.in = nil
			data = in
		}
		used, err := l.consume(slot, c, data)
		if err != nil {
			if err != errConnGone {
				l.protocolError(slot, c, err)
			}
			return
		}
		switch rest := data[used:]; {
		case len(rest) == 0:
			c.shrink()
		case in != nil:
			c.extend().in = in[:copy(in, rest)]
		default:
			c.extend().in = append([]byte(nil), rest...)
		}
		if n < len(l.buf) && !drain {
			return
		}
	}
}

// consume handles the complete handshake response and frames at the start of data
// and returns how many bytes it used.
func (l *loop) consume(slot int32, c *conn, data []byte) (int, error) {
	used := 0
	if c.state == stUpgrading {
		var key [keyLen]byte
		var accept [28]byte
		connKey(&key, &l.p.seed, c.id)
		acceptKey(&accept, key[:])
		n, err := parseHandshakeResponse(data, accept[:])
		if err != nil {
			l.closeConn(slot, c, handshakeReason(err))
			return 0, errConnGone
		}
		if n == 0 {
			return 0, nil
		}
		used = n
		c.state = stOpen
	}
	for used < len(data) {
		f, n, err := parseFrame(data[used:], l.p.cfg.MaxMessageBytes)
		if err != nil {
			return used, err
		}
		if n == 0 {
			break
		}
		used += n
		if err := l.onFrame(slot, c, f); err != nil {
			return used, err
		}
	}
	return used, nil
}

func handshakeReason(err error) string {
	if errors.Is(err, ErrHandshakeStatus) {
		return "handshake_status"
	}
	return "handshake_invalid"
}

func (l *loop) onFrame(slot int32, c *conn, f frame) error {
	switch f.op {
	case opText, opBinary:
		if c.ext != nil && c.ext.frag != nil {
			return fmt.Errorf("%w: data frame inside a fragmented message", ErrFrame)
		}
		if !f.fin {
			e := c.extend()
			e.frag, e.fragOp = append([]byte(nil), f.payload...), f.op
			return nil
		}
		return l.onMessage(slot, c, f.op, f.payload)
	case opContinuation:
		if c.ext == nil || c.ext.frag == nil {
			return fmt.Errorf("%w: continuation without a start", ErrFrame)
		}
		if len(c.ext.frag)+len(f.payload) > l.p.cfg.MaxMessageBytes {
			return fmt.Errorf("%w: fragmented message over %d bytes", ErrFrameTooBig, l.p.cfg.MaxMessageBytes)
		}
		c.ext.frag = append(c.ext.frag, f.payload...)
		if !f.fin {
			return nil
		}
		msg, op := c.ext.frag, c.ext.fragOp
		c.ext.frag = nil
		c.shrink()
		return l.onMessage(slot, c, op, msg)
	case opPing:
		return l.sendFrame(slot, c, opPong, f.payload)
	case opPong:
		return nil
	case opClose:
		code, err := closePayload(f.payload)
		if err != nil {
			return err
		}
		if c.state != stClosing {
			// Echo the status code (RFC 6455 5.5.1), then close: the server has
			// finished sending.
			var b [2]byte
			binary.BigEndian.PutUint16(b[:], code)
			payload := b[:]
			if code == 1005 {
				payload = nil
			}
			_ = l.sendFrame(slot, c, opClose, payload)
			if c.state == stFree {
				return errConnGone
			}
			l.closeConn(slot, c, "close_"+strconv.Itoa(int(code)))
		} else {
			l.closeConn(slot, c, "client_close")
		}
		return errConnGone
	}
	return nil
}

func (l *loop) onMessage(slot int32, c *conn, op byte, payload []byte) error {
	if op != opText {
		l.reasons["binary_message"]++
		return nil
	}
	m, err := scanMessage(payload)
	if err != nil {
		l.reasons["bad_message"]++
		return nil
	}
	switch string(m.event) {
	case "pusher:connection_established":
		return l.onEstablished(slot, c, m)
	case "pusher_internal:subscription_succeeded":
		if c.pending > 0 {
			c.pending--
			if c.pending == 0 {
				c.flags |= flagSubscribed
				// The driver's per-channel counts first: a snapshot that reads
				// Stats and then those counts never sees a subscription counted
				// in Stats and missing from them.
				if fn := l.p.cfg.OnSubscribed; fn != nil {
					fn(c.id)
				}
				l.p.subscribed.Add(1)
			}
		}
		return nil
	case "pusher:subscription_error":
		l.reasons["subscription_error"]++
		return nil
	case "pusher:error":
		var pe pusherError
		_ = dataObject(m.data, &pe)
		l.reasons["pusher_error_"+strconv.Itoa(pe.Code)]++
		return nil
	case "pusher:ping":
		return l.sendText(slot, c, []byte(`{"event":"pusher:pong","data":{}}`))
	case "pusher_internal:member_added":
		l.members++
		l.membersAdded++
		if ts, ok := memberTimestamp(m.data); ok {
			l.memberHist.Record(time.Duration(l.now - ts))
		}
		return nil
	case "pusher_internal:member_removed":
		l.members++
		return nil
	case "pusher:pong", "pusher:cache_miss", "pusher_internal:subscription_count":
		return nil
	}
	if m.channel == nil {
		l.reasons["unknown_event"]++
		return nil
	}
	l.events0++
	var seq uint64
	dup := false
	if len(m.data) > 0 && m.data[0] == '"' {
		if s, ts, err := ParsePayload(m.data); err == nil && s > 0 {
			seq = s
			dup = l.deliver(c, seq, ts)
		}
	}
	if fn := l.p.cfg.OnEvent; fn != nil {
		fn(&Event{ConnID: c.id, Name: m.event, Channel: m.channel, Data: m.data, Received: l.now,
			Seq: seq, Duplicate: dup})
	}
	return nil
}

func (l *loop) onEstablished(slot int32, c *conn, m message) error {
	if c.state != stOpen {
		l.reasons["duplicate_established"]++
		return nil
	}
	var est established
	if err := dataObject(m.data, &est); err != nil || est.SocketID == "" || est.ActivityTimeout <= 0 {
		l.closeConn(slot, c, "bad_established")
		return errConnGone
	}
	c.state = stReady
	l.inflight--
	l.p.established.Add(1)
	l.p.perAddr[l.p.addrIndex(c.id)].Add(1)
	l.connectHist.Record(time.Duration(l.now - c.started))
	act := uint32(l.p.cfg.ActivityTimeout / time.Second)
	if s := uint32(est.ActivityTimeout); s < act {
		act = s
	}
	c.activity = max(act, 1)

	var chans []string
	if fn := l.p.cfg.Channels; fn != nil {
		chans = fn(c.id)
	}
	if len(chans) == 0 {
		l.p.subscribed.Add(1)
		return nil
	}
	c.pending = uint16(len(chans))
	l.out = l.out[:0]
	var js []byte
	for _, ch := range chans {
		var auth, data string
		if isPresence(ch) {
			if fn := l.p.cfg.ChannelData; fn != nil {
				data = fn(c.id, ch)
			} else {
				data = `{"user_id":"` + strconv.FormatUint(c.id, 10) + `"}`
			}
			auth = ChannelAuth(l.p.cfg.Key, l.p.cfg.Secret, est.SocketID, ch, data)
		} else if isPrivate(ch) {
			auth = ChannelAuth(l.p.cfg.Key, l.p.cfg.Secret, est.SocketID, ch, "")
		}
		js = appendSubscribe(js[:0], ch, auth, data)
		l.out = appendClientFrame(l.out, opText, js, l.mask())
	}
	if !l.send(slot, c, l.out) {
		return errConnGone
	}
	return nil
}

// deliver records one sequenced event and reports whether the connection had
// already received it.
func (l *loop) deliver(c *conn, seq uint64, ts int64) (dup bool) {
	l.latencyHist.Record(time.Duration(l.now - ts))
	l.delivered.Add(1)
	s := uint32(seq)
	switch {
	case c.uniq == 0:
		c.firstSeq, c.lastSeq, c.window, c.uniq = s, s, 1, 1
	case s > c.lastSeq:
		if d := s - c.lastSeq; d >= reorderSpan {
			c.window = 1
		} else {
			c.window = c.window<<d | 1
		}
		c.lastSeq = s
		c.uniq++
	default:
		d := c.lastSeq - s
		if d < reorderSpan && c.window&(1<<d) != 0 {
			c.dups++
			dup = true
			break
		}
		if d < reorderSpan {
			c.window |= 1 << d
		}
		if s < c.firstSeq {
			c.firstSeq = s
		}
		c.uniq++ // a late one; older than the window it may be a duplicate unseen
		c.reord++
	}
	r := &l.ring[seq&(SeqWindow-1)]
	if r.seq.Load() != seq {
		r.count.Store(0)
		r.dups.Store(0)
		r.last.Store(0)
		r.seq.Store(seq)
	}
	if dup {
		r.dups.Store(r.dups.Load() + 1)
	} else {
		r.count.Store(r.count.Load() + 1)
	}
	if l.now > r.last.Load() {
		r.last.Store(l.now)
	}
	return dup
}

func (l *loop) mask() [4]byte {
	var m [4]byte
	binary.LittleEndian.PutUint32(m[:], uint32(l.rng.Uint64()))
	return m
}

func (l *loop) sendText(slot int32, c *conn, js []byte) error {
	return l.sendFrame(slot, c, opText, js)
}

func (l *loop) sendFrame(slot int32, c *conn, op byte, payload []byte) error {
	l.out = appendClientFrame(l.out[:0], op, payload, l.mask())
	if !l.send(slot, c, l.out) {
		return errConnGone
	}
	return nil
}

// send writes b or queues what the kernel does not take. It returns false when the
// connection was closed.
func (l *loop) send(slot int32, c *conn, b []byte) bool {
	if c.ext != nil && len(c.ext.out) > 0 {
		if len(c.ext.out)+len(b) > maxPendingTx {
			l.closeConn(slot, c, "client_backlog")
			return false
		}
		c.ext.out = append(c.ext.out, b...)
		return true
	}
	n, err := unix.Write(int(c.fd), b)
	if err != nil && err != unix.EAGAIN {
		l.closeConn(slot, c, "write_"+errnoName(err))
		return false
	}
	if n < 0 {
		n = 0
	}
	if n < len(b) {
		c.extend().out = append([]byte(nil), b[n:]...)
	}
	return true
}

func (l *loop) flush(slot int32, c *conn) bool {
	n, err := unix.Write(int(c.fd), c.ext.out)
	if err != nil && err != unix.EAGAIN {
		l.closeConn(slot, c, "write_"+errnoName(err))
		return false
	}
	if n > 0 {
		if n == len(c.ext.out) {
			c.ext.out = nil
			c.shrink()
		} else {
			c.ext.out = append([]byte(nil), c.ext.out[n:]...)
		}
	}
	return true
}

// protocolError closes a connection whose server broke the protocol with 1002.
func (l *loop) protocolError(slot int32, c *conn, err error) {
	reason := "protocol_error"
	if errors.Is(err, ErrFrameTooBig) {
		reason = "message_too_big"
	}
	if c.state >= stOpen {
		var b [2]byte
		code := uint16(1002)
		if reason == "message_too_big" {
			code = 1009
		}
		binary.BigEndian.PutUint16(b[:], code)
		if l.sendFrame(slot, c, opClose, b[:]) != nil {
			return
		}
	}
	l.closeConn(slot, c, reason)
}

// closeConn closes the socket and counts why.
func (l *loop) closeConn(slot int32, c *conn, reason string) {
	switch c.state {
	case stFree:
		return
	case stConnecting, stUpgrading, stOpen:
		l.inflight--
		l.p.failed.Add(1)
	default:
		l.p.closed.Add(1)
		l.dupsClosed += int64(c.dups)
		l.reordClosed += int64(c.reord)
		if fn := l.p.cfg.OnClosed; fn != nil {
			fn(c.id, c.flags&flagSubscribed != 0)
		}
	}
	l.reasons[reason]++
	unix.Close(int(c.fd)) // also leaves the epoll set
	l.conns[slot] = conn{fd: -1}
	l.free = append(l.free, slot)
}

// sweep times out handshakes and close handshakes and pings silent connections.
func (l *loop) sweep() {
	sec := l.sec()
	pong := uint32(l.p.cfg.PongTimeout / time.Second)
	for i := range l.conns {
		c := &l.conns[i]
		switch c.state {
		case stConnecting, stUpgrading, stOpen:
			if l.now-c.started > int64(l.p.cfg.HandshakeTimeout) {
				l.closeConn(int32(i), c, "handshake_timeout")
			}
		case stReady:
			idle := sec - c.active
			if c.flags&flagPingOut != 0 {
				if idle >= c.activity+pong {
					// The answer may be unread in the socket (more connections
					// ready than one epoll_wait returns): read before judging.
					l.read(int32(i), c, false)
					if c.state == stReady && c.flags&flagPingOut != 0 {
						l.closeConn(int32(i), c, "pong_timeout")
					}
				}
			} else if idle >= c.activity {
				c.flags |= flagPingOut
				_ = l.sendText(int32(i), c, []byte(`{"event":"pusher:ping","data":{}}`))
			}
		case stClosing:
			if l.now-c.started > int64(l.p.cfg.CloseGrace) {
				l.closeConn(int32(i), c, "close_timeout")
			}
		}
	}
}

func (l *loop) sec() uint32 { return uint32((l.now - l.p.epoch) / int64(time.Second)) }

// beginShutdown stops dialing, drops handshakes in flight and starts the close
// handshake of every established connection.
func (l *loop) beginShutdown() {
	l.shutdown = true
	l.toDial = 0
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], 1000)
	for i := range l.conns {
		c := &l.conns[i]
		switch c.state {
		case stConnecting, stUpgrading, stOpen:
			l.closeConn(int32(i), c, "shutdown")
		case stReady:
			if l.sendFrame(int32(i), c, opClose, b[:]) == nil {
				c.state = stClosing
				c.started = l.now
			}
		}
	}
}

// stats snapshots the loop's figures; see Pool.Stats.
func (l *loop) stats(firstSeq, lastSeq uint64) *Stats {
	s := newStats()
	_ = s.Connect.Merge(l.connectHist)
	_ = s.Latency.Merge(l.latencyHist)
	s.Events = l.events0
	s.Members = l.members
	s.MembersAdded = l.membersAdded
	_ = s.MemberLatency.Merge(l.memberHist)
	s.Delivered = l.delivered.Load()
	s.Duplicates = l.dupsClosed
	s.Reordered = l.reordClosed
	for k, v := range l.reasons {
		s.Reasons[k] = v
	}
	want := int64(0)
	if lastSeq >= firstSeq && lastSeq > 0 {
		want = int64(lastSeq - firstSeq + 1)
	}
	for i := range l.conns {
		c := &l.conns[i]
		if c.state != stReady && c.state != stClosing {
			continue
		}
		s.Duplicates += int64(c.dups)
		s.Reordered += int64(c.reord)
		if want > 0 && c.flags&flagSubscribed != 0 {
			if got := int64(c.uniq); got < want {
				s.Missing += want - got
			}
		}
	}
	return s
}

// sendEach sends, from up to n subscribed connections taken round-robin from where
// the previous call stopped, the text message msg appends (nothing when it appends
// nothing). It returns how many it sent.
func (l *loop) sendEach(n int, msg func(id uint64, dst []byte) []byte) int {
	sent := 0
	var js []byte
	for tries := 0; sent < n && tries < len(l.conns); tries++ {
		if l.cursor >= len(l.conns) {
			l.cursor = 0
		}
		slot := int32(l.cursor)
		l.cursor++
		c := &l.conns[slot]
		if c.state != stReady || c.flags&flagSubscribed == 0 {
			continue
		}
		js = msg(c.id, js[:0])
		if len(js) == 0 {
			continue
		}
		if l.sendText(slot, c, js) == nil {
			sent++
		}
	}
	return sent
}

// disconnect starts the close handshake (1000) of up to n established connections,
// taken round-robin, and returns how many.
func (l *loop) disconnect(n int) int {
	closed := 0
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], 1000)
	for tries := 0; closed < n && tries < len(l.conns); tries++ {
		if l.cursor >= len(l.conns) {
			l.cursor = 0
		}
		slot := int32(l.cursor)
		l.cursor++
		c := &l.conns[slot]
		if c.state != stReady {
			continue
		}
		if l.sendFrame(slot, c, opClose, b[:]) == nil {
			c.state = stClosing
			c.started = l.now
			closed++
		}
	}
	return closed
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return "errno_" + strconv.Itoa(int(e))
	}
	return "error"
}

// MemberTimestampKey is the user_info field that carries a presence member's join
// time (unix nanoseconds), as the loadgen worker's channel_data does:
// {"user_id":"u7","user_info":{"lg_ts":1700000000000000000}}. A member_added that
// carries it is recorded as join-to-member_added latency (Stats.MemberLatency).
const MemberTimestampKey = "lg_ts"

// memberTimestamp finds "lg_ts":<digits> in a member event's data, which is a JSON
// string holding an object (so the quotes may be escaped) or, from a lenient server,
// the object itself.
func memberTimestamp(data []byte) (int64, bool) {
	const key = MemberTimestampKey
	for i := 0; i+len(key) < len(data); i++ {
		if data[i] != key[0] || string(data[i:i+len(key)]) != key {
			continue
		}
		j := i + len(key)
		if j < len(data) && data[j] == '\\' {
			j++
		}
		if j >= len(data) || data[j] != '"' {
			continue
		}
		j++
		if j >= len(data) || data[j] != ':' {
			continue
		}
		j++
		var ts int64
		start := j
		for ; j < len(data) && data[j] >= '0' && data[j] <= '9' && j-start < 19; j++ {
			ts = ts*10 + int64(data[j]-'0')
		}
		return ts, j > start && ts > 0
	}
	return 0, false
}
