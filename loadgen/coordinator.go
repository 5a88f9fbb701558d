package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CoordinatorConfig configures a Coordinator. Spec is required; the zero value of
// every other field is a working default.
type CoordinatorConfig struct {
	// Spec is the run. It is normalized by NewCoordinator.
	Spec Spec
	// Listen is where workers join (TCP). Default "127.0.0.1:0" (any free port).
	Listen string
	// Spawn is how many worker processes to start on this host. Each runs
	// WorkerCommand with "--join <listen address>" appended.
	Spawn int
	// WorkerCommand is the worker program and its arguments. Default: this
	// executable with the argument "worker".
	WorkerCommand []string
	// WorkerOutput receives the spawned workers' stdout and stderr. Default: discard.
	WorkerOutput io.Writer
	// Expect is how many more workers (started elsewhere) must join.
	Expect int
	// SourceBase is the first source address given to workers when the target is on
	// loopback: worker i binds SourceAddrs(SourceBase, n*k)[i*k:(i+1)*k], with k
	// SourcesPerWorker. Default 127.0.1.1.
	SourceBase netip.Addr
	// SourcesPerWorker is how many source addresses each worker binds, taken
	// round-robin by its connections. The ephemeral ports run out per (source,
	// destination) pair, and connect() slows as a pair fills: at about 9,000
	// connections per address, one worker can hold 18,000 with 2. Default 1.
	SourcesPerWorker int
	// NoSources leaves the source address to the kernel.
	NoSources bool
	// JoinTimeout bounds the wait for every worker to join. Default 30 s.
	JoinTimeout time.Duration
	// HeartbeatTimeout: a running worker from which nothing arrives this long,
	// while others are heard from, is lost (silent ten times as long: lost in any
	// case). Default 5 s; workers send every second.
	HeartbeatTimeout time.Duration
	// OnProgress, if set, is called on the coordinator's goroutine about once a
	// second. It must return quickly.
	OnProgress func(Progress)
	// Logger receives the coordinator's events (workers joining, lost, spawned
	// PIDs). Default: discard.
	Logger *slog.Logger
}

// Progress is the live state of a run, for a progress display.
type Progress struct {
	Elapsed, Duration time.Duration
	Phase             string // joining, ramp, load, drain, stopping, done
	Target            int    // connections
	Open              int64  // established and open now
	Established       int64  // handshakes completed so far
	Failed            int64  // connections that failed before being established
	DeliveriesPerSec  float64
	PublishesPerSec   float64
	P50, P99          time.Duration // publish-to-receive latency in the last interval
	Errors            uint64
	Workers, Lost     int
}

// Coordinator plans a run over workers, merges their snapshots exactly and builds
// the Report. Create it with NewCoordinator, then call Run once.
type Coordinator struct {
	cfg  CoordinatorConfig
	spec *Spec
	log  *slog.Logger
	ln   net.Listener

	events chan wevent
	ready  chan struct{} // a reader has a pending snapshot (capacity 1: a poke)
	done   chan struct{} // closed when Run ends: readers stop pushing
	wg     sync.WaitGroup
	procs  procs

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}

	// mergeHook (tests only) runs before every merge of a snapshot on the run
	// goroutine: a test slows it down, as a coordinator starved of CPU.
	mergeHook func()
}

// link is one worker's control connection.
//
// Its reader goroutine stamps seen whenever bytes arrive and coalesces the
// worker's periodic snapshots into pending (deltas add exactly), so that a run
// goroutine that falls behind (a starved machine) merges one combined snapshot per
// worker when it catches up, and never takes a worker whose bytes keep arriving for
// a silent one.
type link struct {
	conn net.Conn
	cd   *codec
	seen atomic.Int64 // unix ns of the last bytes read from the worker

	mu        sync.Mutex // guards pending and coalesced
	pending   *Snapshot  // non-final snapshots not yet merged by the run, coalesced
	coalesced int        // snapshots folded into another one, over the run
}

// take returns the pending snapshot (nil if none) and clears it.
func (l *link) take() *Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.pending
	l.pending = nil
	return s
}

// stampReader records when bytes arrive on a worker connection.
type stampReader struct {
	r    io.Reader
	seen *atomic.Int64
}

func (s stampReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n > 0 {
		s.seen.Store(time.Now().UnixNano())
	}
	return n, err
}

// wevent is a message (or the end) of a worker connection.
type wevent struct {
	l   *link
	msg *ctrlMsg
	err error
}

