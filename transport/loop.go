package transport

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	readBufSize = 64 << 10 // the loop's one read buffer
	maxEvents   = 256      // events per epoll_wait
	acceptBatch = 64       // accepts per listener wake-up, so one loop cannot hog a burst
	tokListener = -1       // epoll data of the listening socket
	tokWake     = -2       // epoll data of the loop's eventfd
)

// wakeBytes is what an eventfd write adds: 1.
var wakeBytes = [8]byte{1}

// loop is one epoll loop. Everything but the mailbox and the counters is owned by
// the loop goroutine (or by the goroutine calling New/Shutdown while the loop is
// not running).
type loop struct {
	srv    *Server
	cfg    *Config
	log    *slog.Logger
	idx    int
	epfd   int
	wakefd int

	now          int64 // loop clock: ns since the server started, read once per wake-up
	buf          []byte
	events       []unix.EpollEvent
	ev           unix.EpollEvent // scratch for epoll_ctl
	slab         []slabEntry
	peers        []peer // parallel to slab when Server.trackPeers, else nil
	free         []uint32
	nconns       int // sockets owned, in any state
	wheel        wheel
	reap         []reapEntry
	iov          []unix.Iovec
	scratch      []byte // WriteText frames
	closeBuf     []byte // close, pong and HTTP error frames
	up           *upgrader
	acceptPaused bool // listener taken out of this epoll set after EMFILE
	pausedAt     int64
	stopping     bool // Shutdown asked to drain
	quit         bool
	drained      chan struct{} // closed once stopping and nconns == 0
	draining     bool          // Drain started: upgrades are refused (503)
	pace         *pacer        // Drain's schedule, nil before Drain
	paced        chan struct{} // closed once Drain has closed all this loop's WebSockets, or the loop exits
	lastWarn     int64

	st counters

	spare []job // the mailbox slice not in use, kept for the next swap

	// Gathering (gather.go): the frames of this batch's Fanout jobs, per connection.
	gframes     [][]byte
	gconns      []gatherConn
	gpairs      []gatherPair
	gatherQuiet int   // batches in a row that used under an eighth of gpairs
	gdone       int64 // deliveries of the Fanout jobs run since the last flush
	gjobs       int64 // and the jobs

	// Fan-out backlog: the Fanout jobs, and their connections, queued or being run.
	// Posters add under mu (admission compares them with the bounds); the loop takes
	// away without it, once the frames are written (fanoutDone).
	backlogJobs atomic.Int64
	backlog     atomic.Int64
	waiters     atomic.Int32 // FanoutWait callers waiting for room

	mu       sync.Mutex // guards the fields below
	mbox     []job
	ndo      int                // Do jobs in mbox
	overflow map[*Conn]struct{} // connections whose Do was refused: closed with Config.Overloaded next batch
	room     chan struct{}      // closed (and dropped) when the backlog shrinks; made by a waiter
	wakeSent bool               // an eventfd write is pending since the last mailbox swap
	closed   bool               // the loop has exited; posts are refused
}

type slabEntry struct {
	c   *Conn
	gen uint32
	gat uint32 // index in loop.gconns while c has fGathered (fits the padding)
}

// job is a unit of work posted to a loop from any goroutine.
type job struct {
	frame  []byte
	conns  []*Conn
	except uint64 // Fanout: the Conn.ID to skip, 0 for none
	c      *Conn
	fn     func()
	ctrl   ctrlKind
	reason *CloseReason
	fd     int           // ctrlAdopt
	sa     unix.Sockaddr // ctrlAdopt
}

type ctrlKind uint8

const (
	ctrlNone  ctrlKind = iota
	ctrlDrain          // Close every connection with reason; report when none is left
	ctrlQuit           // close what is left abruptly and exit
	ctrlAdopt          // own a socket another loop accepted
)

func newLoop(s *Server, idx int) (*loop, error) {
	l := &loop{
		srv: s, cfg: &s.cfg, log: s.cfg.Logger, idx: idx, epfd: -1, wakefd: -1,
		buf:     make([]byte, readBufSize),
		events:  make([]unix.EpollEvent, maxEvents),
		drained: make(chan struct{}),
		paced:   make(chan struct{}),
	}
	if s.trackPeers {
		l.peers = make([]peer, 0, 64)
	}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("%w: epoll_create1: %w", ErrPoll, err)
	}
	if l.wakefd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("%w: eventfd: %w", ErrPoll, err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: tokWake}
	if err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.wakefd, &ev); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("%w: epoll_ctl eventfd: %w", ErrPoll, err)
	}
	l.up = newUpgrader(s.cfg.Handler)
	return l, nil
}

