package loadgen

import (
	"fmt"
	"math"
	"time"
)

// run is one execution of a Coordinator: the workers' states and the exact merge of
// their snapshots. Only the coordinator's goroutine touches it.
type run struct {
	c       *Coordinator
	spec    *Spec
	workers []*workerState
	pub     *apiPublisher
	fatal   error
	stopped string

	start, end, loadStart, loadEnd time.Time

	total      *Stats     // every delta of every worker
	interval   *Histogram // latency deltas since the last sample
	intDeliv   int64
	intPub     int64
	lastSample time.Time
	series     []Sample
	peak       int64
	lostErrors uint64
	// rampSeconds is the slowest worker's ramp (from its start to every
	// connection of its share established or failed).
	rampSeconds float64

	// inLoad is true during the load phase: memberLoad merges the member latency
	// deltas that arrive then.
	inLoad     bool
	memberLoad *Histogram

	// Connection counts at the first and last sample of the load phase, for the
	// presence joins and leaves per second.
	loadFirst, loadLast   Counts
	loadFirstT, loadLastT time.Time

	// Per channel: expected deliveries (from publishes and client events times
	// subscribers at the time), deliveries and duplicates.
	expected   []float64
	delivered  []int64
	dups       []int64
	lastPubbed []int64 // API publishes already accounted in expected
	clientSent int64
	lostConns  int64
	atClose    map[string]int64

	// x holds the tracker, the source of Report.Broadcasts and Report.Completion
	// (tracking.go).
	x runExtras
}

func newRun(c *Coordinator) *run {
	m := c.spec.Channels
	return &run{
		c: c, spec: c.spec,
		total:      newStats(),
		interval:   NewHistogram(),
		memberLoad: NewHistogram(),
		expected:   make([]float64, m), delivered: make([]int64, m), dups: make([]int64, m),
		lastPubbed: make([]int64, m),
		atClose:    map[string]int64{},
	}
}

// subscribers is the number of subscribed connections of channel i across the live
// workers, as of their latest snapshots.
func (r *run) subscribers(i int) int64 {
	var n int64
	for _, w := range r.workers {
		if i < len(w.subs) {
			n += w.subs[i]
		}
	}
	return n
}

// merge adds a worker's snapshot: histograms and counts exactly, gauges replaced.
func (r *run) merge(w *workerState, s *Snapshot) error {
	if h := r.c.mergeHook; h != nil {
		h()
	}
	m := r.spec.Channels
	for _, v := range [][]int64{s.ChanSubs, s.ChanSent, s.ChanDelivered, s.ChanDups} {
		if len(v) != m {
			return fmt.Errorf("%w: snapshot has %d channels, want %d", ErrProtocol, len(v), m)
		}
	}
	w.counts.add(s.Stats.Counts)
	w.deliv += s.Stats.Delivered
	// The latency delta goes to the interval only; sample adds the interval to the
	// total once a second (one merge per second instead of one per snapshot).
	rest := *s.Stats
	rest.Latency = NewHistogram()
	if err := r.total.Merge(&rest); err != nil {
		return err
	}
	if err := r.interval.Merge(s.Stats.Latency); err != nil {
		return err
	}
	if r.inLoad && s.Stats.MemberLatency != nil {
		if err := r.memberLoad.Merge(s.Stats.MemberLatency); err != nil {
			return err
		}
	}
	r.intDeliv += s.Stats.Delivered
	r.intPub += s.Sent
	r.clientSent += s.Sent
	w.open = s.Open
	r.rampSeconds = max(r.rampSeconds, s.RampSeconds)
	if s.TargetConnected != nil {
		w.targets = s.TargetConnected
	}
	w.heap = max(w.heap, s.HeapBytes)
	w.rss = max(w.rss, s.RSSBytes)
	r.lostConns += s.LostBeforeStop
	for k, v := range s.AtClose {
		r.atClose[k] += v
	}
	for i := 0; i < m; i++ {
		r.delivered[i] += s.ChanDelivered[i]
		r.dups[i] += s.ChanDups[i]
		if s.ChanSent[i] > 0 {
			// Client events reach every subscriber but the sender. The gauges are
			// those of the previous snapshots, when the events were sent: a final
			// snapshot's are taken after the connections closed.
			r.expected[i] += float64(s.ChanSent[i]) * float64(max(r.subscribers(i)-1, 0))
		}
	}
	w.subs = s.ChanSubs
	return nil
}

// accountPublishes adds the API publishes accepted since the last call to the
// expected deliveries, times the channels' current subscribers.
func (r *run) accountPublishes() {
	if r.pub == nil {
		return
	}
	for i := range r.lastPubbed {
		n := r.pub.published[i].Load()
		if d := n - r.lastPubbed[i]; d > 0 {
			r.expected[i] += float64(d) * float64(r.subscribers(i))
			r.intPub += d
			r.lastPubbed[i] = n
		}
	}
}