// NewCoordinator checks cfg and starts listening for workers.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if err := cfg.Spec.Normalize(); err != nil {
		return nil, err
	}
	if cfg.Spawn < 0 || cfg.Expect < 0 || cfg.Spawn+cfg.Expect == 0 {
		return nil, fmt.Errorf("%w: spawn %d and expect %d workers", ErrNoWorkers, cfg.Spawn, cfg.Expect)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if !cfg.SourceBase.IsValid() {
		cfg.SourceBase = netip.AddrFrom4([4]byte{127, 0, 1, 1})
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 30 * time.Second
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("loadgen: coordinator listen: %w", err)
	}
	c := &Coordinator{
		cfg: cfg, spec: &cfg.Spec, log: cfg.Logger, ln: ln,
		events: make(chan wevent, 256),
		ready:  make(chan struct{}, 1),
		done:   make(chan struct{}),
		conns:  map[net.Conn]struct{}{},
	}
	return c, nil
}

// Addr is the address workers join.
func (c *Coordinator) Addr() string { return c.ln.Addr().String() }

// Run spawns and waits for the workers, runs the scenario for Spec.Duration (or
// until ctx ends: Stopped is then "interrupted"), and returns the Report. Every wait
// is bounded. The error is non-nil when the run could not start (workers missing) or
// ended badly (all workers lost); the Report is still returned whenever a run began.
func (c *Coordinator) Run(ctx context.Context) (*Report, error) {
	defer c.close()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.accept()
	}()
	for i := 0; i < c.cfg.Spawn; i++ {
		p, err := c.procs.start(c.cfg.WorkerCommand, c.Addr(), c.cfg.WorkerOutput)
		if err != nil {
			return nil, err
		}
		c.log.Info("spawned worker", "pid", p.pid)
	}
	r := newRun(c)
	if err := r.join(ctx); err != nil {
		return nil, err
	}
	_ = c.ln.Close() // no more workers
	r.execute(ctx)
	rep := r.report()
	if r.fatal != nil {
		return rep, r.fatal
	}
	return rep, nil
}

func (c *Coordinator) accept() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		select {
		case <-c.done:
			c.mu.Unlock()
			conn.Close()
			return
		default:
		}
		c.conns[conn] = struct{}{}
		c.wg.Add(1)
		c.mu.Unlock()
		go func() {
			defer c.wg.Done()
			c.serve(conn)
		}()
	}
}

