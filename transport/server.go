package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Server owns the listening socket, the epoll loops and every connection.
type Server struct {
	cfg   Config
	log   *slog.Logger
	loops []*loop
	addr  string
	base  time.Time // the loops' clock is time since base (monotonic)

	nextID            atomic.Uint64
	nextLoop          atomic.Uint64 // round-robin owner of the next accepted socket
	mailboxDropped    atomic.Uint64 // Fanout shares refused for a full backlog (jobs)
	deliveriesDropped atomic.Uint64 // and their connections
	doRefused         atomic.Uint64 // Do jobs refused past DoMailboxSize
	closed            sync.Map      // label -> *atomic.Uint64

	trusted    []netip.Prefix // Config.TrustedProxies, normalized
	trackPeers bool           // loops keep each connection's address (loop.peers)
	limits     *ipLimiter     // nil without per-IP limits
	draining   atomic.Bool    // Drain has been called (Stats)
	nowFn      func() int64   // tests: replaces the clock; set before Run

	// lnMu guards lnFD. A loop holds it shared while it accepts, StopAccepting holds
	// it exclusively while it closes the fd: no accept4 ever runs on a closed (and
	// possibly reused) fd number. Lock order: lnMu before a loop's mailbox mutex (a
	// loop posts the sockets it deals out while holding lnMu shared).
	lnMu sync.RWMutex
	lnFD int

	httpSrv *http.Server
	httpLn  *httpListener

	mu           sync.Mutex // guards running, done and drainStarted
	running      bool
	done         bool
	drainStarted bool

	loopWG sync.WaitGroup
	httpWG sync.WaitGroup
}

// New binds cfg.Addr and prepares the loops. Call Run to start serving.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, ErrNoHandler
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, base: time.Now(), lnFD: -1}
	if cfg.ProxyProtocol {
		var ok bool
		if s.trusted, ok = normalizePrefixes(cfg.TrustedProxies); !ok {
			return nil, fmt.Errorf("%w: TrustedProxies: invalid prefix in %v", ErrConfig, cfg.TrustedProxies)
		}
	}
	s.limits = newIPLimiter(cfg.MaxConnectionsPerIP, cfg.MaxUpgradesPerIPPerSecond)
	s.trackPeers = cfg.ProxyProtocol || s.limits != nil
	s.nextID.Store(cfg.FirstConnID)
	fd, bound, err := listen(cfg.Addr, cfg.ReusePort)
	if err != nil {
		return nil, err
	}
	s.lnFD, s.addr = fd, bound
	for i := range cfg.Loops {
		l, err := newLoop(s, i)
		if err == nil {
			s.loops = append(s.loops, l)
			err = l.watchListener(fd)
		}
		if err != nil {
			s.closeFDs()
			return nil, fmt.Errorf("%w: loop %d: %w", ErrPoll, i, err)
		}
	}
	h := cfg.HTTP
	if h == nil {
		h = http.HandlerFunc(notFound)
	}
	s.httpLn = newHTTPListener(bound)
	s.httpSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       30 * time.Second, // API bodies are small
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

func (s *Server) closeFDs() {
	_ = s.StopAccepting()
	for _, l := range s.loops {
		l.closeFDs()
	}
}

func (s *Server) clock() int64 {
	if s.nowFn != nil {
		return s.nowFn()
	}
	return int64(time.Since(s.base))
}

// Addr is the bound listen address (useful with port 0).
func (s *Server) Addr() string { return s.addr }

// NumLoops is the number of epoll loops; Conn.Loop is in [0, NumLoops).
func (s *Server) NumLoops() int { return len(s.loops) }

// Run starts the loops and the HTTP handoff server; it returns at once.
func (s *Server) Run() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
		return ErrClosed
	case s.running:
		return ErrRunning
	}
	s.running = true
	for _, l := range s.loops {
		s.loopWG.Add(1)
		go l.run()
	}
	s.httpWG.Add(1)
	go func() {
		defer s.httpWG.Done()
		_ = s.httpSrv.Serve(s.httpLn)
	}()
	return nil
}

