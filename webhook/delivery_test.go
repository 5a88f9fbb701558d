package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/herald-rt/herald/internal/logtest"
)

// These tests run in a synctest bubble against fakeNet, so every time below is exact:
// the clock moves only when every goroutine of the test waits.

func oneApp(url string, hooks ...Hook) []App {
	if url != "" {
		hooks = append([]Hook{{URL: url}}, hooks...)
	}
	return []App{{ID: "1", Key: "key", Secret: "secret", Hooks: hooks}}
}

func TestLoneEventWaitsBatchWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(200))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client()})
		defer closeNow(t, s)

		start := time.Now()
		s.Send("1", ev("c"))
		time.Sleep(250*time.Millisecond - 1)
		synctest.Wait()
		if n := len(ep.requests()); n != 0 {
			t.Fatalf("%d requests before BatchWait", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		reqs := ep.requests()
		if len(reqs) != 1 || reqs[0].at.Sub(start) != 250*time.Millisecond {
			t.Fatalf("requests %v, want one at +250ms", reqs)
		}
	})
}

func TestBatching(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(200))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client()})
		defer closeNow(t, s)

		start := time.Now()
		var want []string
		for i := range 45 {
			want = append(want, fmt.Sprint(i))
			s.Send("1", ev(want[i]))
		}
		synctest.Wait()
		if n := len(ep.requests()); n != 2 {
			t.Fatalf("%d requests at once, want the two full batches", n)
		}
		time.Sleep(250 * time.Millisecond)
		synctest.Wait()
		reqs := ep.requests()
		var sizes []int
		var at []time.Duration
		for _, r := range reqs {
			sizes = append(sizes, len(r.events))
			at = append(at, r.at.Sub(start))
		}
		if !slices.Equal(sizes, []int{20, 20, 5}) || !slices.Equal(at, []time.Duration{0, 0, 250 * time.Millisecond}) {
			t.Errorf("batches of %v at %v, want 20, 20, 5 at 0, 0, 250ms", sizes, at)
		}
		if got := ep.delivered(); !slices.Equal(got, want) {
			t.Errorf("order: %v", got)
		}
	})
}

// An endpoint fails twice (500, then no answer within Timeout), then answers: the
// batch is delivered once, after backoffs of 1 s and 2 s (±50 %), and the events sent
// meanwhile follow it.
func TestRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", func(n int) int {
			return [...]int{500, 0, 200, 200, 200}[n]
		})
		logs := &logtest.Recorder{}
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: logs.Logger()})
		defer closeNow(t, s)

		start := time.Now()
		s.Send("1", Event{Name: MemberAdded, Channel: "presence-A", UserID: "u"})
		time.Sleep(250 * time.Millisecond)
		synctest.Wait()
		s.Send("1", ev("B"))
		s.Send("1", ev("C"))
		time.Sleep(time.Minute)
		synctest.Wait()

		reqs := ep.requests()
		var got [][]string
		for _, r := range reqs {
			got = append(got, r.names())
			if !r.sigOK {
				t.Errorf("bad signature on %s", r.body)
			}
		}
		if want := [][]string{{"presence-A"}, {"presence-A"}, {"presence-A"}, {"B", "C"}}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("requests %v, want %v", got, want)
		}
		// Attempt 1 at BatchWait; attempt 2 after 1 s ±50 %; attempt 3 after the 4 s
		// timeout and 2 s ±50 %; B and C right after, having waited more than BatchWait.
		at := func(i int) time.Duration { return reqs[i].at.Sub(start) }
		between := func(what string, d, lo, hi time.Duration) {
			if d < lo || d >= hi {
				t.Errorf("%s: %v, want [%v, %v)", what, d, lo, hi)
			}
		}
		if at(0) != 250*time.Millisecond {
			t.Errorf("first attempt at %v", at(0))
		}
		between("first backoff", at(1)-at(0), 500*time.Millisecond, 1500*time.Millisecond)
		between("second backoff", at(2)-at(1)-4*time.Second, time.Second, 3*time.Second)
		if at(3) != at(2) {
			t.Errorf("B, C at %v, want with the success at %v", at(3), at(2))
		}
		if reqs[0].timeMS == reqs[2].timeMS {
			t.Error("a retry reuses time_ms")
		}

		st := s.Stats().Apps["1"]
		if st.Sent != 3 || st.Failed != 2 || st.Dropped[DropRetriesExhausted] != 0 || st.Failing != 0 || st.LatencyCount != 3 {
			t.Errorf("stats %+v", st)
		}
		if f := (*s.apps.Load())["1"].stats.failed[tMemberAdded].Load(); f != 2 {
			t.Errorf("failed{member_added} = %d", f)
		}

		// One warning when it started failing, the second failure held back, one
		// line when it recovered.
		lines := logs.Lines()
		if len(lines) != 2 || lines[0].Msg != "webhook endpoint failing" || lines[1].Msg != "webhook endpoint recovered" {
			t.Fatalf("logs: %+v", lines)
		}
		if lines[0].Attrs["error"] != "status 500 Internal Server Error" || lines[1].Attrs["failed_attempts"] != int64(2) {
			t.Errorf("logs: %+v", lines)
		}
	})
}

