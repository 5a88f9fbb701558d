package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Tracking follows API publishes to their last delivery. It is on whenever a run
// publishes through the API (Spec.publishing): it is the one source of
// Report.Broadcasts, and, with Spec.PublishCount or Spec.PublishAwait, of
// Report.Completion, the end of the drain and the closed loop. It adds one message
// to the coordinator/worker protocol:
//
//	worker → coordinator  {"type":"seqs","seqs":[[seq, unique, dups, last_unix_ns], …]}
//
// sent by a worker, while API publishes arrive, for the tracked sequence numbers
// whose delivery counts changed since its previous "seqs". Counts are cumulative per
// worker (the pool's lock-free per-seq ring, Pool.seqDeliveries), so a lost or late
// message costs nothing but time. The coordinator adds them up per publish; a
// publish is complete when its unique deliveries reach the subscribers its channel
// had when it was sent (the workers' latest snapshots), and its completion time is
// the latest receive time over the workers at that moment.
//
// Its cost is small enough to leave it on: nothing on a delivery but an atomic
// load (and a compare-and-swap once per publish and loop) in seqReporter.observe,
// no lock; a worker reads the ring every seqReportEvery with PublishAwait (a sender
// waits on it) and every seqReportCoarse otherwise, starting at the first API
// delivery it sees, and sends only the counts that changed. Without PublishCount
// or PublishAwait only the first maxTrackedBroadcasts publishes are followed
// (Spec.lastTrackedSeq), so a long run at a high rate keeps neither the
// coordinator's table nor the messages growing.
//
// The ring holds the last SeqWindow sequence numbers, SeqWindow/(workers+1) API
// publishes: deliveries of a publish that still arrive after that many later
// publishes are not counted, and it reads incomplete (the snapshots' per-channel
// counts and Totals are not affected).

// defaultAwaitTimeout is Spec.AwaitTimeout's default.
const defaultAwaitTimeout = 10 * time.Second