// StopAccepting closes the listening socket; open connections are untouched.
// Safe from any goroutine, including a Handler callback.
func (s *Server) StopAccepting() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.lnFD < 0 {
		return nil
	}
	for _, l := range s.loops {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.lnFD, nil) // epoll_ctl is thread-safe
	}
	err := unix.Close(s.lnFD)
	s.lnFD = -1
	if err != nil {
		return fmt.Errorf("%w: close: %w", ErrListen, err)
	}
	return nil
}

// Shutdown stops accepting, closes every WebSocket with reason, waits until they are gone
// or ctx ends (then closes the rest abruptly), stops the HTTP server, stops the loops.
// A zero reason means CloseShutdown. It must not be called from a Handler callback.
func (s *Server) Shutdown(ctx context.Context, reason CloseReason) error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return ErrClosed
	}
	s.done = true
	running := s.running
	s.mu.Unlock()
	if reason == (CloseReason{}) {
		reason = CloseShutdown
	}
	err := s.StopAccepting()
	if !running {
		_ = s.httpLn.Close()
		s.closeFDs()
		return err
	}

	forced := false
	for _, l := range s.loops {
		l.postCtrl(job{ctrl: ctrlDrain, reason: &reason})
	}
	for _, l := range s.loops {
		select {
		case <-l.drained:
		case <-ctx.Done():
			forced = true
		}
		if forced {
			break
		}
	}
	for _, l := range s.loops {
		l.postCtrl(job{ctrl: ctrlQuit}) // a loop closes what is left, then exits
	}
	s.loopWG.Wait()

	if forced {
		_ = s.httpSrv.Close()
	} else if e := s.httpSrv.Shutdown(ctx); e != nil {
		forced = true
		_ = s.httpSrv.Close()
	}
	s.httpWG.Wait()
	s.httpLn.drain()
	for _, l := range s.loops {
		l.closeFDs()
	}
	if forced {
		err = errors.Join(err, fmt.Errorf("%w: %w", ErrForcedClose, context.Cause(ctx)))
	}
	return err
}

// Fanout writes one prebuilt frame to every connection in byLoop (byLoop[i] holds only
// connections owned by loop i), skipping the connection whose ID is exceptID (0 for
// none: IDs start at 1). The skip is by ID so that a caller can exclude a sender it
// knows only by its id (a socket_id from another goroutine or node) without keeping
// an id → *Conn table. Safe from any goroutine; never blocks: each loop gets one job
// in its bounded mailbox. The slices in byLoop and frame must not be modified
// afterwards. A Conn listed under the wrong loop is skipped (writing it from a loop
// that does not own it would make two writers), as are closed ones.
//
// A loop whose fan-out backlog is full (Config.MailboxSize jobs, or
// Config.MailboxDeliveries deliveries, queued or being written) refuses its share,
// as does a loop that has stopped. Fanout returns how many connections of byLoop
// (exceptID aside) were in refused shares: the caller counts them as not delivered.
// Refusals for a full backlog are counted in Stats.MailboxDropped (jobs) and
// Stats.DeliveriesDropped (connections).
func (s *Server) Fanout(frame []byte, byLoop [][]*Conn, exceptID uint64) (dropped int) {
	if len(frame) == 0 {
		return 0
	}
	for i, conns := range byLoop {
		if i >= len(s.loops) {
			break
		}
		if len(conns) == 0 {
			continue
		}
		if ok, closed := s.loops[i].postFanout(job{frame: frame, conns: conns, except: exceptID}); !ok {
			dropped += s.refused(conns, exceptID, closed)
		}
	}
	return dropped
}

