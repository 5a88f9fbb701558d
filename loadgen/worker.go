package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// WorkerConfig configures RunWorker.
type WorkerConfig struct {
	// Join is the coordinator's host:port. Required.
	Join string
	// Source, if set, is the source address this worker's sockets bind to, whatever
	// the coordinator plans (for a machine with several addresses).
	Source string
	// JoinTimeout bounds connecting to the coordinator (retried) and waiting for the
	// plan. Default 60 s.
	JoinTimeout time.Duration
	// Logger receives progress and errors. Default: discard.
	Logger *slog.Logger
}

const (
	workerTick     = 10 * time.Millisecond // pacing of dials, churn and client events
	snapshotEvery  = time.Second
	protoWriteWait = 5 * time.Second
	// snapshotWriteWait bounds one snapshot's write to a coordinator that does not
	// read (it is behind, on a starved machine): meanwhile the worker skips its
	// snapshots (the next one carries their deltas) and keeps its connections.
	snapshotWriteWait = 2 * time.Minute
)

// RunWorker joins a coordinator, runs the share it is given, streams snapshots and
// returns when the coordinator says stop (nil), or when ctx ends, the coordinator
// goes away or the plan cannot run (an error). Its connections are closed before it
// returns, in every case.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	if cfg.Join == "" {
		return fmt.Errorf("%w: worker needs --join host:port", ErrConfig)
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	conn, err := dialRetry(ctx, cfg.Join, cfg.JoinTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	cd := newCodec(conn)
	host, _ := os.Hostname()
	if err := cd.send(&ctrlMsg{Type: msgHello, Version: ProtocolVersion,
		Hello: &hello{PID: os.Getpid(), Host: host, Source: cfg.Source}}, protoWriteWait); err != nil {
		return err
	}
	// The plan comes once every worker has joined; ctx still ends the wait.
	stopWatch := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	m, err := cd.recv(cfg.JoinTimeout)
	stopWatch()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("loadgen: waiting for the plan: %w", err)
	}
	switch {
	case m.Type == msgReject:
		return fmt.Errorf("%w: coordinator rejected this worker: %s", ErrProtocol, m.Error)
	case m.Type != msgPlan || m.Plan == nil:
		return fmt.Errorf("%w: want a plan, got %q", ErrProtocol, m.Type)
	case m.Version != ProtocolVersion:
		return fmt.Errorf("%w: coordinator speaks version %d, this worker %d", ErrProtocol, m.Version, ProtocolVersion)
	}
	plan := m.Plan
	if cfg.Source != "" {
		plan.Sources = []string{cfg.Source}
	}
	w, err := newWorker(plan, log)
	if err != nil {
		_ = cd.send(&ctrlMsg{Type: msgFailed, Error: err.Error()}, protoWriteWait)
		return err
	}
	return w.run(ctx, cd)
}

