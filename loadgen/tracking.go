package loadgen

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Tracking follows API publishes to their last delivery (Spec.PublishCount,
// Spec.PublishAwait). It adds one message to the coordinator/worker protocol:
//
//	worker → coordinator  {"type":"seqs","seqs":[[seq, count, last_unix_ns], …]}
//
// sent by a worker, about every millisecond while API publishes arrive, for the
// tracked sequence numbers whose delivery count changed since its previous "seqs".
// Counts are cumulative per worker (the pool's SeqDeliveries), so a lost or late
// message costs nothing but time. The coordinator adds them up per publish; a
// publish is complete when its count reaches the subscribers its channel had when
// it was sent (the workers' latest snapshots), and its completion time is the
// latest receive time over the workers at that moment.

// defaultAwaitTimeout is Spec.AwaitTimeout's default.
const defaultAwaitTimeout = 10 * time.Second

// Worker side: how far back a worker looks for deliveries of tracked publishes.
const (
	seqReportEvery = time.Millisecond
	recentSeqs     = 64   // API publishes checked every report
	trackedSeqs    = 4096 // API publishes checked every fullReportEvery reports
	fullReportN    = 100
)

// normalizeTracking checks the tracking options; Normalize calls it once the
// publishing options have their defaults.
func (s *Spec) normalizeTracking() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrScenario}, a...)...)
	}
	if s.PublishCount < 0 {
		return bad("publish_count %d < 0", s.PublishCount)
	}
	if s.tracking() && !s.publishing() {
		return bad("publish_count and publish_await need API publishes (publish_rate)")
	}
	if s.PublishAwait && s.PublishBatch != 1 {
		return bad("publish_await waits for one event at a time: publish_batch must be 1")
	}
	if s.AwaitTimeout < 0 {
		return bad("await_timeout %v < 0", s.AwaitTimeout.D())
	}
	if s.AwaitTimeout == 0 {
		s.AwaitTimeout = Duration(defaultAwaitTimeout)
	}
	if s.PublishDelay < 0 {
		return bad("publish_delay %v < 0", s.PublishDelay.D())
	}
	return nil
}

// tracking reports whether API publishes are followed to their last delivery.
func (s *Spec) tracking() bool { return s.PublishCount > 0 || s.PublishAwait }

// tracked is one API publish as the tracker follows it.
type tracked struct {
	registered bool  // the publisher sent it (ch, expected and sent are set)
	answered   bool  // the server answered
	accepted   bool  // the server answered 2xx
	expected   int64 // subscribers of its channel when it was sent
	sent       int64 // unix ns, the payload's timestamp
	counts     []int64
	lasts      []int64
	total      int64
	completeAt int64 // latest receive time when it became complete; 0 before
	complete   bool
	done       chan struct{} // closed when complete
}

// tracker follows tracked publishes. The publisher's senders register, answer and
// await; the coordinator's goroutine sets the subscriber counts and adds the
// workers' reports. Every field is guarded by mu.
type tracker struct {
	mu       sync.Mutex
	workers  int
	subs     []int64 // subscribers per channel, from the latest snapshots
	pubs     map[uint64]*tracked
	lastNews time.Time // when a report last raised a count (or a publish was answered)
}

func newTracker(workers, channels int) *tracker {
	return &tracker{workers: workers, subs: make([]int64, channels), pubs: map[uint64]*tracked{}}
}

// get returns seq's entry, creating it. mu must be held.
func (t *tracker) get(seq uint64) *tracked {
	p := t.pubs[seq]
	if p == nil {
		p = &tracked{done: make(chan struct{}), counts: make([]int64, t.workers), lasts: make([]int64, t.workers)}
		t.pubs[seq] = p
	}
	return p
}

// check marks p complete when every expected delivery has arrived. mu must be held.
func (t *tracker) check(p *tracked) {
	if p.complete || !p.registered || p.total < p.expected {
		return
	}
	p.complete = true
	for _, l := range p.lasts {
		p.completeAt = max(p.completeAt, l)
	}
	close(p.done)
}

// setSubs records the subscribers of every channel (the coordinator's goroutine,
// after each snapshot).
func (t *tracker) setSubs(subs func(i int) int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.subs {
		t.subs[i] = subs(i)
	}
}