// An endpoint that never answers, with a small queue: Send goes on, the queue holds
// QueueSize, the rest is dropped as queue_full; each batch is retried until RetryFor
// and then dropped as retries_exhausted, its last attempt made at the deadline.
func TestBoundedHangingEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(0))
		logs := &logtest.Recorder{}
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: logs.Logger(),
			QueueSize: 10, BatchMax: 5, BatchWait: 10 * time.Millisecond, Timeout: time.Second,
			RetryFor: 10 * time.Second, BackoffMin: time.Second, BackoffMax: 2 * time.Second})
		defer closeNow(t, s)

		start := time.Now()
		s.Send("1", ev("e0"))
		time.Sleep(10 * time.Millisecond)
		synctest.Wait() // e0 in flight
		for i := 1; i <= 100; i++ {
			s.Send("1", ev(fmt.Sprint("e", i)))
		}
		st := s.Stats().Apps["1"]
		if st.Queued != 10 || st.Dropped[DropQueueFull] != 90 {
			t.Fatalf("after 101 Sends: %+v", st)
		}

		time.Sleep(11 * time.Second) // e0's last attempt at 10 s + 10 ms times out at 11 s + 10 ms
		synctest.Wait()
		var last request
		for _, r := range ep.requests() {
			if r.names()[0] == "e0" {
				last = r
			}
		}
		// Had the last attempt failed (after Timeout) before the deadline, another
		// would have been made, at the deadline at the latest.
		deadline := 10*time.Second + 10*time.Millisecond
		if at := last.at.Sub(start); at > deadline || at <= deadline-time.Second {
			t.Errorf("last attempt of e0 at %v, want in (deadline - Timeout, deadline = %v]", at, deadline)
		}
		if st := s.Stats().Apps["1"]; st.Dropped[DropRetriesExhausted] != 1 || st.Queued != 5 {
			t.Errorf("after RetryFor: %+v", st)
		}

		time.Sleep(time.Minute)
		synctest.Wait()
		st = s.Stats().Apps["1"]
		if st.Dropped[DropRetriesExhausted] != 11 || st.Queued != 0 || st.Sent != 0 || st.Failing != 1 {
			t.Errorf("at the end: %+v", st)
		}
		if got := st.Dropped[DropQueueFull] + st.Dropped[DropRetriesExhausted]; got != 101 {
			t.Errorf("%d events accounted for, want 101", got)
		}
		// About 30 s of failures: a line at the first, then at most one per 30 s; the
		// last one, when the window allows, reports the drops held back. Every drop
		// is counted in them.
		lines := logs.Lines()
		if len(lines) < 2 || len(lines) > 3 || lines[0].Msg != "webhook endpoint failing" ||
			lines[0].Attrs["dropped_queue_full"] != uint64(90) || !strings.HasPrefix(lines[len(lines)-1].Msg, "webhook events dropped") {
			t.Fatalf("logs %+v", lines)
		}
		var exhausted int64
		for i, l := range lines {
			if i > 0 && l.At.Sub(lines[i-1].At) < warnEvery {
				t.Errorf("line %d %v after the one before", i, l.At.Sub(lines[i-1].At))
			}
			n, _ := l.Attrs["dropped_retries_exhausted"].(int64)
			exhausted += n
		}
		if exhausted != 11 {
			t.Errorf("logs count %d events dropped as retries_exhausted, want 11: %+v", exhausted, lines)
		}
	})
}