func dialRetry(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("loadgen: joining %s: %w", addr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// worker runs one plan.
type worker struct {
	plan   *Plan
	spec   *Spec
	log    *slog.Logger
	pool   *Pool
	names  []string
	index  map[string]int
	stride uint64 // sequence numbers: seq = n*stride + slot + 1
	slot   uint64

	subs, sent, delivered, dups []atomic.Int64
	sentTotal                   atomic.Int64
	nextSeq                     atomic.Uint64

	seqs *seqReporter // nil unless the run publishes through the API (tracking.go)
}

func newWorker(plan *Plan, log *slog.Logger) (*worker, error) {
	spec := &plan.Spec
	if err := spec.Normalize(); err != nil {
		return nil, err
	}
	wsAddrs, err := spec.wsAddrs()
	if err != nil {
		return nil, err
	}
	w := &worker{
		plan: plan, spec: spec, log: log,
		names:  spec.ChannelNames(),
		index:  make(map[string]int, spec.Channels),
		stride: uint64(plan.Workers) + 1,
		slot:   uint64(plan.WorkerID) + 1,
	}
	w.seqs = newSeqReporter(spec, w.stride)
	for i, n := range w.names {
		w.index[n] = i
	}
	m := spec.Channels
	w.subs, w.sent = make([]atomic.Int64, m), make([]atomic.Int64, m)
	w.delivered, w.dups = make([]atomic.Int64, m), make([]atomic.Int64, m)
	var srcs []netip.Addr
	for _, s := range plan.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: source %q: %w", ErrConfig, s, err)
		}
		srcs = append(srcs, a)
	}
	cfg := Config{
		Addrs: wsAddrs, Key: spec.Key, Secret: spec.Secret, SourceAddrs: srcs,
		Loops: spec.Loops, MaxHandshakes: spec.MaxHandshakes, ReadBatch: spec.ReadBatch.D(),
		CloseGrace: spec.CloseTimeout.D(),
		Channels: func(id uint64) []string {
			var buf [8]int
			idx := spec.channelsOf(buf[:0], w.gid(id))
			out := make([]string, len(idx))
			for i, c := range idx {
				out[i] = w.names[c]
			}
			return out
		},
		ChannelData: func(id uint64, _ string) string {
			// The join time lets every other member measure join-to-member_added.
			return `{"user_id":"u` + strconv.FormatUint(w.gid(id), 10) + `","user_info":{"worker":` +
				strconv.Itoa(plan.WorkerID) + `,"` + MemberTimestampKey + `":` +
				strconv.FormatInt(time.Now().UnixNano(), 10) + `}}`
		},
		OnSubscribed: func(id uint64) { w.addSubs(id, 1) },
		OnClosed: func(id uint64, subscribed bool) {
			if subscribed {
				w.addSubs(id, -1)
			}
		},
		OnEvent: func(ev *Event) {
			if ev.Seq == 0 {
				return
			}
			w.seqs.observe(ev.Seq)
			if i, ok := w.index[string(ev.Channel)]; ok {
				w.delivered[i].Add(1)
				if ev.Duplicate {
					w.dups[i].Add(1)
				}
			}
		},
	}
	if w.pool, err = New(cfg); err != nil {
		return nil, err
	}
	w.seqs.attach(w.pool)
	return w, nil
}

// gid is the run-wide id of local connection id: unique across workers and churn.
func (w *worker) gid(id uint64) uint64 {
	return id*uint64(w.plan.Workers) + uint64(w.plan.WorkerID)
}

func (w *worker) addSubs(id uint64, d int64) {
	var buf [8]int
	for _, c := range w.spec.channelsOf(buf[:0], w.gid(id)) {
		w.subs[c].Add(d)
	}
}

// clientEvent appends a client event from connection id on one of its channels.
func (w *worker) clientEvent(id uint64, dst []byte) []byte {
	var buf [8]int
	idx := w.spec.channelsOf(buf[:0], w.gid(id))
	if len(idx) == 0 {
		return dst
	}
	n := w.nextSeq.Add(1) - 1
	seq := n*w.stride + w.slot + 1
	c := idx[int(n%uint64(len(idx)))]
	dst = append(dst, `{"event":"client-loadgen","channel":`...)
	dst = appendJSONString(dst, w.names[c])
	dst = append(dst, `,"data":"`...)
	dst = AppendPayload(dst, seq, time.Now().UnixNano(), w.spec.PayloadSize)
	dst = append(dst, `"}`...)
	w.sent[c].Add(1)
	w.sentTotal.Add(1)
	return dst
}