// register is called by a sender just before it sends seq to channel ch; sent is
// the payload's timestamp. The returned channel is closed when seq is complete.
func (t *tracker) register(seq uint64, ch int, sent int64) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(seq)
	p.registered, p.expected, p.sent = true, t.subs[ch], sent
	t.check(p)
	return p.done
}

// answer records the server's answer to seq.
func (t *tracker) answer(seq uint64, accepted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(seq)
	p.answered, p.accepted = true, accepted
	t.lastNews = time.Now()
}

// add applies one worker's report (the coordinator's goroutine).
func (t *tracker) add(worker int, seqs [][3]int64) {
	if worker < 0 || worker >= t.workers {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range seqs {
		if s[0] <= 0 {
			continue
		}
		p := t.get(uint64(s[0]))
		if s[1] > p.counts[worker] {
			p.total += s[1] - p.counts[worker]
			p.counts[worker] = s[1]
			t.lastNews = time.Now()
		}
		p.lasts[worker] = max(p.lasts[worker], s[2])
		t.check(p)
	}
}

// settled reports whether every registered publish is answered and every accepted
// one complete, or, with every one answered, no delivery has arrived for quiet
// (the rest were lost: at most once).
func (t *tracker) settled(quiet time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	complete := true
	for _, p := range t.pubs {
		if p.registered && !p.answered {
			return false
		}
		if p.registered && p.accepted && !p.complete {
			complete = false
		}
	}
	return complete || time.Since(t.lastNews) >= quiet
}

// summary builds the report's CompletionSummary.
func (t *tracker) summary() *CompletionSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := NewHistogram()
	cs := &CompletionSummary{}
	var first, last, received int64
	for _, p := range t.pubs {
		if !p.registered || !p.accepted {
			continue
		}
		for _, l := range p.lasts {
			received = max(received, l)
		}
		cs.Accepted++
		if first == 0 || p.sent < first {
			first = p.sent
		}
		if !p.complete {
			cs.Incomplete++
			continue
		}
		cs.Complete++
		cs.Deliveries += uint64(p.total)
		if p.expected > 0 && p.completeAt > 0 {
			h.Record(time.Duration(p.completeAt - p.sent))
			last = max(last, p.completeAt)
		}
	}
	cs.Latency = distribution(h)
	if first > 0 {
		cs.FirstSent = time.Unix(0, first)
	}
	if received > 0 {
		cs.LastReceived = time.Unix(0, received)
	}
	if last > first && first > 0 {
		cs.LastDelivery = time.Unix(0, last)
		span := time.Duration(last - first).Seconds()
		cs.DeliveriesPerSec = float64(cs.Deliveries) / span
		cs.PublishesPerSec = float64(cs.Complete) / span
	}
	return cs
}