// A hanging endpoint holds neither another hook of its app nor another app.
func TestFailingHookIsolated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		bad, badURL := net.add(t, "bad.test", "s1", always(0))
		good, goodURL := net.add(t, "good.test", "s1", always(200))
		other, otherURL := net.add(t, "other.test", "s2", always(200))
		s := mustNew(t, Config{Client: net.client(), Logger: (&logtest.Recorder{}).Logger(), QueueSize: 5, Apps: []App{
			{ID: "1", Key: "k1", Secret: "s1", Hooks: []Hook{{URL: badURL}, {URL: goodURL}}},
			{ID: "2", Key: "k2", Secret: "s2", Hooks: []Hook{{URL: otherURL}}},
		}})
		start := time.Now()
		for round := range 10 {
			for i := range 5 {
				s.Send("1", ev(fmt.Sprint(round, i)))
				s.Send("2", ev(fmt.Sprint(round, i)))
			}
			time.Sleep(250 * time.Millisecond)
			synctest.Wait()
			for _, e := range []*endpoint{good, other} {
				reqs := e.requests()
				if len(reqs) != round+1 || reqs[round].at.Sub(start) != time.Duration(round+1)*250*time.Millisecond {
					t.Fatalf("round %d: %d requests, the last at %v", round, len(reqs), reqs[len(reqs)-1].at.Sub(start))
				}
			}
		}
		if n := len(bad.requests()); n != 1 {
			t.Errorf("bad endpoint: %d attempts in 2.5 s, want 1 (hanging for 4 s)", n)
		}
		st := s.Stats()
		if st.Apps["1"].Sent != 50 || st.Apps["2"].Sent != 50 || st.Apps["1"].Dropped[DropQueueFull] != 40 {
			t.Errorf("stats %+v", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close: %v", err)
		}
	})
}

func TestRouting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		var eps []*endpoint
		var hooks []Hook
		for i, h := range []Hook{
			{},
			{EventTypes: []string{MemberAdded, MemberRemoved}},
			{Filter: Filter{ChannelNameStartsWith: "presence-"}},
			{Filter: Filter{ChannelNameEndsWith: "-vip"}},
			{EventTypes: []string{ClientEvent}, Filter: Filter{ChannelNameStartsWith: "private-", ChannelNameEndsWith: "-vip"}},
		} {
			e, url := net.add(t, fmt.Sprint("h", i, ".test"), "secret", always(200))
			h.URL = url
			eps, hooks = append(eps, e), append(hooks, h)
		}
		s := mustNew(t, Config{Client: net.client(), Apps: append(oneApp("", hooks...),
			App{ID: "members-only", Key: "k", Secret: "s", Hooks: []Hook{{URL: "http://unused.test/", EventTypes: []string{MemberAdded}}}},
			App{ID: "no-hooks"})})
		defer closeNow(t, s)

		for _, e := range []Event{
			{Name: ChannelOccupied, Channel: "public"},
			{Name: ChannelOccupied, Channel: "presence-x-vip"},
			{Name: MemberAdded, Channel: "presence-x", UserID: "u"},
			{Name: ClientEvent, Channel: "private-a-vip", Event: "client-e", Data: "{}", SocketID: "1.1"},
			{Name: ClientEvent, Channel: "private-a", Event: "client-e", Data: "{}", SocketID: "1.1"},
			{Name: CacheMiss, Channel: "cache-vip"},
			{Name: "not_a_type", Channel: "public"},
		} {
			s.Send("1", e)
			s.Send("no-hooks", e)
			s.Send("unknown", e)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		for i, want := range [][]string{
			{"public", "presence-x-vip", "presence-x", "private-a-vip", "private-a", "cache-vip"},
			{"presence-x"},
			{"presence-x-vip", "presence-x"},
			{"presence-x-vip", "private-a-vip", "cache-vip"},
			{"private-a-vip"},
		} {
			if got := eps[i].delivered(); !slices.Equal(got, want) {
				t.Errorf("hook %d (%+v) got %v, want %v", i, hooks[i], got, want)
			}
		}

		for _, c := range []struct {
			app, typ string
			want     bool
		}{
			{"1", ChannelVacated, true}, {"1", SubscriptionCount, true}, {"1", "nope", false},
			{"members-only", MemberAdded, true}, {"members-only", MemberRemoved, false}, {"members-only", ClientEvent, false},
			{"no-hooks", ChannelOccupied, false}, {"unknown", ChannelOccupied, false},
		} {
			if got := s.Enabled(c.app, c.typ); got != c.want {
				t.Errorf("Enabled(%q, %q) = %v", c.app, c.typ, got)
			}
		}
	})
}

// Close sends what is queued at once, without waiting for BatchWait, and afterwards
// refuses events as shutdown.
func TestCloseDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", always(204))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), BatchWait: time.Hour})
		for i := range 45 {
			s.Send("1", ev(fmt.Sprint(i)))
		}
		start := time.Now()
		closeNow(t, s)
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v", d)
		}
		var sizes []int
		for _, r := range ep.requests() {
			sizes = append(sizes, len(r.events))
		}
		if !slices.Equal(sizes, []int{20, 20, 5}) {
			t.Errorf("batches %v", sizes)
		}
		s.Send("1", ev("late"))
		if st := s.Stats().Apps["1"]; st.Sent != 45 || st.Dropped[DropShutdown] != 1 {
			t.Errorf("stats %+v", st)
		}
		closeNow(t, s)
	})
}

