package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a Pool. Only Addr and Key (or Path) are required.
type Config struct {
	// Addr is the server's IPv4 "ip:port". Required unless Addrs is set.
	Addr string
	// Addrs, if set, replaces Addr with several servers (the nodes of a cluster):
	// connection id goes to Addrs[id % len(Addrs)], so that each server gets an equal
	// share in dial order.
	Addrs []string
	// Key is the app key: connections open /app/{Key}?protocol=7&client=herald-loadgen
	// &version=0.1.0&flash=false. Required unless Path is set.
	Key string
	// Path overrides the request target (path and query) of the upgrade request.
	Path string
	// Secret is the app secret, used to sign private and presence subscriptions.
	Secret string
	// SourceAddrs are local IPv4 addresses the sockets bind to, taken round-robin by
	// connection id, so that one process (or phase) can open more connections than one
	// address has ephemeral ports and avoid TIME_WAIT collisions with another. On
	// loopback any address in 127.0.0.0/8 works. Default: none (the kernel chooses).
	SourceAddrs []netip.Addr
	// Loops is the number of epoll loops, each with its own goroutine. Default
	// GOMAXPROCS.
	Loops int
	// MaxHandshakes bounds the connections in flight (from socket() to
	// pusher:connection_established) across the pool. Default 512.
	MaxHandshakes int
	// ReadBatch, if positive, makes a busy loop wait this long after handling a
	// partial batch of events before it asks for the next one, so that it reads
	// what arrived meanwhile in one wake-up instead of one wake-up per frame. An idle
	// loop still blocks in epoll_wait and wakes at once. It adds up to ReadBatch to
	// the latencies it measures; it is for many client processes sharing the
	// server's cores, where a wake-up per frame costs more CPU than the frames.
	ReadBatch time.Duration
	// Channels returns the channels connection id subscribes to as soon as it is
	// established; nil or an empty result subscribes to none. Called on a loop
	// goroutine; the result is not retained.
	Channels func(id uint64) []string
	// ChannelData returns the channel_data of a presence subscription. Default
	// {"user_id":"<id>"}.
	ChannelData func(id uint64, channel string) string
	// OnEvent, if set, is called on the loop goroutine for every channel event (not
	// the pusher: and pusher_internal: ones). It must not block; ev's slices are valid
	// only during the call.
	OnEvent func(ev *Event)
	// OnSubscribed, if set, is called on the loop goroutine when every subscription
	// of connection id has succeeded, before Stats counts it as subscribed. It must
	// not block.
	OnSubscribed func(id uint64)
	// OnClosed, if set, is called on the loop goroutine when an established
	// connection ends; subscribed says whether OnSubscribed was called for it. It
	// must not block.
	OnClosed func(id uint64, subscribed bool)
	// HandshakeTimeout bounds the time from socket() to connection_established.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// ActivityTimeout: a connection that received nothing for min(ActivityTimeout,
	// the server's activity_timeout) sends pusher:ping, as pusher-js does. Default
	// 120 s.
	ActivityTimeout time.Duration
	// PongTimeout: a connection that received nothing this long after its ping is
	// closed. Default 30 s.
	PongTimeout time.Duration
	// CloseGrace bounds a close handshake: a connection whose server has not answered
	// its close frame this long after it was sent is closed and counted as
	// "close_timeout". Default 5 s. A large run's final close takes longer (at a million
	// connections the servers answer over about a minute), so callers pass their own
	// bound for the end of a run.
	CloseGrace time.Duration
	// MaxMessageBytes bounds a server frame and a reassembled message. Default 1 MiB.
	MaxMessageBytes int
}

// Event is a channel event as OnEvent sees it.
type Event struct {
	ConnID   uint64 // connection id (0, 1, 2, ... in dial order)
	Name     []byte // event name (JSON string contents)
	Channel  []byte // channel name
	Data     []byte // raw JSON value of data
	Received int64  // unix nanoseconds at the read that brought it
	// Seq is the payload's sequence number, 0 when data is not a sequenced payload.
	Seq uint64
	// Duplicate: the connection had already received Seq (within the last 64
	// sequence numbers it saw).
	Duplicate bool
}

// Counts are the pool's connection counters. They only grow; derived values are
// methods.
type Counts struct {
	Dialed      int64 // connections started
	Established int64 // connections that got pusher:connection_established
	Subscribed  int64 // established connections whose every subscription succeeded
	Failed      int64 // connections that ended before being established
	Closed      int64 // established connections that ended
}

// add adds o to c.
func (c *Counts) add(o Counts) {
	c.Dialed += o.Dialed
	c.Established += o.Established
	c.Subscribed += o.Subscribed
	c.Failed += o.Failed
	c.Closed += o.Closed
}

// Open is the number of established connections still open.
func (c Counts) Open() int64 { return c.Established - c.Closed }

// InFlight is the number of connections still in their handshake.
func (c Counts) InFlight() int64 { return c.Dialed - c.Established - c.Failed }

