package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Numbered publishes and what became of them, for faults_test.go.

// fpub is one publish of a stream.
type fpub struct {
	seq    int
	start  time.Time
	took   time.Duration
	status int // 0 while unanswered, or when no answer came
	err    string
	done   bool
}

// fstream publishes numbered events ("ev", data "<seq>:<pad>") to one channel through
// one node, one at a time, and keeps every answer.
type fstream struct {
	c       *faultCluster
	channel string
	node    int
	pad     string
	subs    []*fclient

	mu   sync.Mutex
	pubs []fpub // pubs[seq-1]
}

func (s *fstream) publishOne() fpub {
	s.mu.Lock()
	p := fpub{seq: len(s.pubs) + 1, start: time.Now()}
	s.pubs = append(s.pubs, p)
	s.mu.Unlock()
	status, took, err := s.c.publish(context.Background(), s.node, s.channel, "ev", strconv.Itoa(p.seq)+":"+s.pad)
	p.took, p.status, p.err, p.done = took, status, errText(err), true
	s.mu.Lock()
	s.pubs[p.seq-1] = p
	s.mu.Unlock()
	return p
}

func (s *fstream) snapshot() []fpub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fpub(nil), s.pubs...)
}

func (s *fstream) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pubs)
}

// fcross is one client per node, each subscribed to one channel per node, and a stream
// per channel published through its node: every publish crosses to two other nodes.
type fcross struct {
	c       *faultCluster
	clients []*fclient // clients[n-1] is on node n
	streams []*fstream // streams[n-1] publishes through node n

	stopOnce sync.Once
	stopping chan struct{}
	wg       sync.WaitGroup
}

// uniqTag makes channel names of one run unique.
func uniqTag(tag string) string {
	return tag + "-" + strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
}

// cross sets up a crossing; events carry pad bytes of padding.
func (c *faultCluster) cross(t *testing.T, tag string, pad int) *fcross {
	t.Helper()
	tag = uniqTag(tag)
	x := &fcross{c: c, stopping: make(chan struct{})}
	for n := 1; n <= clusterNodes; n++ {
		f, err := c.dialClient(fmt.Sprintf("%s-rx@%d", tag, n), n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.close)
		x.clients = append(x.clients, f)
	}
	for n := 1; n <= clusterNodes; n++ {
		s := &fstream{c: c, channel: fmt.Sprintf("%s-from%d", tag, n), node: n, pad: strings.Repeat("x", pad), subs: x.clients}
		for _, f := range x.clients {
			if err := f.subscribe(c, s.channel, ""); err != nil {
				t.Fatal(err)
			}
		}
		x.streams = append(x.streams, s)
	}
	// Every node counts every subscriber: the subscriptions reached Redis.
	for n := 1; n <= clusterNodes; n++ {
		for _, s := range x.streams {
			faultWait(t, 5*time.Second, fmt.Sprintf("node %d: %s subscription_count 3", n, s.channel), func() (bool, string) {
				v, err := c.subscriptionCount(n, s.channel)
				return err == nil && v == clusterNodes, fmt.Sprint(v, err)
			})
		}
	}
	return x
}

// start publishes on every stream, each publish every `every` (or back to back when
// publishes take longer), until stop.
func (x *fcross) start(every time.Duration) {
	for _, s := range x.streams {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			next := time.Now()
			for {
				select {
				case <-x.stopping:
					return
				default:
				}
				s.publishOne()
				next = next.Add(every)
				if d := time.Until(next); d > 0 {
					select {
					case <-x.stopping:
						return
					case <-time.After(d):
					}
				} else {
					next = time.Now()
				}
			}
		}()
	}
}

func (x *fcross) stop() {
	x.stopOnce.Do(func() { close(x.stopping) })
	x.wg.Wait()
}

