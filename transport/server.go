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

	nextID         atomic.Uint64
	nextLoop       atomic.Uint64 // round-robin owner of the next accepted socket
	mailboxDropped atomic.Uint64
	closed         sync.Map // label -> *atomic.Uint64

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
		l.post(job{ctrl: ctrlDrain, reason: &reason}, false)
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
		l.post(job{ctrl: ctrlQuit}, false) // a loop closes what is left, then exits
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
// an id → *Conn table. Safe from any goroutine;
// never blocks: each loop gets one job in its bounded mailbox. The slices in byLoop and
// frame must not be modified afterwards. A Conn listed under the wrong loop is skipped
// (writing it from a loop that does not own it would make two writers), as are
// closed ones.
func (s *Server) Fanout(frame []byte, byLoop [][]*Conn, exceptID uint64) {
	if len(frame) == 0 {
		return
	}
	for i, conns := range byLoop {
		if i >= len(s.loops) {
			break
		}
		if len(conns) > 0 {
			s.loops[i].post(job{frame: frame, conns: conns, except: exceptID}, true)
		}
	}
}

// Each runs fn for every open connection, on its owner loop (one mailbox job per
// loop; fn runs as a Handler callback does, and may write to or close the connection).
// It does not wait. It is for rare sweeps (a config reload closing a removed app's
// connections), not for the data path: each call visits every connection.
func (s *Server) Each(fn func(c *Conn)) {
	if fn == nil {
		return
	}
	for _, l := range s.loops {
		l.post(job{fn: func() {
			for _, e := range l.slab {
				if c := e.c; c != nil && c.state == stOpen {
					fn(c)
				}
			}
		}}, false)
	}
}

// Do runs fn on c's owner loop (from any goroutine), unless c is already closed
// (its socket is gone). Unlike Fanout, Do is admitted past the mailbox bound: callers
// use it for state changes that must not be lost (confirming a subscription, closing
// a connection), and bound how many they issue themselves. Jobs stay in order with
// Fanout jobs on the same loop.
func (s *Server) Do(c *Conn, fn func()) {
	if c == nil || fn == nil {
		return
	}
	c.l.post(job{c: c, fn: fn}, false)
}