// sample closes a reporting interval.
func (r *run) sample(now time.Time, phase string) {
	r.accountPublishes()
	dt := now.Sub(r.lastSample).Seconds()
	if dt <= 0 {
		dt = 1
	}
	open := r.open()
	r.peak = max(r.peak, open)
	s := Sample{
		T:                now.Sub(r.start).Seconds(),
		Connections:      open,
		DeliveriesPerSec: float64(r.intDeliv) / dt,
		PublishesPerSec:  float64(r.intPub) / dt,
		P50Ms:            ms(r.interval.Quantile(0.5)),
		P99Ms:            ms(r.interval.Quantile(0.99)),
		Errors:           r.errorCount(),
	}
	if s.T >= 0 {
		r.series = append(r.series, s)
	}
	if fn := r.c.cfg.OnProgress; fn != nil {
		p := Progress{
			Elapsed: max(now.Sub(r.start), 0), Duration: r.spec.Duration.D(), Phase: phase,
			Target: r.spec.Connections, Open: open,
			Established: r.total.Counts.Established, Failed: r.total.Counts.Failed,
			DeliveriesPerSec: s.DeliveriesPerSec, PublishesPerSec: s.PublishesPerSec,
			P50: r.interval.Quantile(0.5), P99: r.interval.Quantile(0.99),
			Errors: s.Errors,
		}
		for _, w := range r.workers {
			p.Workers++
			if w.state == stateLost || w.state == stateFailed {
				p.Lost++
			}
		}
		fn(p)
	}
	if phase == phaseLoad {
		if r.loadFirstT.IsZero() {
			r.loadFirst, r.loadFirstT = r.total.Counts, now
		}
		r.loadLast, r.loadLastT = r.total.Counts, now
	}
	_ = r.total.Latency.Merge(r.interval) // same geometry by construction
	r.interval.Reset()
	r.intDeliv, r.intPub = 0, 0
	r.lastSample = now
}

// benign reasons are how connections end when loadgen itself closes them.
var benign = map[string]bool{"client_close": true, "shutdown": true}

// errorKinds merges the workers' failure and close reasons (without the benign
// ones), the publisher's errors and lost workers.
func (r *run) errorKinds() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range r.total.Reasons {
		if v -= r.atClose[k]; !benign[k] && v > 0 {
			out[k] += uint64(v)
		}
	}
	if r.pub != nil {
		for k, v := range r.pub.errors() {
			out[k] += v
		}
	}
	if r.lostErrors > 0 {
		out["worker_lost"] += r.lostErrors
	}
	return out
}

func (r *run) errorCount() uint64 {
	var n uint64
	for _, v := range r.errorKinds() {
		n += v
	}
	return n
}