// closeFDs marks the loop closed, so that no post writes to a closed (and possibly
// reused) eventfd, and closes its descriptors. The loop goroutine must not be running.
func (l *loop) closeFDs() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.epfd >= 0 {
		_ = unix.Close(l.epfd)
		l.epfd = -1
	}
	if l.wakefd >= 0 {
		_ = unix.Close(l.wakefd)
		l.wakefd = -1
	}
}

// watchListener adds the listening socket to this loop's epoll set. EPOLLEXCLUSIVE
// wakes one (or a few) of the loops per new connection instead of all of them; the
// loop that wakes accepts and owns the connection.
func (l *loop) watchListener(lnfd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: tokListener}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, lnfd, &ev)
}

func (l *loop) run() {
	defer l.srv.loopWG.Done()
	l.now = l.srv.clock()
	l.wheel.next = l.now/int64(tick) + 1
	for !l.quit {
		n, err := unix.EpollWait(l.epfd, l.events, l.timeout())
		l.now = l.srv.clock()
		if err != nil {
			if err != unix.EINTR {
				l.log.Error("transport: epoll_wait failed; loop stops", "loop", l.idx, "err", err)
				break
			}
			n = 0
		}
		for i := 0; i < n; i++ {
			l.dispatch(l.events[i])
		}
		l.advance()
		if l.pace != nil {
			l.paceStep()
		}
		if l.acceptPaused && l.now-l.pausedAt >= int64(time.Second) {
			l.resumeAccept()
		}
		l.reapClosed()
		if l.stopping && l.nconns == 0 && !l.quit {
			l.signalDrained()
		}
		if p := l.pace; p != nil && p.issuedAll && l.st.open.Load() == 0 {
			l.signalPaced()
		}
	}
	l.abortAll()
	l.signalPaced() // a Drain still waiting has nothing left to wait for
	l.mu.Lock()
	l.closed = true
	for _, j := range l.mbox { // sockets handed over but never adopted
		if j.ctrl == ctrlAdopt {
			_ = unix.Close(j.fd)
		}
	}
	l.mbox, l.overflow = nil, nil
	if l.room != nil { // FanoutWait callers: this loop takes nothing more
		close(l.room)
		l.room = nil
	}
	l.mu.Unlock()
	l.spare = nil
}

func (l *loop) signalDrained() {
	select {
	case <-l.drained:
	default:
		close(l.drained)
	}
}

// abortAll closes every socket the loop still owns; the opened ones get OnClose.
func (l *loop) abortAll() {
	for _, e := range l.slab {
		if e.c != nil {
			l.finish(e.c, CloseConnLost)
		}
	}
	l.reapClosed()
}

func (l *loop) dispatch(ev unix.EpollEvent) {
	switch ev.Fd {
	case tokListener:
		l.acceptConns()
		return
	case tokWake:
		var b [8]byte
		_, _ = unix.Read(l.wakefd, b[:])
		l.runMailbox()
		return
	}
	c := l.lookup(uint32(ev.Fd), uint32(ev.Pad))
	if c == nil {
		return // closed earlier in this batch
	}
	if ev.Events&unix.EPOLLOUT != 0 && c.flags&fOutArmed != 0 {
		l.flush(c)
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.state != stDead {
		l.onReadable(c)
	}
}

// --- slab --------------------------------------------------------------------------

// allocSlot stores c in a free slab slot. The slot and its generation go in the
// epoll event data, so an event finds its Conn without a map; the generation makes
// events for a slot's previous owner (in the same epoll_wait batch) miss.
func (l *loop) allocSlot(c *Conn) uint32 {
	var i uint32
	if n := len(l.free); n > 0 {
		i = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		i = uint32(len(l.slab))
		l.slab = append(l.slab, slabEntry{})
	}
	l.slab[i].c = c
	if l.peers != nil {
		for len(l.peers) <= int(i) {
			l.peers = append(l.peers, peer{})
		}
		l.peers[i] = peer{}
	}
	return i
}

func (l *loop) freeSlot(i uint32) {
	l.slab[i].c = nil
	l.slab[i].gen++
	l.free = append(l.free, i)
}

func (l *loop) lookup(slot, gen uint32) *Conn {
	if int(slot) >= len(l.slab) {
		return nil
	}
	e := l.slab[slot]
	if e.gen != gen {
		return nil
	}
	return e.c
}

// --- accept ------------------------------------------------------------------------

func (l *loop) acceptConns() {
	s := l.srv
	s.lnMu.RLock()
	defer s.lnMu.RUnlock()
	if s.lnFD < 0 || l.stopping {
		return
	}
	for range acceptBatch {
		fd, sa, err := unix.Accept4(s.lnFD, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			l.assign(fd, sa)
		case err == unix.EAGAIN:
			return
		case err == unix.EINTR || err == unix.ECONNABORTED:
		case err == unix.EMFILE || err == unix.ENFILE || err == unix.ENOBUFS || err == unix.ENOMEM:
			// Out of descriptors: the listener stays readable, so stop watching it
			// for a second instead of spinning on it.
			if l.now-l.lastWarn >= int64(time.Second) {
				l.lastWarn = l.now
				l.log.Warn("transport: accept failed; pausing accepts for 1s", "loop", l.idx, "err", err)
			}
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.lnFD, nil)
			l.acceptPaused, l.pausedAt = true, l.now
			return
		default:
			l.log.Debug("transport: accept failed", "loop", l.idx, "err", err)
			return
		}
	}
}