// run executes the plan. Its reader and sender goroutines are stopped (conn
// closed) and waited for before it returns.
func (w *worker) run(ctx context.Context, cd *codec) error {
	if err := w.pool.Run(); err != nil {
		return err
	}
	defer w.pool.Close()
	memStart := readWorkerMem()

	cmds := make(chan string, 8)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := cd.recv(0)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case cmds <- m.Type:
			default: // the coordinator sends a handful of commands per run
				readErr <- fmt.Errorf("%w: too many commands", ErrProtocol)
				return
			}
		}
	}()
	out := newSnapSender(cd, &wg)
	defer func() {
		out.close()
		_ = cd.conn.Close()
		wg.Wait()
	}()

	start := time.Unix(0, w.plan.Start)
	if d := time.Until(start); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	start = time.Now()
	share := w.plan.Connections
	rate := 0.0
	if w.spec.Connections > 0 {
		rate = w.spec.Ramp * float64(share) / float64(w.spec.Connections)
	}
	churnRate := w.spec.ChurnRate * float64(share) / float64(max(w.spec.Connections, 1))

	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	// The 10 ms tick paces dials, churn and client events; once the share is up
	// and there is neither churn nor chatter it is stopped: 110 idle workers
	// waking 100 times a second took 40% of a 2-core machine at 200,000
	// connections, and slowed the deliveries being measured.
	tickC := tick.C
	snap := time.NewTicker(snapshotEvery)
	defer snap.Stop()

	// The tracking reports' ticker (tracking.go) runs from the start when a sender
	// awaits each publish; otherwise from the first snapshot tick after an API
	// publish arrived, so that a worker that only holds connections is not woken.
	var seqTick *time.Ticker
	var seqTicks <-chan time.Time
	startSeqTicks := func() {
		if seqTick == nil && w.seqs != nil {
			seqTick = time.NewTicker(w.seqs.every)
			seqTicks = seqTick.C
		}
	}
	defer func() {
		if seqTick != nil {
			seqTick.Stop()
		}
	}()
	if w.seqs.eager() {
		startSeqTicks()
	}

	var (
		dialed               int
		loading, rampSent    bool
		last                 = time.Now()
		churnDue, chatterDue float64
		sn                   = &snapshotter{w: w, memStart: memStart}
	)
	// offer sends a periodic snapshot unless the previous one is still on its way
	// (the coordinator is behind): then it is skipped, and the next one carries its
	// deltas.
	offer := func() error {
		if out.busy() {
			sn.thinned++
			return nil
		}
		m := sn.build(false, "")
		if m == nil {
			return sn.err
		}
		out.offer(m)
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			w.finish(out, sn, "interrupted")
			return ctx.Err()
		case err := <-readErr:
			// The coordinator is gone: stop without a final snapshot.
			sctx, cancel := context.WithTimeout(context.Background(), w.spec.CloseTimeout.D())
			_ = w.pool.Shutdown(sctx)
			cancel()
			return fmt.Errorf("%w: coordinator connection: %w", ErrWorkerLost, err)
		case err := <-out.errc:
			// A snapshot could not be written for snapshotWriteWait: the
			// coordinator is gone or hung.
			sctx, cancel := context.WithTimeout(context.Background(), w.spec.CloseTimeout.D())
			_ = w.pool.Shutdown(sctx)
			cancel()
			return fmt.Errorf("%w: %w", ErrWorkerLost, err)
		case c := <-cmds:
			switch c {
			case msgLoad:
				loading = true
				sn.memLoad = readWorkerMem()
			case msgQuiesce:
				loading = false
			case msgStop:
				return w.finish(out, sn, "")
			}
		case <-seqTicks:
			// Counts are cumulative: a report skipped while a snapshot is on its
			// way (the coordinator is behind) is carried by the next one.
			if out.busy() {
				continue
			}
			if err := w.seqs.report(cd, false); err != nil {
				return err
			}
		case <-snap.C:
			if w.seqs.seen() {
				startSeqTicks()
			}
			if err := offer(); err != nil {
				return err
			}
		case now := <-tickC:
			dt := now.Sub(last).Seconds()
			last = now
			if dialed < share {
				want := share
				if rate > 0 {
					want = min(share, int(rate*now.Sub(start).Seconds())+1)
				}
				if n := want - dialed; n > 0 {
					if err := w.pool.Dial(ctx, n); err == nil {
						dialed += n
					}
				}
			}
			if !rampSent && dialed >= share {
				// Tell the coordinator at once that this share is up, so the load
				// phase does not wait for the next snapshot.
				c := w.pool.Counts()
				up := c.Established
				if w.spec.ChannelsPerConn > 0 {
					up = c.Subscribed
				}
				if up+c.Failed >= int64(share) {
					rampSent = true
					sn.ramp = time.Since(start).Seconds()
					if err := offer(); err != nil {
						return err
					}
				}
			}
			if rampSent && churnRate == 0 && w.spec.ClientEventRate == 0 {
				tick.Stop()
				tickC = nil
				continue
			}
			if !loading {
				churnDue, chatterDue = 0, 0
				continue
			}
			if churnRate > 0 {
				churnDue += churnRate * dt
				if n := int(churnDue); n > 0 {
					churnDue -= float64(n)
					if w.pool.Disconnect(ctx, n) == nil {
						_ = w.pool.Dial(ctx, n)
					}
				}
			}
			if w.spec.ClientEventRate > 0 {
				c := w.pool.Counts()
				chatterDue += w.spec.ClientEventRate * float64(c.Subscribed-c.Closed) * dt
				if n := int(chatterDue); n > 0 {
					chatterDue -= float64(n)
					_ = w.pool.Send(ctx, n, w.clientEvent)
				}
			}
		}
	}
}

