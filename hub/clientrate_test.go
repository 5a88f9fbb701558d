package hub

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/transport"
)

// The client-event limit is a token bucket: the burst is the rate, the refill is
// continuous, and a second boundary gives nothing but the refill.
func TestClientEventBucket(t *testing.T) {
	const ms = int64(time.Millisecond)
	var x clientExt
	now := int64(1_000_000) * ms
	passed := func(n int, at int64) int {
		k := 0
		for range n {
			if x.allowEvent(at, 10) {
				k++
			}
		}
		return k
	}
	if k := passed(11, now); k != 10 {
		t.Fatalf("a burst of 11 at once: %d passed, want 10", k)
	}
	if k := passed(5, now+99*ms); k != 0 {
		t.Fatalf("99 ms later: %d passed, want 0", k)
	}
	if k := passed(5, now+100*ms); k != 1 {
		t.Fatalf("100 ms later: %d passed, want 1", k)
	}
	if k := passed(5, now+350*ms); k != 2 {
		t.Fatalf("350 ms later: %d passed, want 2 (one per 100 ms)", k)
	}

	// Across a second boundary: 10 at x.999 s and 10 at (x+1).001 s. A fixed
	// one-second window let all 20 through in 2 ms; the bucket lets the refill.
	x = clientExt{}
	sec := int64(5000) * int64(time.Second)
	a := passed(20, sec-ms)
	b := passed(20, sec+ms)
	if a != 10 || b != 0 {
		t.Fatalf("across a second boundary: %d then %d passed, want 10 then 0", a, b)
	}
	if k := passed(20, sec+1000*ms); k != 10 {
		t.Fatalf("a second later (the bucket full again): %d passed, want 10", k)
	}

	// A sender offering 50 per second for 10 s gets the burst plus 10 per second.
	x = clientExt{}
	total := 0
	for i := range 500 {
		total += passed(1, sec+int64(i)*20*ms)
	}
	if total < 100 || total > 110 {
		t.Fatalf("50/s offered for 10 s: %d passed, want 100..110", total)
	}

	// A clock that jumped back does not lock the connection out.
	x = clientExt{}
	passed(10, sec)
	if k := passed(1, sec-time.Hour.Nanoseconds()); k != 1 {
		t.Fatalf("after the clock went back an hour: %d passed, want 1", k)
	}
}

// fakeClock is a clock the test moves; safe to read from the hub's loops.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// startHubClock is startHub with the hub's clock replaced before it serves.
func startHubClock(t *testing.T, clk *fakeClock) *Hub {
	t.Helper()
	h, err := New(Config{Apps: []App{testApp}, Transport: transport.Config{Addr: "127.0.0.1:0", Loops: 2}})
	if err != nil {
		t.Fatal(err)
	}
	h.clock = clk.now
	if err := h.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return h
}

// Through the hub, with the clock held still: 10 pass, the 11th gets pusher:error
// 4301; 100 ms later one more passes; and 10 more just after a second boundary are
// all refused (a fixed window would have let them through).
func TestClientEventRateLimitTokenBucket(t *testing.T) {
	clk := &fakeClock{}
	clk.set(time.Unix(1_700_000_000, 950_000_000)) // 50 ms before a second boundary
	h := startHubClock(t, clk)
	sender := subscribeTo(t, h, "private-rate")
	recv := subscribeTo(t, h, "private-rate")

	// burst sends n client events and returns how many were refused with 4301 and how
	// many the other subscriber got.
	burst := func(n int) (refused, relayed int) {
		t.Helper()
		for range n {
			sender.send(`{"event":"client-tick","channel":"private-rate","data":{}}`)
		}
		sender.send(`{"event":"pusher:ping","data":{}}`)
		for {
			e := sender.read()
			if e.Event == "pusher:pong" {
				break
			}
			if e.Event != "pusher:error" || !strings.Contains(string(e.Data), `"code":4301`) ||
				!strings.Contains(string(e.Data), "rate limit") {
				t.Fatalf("sender got %s", e.raw)
			}
			refused++
		}
		// Every accepted event is delivered before a publish made once the ops
		// shards are idle: count up to that marker.
		eventually(t, "the client events to be published", h.ops.idle)
		h.publishTest(t, "private-rate", "marker", "", "")
		for {
			e := recv.read()
			if e.Event == "marker" {
				break
			}
			if e.Event != "client-tick" {
				t.Fatalf("receiver got %s", e.raw)
			}
			relayed++
		}
		sender.expect("marker") // the sender hears the publish, not its own events
		return refused, relayed
	}

	if r, d := burst(11); r != 1 || d != 10 {
		t.Fatalf("11 at once: %d refused, %d relayed; want 1 and 10", r, d)
	}
	clk.advance(100 * time.Millisecond) // past the second boundary, one token back
	if r, d := burst(10); r != 9 || d != 1 {
		t.Fatalf("100 ms later, across a second boundary: %d refused, %d relayed; want 9 and 1", r, d)
	}
	clk.advance(50 * time.Millisecond)
	if r, d := burst(10); r != 10 || d != 0 {
		t.Fatalf("50 ms later: %d refused, %d relayed; want 10 and 0", r, d)
	}
	clk.advance(time.Second)
	if r, d := burst(12); r != 2 || d != 10 {
		t.Fatalf("a second later: %d refused, %d relayed; want 2 and 10", r, d)
	}
	if got := h.Stats().Apps["1"].Dropped["client_event_rate"]; got != 1+9+10+2 {
		t.Fatalf("client_event_rate drops counted: %d, want 22", got)
	}
}