// assign gives an accepted socket to the next loop in turn. EPOLLEXCLUSIVE wakes
// the first idle loop, which under light load is nearly always the same one; dealing
// sockets out round-robin keeps the loops' shares of connections (and so of fan-out
// work) even whatever the arrival pattern.
func (l *loop) assign(fd int, sa unix.Sockaddr) {
	loops := l.srv.loops
	target := loops[l.srv.nextLoop.Add(1)%uint64(len(loops))]
	if target == l {
		l.addConn(fd, sa)
		return
	}
	if !target.postCtrl(job{ctrl: ctrlAdopt, fd: fd, sa: sa}) {
		_ = unix.Close(fd)
	}
}

func (l *loop) resumeAccept() {
	s := l.srv
	s.lnMu.RLock()
	defer s.lnMu.RUnlock()
	l.acceptPaused = false
	if s.lnFD >= 0 && !l.stopping {
		if err := l.watchListener(s.lnFD); err != nil {
			l.log.Error("transport: cannot watch the listener again", "loop", l.idx, "err", err)
		}
	}
}

func (l *loop) addConn(fd int, sa unix.Sockaddr) {
	c := &Conn{l: l, fd: int32(fd), id: l.srv.nextID.Add(1), state: stHandshake}
	// Frames are written whole; Nagle would only delay them.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c.slot = l.allocSlot(c)
	l.ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.slot), Pad: int32(l.slab[c.slot].gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &l.ev); err != nil {
		l.log.Debug("transport: epoll_ctl add failed", "err", err)
		l.freeSlot(c.slot)
		_ = unix.Close(fd)
		return
	}
	l.nconns++
	bump(&l.st.accepted, 1)
	if l.peers != nil {
		p := &l.peers[c.slot]
		*p = peerFromSockaddr(sa)
		if l.cfg.ProxyProtocol {
			c.flags |= fProxy
			if l.srv.trusts(p.addr()) {
				p.bits |= peerTrusted
			}
		}
	}
	c.mark, c.lastRead = l.tickNow(), l.tickNow()
	l.schedule(c, l.now+int64(l.cfg.HandshakeTimeout))
}

// --- mailbox -----------------------------------------------------------------------

// Posting never blocks on the loop: the lock covers a few comparisons, an append
// and, once per batch, an eventfd write. There are three kinds of job, each with its
// bound (see the queue table in doc.go):
//
//   - postFanout: refused (false) while the loop's backlog of Fanout jobs is at
//     MailboxSize or its backlog of deliveries at MailboxDeliveries;
//   - postDo: past DoMailboxSize queued Do jobs, refused, and its connection is
//     noted in overflow, to be closed with Config.Overloaded by the loop;
//   - postCtrl: always admitted (Each, and the loop's own control jobs: a socket
//     to adopt, drain, quit), because each is bounded by something else.
//
// Each returns false once the loop has exited.

// post is postFanout when bounded, else postCtrl.
func (l *loop) post(j job, bounded bool) bool {
	if bounded {
		ok, _ := l.postFanout(j)
		return ok
	}
	return l.postCtrl(j)
}

func (l *loop) postFanout(j job) (ok, closed bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false, true
	}
	if l.backlogJobs.Load() >= int64(l.cfg.MailboxSize) || l.backlog.Load() >= int64(l.cfg.MailboxDeliveries) {
		l.mu.Unlock()
		return false, false
	}
	l.backlogJobs.Add(1)
	l.backlog.Add(int64(len(j.conns)))
	l.enqueueLocked(j)
	l.mu.Unlock()
	return true, false
}