// settle publishes one more event on every stream (until one is answered 200) and
// waits until every client got it: what a client has not got by then, it never will
// (events of one publisher on one channel arrive in order).
func (x *fcross) settle(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, s := range x.streams {
		for {
			p := s.publishOne()
			if p.status == 200 {
				for _, f := range s.subs {
					if _, _, err := f.waitFor(time.Until(deadline), 0, func(e fevent) bool {
						return e.Channel == s.channel && e.Event == "ev" && strings.HasPrefix(e.data, strconv.Itoa(p.seq)+":")
					}); err != nil {
						t.Fatalf("settle: the last event of %s (seq %d, through node %d): %v", s.channel, p.seq, s.node, err)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("settle: %s: publishes through node %d still answer %d %s", s.channel, s.node, p.status, p.err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// flost is an event answered 200 that a subscriber on node did not get.
type flost struct {
	node  int
	start time.Time // of the publish
	what  string
}

// fresult is what became of the publishes started in a window.
type fresult struct {
	published, ok int
	answers       map[string]int // "200", "503", "no answer"
	apiOK         []time.Duration
	apiRefused    []time.Duration
	slowestAnswer time.Duration
	// delays are publish → receipt at the subscribers on the other nodes, for the
	// events answered 200.
	delays []time.Duration
	// lost counts (event, subscriber) pairs answered 200 but not received; phantom,
	// pairs refused but received; dups, events received twice; disorder, events received
	// after a later one of the same stream.
	lost, phantom, dups, disorder int
	lostAt                        map[int]int // lost by the subscriber's node
	lostPairs                     []flost
	phantoms                      []flost // node: where it was received
	// notes describe the first few of each kind of problem.
	notes map[string][]string
}

func (r *fresult) note(kind, format string, args ...any) {
	if r.notes == nil {
		r.notes = map[string][]string{}
	}
	if len(r.notes[kind]) < 6 {
		r.notes[kind] = append(r.notes[kind], fmt.Sprintf(format, args...))
	}
}

// problems lists the notes of these kinds ("lost", "phantom", "order").
func (r *fresult) problems(kinds ...string) string {
	var out []string
	for _, k := range kinds {
		out = append(out, r.notes[k]...)
	}
	return strings.Join(out, "; ")
}

func (r fresult) String() string {
	return fmt.Sprintf("%d published (%v), lost %d, phantom %d, duplicated %d, out of order %d; API answer p50 %s max %s; cross-node delivery p50 %s p99 %s max %s",
		r.published, r.answers, r.lost, r.phantom, r.dups, r.disorder,
		fms(fpercentile(append(r.apiOK, r.apiRefused...), 0.5)), fms(r.slowestAnswer),
		fms(fpercentile(r.delays, 0.5)), fms(fpercentile(r.delays, 0.99)), fms(fpercentile(r.delays, 1)))
}

// check judges the publishes of every stream started in [from, to). Call it after
// settle.
func (x *fcross) check(from, to time.Time) fresult {
	r := fresult{answers: map[string]int{}, lostAt: map[int]int{}}
	for _, s := range x.streams {
		pubs := s.snapshot()
		in := func(seq int) bool {
			if seq < 1 || seq > len(pubs) {
				return false
			}
			st := pubs[seq-1].start
			return !st.Before(from) && st.Before(to)
		}
		got := make([]map[int]time.Time, len(s.subs))
		for i, f := range s.subs {
			got[i] = map[int]time.Time{}
			last := 0
			for _, d := range f.deliveries(s.channel) {
				if _, dup := got[i][d.seq]; dup {
					if in(d.seq) {
						r.dups++
						r.note("order", "%s got %s #%d twice", f.name, s.channel, d.seq)
					}
					continue
				}
				got[i][d.seq] = d.at
				if d.seq < last && in(d.seq) {
					r.disorder++
					r.note("order", "%s got %s #%d after #%d", f.name, s.channel, d.seq, last)
				}
				last = max(last, d.seq)
			}
		}
		for _, p := range pubs {
			if !in(p.seq) {
				continue
			}
			r.published++
			r.slowestAnswer = max(r.slowestAnswer, p.took)
			switch {
			case p.status == 200:
				r.answers["200"]++
			case p.status == 0:
				r.answers["no answer"]++
			default:
				r.answers[strconv.Itoa(p.status)]++
			}
			if p.status == 200 {
				r.ok++
				r.apiOK = append(r.apiOK, p.took)
			} else {
				r.apiRefused = append(r.apiRefused, p.took)
			}
			for i, f := range s.subs {
				at, received := got[i][p.seq]
				switch {
				case p.status == 200 && !received:
					r.lost++
					r.lostAt[f.node]++
					r.lostPairs = append(r.lostPairs, flost{f.node, p.start, fmt.Sprintf("%s #%d at %s", s.channel, p.seq, f.name)})
					r.note("lost", "%s lost %s #%d (answered 200 in %s)", f.name, s.channel, p.seq, fms(p.took))
				case p.status != 200 && received:
					r.phantom++
					r.phantoms = append(r.phantoms, flost{f.node, p.start, fmt.Sprintf("%s #%d at %s (answered %d in %s: %s)", s.channel, p.seq, f.name, p.status, fms(p.took), p.err)})
					r.note("phantom", "%s got %s #%d, which was answered %d in %s: %s", f.name, s.channel, p.seq, p.status, fms(p.took), p.err)
				case received && f.node != s.node:
					r.delays = append(r.delays, at.Sub(p.start))
				}
			}
		}
	}
	return r
}

// waitNormal waits until every stream has been normal for span since some point after
// since: from that point on, every publish answered 200 within apiMax and reached every
// subscriber within deliverMax. It returns that point's distance from since (the time
// to recover), or fails t after within.
func (x *fcross) waitNormal(t *testing.T, since time.Time, apiMax, deliverMax, span, within time.Duration) time.Duration {
	t.Helper()
	for {
		var worst time.Time
		ok := true
		var why []string
		for _, s := range x.streams {
			runStart, runSpan := s.normalRun(since, apiMax, deliverMax)
			if runStart.IsZero() || runSpan < span {
				ok = false
				why = append(why, fmt.Sprintf("%s: normal for %s", s.channel, fms(runSpan)))
			}
			if runStart.After(worst) {
				worst = runStart
			}
		}
		if ok {
			return max(worst.Sub(since), 0)
		}
		if time.Since(since) > within {
			t.Fatalf("not back to normal (answers 200 within %v, deliveries within %v, for %v) within %v: %s",
				apiMax, deliverMax, span, within, strings.Join(why, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// normalRun returns the start of the trailing run of normal publishes started after
// since, and how long that run spans (first start to last start); publishes whose
// deliveries may still come end the scan.
func (s *fstream) normalRun(since time.Time, apiMax, deliverMax time.Duration) (time.Time, time.Duration) {
	pubs := s.snapshot()
	first := len(pubs) + 1 // the first seq started after since
	for i := len(pubs) - 1; i >= 0 && !pubs[i].start.Before(since); i-- {
		first = pubs[i].seq
	}
	// Only the deliveries from first on, read from the end: they come in order.
	got := make([]map[int]time.Time, len(s.subs))
	for i, f := range s.subs {
		got[i] = map[int]time.Time{}
		d := f.deliveries(s.channel)
		for j := len(d) - 1; j >= 0 && d[j].seq >= first; j-- {
			got[i][d[j].seq] = d[j].at // the earliest wins: it is written last
		}
	}
	var runStart, last time.Time
scan:
	for _, p := range pubs {
		if p.start.Before(since) {
			continue
		}
		if !p.done {
			break
		}
		normal := p.status == 200 && p.took <= apiMax
		for i := range s.subs {
			if !normal {
				break
			}
			at, received := got[i][p.seq]
			switch {
			case !received && time.Since(p.start) <= deliverMax:
				break scan // may still come
			case !received || at.Sub(p.start) > deliverMax:
				normal = false
			}
		}
		if !normal {
			runStart = time.Time{}
			continue
		}
		if runStart.IsZero() {
			runStart = p.start
		}
		last = p.start
	}
	if runStart.IsZero() {
		return runStart, 0
	}
	return runStart, last.Sub(runStart)
}

// series describes, for each step of publish start times in [from, to), the slowest
// answer and the slowest cross-node delivery of the publishes started then, and how
// many of them were refused or lost: "+1s 503×3 lost×2 answer 68ms delivery 1.2s".
func (x *fcross) series(from, to time.Time, step time.Duration) string {
	var out []string
	for b := from; b.Before(to); b = b.Add(step) {
		r := x.check(b, b.Add(step))
		if r.published == 0 {
			continue
		}
		e := fmt.Sprintf("+%s", b.Sub(from).Round(step/10))
		if n := r.published - r.ok; n > 0 {
			e += fmt.Sprintf(" refused×%d", n)
		}
		if r.lost > 0 {
			e += fmt.Sprintf(" lost×%d", r.lost)
		}
		e += fmt.Sprintf(" answer %s delivery %s", fms(r.slowestAnswer), fms(fpercentile(r.delays, 1)))
		out = append(out, e)
	}
	return strings.Join(out, "; ")
}

// firstAnswer is when the first answer for which bad holds came, of the publishes of
// any stream started at or after from; ok is false when none did.
func (x *fcross) firstAnswer(from time.Time, bad func(fpub) bool) (time.Time, bool) {
	var first time.Time
	for _, s := range x.streams {
		for _, p := range s.snapshot() {
			if p.done && !p.start.Before(from) && bad(p) {
				if at := p.start.Add(p.took); first.IsZero() || at.Before(first) {
					first = at
				}
				break
			}
		}
	}
	return first, !first.IsZero()
}

// --- the nodes' broker state, sampled ---------------------------------------------------

type fsample struct {
	at         time.Time
	up, ok     bool // ok: /stats answered
	reconnects uint64
}

// fwatch samples every node's /stats (broker.up, broker.reconnects) every 100 ms.
type fwatch struct {
	stopping chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	samples [][]fsample // per node
}

func (c *faultCluster) watch(t *testing.T) *fwatch {
	w := &fwatch{stopping: make(chan struct{}), samples: make([][]fsample, len(c.nodes))}
	for i := range c.nodes {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				s, err := c.stats(i + 1)
				w.mu.Lock()
				w.samples[i] = append(w.samples[i], fsample{at: time.Now(), ok: err == nil, up: s.Node.Broker.Up, reconnects: s.Node.Broker.Reconnects})
				w.mu.Unlock()
				select {
				case <-w.stopping:
					return
				case <-tick.C:
				}
			}
		}()
	}
	t.Cleanup(w.end)
	return w
}

func (w *fwatch) end() {
	select {
	case <-w.stopping:
	default:
		close(w.stopping)
	}
	w.wg.Wait()
}

// first is the time of node n's first answered sample at or after from for which
// pred holds, given the last answered sample before from (zero if none).
func (w *fwatch) first(n int, from time.Time, pred func(before, s fsample) bool) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var before fsample
	for _, s := range w.samples[n-1] {
		if !s.ok {
			continue
		}
		if s.at.Before(from) {
			before = s
			continue
		}
		if pred(before, s) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

// down is when node n first said its broker was down, at or after from.
func (w *fwatch) down(n int, from time.Time) (time.Time, bool) {
	return w.first(n, from, func(_, s fsample) bool { return !s.up })
}

// reconnected is when node n first counted a reconnection made after from.
func (w *fwatch) reconnected(n int, from time.Time) (time.Time, bool) {
	return w.first(n, from, func(b, s fsample) bool { return s.reconnects > b.reconnects })
}

// troubled reports whether node n's broker was down or reconnected in [from, to].
func (w *fwatch) troubled(n int, from, to time.Time) bool {
	d, down := w.down(n, from)
	r, rec := w.reconnected(n, from)
	return down && !d.After(to) || rec && !r.After(to)
}

// upAgain is when node n's broker was first up at or after from (after being down).
func (w *fwatch) upAgain(n int, from time.Time) (time.Time, bool) {
	return w.first(n, from, func(_, s fsample) bool { return s.up })
}

// sinceOr formats t - from, or "never".
func sinceOr(t time.Time, ok bool, from time.Time) string {
	if !ok {
		return "never"
	}
	return fms(t.Sub(from))
}