// finish closes the connections (bounded) and sends the final snapshot after any
// periodic one still on its way.
func (w *worker) finish(out *snapSender, sn *snapshotter, why string) error {
	// What the pool counted before loadgen closes its own connections: closes
	// then were losses (but churn's), reasons after it come from the close.
	var before *Stats
	sctx, cancel := context.WithTimeout(context.Background(), w.spec.CloseTimeout.D())
	if st, err := w.pool.Stats(sctx, 0, 0); err == nil {
		before = st
	}
	err := w.pool.CloseConns(sctx)
	cancel()
	sn.before = before
	if err != nil {
		w.log.Warn("closing connections", "err", err)
	}
	// The tracked publishes' last counts, read after the close, go before the final
	// snapshot (the coordinator handles them in order).
	if err := w.seqs.report(out.cd, true); err != nil {
		w.log.Warn("last tracking report", "err", err)
	}
	if sn.thinned > 0 {
		w.log.Info("snapshots thinned: the coordinator was behind", "skipped", sn.thinned)
	}
	m := sn.build(true, why)
	if m == nil {
		return sn.err
	}
	return out.last(m)
}

// snapSender writes snapshots on its own goroutine, so that a coordinator that
// reads slowly delays them (the worker then skips some) but never the worker's
// pacing. One snapshot is in flight at most, one more may wait.
type snapSender struct {
	cd       *codec
	q        chan *ctrlMsg
	errc     chan error // the first write error
	inFlight atomic.Int32
	closed   bool
	done     chan struct{}
}

func newSnapSender(cd *codec, wg *sync.WaitGroup) *snapSender {
	s := &snapSender{cd: cd, q: make(chan *ctrlMsg, 1), errc: make(chan error, 1), done: make(chan struct{})}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(s.done)
		failed := false
		for m := range s.q {
			if !failed {
				if err := cd.send(m, snapshotWriteWait); err != nil {
					failed = true
					s.errc <- err
				}
			}
			s.inFlight.Add(-1)
		}
	}()
	return s
}

// busy reports whether a snapshot is still queued or being written.
func (s *snapSender) busy() bool { return s.inFlight.Load() > 0 }

// offer queues m; the caller checked busy, so there is room.
func (s *snapSender) offer(m *ctrlMsg) {
	s.inFlight.Add(1)
	s.q <- m
}

// last queues m after what is in flight, then waits until everything is written
// (each write bounded) and returns the first write error.
func (s *snapSender) last(m *ctrlMsg) error {
	s.inFlight.Add(1)
	s.q <- m
	s.close()
	<-s.done
	select {
	case err := <-s.errc:
		return err
	default:
		return nil
	}
}

func (s *snapSender) close() {
	if !s.closed {
		s.closed = true
		close(s.q)
	}
}

