package loadgen

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// roundTripper answers every request 200 in memory, so that a publisher runs inside
// a synctest bubble, and records the sequence number of each publish.
type roundTripper struct {
	mu   sync.Mutex
	seqs []uint64
}

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(r.Body)
	i := strings.Index(string(body), `"data":"`)
	if i < 0 {
		return nil, errors.New("no data")
	}
	data := body[i+len(`"data":"`):]
	if j := strings.IndexByte(string(data), '"'); j >= 0 {
		data = data[:j]
	}
	seq, _, err := ParsePayload(data)
	if err != nil {
		return nil, err
	}
	rt.mu.Lock()
	rt.seqs = append(rt.seqs, seq)
	rt.mu.Unlock()
	return &http.Response{StatusCode: 200, Status: "200 OK", Body: io.NopCloser(strings.NewReader("{}")),
		Header: http.Header{}, Request: r}, nil
}

func (rt *roundTripper) sent() []uint64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]uint64(nil), rt.seqs...)
}

// With PublishAwait, a sender sends its next publish only once the previous one has
// reached every subscriber, as the workers report it; a publish that never completes
// is given up after AwaitTimeout and counted. PublishCount ends publishing.
func TestPublishAwaitIsClosedLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := Spec{Scenario: ScenarioBroadcast, Target: "ws://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Spread: SpreadOne, PublishRate: PublishRateMax, PublishConcurrency: 1, PublishAwait: true, PublishCount: 3}
		if err := spec.Normalize(); err != nil {
			t.Fatal(err)
		}
		a, err := newAPIPublisher(&spec, 1)
		if err != nil {
			t.Fatal(err)
		}
		rt := &roundTripper{}
		a.pub, _ = NewPublisher(PublisherConfig{BaseURL: "http://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Client: &http.Client{Transport: rt}})
		a.track = newTracker(1, spec.Channels, 0)
		a.track.setSubs(func(int) int64 { return 2 }) // two subscribers on channel 0
		a.start()
		// step lets the pacer's 5 ms ticks run (fake time) and every goroutine block.
		step := func() {
			time.Sleep(20 * time.Millisecond)
			synctest.Wait()
		}
		stopped := false
		defer func() {
			if !stopped {
				a.stop(time.Second)
			}
		}()

		step()
		got := rt.sent()
		if len(got) != 1 {
			t.Fatalf("before any delivery: %d publishes sent, want 1", len(got))
		}
		a.track.add(0, [][4]int64{{int64(got[0]), 1, 0, time.Now().UnixNano()}})
		step()
		if n := len(rt.sent()); n != 1 {
			t.Fatalf("after 1 of 2 deliveries: %d publishes sent, want 1", n)
		}
		a.track.add(0, [][4]int64{{int64(got[0]), 2, 0, time.Now().UnixNano()}})
		step()
		got = rt.sent()
		if len(got) != 2 || got[1] == got[0] {
			t.Fatalf("after the first completed: sent %v, want a second publish", got)
		}
		a.track.add(0, [][4]int64{{int64(got[1]), 2, 0, time.Now().UnixNano()}})
		step()
		got = rt.sent()
		if len(got) != 3 {
			t.Fatalf("sent %v, want 3", got)
		}
		// The third is never delivered: the sender gives up after AwaitTimeout.
		time.Sleep(spec.AwaitTimeout.D() + time.Second)
		step()
		if n := a.finished.Load(); n != 3 {
			t.Errorf("finished %d, want 3", n)
		}
		if n := len(rt.sent()); n != 3 {
			t.Errorf("sent %d publishes, want PublishCount 3", n)
		}
		a.stop(time.Second)
		stopped = true
		if e := a.errors(); e["await_timeout"] != 1 || len(e) != 1 {
			t.Errorf("errors %v, want await_timeout 1", e)
		}
		cs := a.track.summary()
		if cs.Accepted != 3 || cs.Complete != 2 || cs.Incomplete != 1 || cs.Deliveries != 4 || cs.Latency.Count != 2 {
			t.Errorf("summary %+v", cs)
		}
	})
}

// Stopping a closed-loop publisher at PublishRateMax sends nothing more: the
// publish awaited is given up without an error, and the jobs queued to keep the
// senders busy are dropped, not sent and cancelled.
func TestPublishAwaitStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := Spec{Scenario: ScenarioBroadcast, Target: "ws://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Spread: SpreadOne, PublishRate: PublishRateMax, PublishConcurrency: 1, PublishAwait: true}
		if err := spec.Normalize(); err != nil {
			t.Fatal(err)
		}
		a, err := newAPIPublisher(&spec, 1)
		if err != nil {
			t.Fatal(err)
		}
		rt := &roundTripper{}
		a.pub, _ = NewPublisher(PublisherConfig{BaseURL: "http://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Client: &http.Client{Transport: rt}})
		a.track = newTracker(1, spec.Channels, 0)
		a.track.setSubs(func(int) int64 { return 1 })
		a.start()
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		got := rt.sent()
		if len(got) != 1 {
			t.Fatalf("sent %v, want 1 publish awaiting its delivery", got)
		}
		a.stop(time.Second)
		if n := len(rt.sent()); n != 1 {
			t.Errorf("sent %d publishes after the stop, want none more", n-1)
		}
		if e := a.errors(); len(e) != 0 {
			t.Errorf("errors %v, want none", e)
		}
	})
}