// serve reads one worker's messages until its connection ends. Periodic snapshots
// are coalesced into l.pending (the run goroutine is poked, never waited for); the
// rest (hello, the final snapshot, failures, the end) go through c.events in order,
// after the pending snapshot they follow.
func (c *Coordinator) serve(conn net.Conn) {
	l := &link{conn: conn}
	l.seen.Store(time.Now().UnixNano())
	l.cd = newCodecReader(conn, stampReader{r: conn, seen: &l.seen})
	for {
		m, err := l.cd.recv(0)
		if err == nil && m.Type == msgSnapshot && m.Snapshot != nil && m.Snapshot.Stats != nil && !m.Snapshot.Final {
			l.mu.Lock()
			if l.pending == nil {
				l.pending = m.Snapshot
			} else {
				err = l.pending.coalesce(m.Snapshot)
				l.coalesced++
			}
			l.mu.Unlock()
			if err == nil {
				select {
				case c.ready <- struct{}{}:
				default:
				}
				continue
			}
			m = nil
		}
		select {
		case c.events <- wevent{l: l, msg: m, err: err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// close stops the worker processes (they exit by themselves after their final
// snapshot; the rest are killed), then the listener, the connections and the
// reader goroutines.
func (c *Coordinator) close() {
	c.procs.stop(3 * time.Second)
	c.mu.Lock()
	close(c.done)
	for conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	_ = c.ln.Close()
	c.wg.Wait()
}

func (c *Coordinator) dropConn(l *link) {
	c.mu.Lock()
	delete(c.conns, l.conn)
	c.mu.Unlock()
	l.conn.Close()
}

// Worker states in WorkerSummary.State.
const (
	stateJoined  = "joined"
	stateRunning = "running"
	stateOK      = "ok"
	stateLost    = "lost"
	stateFailed  = "failed"
)

// workerState is the coordinator's view of one worker.
type workerState struct {
	id       int
	l        *link
	hello    hello
	addr     string
	source   string
	conns    int
	state    string
	err      string
	lastSeen time.Time
	open     int64
	subs     []int64
	targets  []int64 // connections established per server, cumulative
	counts   Counts  // its Stats.Counts, summed
	deliv    int64   // its Stats.Delivered, summed
	heap     int64
	rss      int64
}

func (w *workerState) live() bool { return w.state == stateRunning }

// join waits until every expected worker has said hello.
func (r *run) join(ctx context.Context) error {
	c := r.c
	want := c.cfg.Spawn + c.cfg.Expect
	deadline := time.NewTimer(c.cfg.JoinTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	byLink := map[*link]*workerState{}
	for len(r.workers) < want {
		select {
		case ev := <-c.events:
			if ev.err != nil {
				if w := byLink[ev.l]; w != nil {
					// Gone before the start: forget it; another may take its place.
					c.log.Warn("worker left before the start", "addr", w.addr, "err", ev.err)
					r.workers = removeWorker(r.workers, w)
					delete(byLink, ev.l)
				}
				c.dropConn(ev.l)
				continue
			}
			if ev.msg.Type != msgHello || ev.msg.Hello == nil || byLink[ev.l] != nil {
				c.rejectLink(ev.l, "expected one hello")
				continue
			}
			if ev.msg.Version != ProtocolVersion {
				c.rejectLink(ev.l, fmt.Sprintf("protocol version %d, want %d", ev.msg.Version, ProtocolVersion))
				continue
			}
			w := &workerState{l: ev.l, hello: *ev.msg.Hello, addr: ev.l.conn.RemoteAddr().String(),
				state: stateJoined}
			byLink[ev.l] = w
			r.workers = append(r.workers, w)
			c.log.Info("worker joined", "addr", w.addr, "pid", w.hello.PID, "host", w.hello.Host,
				"joined", len(r.workers), "want", want)
		case <-poll.C:
			if p := c.procs.exitedEarly(); p != nil {
				return fmt.Errorf("%w: spawned worker pid %d exited before the start: %v", ErrNoWorkers, p.pid, p.err)
			}
		case <-deadline.C:
			return fmt.Errorf("%w: %d of %d workers joined within %v", ErrNoWorkers, len(r.workers), want, c.cfg.JoinTimeout)
		case <-ctx.Done():
			return fmt.Errorf("%w: interrupted while %d of %d workers had joined", ErrNoWorkers, len(r.workers), want)
		}
	}
	return nil
}

func removeWorker(ws []*workerState, w *workerState) []*workerState {
	out := ws[:0]
	for _, x := range ws {
		if x != w {
			out = append(out, x)
		}
	}
	return out
}

func (c *Coordinator) rejectLink(l *link, why string) {
	_ = l.cd.send(&ctrlMsg{Type: msgReject, Version: ProtocolVersion, Error: why}, time.Second)
	c.dropConn(l)
}

// lose marks a running worker lost, closes its connection and forgets its
// subscriptions (its connections are gone with it).
func (r *run) lose(w *workerState, why error) {
	if w.state != stateRunning && w.state != stateJoined {
		return
	}
	w.state = stateLost
	w.err = why.Error()
	w.subs = nil
	r.lostConns += w.open // its connections went with it
	w.open = 0
	r.lostErrors++
	r.c.log.Warn("worker lost", "worker", w.id, "addr", w.addr, "pid", w.hello.PID, "err", why)
	r.c.dropConn(w.l)
}

// send sends m to a running worker; a worker that cannot take it is lost.
func (r *run) send(w *workerState, m *ctrlMsg) {
	if !w.live() {
		return
	}
	if err := w.l.cd.send(m, 2*time.Second); err != nil {
		r.lose(w, fmt.Errorf("%w: %w", ErrWorkerLost, err))
	}
}

func (r *run) broadcast(typ string) {
	for _, w := range r.workers {
		r.send(w, &ctrlMsg{Type: typ})
	}
}

// Run phases.
const (
	phaseRamp     = "ramp"
	phaseLoad     = "load"
	phaseDrain    = "drain"
	phaseStopping = "stopping"
	phaseDone     = "done"
)

// execute sends the plans and drives the phases until every worker has sent its
// final snapshot or is lost, or the stop deadline passes.
func (r *run) execute(ctx context.Context) {
	c, spec := r.c, r.spec
	n := len(r.workers)
	var srcs []netip.Addr
	k := max(c.cfg.SourcesPerWorker, 1)
	if !c.cfg.NoSources && spec.TargetIsLoopback() {
		var err error
		if srcs, err = SourceAddrs(c.cfg.SourceBase, n*k); err != nil {
			c.log.Warn("no source addresses", "err", err)
			srcs = nil
		}
	}
	r.start = time.Now().Add(200 * time.Millisecond)
	for i, w := range r.workers {
		w.id = i
		w.conns = spec.Connections / n
		if i < spec.Connections%n {
			w.conns++
		}
		plan := &Plan{WorkerID: i, Workers: n, Spec: *spec, Connections: w.conns, Start: r.start.UnixNano()}
		if w.hello.Source != "" {
			plan.Sources = []string{w.hello.Source}
		} else if srcs != nil {
			for _, a := range srcs[i*k : (i+1)*k] {
				plan.Sources = append(plan.Sources, a.String())
			}
		}
		w.source = strings.Join(plan.Sources, ",")
		w.state = stateRunning
		w.lastSeen = time.Now()
		r.send(w, &ctrlMsg{Type: msgPlan, Version: ProtocolVersion, Plan: plan})
	}
	if spec.publishing() {
		pub, err := newAPIPublisher(spec, n)
		if err != nil {
			r.fatal = err
			r.stopped = "error: " + err.Error()
			r.broadcast(msgStop)
		} else {
			r.pub = pub
			r.startTracking(pub, n)
		}
	}

	endAt := r.start.Add(spec.Duration.D())
	drainAt := endAt.Add(-spec.Drain.D())
	rampFor := time.Duration(float64(spec.Connections) / spec.Ramp * float64(time.Second))
	// A ramp may take up to twice its planned time (a machine that slows as the
	// count grows: at a million on 2 cores, about 1.4 times) before the load phase
	// starts without it.
	rampDeadline := r.start.Add(2*rampFor + 10*time.Second)
	if rampDeadline.After(drainAt) {
		rampDeadline = drainAt
	}
	var stopDeadline time.Time
	phase := phaseRamp
	if r.fatal != nil {
		phase = phaseStopping
		stopDeadline = time.Now().Add(spec.CloseTimeout.D() + 5*time.Second)
	}
	// Sample half a second out of phase with the workers' snapshots (sent every
	// second from the start), so that each interval holds one snapshot per worker.
	r.lastSample = r.start.Add(-500 * time.Millisecond)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	interrupted := ctx.Done()
	stopNow := func(why string) {
		if r.stopped == "" {
			r.stopped = why
		}
		if phase == phaseLoad {
			r.endLoad()
		}
		if phase != phaseStopping {
			r.broadcast(msgStop)
			phase = phaseStopping
			stopDeadline = time.Now().Add(spec.CloseTimeout.D() + 5*time.Second)
		}
	}
	for phase != phaseDone {
		select {
		case ev := <-c.events:
			r.handle(ev, phase == phaseStopping)
		case <-c.ready:
			r.mergePending()
		case <-interrupted:
			interrupted = nil
			c.log.Info("interrupted: stopping the workers")
			stopNow("interrupted")
		case now := <-tick.C:
			if now.Sub(r.lastSample) >= time.Second {
				r.sample(now, phase)
			}
			r.mergePending()
			if phase != phaseStopping {
				r.checkSilent(now)
			}
			switch {
			case phase == phaseRamp && (r.rampDone() || !now.Before(rampDeadline)):
				phase = phaseLoad
				r.loadStart = now
				r.inLoad = true
				r.broadcast(msgLoad)
				if r.pub != nil {
					r.pub.start()
				}
				if r.rampDone() {
					c.log.Info("ramp done; load phase", "open", r.open())
				} else {
					c.log.Warn("ramp not done by its deadline; load phase starts anyway", "open", r.open(),
						"target", spec.Connections)
				}
			case phase == phaseLoad && (!now.Before(drainAt) || r.publishedAll()):
				if now.Before(drainAt) { // every publish of Spec.PublishCount answered
					endAt = now.Add(spec.Drain.D())
				}
				r.endLoad()
				phase = phaseDrain
			case phase == phaseDrain && r.settled():
				stopNow("complete")
			case (phase == phaseDrain || phase == phaseRamp) && !now.Before(endAt):
				stopNow("duration")
			case phase == phaseStopping && (r.allFinal() || !now.Before(stopDeadline)):
				for _, w := range r.workers {
					if w.live() {
						r.lose(w, fmt.Errorf("%w: no final snapshot within %v of stop", ErrWorkerLost,
							spec.CloseTimeout.D()+5*time.Second))
					}
				}
				phase = phaseDone
			}
		}
		if phase != phaseStopping && phase != phaseDone && r.allGone() {
			c.log.Warn("every worker is lost")
			r.fatal = fmt.Errorf("%w: every worker was lost", ErrWorkerLost)
			stopNow("error: every worker was lost")
		}
	}
	r.end = time.Now()
	r.sample(r.end, phaseDone)
}

// endLoad stops publishing (in-flight publishes get a bounded grace) and tells the
// workers to stop sending, so that what was sent can arrive before the end.
func (r *run) endLoad() {
	if r.pub != nil {
		r.pub.stop(max(r.spec.Drain.D()/2, 500*time.Millisecond))
		r.accountPublishes()
	}
	r.loadEnd = time.Now()
	r.inLoad = false
	r.broadcast(msgQuiesce)
}

// handle applies one worker event.
func (r *run) handle(ev wevent, stopping bool) {
	var w *workerState
	for _, x := range r.workers {
		if x.l == ev.l {
			w = x
		}
	}
	if w == nil {
		r.c.dropConn(ev.l) // a late joiner
		return
	}
	if ev.err != nil {
		if w.live() {
			r.lose(w, fmt.Errorf("%w: %w", ErrWorkerLost, ev.err))
		}
		return
	}
	if !w.live() {
		return
	}
	w.lastSeen = time.Now()
	switch ev.msg.Type {
	case msgSnapshot:
		// What the reader coalesced before this (final) snapshot comes first.
		if p := w.l.take(); p != nil {
			if err := r.merge(w, p); err != nil {
				r.lose(w, err)
				return
			}
			r.afterSnapshot(w, p)
		}
		if ev.msg.Snapshot == nil || ev.msg.Snapshot.Stats == nil {
			r.lose(w, fmt.Errorf("%w: empty snapshot", ErrProtocol))
			return
		}
		if err := r.merge(w, ev.msg.Snapshot); err != nil {
			r.lose(w, err)
			return
		}
		r.afterSnapshot(w, ev.msg.Snapshot)
		if ev.msg.Snapshot.Final {
			w.state = stateOK
			if e := ev.msg.Snapshot.Error; e != "" {
				w.err = e
			}
			if !stopping {
				// A worker that ends by itself (interrupted on its host) is done early.
				r.c.log.Warn("worker ended early", "worker", w.id, "why", ev.msg.Snapshot.Error)
			}
		}
	case msgSeqs:
		r.onSeqs(w, ev.msg.Seqs)
	case msgFailed:
		w.state = stateFailed
		w.err = ev.msg.Error
		w.subs = nil
		r.lostErrors++
		r.c.log.Warn("worker failed", "worker", w.id, "err", ev.msg.Error)
	default:
		r.lose(w, fmt.Errorf("%w: unexpected %q from a worker", ErrProtocol, ev.msg.Type))
	}
}

// mergePending merges the snapshots the readers have coalesced since the last call.
func (r *run) mergePending() {
	for _, w := range r.workers {
		if !w.live() {
			continue
		}
		if p := w.l.take(); p != nil {
			w.lastSeen = time.Now()
			if err := r.merge(w, p); err != nil {
				r.lose(w, err)
				continue
			}
			r.afterSnapshot(w, p)
		}
	}
}

// checkSilent loses the running workers from which nothing has arrived for
// HeartbeatTimeout while others were heard from in the meantime (or for ten
// times as long in any case). Silence is judged on the bytes the readers receive,
// not on the merges, and relative to the other workers, so that a coordinator that
// is itself starved of CPU (its readers as late as its merges) loses nobody.
func (r *run) checkSilent(now time.Time) {
	timeout := r.c.cfg.HeartbeatTimeout
	var newest time.Time
	seen := func(w *workerState) time.Time {
		t := time.Unix(0, w.l.seen.Load())
		if w.lastSeen.After(t) {
			t = w.lastSeen
		}
		return t
	}
	for _, w := range r.workers {
		if w.live() {
			if t := seen(w); t.After(newest) {
				newest = t
			}
		}
	}
	for _, w := range r.workers {
		if !w.live() {
			continue
		}
		t := seen(w)
		silent := now.Sub(t)
		if silent > timeout && (newest.Sub(t) > timeout || silent > 10*timeout) {
			r.lose(w, fmt.Errorf("%w: nothing received for %v", ErrWorkerLost, silent.Round(time.Millisecond)))
		}
	}
}

func (r *run) allFinal() bool {
	for _, w := range r.workers {
		if w.live() {
			return false
		}
	}
	return true
}

func (r *run) allGone() bool {
	for _, w := range r.workers {
		if w.live() || w.state == stateOK {
			return false
		}
	}
	return true
}

func (r *run) open() int64 {
	var n int64
	for _, w := range r.workers {
		if w.live() {
			n += w.open
		}
	}
	return n
}

// rampDone reports whether every connection of the live workers has been
// established and subscribed, or has failed.
func (r *run) rampDone() bool {
	var target, done int64
	for _, w := range r.workers {
		if !w.live() {
			continue
		}
		target += int64(w.conns)
		ct := w.counts
		if r.spec.ChannelsPerConn > 0 {
			done += ct.Subscribed + ct.Failed
		} else {
			done += ct.Established + ct.Failed
		}
	}
	return target > 0 && done >= target
}