// Pool is a set of client connections served by a few epoll loops, with no goroutine
// and no buffer per connection.
type Pool struct {
	cfg   Config
	dsts  []unix.SockaddrInet4 // Addrs, or Addr alone
	tmpls []requestTemplate    // one per dst (its Host header)
	srcs  []unix.SockaddrInet4
	seed  [16]byte
	epoch int64 // unix nanoseconds at New; activity is kept in seconds since then
	loops []*loop

	nextID                                          atomic.Uint64
	dialed, established, subscribed, failed, closed atomic.Int64
	perAddr                                         []atomic.Int64 // established, per dst

	mu      sync.Mutex // guards running, stopped
	running bool
	stopped bool
	wg      sync.WaitGroup
}

// New checks cfg and prepares the loops (epoll and eventfd descriptors). Call Run to
// start them and Close to release everything, whether Run was called or not.
func New(cfg Config) (*Pool, error) {
	addrs := cfg.Addrs
	if len(addrs) == 0 {
		addrs = []string{cfg.Addr}
	}
	var dsts []unix.SockaddrInet4
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("%w: Addr %q: want IPv4 ip:port", ErrConfig, a)
		}
		dsts = append(dsts, unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	if cfg.Key == "" && cfg.Path == "" {
		return nil, fmt.Errorf("%w: Key or Path is required", ErrConfig)
	}
	if cfg.Path == "" {
		cfg.Path = "/app/" + cfg.Key + "?protocol=7&client=herald-loadgen&version=0.1.0&flash=false"
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 512
	}
	if cfg.MaxHandshakes < cfg.Loops {
		cfg.MaxHandshakes = cfg.Loops
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ActivityTimeout <= 0 {
		cfg.ActivityTimeout = 120 * time.Second
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = 5 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 30 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	p := &Pool{
		cfg:     cfg,
		dsts:    dsts,
		epoch:   time.Now().UnixNano(),
		perAddr: make([]atomic.Int64, len(dsts)),
	}
	for _, a := range addrs {
		p.tmpls = append(p.tmpls, newRequestTemplate(a, cfg.Path))
	}
	for _, a := range cfg.SourceAddrs {
		if !a.Is4() {
			return nil, fmt.Errorf("%w: source address %v is not IPv4", ErrConfig, a)
		}
		p.srcs = append(p.srcs, unix.SockaddrInet4{Addr: a.As4()})
	}
	_, _ = rand.Read(p.seed[:])
	for i := 0; i < cfg.Loops; i++ {
		share := cfg.MaxHandshakes / cfg.Loops
		if i < cfg.MaxHandshakes%cfg.Loops {
			share++
		}
		l, err := newLoop(p, share)
		if err != nil {
			p.closeLoops()
			return nil, err
		}
		p.loops = append(p.loops, l)
	}
	return p, nil
}

// Run starts the loops.
func (p *Pool) Run() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return ErrClosed
	}
	if p.running {
		return nil
	}
	p.running = true
	for _, l := range p.loops {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			l.run()
		}()
	}
	return nil
}

// Dial starts n more connections, spread over the loops. It returns at once; the
// loops keep at most MaxHandshakes in flight. Watch Counts for the outcome.
func (p *Pool) Dial(ctx context.Context, n int) error {
	for i, l := range p.loops {
		share := n / len(p.loops)
		if i < n%len(p.loops) {
			share++
		}
		if share == 0 {
			continue
		}
		if err := p.do(ctx, l, func(l *loop) { l.toDial += share }); err != nil {
			return err
		}
	}
	return nil
}

// Send makes up to n subscribed, established connections (spread over the loops,
// round-robin within each) send the text message msg appends to dst, for example a
// client event. msg runs on loop goroutines and must not block; appending nothing
// skips the connection. Send returns once the work is queued.
func (p *Pool) Send(ctx context.Context, n int, msg func(id uint64, dst []byte) []byte) error {
	return p.spread(ctx, n, func(l *loop, share int) { l.sendEach(share, msg) })
}

// Disconnect starts the close handshake (code 1000) of up to n established
// connections, spread over the loops; they end counted in Closed with reason
// "client_close" (or "close_timeout"). It returns once the work is queued.
func (p *Pool) Disconnect(ctx context.Context, n int) error {
	return p.spread(ctx, n, func(l *loop, share int) { l.disconnect(share) })
}

// spread queues f on every loop with its share of n.
func (p *Pool) spread(ctx context.Context, n int, f func(l *loop, share int)) error {
	for i, l := range p.loops {
		share := n / len(p.loops)
		if i < n%len(p.loops) {
			share++
		}
		if share == 0 {
			continue
		}
		if err := p.do(ctx, l, func(l *loop) { f(l, share) }); err != nil {
			return err
		}
	}
	return nil
}

// Counts returns the connection counters.
func (p *Pool) Counts() Counts {
	return Counts{
		Dialed:      p.dialed.Load(),
		Established: p.established.Load(),
		Subscribed:  p.subscribed.Load(),
		Failed:      p.failed.Load(),
		Closed:      p.closed.Load(),
	}
}