func (l *loop) postDo(j job) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	if len(l.overflow) > 0 {
		if _, over := l.overflow[j.c]; over {
			l.mu.Unlock()
			l.srv.doRefused.Add(1)
			return false // it is being closed: this one would be lost with it anyway
		}
	}
	if l.ndo >= l.cfg.DoMailboxSize {
		if l.overflow == nil {
			l.overflow = make(map[*Conn]struct{})
		}
		l.overflow[j.c] = struct{}{}
		l.wakeLocked()
		l.mu.Unlock()
		l.srv.doRefused.Add(1)
		return false
	}
	l.ndo++
	l.enqueueLocked(j)
	l.mu.Unlock()
	return true
}

func (l *loop) postCtrl(j job) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.enqueueLocked(j)
	l.mu.Unlock()
	return true
}

func (l *loop) enqueueLocked(j job) {
	l.mbox = append(l.mbox, j)
	l.wakeLocked()
}

func (l *loop) wakeLocked() {
	if !l.wakeSent {
		l.wakeSent = true
		// Under the lock so that the eventfd cannot be closed under us.
		_, _ = unix.Write(l.wakefd, wakeBytes[:])
	}
}

// roomChan returns a channel closed when the loop's backlog next shrinks (or the
// loop exits), or nil when there is room now or the loop has exited. A FanoutWait
// caller waits on it with waiters counted.
func (l *loop) roomChan() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	if l.backlogJobs.Load() < int64(l.cfg.MailboxSize) && l.backlog.Load() < int64(l.cfg.MailboxDeliveries) {
		return nil
	}
	if l.room == nil {
		l.room = make(chan struct{})
	}
	return l.room
}

// fanoutDone takes the Fanout jobs run since the last call (whose frames are now
// written or queued) off the backlog, and wakes FanoutWait callers.
func (l *loop) fanoutDone() {
	if l.gdone == 0 && l.gjobs == 0 {
		return
	}
	l.backlog.Add(-l.gdone)
	l.backlogJobs.Add(-l.gjobs)
	l.gdone, l.gjobs = 0, 0
	if l.waiters.Load() > 0 {
		l.mu.Lock()
		if l.room != nil {
			close(l.room)
			l.room = nil
		}
		l.mu.Unlock()
	}
}

func (l *loop) runMailbox() {
	l.mu.Lock()
	jobs := l.mbox
	l.mbox = l.spare[:0]
	l.ndo = 0
	over := l.overflow
	l.overflow = nil
	l.wakeSent = false
	l.mu.Unlock()
	for c := range over {
		// A Do refused at the bound closes its connection rather than losing a state
		// change silently; before this batch's jobs, so that nothing sent after the
		// lost change (a fan-out after a subscription confirmation) reaches it.
		if c.l == l && c.state == stOpen {
			bump(&l.st.doOverflowClosed, 1)
			c.Close(l.cfg.Overloaded)
		}
	}
	for i := range jobs {
		l.runJob(&jobs[i])
		jobs[i] = job{}
	}
	l.flushGather()
	l.spare = jobs[:0]
}

func (l *loop) runJob(j *job) {
	switch j.ctrl {
	case ctrlDrain:
		l.drain(*j.reason)
		return
	case ctrlQuit:
		l.quit = true
		return
	case ctrlAdopt:
		if l.stopping {
			_ = unix.Close(j.fd)
			return
		}
		l.addConn(j.fd, j.sa)
		return
	}
	if j.fn != nil {
		if j.c == nil || j.c.state != stDead {
			j.fn()
		}
		return
	}
	fi := int32(-1)
	for _, c := range j.conns {
		// A Conn of another loop would make two writers: skip it.
		if c == nil || c.id == j.except || c.l != l || c.state != stOpen {
			continue
		}
		if x := c.ext; x != nil && len(x.out) > 0 {
			// Behind queued output: no syscall now, the bound checked per frame.
			l.send(c, j.frame, false)
			continue
		}
		if fi < 0 {
			fi = int32(len(l.gframes))
			l.gframes = append(l.gframes, j.frame)
		}
		l.gather(c, fi)
	}
	l.gdone += int64(len(j.conns))
	l.gjobs++
	if len(l.gpairs) >= gatherMax {
		l.flushGather()
	}
}

// drain starts closing every connection for Shutdown.
func (l *loop) drain(reason CloseReason) {
	l.stopping = true
	if l.pace != nil {
		l.pace.issuedAll = true // Shutdown closes the rest now
	}
	if l.acceptPaused {
		l.acceptPaused = false
	}
	for _, e := range l.slab {
		switch c := e.c; {
		case c == nil:
		case c.state == stHandshake:
			l.finish(c, reason)
		case c.state == stOpen:
			c.Close(reason)
		}
	}
}