// Worker side: how far back a worker looks for deliveries of tracked publishes.
const (
	seqReportEvery = time.Millisecond
	// seqReportCoarse is the report period when no sender waits for deliveries:
	// completion times come from the receive times, not from when a report
	// arrives, so 10 reports a second suffice, and cost 55 workers (bench1m)
	// 550 wake-ups a second instead of 55,000.
	seqReportCoarse = 100 * time.Millisecond
	recentSeqs      = 64   // API publishes checked every report
	trackedSeqs     = 4096 // API publishes checked every fullReportN reports (every coarse one)
	fullReportN     = 100
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

// tracking reports whether every API publish is followed to its last delivery
// and the run reports Completion (PublishCount, PublishAwait). Any run that
// publishes through the API tracks its first maxTrackedBroadcasts publishes
// (lastTrackedSeq).
func (s *Spec) tracking() bool { return s.PublishCount > 0 || s.PublishAwait }

// lastTrackedSeq is the highest API sequence number that is tracked, 0 for every
// one. API publish k (from 1) has seq (k-1)*stride+1.
func (s *Spec) lastTrackedSeq(stride uint64) uint64 {
	if s.tracking() {
		return 0
	}
	return uint64(maxTrackedBroadcasts-1)*stride + 1
}

// tracked is one API publish as the tracker follows it.
type tracked struct {
	seq        uint64
	registered bool       // the publisher sent it (ch, expected and sent are set)
	answered   bool       // the server answered
	accepted   bool       // the server answered 2xx
	ch         int        // channel index
	expected   int64      // subscribers of its channel when it was sent
	sent       int64      // unix ns, the payload's timestamp
	per        []seqCount // per worker, cumulative
	total      int64      // unique deliveries over the workers
	dups       int64      // duplicates over the workers
	completeAt int64      // latest receive time when it became complete; 0 before
	complete   bool
	done       chan struct{} // closed when complete
}

// seqCount is one worker's cumulative figures for one publish.
type seqCount struct {
	uniq, dups, last int64
}

// lastReceived is the latest receive time over the workers, 0 before any.
func (p *tracked) lastReceived() int64 {
	var l int64
	for _, c := range p.per {
		l = max(l, c.last)
	}
	return l
}

// tracker follows tracked publishes. The publisher's senders register, answer and
// await; the coordinator's goroutine sets the subscriber counts and adds the
// workers' reports. Every field is guarded by mu.
type tracker struct {
	mu       sync.Mutex
	workers  int
	lastSeq  uint64  // the highest sequence number followed, 0 for all (Spec.lastTrackedSeq)
	subs     []int64 // subscribers per channel, from the latest snapshots
	pubs     map[uint64]*tracked
	lastNews time.Time // when a report last raised a count (or a publish was answered)
}

// newTracker returns a tracker of every sequence number up to lastSeq (0: all).
func newTracker(workers, channels int, lastSeq uint64) *tracker {
	return &tracker{workers: workers, lastSeq: lastSeq, subs: make([]int64, channels), pubs: map[uint64]*tracked{}}
}

// follows reports whether seq is tracked.
func (t *tracker) follows(seq uint64) bool { return t.lastSeq == 0 || seq <= t.lastSeq }

// get returns seq's entry, creating it. mu must be held.
func (t *tracker) get(seq uint64) *tracked {
	p := t.pubs[seq]
	if p == nil {
		p = &tracked{seq: seq, done: make(chan struct{}), per: make([]seqCount, t.workers)}
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
	p.completeAt = p.lastReceived()
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
// the payload's timestamp. The returned channel is closed when seq is complete; it
// is nil (never ready) when seq is not tracked.
func (t *tracker) register(seq uint64, ch int, sent int64) <-chan struct{} {
	if !t.follows(seq) {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(seq)
	p.registered, p.ch, p.expected, p.sent = true, ch, t.subs[ch], sent
	t.check(p)
	return p.done
}

// answer records the server's answer to seq.
func (t *tracker) answer(seq uint64, accepted bool) {
	if !t.follows(seq) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(seq)
	p.answered, p.accepted = true, accepted
	t.lastNews = time.Now()
}

// add applies one worker's report (the coordinator's goroutine): each entry is
// [seq, unique deliveries, duplicates, latest receive unix ns], cumulative, so a
// figure lower than one already seen changes nothing.
func (t *tracker) add(worker int, seqs [][4]int64) {
	if worker < 0 || worker >= t.workers {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range seqs {
		if s[0] <= 0 || !t.follows(uint64(s[0])) {
			continue
		}
		p := t.get(uint64(s[0]))
		c := &p.per[worker]
		if s[1] > c.uniq {
			p.total += s[1] - c.uniq
			c.uniq = s[1]
			t.lastNews = time.Now()
		}
		if s[2] > c.dups {
			p.dups += s[2] - c.dups
			c.dups = s[2]
		}
		c.last = max(c.last, s[3])
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
		received = max(received, p.lastReceived())
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

// broadcasts builds the report's BroadcastSummary from the same entries as
// summary: every tracked publish the server accepted, in publish order (send time,
// then sequence number); nil when there is none. Name gives a channel's name.
// Delivered is unique deliveries, Duplicated the duplicates the workers counted;
// a publish is complete, and its completion is completeAt minus its send time,
// exactly as in summary, so the two never disagree. An incomplete publish's
// completion_ms is to the latest delivery received so far (0 without any).
func (t *tracker) broadcasts(name func(int) string) *BroadcastSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ps []*tracked
	for _, p := range t.pubs {
		if p.registered && p.accepted {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	slices.SortFunc(ps, func(a, b *tracked) int {
		if c := cmp.Compare(a.sent, b.sent); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	bs := &BroadcastSummary{Count: len(ps)}
	h := NewHistogram()
	for i, p := range ps {
		var took time.Duration
		switch {
		case p.complete && p.completeAt > 0:
			took = time.Duration(p.completeAt - p.sent)
		case !p.complete:
			if l := p.lastReceived(); l > 0 {
				took = time.Duration(l - p.sent)
			}
		}
		if p.complete {
			bs.Complete++
			if p.expected > 0 && p.completeAt > 0 {
				h.Record(took)
			}
		} else {
			bs.Incomplete++
		}
		if i < maxBroadcastItems {
			bs.Items = append(bs.Items, BroadcastItem{Seq: p.seq, Channel: name(p.ch),
				Published: time.Unix(0, p.sent), Expected: uint64(p.expected), Delivered: uint64(p.total),
				Duplicated: uint64(p.dups), CompletionMs: ms(took), Complete: p.complete})
		}
	}
	bs.Completion = distribution(h)
	return bs
}

// maxBroadcastItems bounds BroadcastSummary.Items (the first ones, in publish
// order).
const maxBroadcastItems = 1000

// maxTrackedBroadcasts bounds the publishes a run that neither counts nor awaits
// its publishes follows one by one (the first ones): a broadcast benchmark makes
// tens, a rate run many more, of which the first are a fair sample.
const maxTrackedBroadcasts = 10000

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

// startTracking gives pub a tracker: every run that publishes through the API
// follows its publishes (all of them, or the first maxTrackedBroadcasts).
func (r *run) startTracking(pub *apiPublisher, workers int) {
	if pub == nil {
		return
	}
	r.x.track = newTracker(workers, r.spec.Channels, r.spec.lastTrackedSeq(pub.stride))
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
func (r *run) onSeqs(w *workerState, seqs [][4]int64) {
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

// reportTracking adds the broadcasts, the completion summary (runs that count or
// await their publishes) and the workers' memory to rep.
func (r *run) reportTracking(rep *Report) {
	if r.x.track != nil {
		rep.Broadcasts = r.x.track.broadcasts(r.spec.ChannelName)
		if r.spec.tracking() {
			rep.Completion = r.x.track.summary()
		}
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

// seqReporter is a worker's side of tracking: OnEvent notes the highest tracked
// API sequence number received (lock-free); report, on the worker's goroutine,
// sends the changed counts of the recent ones, read from the pool's ring.
type seqReporter struct {
	pool    *Pool
	stride  uint64 // API publishes have seq ≡ 1 (mod stride)
	lastSeq uint64 // the highest tracked seq, 0 for all (Spec.lastTrackedSeq)
	every   time.Duration
	coarse  bool // no sender awaits: every report reads every tracked seq in the ring
	maxSeen atomic.Uint64
	sent    map[uint64][2]int64 // unique and duplicates last reported, per seq
	n       int
	buf     [][4]int64
}

// newSeqReporter returns nil when the spec does not publish through the API.
func newSeqReporter(spec *Spec, stride uint64) *seqReporter {
	if !spec.publishing() {
		return nil
	}
	s := &seqReporter{stride: stride, lastSeq: spec.lastTrackedSeq(stride), every: seqReportEvery,
		sent: map[uint64][2]int64{}}
	if !spec.PublishAwait {
		s.every, s.coarse = seqReportCoarse, true
	}
	return s
}

// attach gives the reporter the worker's pool.
func (s *seqReporter) attach(p *Pool) {
	if s != nil {
		s.pool = p
	}
}

// observe is called for every sequenced event (any loop goroutine): an atomic load,
// and a compare-and-swap when seq is a new highest.
func (s *seqReporter) observe(seq uint64) {
	if s == nil || seq%s.stride != 1 || (s.lastSeq != 0 && seq > s.lastSeq) {
		return
	}
	for {
		m := s.maxSeen.Load()
		if seq <= m || s.maxSeen.CompareAndSwap(m, seq) {
			return
		}
	}
}

// eager reports whether the report ticker runs from the start (a sender awaits
// every publish); otherwise it starts once seen.
func (s *seqReporter) eager() bool { return s != nil && !s.coarse }

// seen reports whether a tracked API publish has been received.
func (s *seqReporter) seen() bool { return s != nil && s.maxSeen.Load() > 0 }

// report sends the counts that changed among the recent API publishes (all the
// tracked ones in the ring when full, every fullReportN calls, or every call when
// coarse).
func (s *seqReporter) report(cd *codec, full bool) error {
	if s == nil {
		return nil
	}
	hi := s.maxSeen.Load()
	if hi == 0 {
		return nil
	}
	s.n++
	span := uint64(recentSeqs)
	full = full || s.coarse || s.n%fullReportN == 0
	if full {
		span = min(uint64(trackedSeqs), uint64(SeqWindow)/s.stride)
	}
	s.buf = s.buf[:0]
	for k := uint64(0); k < span && k*s.stride < hi; k++ {
		seq := hi - k*s.stride
		u, d, last := s.pool.seqDeliveries(seq)
		if (u > 0 || d > 0) && [2]int64{u, d} != s.sent[seq] {
			s.sent[seq] = [2]int64{u, d}
			s.buf = append(s.buf, [4]int64{int64(seq), u, d, last})
		}
	}
	if full && s.n%fullReportN == 0 {
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