// AddrCounts returns, for each server (Config.Addrs, or Addr alone), how many
// connections were established to it so far.
func (p *Pool) AddrCounts() []int64 {
	out := make([]int64, len(p.perAddr))
	for i := range p.perAddr {
		out[i] = p.perAddr[i].Load()
	}
	return out
}

// addrIndex is the server connection id goes to.
func (p *Pool) addrIndex(id uint64) int { return int(id % uint64(len(p.dsts))) }

// WaitCounts polls Counts until done returns true or ctx ends.
func (p *Pool) WaitCounts(ctx context.Context, done func(Counts) bool) (Counts, error) {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		c := p.Counts()
		if done(c) {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return c, fmt.Errorf("loadgen: waiting for connections (%+v): %w", c, ctx.Err())
		case <-t.C:
		}
	}
}

// Delivered is the number of sequenced events received so far (duplicates included).
func (p *Pool) Delivered() int64 {
	var n int64
	for _, l := range p.loops {
		n += l.delivered.Load()
	}
	return n
}

// SeqDeliveries returns how many times the event with sequence number seq was
// received across the pool (duplicates included) and the latest receive time (unix
// nanoseconds). The last SeqWindow sequence numbers are kept; older ones read as zero.
func (p *Pool) SeqDeliveries(seq uint64) (count int64, last int64) {
	uniq, dups, last := p.seqDeliveries(seq)
	return uniq + dups, last
}

// seqDeliveries returns seq's unique deliveries, duplicates and latest receive time
// across the pool. A ring slot that a newer sequence number takes while it is read
// is skipped, so each figure only grows from one read to the next while seq is
// within the window.
func (p *Pool) seqDeliveries(seq uint64) (uniq, dups, last int64) {
	for _, l := range p.loops {
		s := &l.ring[seq&(SeqWindow-1)]
		if s.seq.Load() != seq {
			continue
		}
		u, d, t := s.count.Load(), s.dups.Load(), s.last.Load()
		if s.seq.Load() != seq {
			continue // reused meanwhile: the figures may be the new seq's
		}
		uniq += u
		dups += d
		last = max(last, t)
	}
	return uniq, dups, last
}

// Stats collects the loops' histograms and counters. If lastSeq > 0, Missing counts,
// for each connection that is subscribed and open, the sequence numbers in
// [firstSeq, lastSeq] it never received; this assumes every connection was subscribed
// before firstSeq was published and that only [firstSeq, lastSeq] was published.
func (p *Pool) Stats(ctx context.Context, firstSeq, lastSeq uint64) (*Stats, error) {
	s := newStats()
	for _, l := range p.loops {
		ch := make(chan *Stats, 1)
		if err := p.do(ctx, l, func(l *loop) { ch <- l.stats(firstSeq, lastSeq) }); err != nil {
			return nil, err
		}
		select {
		case ls := <-ch:
			if err := s.merge(ls); err != nil {
				return nil, err
			}
		case <-l.done:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("loadgen: stats: %w", ctx.Err())
		}
	}
	s.Counts = p.Counts()
	return s, nil
}

// Shutdown closes every connection with a close frame (1000), waits until the server
// has answered or closed them all or ctx ends, then closes the pool.
func (p *Pool) Shutdown(ctx context.Context) error {
	return errors.Join(p.CloseConns(ctx), p.Close())
}

// CloseConns stops dialing, drops handshakes in flight and closes every connection
// with a close frame (1000), waiting until the server has answered or closed them
// all or ctx ends. The pool keeps running, so that Stats can still be read.
func (p *Pool) CloseConns(ctx context.Context) error {
	for _, l := range p.loops {
		if err := p.do(ctx, l, (*loop).beginShutdown); err != nil {
			return err
		}
	}
	_, err := p.WaitCounts(ctx, func(c Counts) bool { return c.Open() == 0 && c.InFlight() == 0 })
	return err
}

// Close stops the loops, closes every socket without a close handshake, and waits
// for the loop goroutines. It is safe to call more than once.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	running := p.running
	p.mu.Unlock()
	if !running {
		p.closeLoops()
		return nil
	}
	for _, l := range p.loops {
		l.stopRequested.Store(true)
		l.wake()
	}
	p.wg.Wait()
	return nil
}

func (p *Pool) closeLoops() {
	for _, l := range p.loops {
		l.release()
	}
}

// do queues f on l's goroutine. The queue is bounded: do waits for room or ctx.
func (p *Pool) do(ctx context.Context, l *loop, f func(*loop)) error {
	p.mu.Lock()
	running, stopped := p.running, p.stopped
	p.mu.Unlock()
	switch {
	case stopped:
		return ErrClosed
	case !running:
		return ErrNotRunning
	}
	select {
	case l.cmds <- f:
		l.wake()
		return nil
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("loadgen: loop busy: %w", ctx.Err())
	}
}