// awaitDone waits for done, AwaitTimeout or ctx, and reports whether done closed.
func awaitDone(ctx context.Context, done <-chan struct{}, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// runExtras is what a run keeps for tracking and the workers' memory readings.
// Only the coordinator's goroutine touches it (the tracker has its own lock).
type runExtras struct {
	track *tracker
	mem   map[int]*[2]*WorkerMem // worker id → start, load
}

// startTracking gives pub a tracker when the spec tracks publishes.
func (r *run) startTracking(pub *apiPublisher, workers int) {
	if !r.spec.tracking() || pub == nil {
		return
	}
	r.x.track = newTracker(workers, r.spec.Channels)
	r.x.track.setSubs(r.subscribers)
	pub.track = r.x.track
}

// afterSnapshot updates the tracker's subscriber counts and keeps the worker's
// memory readings.
func (r *run) afterSnapshot(w *workerState, s *Snapshot) {
	if r.x.track != nil {
		r.x.track.setSubs(r.subscribers)
	}
	if s.MemStart == nil && s.MemLoad == nil {
		return
	}
	if r.x.mem == nil {
		r.x.mem = map[int]*[2]*WorkerMem{}
	}
	m := r.x.mem[w.id]
	if m == nil {
		m = &[2]*WorkerMem{}
		r.x.mem[w.id] = m
	}
	if s.MemStart != nil {
		m[0] = s.MemStart
	}
	if s.MemLoad != nil {
		m[1] = s.MemLoad
	}
}

// onSeqs applies a worker's "seqs" message.
func (r *run) onSeqs(w *workerState, seqs [][3]int64) {
	if r.x.track != nil {
		r.x.track.add(w.id, seqs)
	}
}

// publishedAll reports whether a run with PublishCount has had every publish
// answered (and, with PublishAwait, awaited): the load phase can end.
func (r *run) publishedAll() bool {
	return r.pub != nil && r.spec.PublishCount > 0 && r.pub.finished.Load() >= int64(r.spec.PublishCount)
}

// settled reports whether a run with PublishCount can end its drain: every publish
// answered and every accepted one complete, or nothing delivered for
// settleQuiet.
func (r *run) settled() bool {
	return r.publishedAll() && r.x.track != nil && r.x.track.settled(settleQuiet)
}

// settleQuiet: a run with PublishCount whose publishes have all been answered
// stops waiting for their deliveries when none has arrived for this long.
const settleQuiet = 5 * time.Second

// reportTracking adds the completion summary and the workers' memory to rep.
func (r *run) reportTracking(rep *Report) {
	if r.x.track != nil {
		rep.Completion = r.x.track.summary()
	}
	for i := range rep.Workers {
		if m := r.x.mem[rep.Workers[i].ID]; m != nil {
			rep.Workers[i].MemStart, rep.Workers[i].MemLoad = m[0], m[1]
		}
	}
}

// readWorkerMem is this process's memory after a GC.
func readWorkerMem() *WorkerMem {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &WorkerMem{RSSBytes: readRSS(), HeapBytes: int64(ms.HeapInuse)}
}

// seqReporter is a worker's side of tracking: OnEvent notes the highest API
// sequence number received; report, on the worker's goroutine, sends the changed
// counts of the recent ones.
type seqReporter struct {
	pool    *Pool
	stride  uint64 // API publishes have seq ≡ 1 (mod stride)
	maxSeen atomic.Uint64
	sent    map[uint64]int64 // count last reported, per seq
	n       int
	buf     [][3]int64
}

// newSeqReporter returns nil when the spec does not track publishes.
func newSeqReporter(spec *Spec, stride uint64) *seqReporter {
	if !spec.tracking() {
		return nil
	}
	return &seqReporter{stride: stride, sent: map[uint64]int64{}}
}

// attach gives the reporter the worker's pool.
func (s *seqReporter) attach(p *Pool) {
	if s != nil {
		s.pool = p
	}
}

// observe is called for every sequenced event (any loop goroutine).
func (s *seqReporter) observe(seq uint64) {
	if s == nil || seq%s.stride != 1 {
		return
	}
	for {
		m := s.maxSeen.Load()
		if seq <= m || s.maxSeen.CompareAndSwap(m, seq) {
			return
		}
	}
}

// ticks returns the report ticker's channel, nil (never ready) without tracking.
func (s *seqReporter) ticks() (<-chan time.Time, func()) {
	if s == nil {
		return nil, func() {}
	}
	t := time.NewTicker(seqReportEvery)
	return t.C, t.Stop
}

// report sends the counts that changed among the recent API publishes (all the
// tracked ones every fullReportN calls).
func (s *seqReporter) report(cd *codec) error {
	hi := s.maxSeen.Load()
	if hi == 0 {
		return nil
	}
	s.n++
	span := uint64(recentSeqs)
	full := s.n%fullReportN == 0
	if full {
		span = min(uint64(trackedSeqs), uint64(SeqWindow)/s.stride)
	}
	s.buf = s.buf[:0]
	for k := uint64(0); k < span && k*s.stride < hi; k++ {
		seq := hi - k*s.stride
		c, last := s.pool.SeqDeliveries(seq)
		if c > 0 && c != s.sent[seq] {
			s.sent[seq] = c
			s.buf = append(s.buf, [3]int64{int64(seq), c, last})
		}
	}
	if full {
		floor := int64(hi) - int64(trackedSeqs*s.stride)
		for seq := range s.sent {
			if int64(seq) < floor {
				delete(s.sent, seq)
			}
		}
	}
	if len(s.buf) == 0 {
		return nil
	}
	return cd.send(&ctrlMsg{Type: msgSeqs, Seqs: s.buf}, protoWriteWait)
}