// With an endpoint that never answers, Close returns when its context ends, with the
// context's error, and counts what it gave up as shutdown (not as failed attempts).
func TestCloseGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		_, url := net.add(t, "a.test", "secret", always(0))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: (&logtest.Recorder{}).Logger()})
		for i := range 30 {
			s.Send("1", ev(fmt.Sprint(i)))
		}
		synctest.Wait() // 20 in flight, 10 queued
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := s.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Errorf("Close: %v after %v", err, time.Since(start))
		}
		if st := s.Stats().Apps["1"]; st.Dropped[DropShutdown] != 30 || st.Failed != 0 || st.Queued != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// Retries during Close go on while its context allows.
func TestCloseRetriesWithinContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", func(n int) int { return [...]int{503, 503, 200}[n] })
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: (&logtest.Recorder{}).Logger()})
		s.Send("1", ev("a"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if got := ep.delivered(); !slices.Equal(got, []string{"a"}) || len(ep.requests()) != 3 {
			t.Errorf("delivered %v in %d attempts", got, len(ep.requests()))
		}
	})
}

// A failing endpoint logs one warning per 30 s, with the count of those held back.
func TestWarningsRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		var status atomic.Int32
		status.Store(500)
		_, url := net.add(t, "a.test", "secret", func(int) int { return int(status.Load()) })
		logs := &logtest.Recorder{}
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: logs.Logger(),
			BackoffMin: time.Second, BackoffMax: 2 * time.Second})
		defer closeNow(t, s)
		s.Send("1", ev("a"))
		time.Sleep(100 * time.Second)
		synctest.Wait()
		lines := logs.Lines()
		// Attempts every 1 to 3 s; lines at the first failure, then at the first failure
		// 30 s after the last line: 0, [30, 33), [60, 66), [90, 99).
		if len(lines) != 4 {
			t.Fatalf("%d lines in 100 s: %+v", len(lines), lines)
		}
		for i, l := range lines[1:] {
			if l.Msg != "webhook endpoint still failing" || l.Attrs["suppressed"] == nil || l.Attrs["url"] != "http://a.test/hook" {
				t.Errorf("line %d: %+v", i+1, l)
			}
		}
		status.Store(200)
		synctest.Wait()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		lines = logs.Lines()
		if len(lines) != 5 || lines[4].Msg != "webhook endpoint recovered" {
			t.Errorf("after recovery: %+v", lines[4:])
		}
	})
}

// QueueBytes bounds a queue by the size of its events too; an event larger than it
// still goes into an empty queue.
func TestQueueBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		_, url := net.add(t, "a.test", "secret", always(0))
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: (&logtest.Recorder{}).Logger(),
			QueueBytes: 1000, BatchWait: time.Millisecond})
		big := Event{Name: ClientEvent, Channel: "private-c", Data: strings.Repeat("x", 5000)}
		s.Send("1", big) // alone: accepted, then in flight
		time.Sleep(time.Millisecond)
		synctest.Wait()
		e := Event{Name: ClientEvent, Channel: "private-c", Data: strings.Repeat("x", 291)} // 300 bytes
		for range 5 {
			s.Send("1", e)
		}
		if st := s.Stats().Apps["1"]; st.Queued != 3 || st.Dropped[DropQueueFull] != 2 {
			t.Errorf("stats %+v", st)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Close(ctx)
	})
}

// A ring grown by a backlog is released once the backlog is sent.
func TestQueueMemoryReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		ep, url := net.add(t, "a.test", "secret", func(n int) int { return min(n, 1) * 200 }) // hangs once
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Logger: (&logtest.Recorder{}).Logger()})
		defer closeNow(t, s)
		s.Send("1", ev("first"))
		time.Sleep(time.Second)
		synctest.Wait()
		for range 3000 {
			s.Send("1", ev("x"))
		}
		h := (*s.apps.Load())["1"].hooks[0]
		h.mu.Lock()
		grown := len(h.buf)
		h.mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		h.mu.Lock()
		released := h.buf == nil
		h.mu.Unlock()
		if grown != 4096 || !released || len(ep.delivered()) != 3001 {
			t.Errorf("ring of %d, released %v, delivered %d", grown, released, len(ep.delivered()))
		}
	})
}