// report builds the Report from the merged figures.
func (r *run) report() *Report {
	spec := r.spec
	if r.stopped == "" {
		r.stopped = "duration"
	}
	if r.end.IsZero() {
		r.end = time.Now()
	}
	rep := &Report{
		Version: 1, Tool: "herald-loadgen",
		Started: r.start, Ended: r.end, Seconds: r.end.Sub(r.start).Seconds(),
		Target:        spec.TargetURL(),
		PublishTarget: r.publishTarget(),
		Scenario:      Scenario{Name: spec.Scenario, Params: spec.Params()},
		Stopped:       r.stopped,
		Latency:       distribution(r.total.Latency),
		Connect:       distribution(r.total.Connect),
		Series:        r.series,
		Passed:        true,
	}
	for _, w := range r.workers {
		ws := WorkerSummary{ID: w.id, Addr: w.addr, Source: w.source, Connections: w.conns,
			State: w.state, Error: w.err, PID: w.hello.PID, Host: w.hello.Host,
			Connected: uint64(w.counts.Established), Delivered: uint64(w.deliv),
			HeapBytes: w.heap, RSSBytes: w.rss}
		w.l.mu.Lock()
		ws.Coalesced = w.l.coalesced
		w.l.mu.Unlock()
		if ws.State == stateRunning || ws.State == stateJoined {
			ws.State = stateLost
		}
		rep.Workers = append(rep.Workers, ws)
	}
	for i, u := range spec.TargetURLs() {
		ts := TargetSummary{URL: u}
		for _, w := range r.workers {
			if i < len(w.targets) {
				ts.Connected += uint64(w.targets[i])
			}
		}
		rep.Targets = append(rep.Targets, ts)
	}
	t := &rep.Totals
	t.ConnectionsTarget = spec.Connections
	t.ConnectionsPeak = r.peak
	ct := r.total.Counts
	t.Connected = uint64(ct.Established)
	t.ConnectErrors = uint64(max(ct.Failed-r.total.Reasons["shutdown"], 0))
	t.Subscribed = uint64(ct.Subscribed)
	var apiPublished int64
	if r.pub != nil {
		apiPublished = r.pub.total.Load()
	}
	t.Published = uint64(apiPublished + r.clientSent)
	t.Delivered = uint64(r.total.Delivered)
	var expected float64
	for i := range r.expected {
		expected += r.expected[i]
		uniq := r.delivered[i] - r.dups[i]
		if miss := int64(math.Round(r.expected[i])) - uniq; miss > 0 {
			t.Missing += uint64(miss)
		}
		t.Duplicated += uint64(r.dups[i])
		if r.expected[i] > 0 || r.delivered[i] > 0 {
			rep.Channels = append(rep.Channels, ChannelSummary{
				Name: spec.ChannelName(i), Expected: uint64(math.Round(r.expected[i])),
				Delivered: uint64(r.delivered[i]), Duplicated: uint64(r.dups[i]),
				Missing: uint64(max(int64(math.Round(r.expected[i]))-uniq, 0)),
			})
		}
	}
	t.Expected = uint64(math.Round(expected))
	t.Errors = r.errorKinds()
	t.LostConnections = uint64(r.lostConns)
	for k, v := range r.atClose {
		if v > 0 && !benign[k] {
			if t.AtClose == nil {
				t.AtClose = map[string]uint64{}
			}
			t.AtClose[k] = uint64(v)
		}
	}
	var nerr uint64
	for _, v := range t.Errors {
		nerr += v
	}
	if attempts := uint64(ct.Dialed) + t.Published; attempts > 0 {
		t.ErrorRate = float64(nerr) / float64(attempts)
	}
	if !r.loadStart.IsZero() {
		loadEnd := r.loadEnd
		if loadEnd.IsZero() {
			loadEnd = r.end
		}
		if s := loadEnd.Sub(r.loadStart).Seconds(); s > 0 {
			t.PublishesPerSec = float64(t.Published) / s
		}
		if s := r.end.Sub(r.loadStart).Seconds(); s > 0 {
			t.DeliveriesPerSec = float64(t.Delivered) / s
		}
	}
	if !r.loadStart.IsZero() {
		rep.LoadStarted = r.loadStart
		rep.LoadEnded = r.loadEnd
		if rep.LoadEnded.IsZero() {
			rep.LoadEnded = r.end
		}
	}
	rep.RampSeconds = r.rampSeconds
	if r.rampSeconds > 0 {
		rep.ConnectRate = float64(ct.Established) / r.rampSeconds
	}
	rep.Members = uint64(r.total.Members)
	if spec.Kind == KindPresence {
		k := uint64(spec.ChannelsPerConn)
		ps := &PresenceSummary{
			Joins:             k * uint64(max(r.loadLast.Subscribed-r.loadFirst.Subscribed, 0)),
			Leaves:            k * uint64(max(r.loadLast.Closed-r.loadFirst.Closed, 0)),
			MemberAdded:       uint64(r.total.MembersAdded),
			MemberRemoved:     uint64(max(r.total.Members-r.total.MembersAdded, 0)),
			MemberLatency:     distribution(r.total.MemberLatency),
			MemberLatencyLoad: distribution(r.memberLoad),
		}
		if s := r.loadLastT.Sub(r.loadFirstT).Seconds(); s > 0 {
			ps.LoadSeconds = s
			ps.JoinsPerSec, ps.LeavesPerSec = float64(ps.Joins)/s, float64(ps.Leaves)/s
		}
		rep.Presence = ps
	}
	rep.Reordered = uint64(r.total.Reordered)
	r.reportTracking(rep) // Broadcasts, Completion, the workers' memory
	return rep
}

// publishTarget is the HTTP API base the run published to, "" when it did not.
func (r *run) publishTarget() string {
	if !r.spec.publishing() {
		return ""
	}
	base, _ := r.spec.publishBase()
	return base
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// distribution summarises h for a Report.
func distribution(h *Histogram) Distribution {
	d := Distribution{Count: uint64(h.Count()), Buckets: []Bucket{}}
	if h.Count() == 0 {
		return d
	}
	d.MinMs, d.MeanMs = ms(h.Min()), ms(h.Mean())
	d.P50Ms, d.P90Ms, d.P95Ms = ms(h.Quantile(0.50)), ms(h.Quantile(0.90)), ms(h.Quantile(0.95))
	d.P99Ms, d.P999Ms, d.MaxMs = ms(h.Quantile(0.99)), ms(h.Quantile(0.999)), ms(h.Max())
	for _, b := range h.Buckets() {
		d.Buckets = append(d.Buckets, Bucket{UpToMs: ms(b.UpTo), Count: uint64(b.Count)})
	}
	return d
}