// FanoutWait is Fanout for a caller that may wait (never a loop, and never while
// holding a lock a loop takes): a loop whose backlog is full is given its share as
// soon as its backlog shrinks, for at most wait in all, or until ctx ends; only the
// shares still refused then are dropped (and returned, counted as by Fanout). With
// room everywhere it costs what Fanout costs and allocates nothing.
func (s *Server) FanoutWait(ctx context.Context, wait time.Duration, frame []byte, byLoop [][]*Conn, exceptID uint64) (dropped int) {
	if len(frame) == 0 {
		return 0
	}
	var timer *time.Timer
	var expired <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for i, conns := range byLoop {
		if i >= len(s.loops) {
			break
		}
		if len(conns) == 0 {
			continue
		}
		l := s.loops[i]
		j := job{frame: frame, conns: conns, except: exceptID}
		for {
			ok, closed := l.postFanout(j)
			if ok {
				break
			}
			if closed || wait <= 0 || ctx.Err() != nil {
				dropped += s.refused(conns, exceptID, closed)
				break
			}
			l.waiters.Add(1) // before roomChan: fanoutDone then sees a waiter
			room := l.roomChan()
			if room == nil {
				l.waiters.Add(-1)
				continue // room appeared, or the loop stopped: the next post tells
			}
			if timer == nil {
				timer = time.NewTimer(wait)
				expired = timer.C
			}
			select {
			case <-room:
			case <-ctx.Done():
			case <-expired:
				wait = 0 // the time is up: this and the remaining shares get one try each
			}
			l.waiters.Add(-1)
		}
	}
	return dropped
}

// refused counts a refused share and returns its connections, exceptID aside.
func (s *Server) refused(conns []*Conn, exceptID uint64, closed bool) int {
	n := len(conns)
	if exceptID != 0 {
		for _, c := range conns {
			if c != nil && c.id == exceptID {
				n--
			}
		}
	}
	if !closed {
		s.mailboxDropped.Add(1)
		s.deliveriesDropped.Add(uint64(n))
	}
	return n
}

// Congested reports whether some loop's fan-out backlog is at or past its high-water
// mark: half of Config.MailboxDeliveries deliveries, or half of Config.MailboxSize
// jobs, queued or being written. A caller that can refuse work (an HTTP publish, a
// client event) refuses it then, so that what it accepts can still be delivered:
// Fanout refuses only past the full bound. Safe from any goroutine; two atomic loads
// per loop.
func (s *Server) Congested() bool {
	for _, l := range s.loops {
		if l.backlog.Load() >= int64(s.cfg.MailboxDeliveries/2) || l.backlogJobs.Load() >= int64(s.cfg.MailboxSize/2) {
			return true
		}
	}
	return false
}

// Each runs fn for every open connection, on its owner loop (one mailbox job per
// loop; fn runs as a Handler callback does, and may write to or close the connection).
// It does not wait. It is for rare sweeps (a config reload closing a removed app's
// connections), not for the data path: each call visits every connection. Its jobs
// are always admitted: one per loop per call, and its callers are rare.
func (s *Server) Each(fn func(c *Conn)) {
	if fn == nil {
		return
	}
	for _, l := range s.loops {
		l.postCtrl(job{fn: func() {
			for _, e := range l.slab {
				if c := e.c; c != nil && c.state == stOpen {
					fn(c)
				}
			}
		}})
	}
}

// Do runs fn on c's owner loop (from any goroutine), unless c is already closed
// (its socket is gone). Callers use it for state changes that must not be lost
// (confirming a subscription, closing a connection), so Do is not bounded by the
// fan-out backlog; it has its own bound, Config.DoMailboxSize queued Do jobs per
// loop. Past it, fn is dropped and c is closed with Config.Overloaded by its loop at
// the start of its next batch (once, however many of its Dos were refused; later Dos
// for c are refused until then), so that nothing fanned out after the lost change
// reaches c: its client reconnects and starts from a state the server knows, instead
// of missing one change without a word. The jobs queued for c still run (on a closing
// connection, whose writes are dropped), and OnClose follows as for any close, so a
// Handler that cleans up there loses nothing. Do reports whether fn was queued. Jobs
// stay in order with Fanout jobs on the same loop.
func (s *Server) Do(c *Conn, fn func()) bool {
	if c == nil || fn == nil {
		return false
	}
	return c.l.postDo(job{c: c, fn: fn})
}