// PublishDelay holds the first publish back, and the rate's schedule starts after
// it.
func TestPublishDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		spec := Spec{Scenario: ScenarioBroadcast, Target: "ws://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Spread: SpreadOne, PublishRate: 10, PublishConcurrency: 1, PublishDelay: Duration(2 * time.Second)}
		if err := spec.Normalize(); err != nil {
			t.Fatal(err)
		}
		a, err := newAPIPublisher(&spec, 1)
		if err != nil {
			t.Fatal(err)
		}
		rt := &roundTripper{}
		a.pub, _ = NewPublisher(PublisherConfig{BaseURL: "http://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s",
			Client: &http.Client{Transport: rt}})
		a.start()
		defer a.stop(time.Second)
		time.Sleep(1990 * time.Millisecond)
		synctest.Wait()
		if n := len(rt.sent()); n != 0 {
			t.Fatalf("%d publishes before the delay passed", n)
		}
		time.Sleep(1010 * time.Millisecond) // 1 s after the delay: the first at once, then 10/s
		synctest.Wait()
		if n := len(rt.sent()); n < 10 || n > 11 {
			t.Errorf("%d publishes 1 s after the delay at 10/s, want 10 or 11", n)
		}
	})
}

// The tracker adds cumulative counts per worker (a repeated report changes
// nothing), completes a publish at its expected count, and takes the latest
// receive time over the workers.
func TestTrackerCompletion(t *testing.T) {
	tr := newTracker(2, 1, 0)
	tr.setSubs(func(int) int64 { return 3 })
	done := tr.register(7, 0, 1000)
	tr.answer(7, true)
	tr.add(1, [][4]int64{{7, 2, 0, 5000}})
	tr.add(1, [][4]int64{{7, 2, 0, 5000}}) // the same report again
	select {
	case <-done:
		t.Fatal("complete with 2 of 3 deliveries")
	default:
	}
	if tr.settled(time.Hour) {
		t.Error("settled with a publish incomplete")
	}
	if !tr.settled(0) {
		t.Error("not settled with every publish answered and nothing new for the quiet time")
	}
	tr.add(0, [][4]int64{{7, 1, 0, 4000}, {9, 5, 0, 100}}) // 9 was never registered
	select {
	case <-done:
	default:
		t.Fatal("not complete with 3 of 3 deliveries")
	}
	if !tr.settled(time.Hour) {
		t.Error("not settled")
	}
	cs := tr.summary()
	if cs.Accepted != 1 || cs.Complete != 1 || cs.Deliveries != 3 || cs.Latency.Count != 1 {
		t.Fatalf("summary %+v", cs)
	}
	// Latest receive (5000) minus send (1000): 4 µs.
	if cs.Latency.MaxMs < 0.0039 || cs.Latency.MaxMs > 0.0041 {
		t.Errorf("completion %v ms, want 0.004", cs.Latency.MaxMs)
	}
	if cs.LastReceived.UnixNano() != 5000 {
		t.Errorf("last received %v, want 5000 ns", cs.LastReceived.UnixNano())
	}
	// Reports that arrive before the registration count too.
	tr.add(0, [][4]int64{{11, 3, 0, 9000}})
	done = tr.register(11, 0, 8000)
	if tr.settled(0) {
		t.Error("settled with a publish not answered")
	}
	select {
	case <-done:
	default:
		t.Error("a publish whose deliveries were reported before it was registered is not complete")
	}
}

func TestTrackingSpec(t *testing.T) {
	base := Spec{Scenario: ScenarioBroadcast, Target: "ws://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s"}
	for _, c := range []struct {
		name string
		edit func(*Spec)
		bad  bool
	}{
		{"count", func(s *Spec) { s.PublishCount = 10 }, false},
		{"await", func(s *Spec) { s.PublishAwait = true }, false},
		{"await with batches", func(s *Spec) { s.PublishAwait, s.PublishBatch = true, 10 }, true},
		{"negative count", func(s *Spec) { s.PublishCount = -1 }, true},
		{"negative delay", func(s *Spec) { s.PublishDelay = -1 }, true},
		{"count without publishing", func(s *Spec) { s.Scenario, s.PublishCount = ScenarioHold, 5 }, true},
	} {
		s := base
		c.edit(&s)
		err := s.Normalize()
		if (err != nil) != c.bad {
			t.Errorf("%s: err %v", c.name, err)
		}
		if err == nil && s.AwaitTimeout.D() != defaultAwaitTimeout {
			t.Errorf("%s: await timeout %v", c.name, s.AwaitTimeout.D())
		}
	}
}