// snapshotter turns the pool's cumulative figures into deltas.
type snapshotter struct {
	w                               *worker
	n                               int
	ramp                            float64 // sent once, then reset
	prev                            *Stats
	prevSent                        int64
	prevChanSent, prevDeliv, prevDu []int64
	thinned                         int        // periodic snapshots skipped: the previous one was not written yet
	err                             error      // why build returned nil
	before                          *Stats     // the pool's figures just before the final close
	memStart, memLoad               *WorkerMem // sent once each (tracking.go)
}

// build returns the next snapshot message, or nil when there is none to send now
// (statistics not ready in time: skipped; or an error, in s.err).
func (s *snapshotter) build(final bool, why string) *ctrlMsg {
	w := s.w
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := w.pool.Stats(ctx, 0, 0)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && !final {
			// The loops are too busy to answer in time (a starved machine): skip
			// this snapshot rather than end the worker and drop its connections.
			// The next one carries the deltas; the coordinator's heartbeat timeout
			// still catches a worker that stays silent.
			w.log.Warn("snapshot skipped: statistics not ready within 5 s")
			return nil
		}
		if !errors.Is(err, ErrClosed) {
			s.err = err
			return nil
		}
		st = newStats() // the pool is closed: nothing more to count
		if s.prev != nil {
			st = s.prev
		}
	}
	d := st
	if s.prev != nil {
		if d, err = st.Sub(s.prev); err != nil {
			s.err = err
			return nil
		}
	}
	s.prev = st
	s.n++
	m := len(w.names)
	if s.prevChanSent == nil {
		s.prevChanSent, s.prevDeliv, s.prevDu = make([]int64, m), make([]int64, m), make([]int64, m)
	}
	snap := &Snapshot{
		N: s.n, Final: final, Stats: d, Open: st.Counts.Open(), Error: why,
		ChanSubs: make([]int64, m), ChanSent: make([]int64, m),
		ChanDelivered: make([]int64, m), ChanDups: make([]int64, m),
	}
	snap.RampSeconds, s.ramp = s.ramp, 0
	sent := w.sentTotal.Load()
	snap.Sent, s.prevSent = sent-s.prevSent, sent
	for i := 0; i < m; i++ {
		snap.ChanSubs[i] = w.subs[i].Load()
		v := w.sent[i].Load()
		snap.ChanSent[i], s.prevChanSent[i] = v-s.prevChanSent[i], v
		v = w.delivered[i].Load()
		snap.ChanDelivered[i], s.prevDeliv[i] = v-s.prevDeliv[i], v
		v = w.dups[i].Load()
		snap.ChanDups[i], s.prevDu[i] = v-s.prevDu[i], v
	}
	snap.TargetConnected = w.pool.AddrCounts()
	if final && s.before != nil {
		b := s.before
		// Before the stop, loadgen closes connections only for churn.
		snap.LostBeforeStop = max(b.Counts.Closed-b.Reasons["client_close"]-b.Reasons["close_timeout"], 0)
		for k, v := range st.Reasons {
			if v -= b.Reasons[k]; v > 0 {
				if snap.AtClose == nil {
					snap.AtClose = map[string]int64{}
				}
				snap.AtClose[k] = v
			}
		}
	}
	snap.HeapBytes = heapInUse()
	snap.RSSBytes = readRSS()
	snap.MemStart, snap.MemLoad, s.memStart, s.memLoad = s.memStart, s.memLoad, nil, nil
	return &ctrlMsg{Type: msgSnapshot, Snapshot: snap}
}

// heapInUse is the Go heap in use (objects plus the unused part of their spans), as
// runtime.MemStats.HeapInuse, read through runtime/metrics, which unlike
// ReadMemStats does not stop the world: a worker reads it every second.
func heapInUse() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	var n int64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			n += int64(x.Value.Uint64())
		}
	}
	return n
}

// readRSS returns this process's resident set size from /proc, 0 where unknown.
func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		return 0
	}
	return rss * int64(os.Getpagesize())
}