// Against Herald: a fixed number of closed-loop publishes, each followed to its
// last delivery, ends the run as soon as they are all delivered; the workers
// report their memory before the first dial and at the load phase.
func TestRunPublishCountAwait(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.Channels, spec.Spread = ScenarioBroadcast, 150, 1, SpreadOne
	spec.PublishRate, spec.PublishConcurrency, spec.PublishAwait, spec.PublishCount = PublishRateMax, 2, true, 40
	spec.Duration = Duration(time.Minute)
	rep := runCoordinator(t, spec, 2, nil)
	if rep.Stopped != "complete" {
		t.Errorf("stopped %q, want complete", rep.Stopped)
	}
	c := rep.Completion
	if c == nil {
		t.Fatal("no completion summary")
	}
	t.Logf("completion: %d publishes, p50 %.2f ms, max %.2f ms, %.0f deliveries/s; run %.1f s",
		c.Complete, c.Latency.P50Ms, c.Latency.MaxMs, c.DeliveriesPerSec, rep.Seconds)
	tot := rep.Totals
	if c.Accepted != 40 || c.Complete != 40 || c.Incomplete != 0 || c.Latency.Count != 40 {
		t.Errorf("completion %+v", c)
	}
	if c.Deliveries != 40*150 || tot.Delivered != c.Deliveries || tot.Missing != 0 || len(tot.Errors) != 0 {
		t.Errorf("deliveries %d, delivered %d, missing %d, errors %v", c.Deliveries, tot.Delivered, tot.Missing, tot.Errors)
	}
	// The last delivery of a publish comes no sooner than its first.
	if c.Latency.MaxMs < rep.Latency.MinMs || c.Latency.P50Ms <= 0 || c.DeliveriesPerSec <= 0 ||
		!c.LastDelivery.After(c.FirstSent) {
		t.Errorf("completion %+v, latency %+v", c, rep.Latency)
	}
	checkAgree(t, rep.Broadcasts, c)
	checkBroadcasts(t, rep)
	for _, w := range rep.Workers {
		if w.MemStart == nil || w.MemLoad == nil || w.MemStart.RSSBytes <= 0 || w.MemLoad.HeapBytes <= 0 {
			t.Errorf("worker %d memory: %+v %+v", w.ID, w.MemStart, w.MemLoad)
		}
	}
}

// A fixed number of publishes at a fixed rate (open loop) is tracked too, and the
// run ends once they are all delivered.
func TestRunPublishCountAtRate(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.Channels = ScenarioBroadcast, 100, 4
	spec.PublishRate, spec.PublishConcurrency, spec.PublishCount = 50, 1, 20
	spec.Duration = Duration(time.Minute)
	rep := runCoordinator(t, spec, 2, nil)
	c := rep.Completion
	if rep.Stopped != "complete" || c == nil {
		t.Fatalf("stopped %q, completion %+v", rep.Stopped, c)
	}
	if c.Accepted != 20 || c.Complete != 20 || c.Deliveries != rep.Totals.Delivered || rep.Totals.Missing != 0 ||
		rep.Totals.Published != 20 {
		t.Errorf("completion %+v, totals %+v", c, rep.Totals)
	}
	if c.LastReceived.Before(c.LastDelivery) || c.LastDelivery.IsZero() {
		t.Errorf("last received %v before the last completion %v", c.LastReceived, c.LastDelivery)
	}
	checkAgree(t, rep.Broadcasts, c)
	checkBroadcasts(t, rep)
}

// checkAgree fails when Broadcasts and Completion, built from the same tracker
// entries, disagree on any publish.
func checkAgree(t *testing.T, bs *BroadcastSummary, cs *CompletionSummary) {
	t.Helper()
	if bs == nil || cs == nil {
		t.Fatalf("broadcasts %+v, completion %+v", bs, cs)
	}
	if uint64(bs.Count) != cs.Accepted || uint64(bs.Complete) != cs.Complete || uint64(bs.Incomplete) != cs.Incomplete {
		t.Errorf("broadcasts %d (%d complete, %d incomplete), completion %d (%d, %d)",
			bs.Count, bs.Complete, bs.Incomplete, cs.Accepted, cs.Complete, cs.Incomplete)
	}
	if !reflect.DeepEqual(bs.Completion, cs.Latency) {
		t.Errorf("broadcast completion %+v, completion latency %+v", bs.Completion, cs.Latency)
	}
	if len(bs.Items) == bs.Count {
		var delivered uint64
		for _, it := range bs.Items {
			if it.Complete {
				delivered += it.Delivered
			}
		}
		if delivered != cs.Deliveries {
			t.Errorf("complete broadcasts delivered %d, completion deliveries %d", delivered, cs.Deliveries)
		}
	}
}

// Broadcasts come from the tracker's entries: expected, unique deliveries and
// duplicates per publish, completion from the send to the delivery that completed
// it, in publish order; refused publishes are left out, a publish to a channel
// without subscribers is complete without a completion time.
func TestTrackerBroadcasts(t *testing.T) {
	tr := newTracker(2, 3, 0)
	subs := []int64{3, 2, 0}
	tr.setSubs(func(i int) int64 { return subs[i] })
	tr.register(4, 1, 2000) // registered out of order: listed by send time
	tr.register(1, 0, 1000)
	tr.register(7, 2, 3000)
	tr.register(10, 0, 4000)
	for _, s := range []uint64{1, 4, 7} {
		tr.answer(s, true)
	}
	tr.answer(10, false)
	tr.add(0, [][4]int64{{1, 2, 0, 5000}, {4, 1, 0, 2500}})
	tr.add(1, [][4]int64{{1, 1, 1, 6000}})  // complete (3 of 3) at 6000, one duplicate
	tr.add(1, [][4]int64{{1, 1, 2, 9000}})  // a later duplicate: counted, completion unchanged
	tr.add(1, [][4]int64{{1, 0, 1, 9000}})  // a lower (stale) figure changes nothing
	tr.add(1, [][4]int64{{10, 3, 0, 4500}}) // refused, never listed
	bs := tr.broadcasts(func(i int) string { return []string{"a", "b", "c"}[i] })
	if bs == nil || bs.Count != 3 || bs.Complete != 2 || bs.Incomplete != 1 || bs.Completion.Count != 1 {
		t.Fatalf("broadcasts %+v", bs)
	}
	want := []BroadcastItem{
		{Seq: 1, Channel: "a", Published: time.Unix(0, 1000), Expected: 3, Delivered: 3, Duplicated: 2,
			CompletionMs: 0.005, Complete: true},
		{Seq: 4, Channel: "b", Published: time.Unix(0, 2000), Expected: 2, Delivered: 1, CompletionMs: 0.0005},
		{Seq: 7, Channel: "c", Published: time.Unix(0, 3000), Complete: true},
	}
	if !reflect.DeepEqual(bs.Items, want) {
		t.Errorf("items\n%+v\nwant\n%+v", bs.Items, want)
	}
	checkAgree(t, bs, tr.summary())
}

// Without PublishCount or PublishAwait only the first maxTrackedBroadcasts
// publishes are tracked, on both sides.
func TestTrackerLimit(t *testing.T) {
	spec := Spec{Scenario: ScenarioBroadcast, Target: "ws://127.0.0.1:1", AppID: "1", Key: "k", Secret: "s"}
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	const stride = 3
	last := spec.lastTrackedSeq(stride)
	if last != (maxTrackedBroadcasts-1)*stride+1 {
		t.Fatalf("last tracked seq %d", last)
	}
	tr := newTracker(1, 1, last)
	tr.setSubs(func(int) int64 { return 1 })
	if tr.register(last+stride, 0, 1) != nil {
		t.Error("a publish past the limit is tracked")
	}
	tr.answer(last+stride, true)
	tr.add(0, [][4]int64{{int64(last + stride), 1, 0, 2}})
	tr.register(last, 0, 1)
	tr.answer(last, true)
	tr.add(0, [][4]int64{{int64(last), 1, 0, 2}})
	if len(tr.pubs) != 1 || tr.broadcasts(spec.ChannelName).Complete != 1 {
		t.Errorf("%d entries, want the one within the limit", len(tr.pubs))
	}
	r := newSeqReporter(&spec, stride)
	r.observe(last + stride)
	if r.seen() {
		t.Error("the worker follows a publish past the limit")
	}
	r.observe(last)
	if !r.seen() || r.eager() || r.every != seqReportCoarse {
		t.Errorf("reporter: seen %v eager %v every %v", r.seen(), r.eager(), r.every)
	}
	spec.PublishCount = maxTrackedBroadcasts + 1
	if spec.lastTrackedSeq(stride) != 0 {
		t.Error("a run with publish_count does not track every publish")
	}
	spec.Scenario, spec.PublishRate, spec.PublishCount = ScenarioHold, 0, 0
	if err := spec.Normalize(); err != nil {
		t.Fatal(err)
	}
	if newSeqReporter(&spec, stride) != nil {
		t.Error("a run without API publishes has a reporter")
	}
}
