package loadgen

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// loopWakes returns how many times each loop's epoll_wait has returned.
func loopWakes(t *testing.T, p *Pool) int64 {
	t.Helper()
	var n int64
	for _, l := range p.loops {
		ch := make(chan int64, 1)
		if err := p.do(ctxT(t, 5*time.Second), l, func(l *loop) { ch <- l.wakes }); err != nil {
			t.Fatal(err)
		}
		n += <-ch
	}
	return n
}

// With ReadBatch a busy loop reads what arrived in batches, and loses or repeats
// nothing; an idle one still blocks in epoll_wait instead of waking per batch.
func TestPoolReadBatch(t *testing.T) {
	srv := newFakeServer(t)
	const n, events = 50, 40
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 1, ReadBatch: 20 * time.Millisecond,
		Channels: func(uint64) []string { return []string{"bench"} }})
	dialAll(t, p, n, true)
	for seq := uint64(1); seq <= events; seq++ {
		srv.publish(t, "bench", seqEvent("bench", seq))
	}
	waitFor(t, "deliveries", func() bool { return p.Delivered() == n*events })
	st, err := p.Stats(ctxT(t, 5*time.Second), 1, events)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != n*events || st.Duplicates != 0 || st.Missing != 0 || st.Reordered != 0 {
		t.Fatalf("delivered %d dups %d missing %d reordered %d; want %d and none", st.Delivered, st.Duplicates, st.Missing, st.Reordered, n*events)
	}

	// Idle: epoll_wait's own 250 ms timeout and the Stats call below are the only
	// wake-ups; a loop that slept and asked again would wake about 25 times.
	before := loopWakes(t, p)
	time.Sleep(500 * time.Millisecond)
	if woke := loopWakes(t, p) - before; woke > 6 {
		t.Fatalf("an idle loop woke %d times in 500 ms", woke)
	}
}

// Each worker binds SourcesPerWorker consecutive addresses, and its connections
// are spread over them.
func TestRunSourcesPerWorker(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections = ScenarioHold, 40
	base := netip.MustParseAddr("127.0.3.254") // .255 and .0 are skipped
	rep := runCoordinator(t, spec, 2, func(c *CoordinatorConfig) { c.SourceBase, c.SourcesPerWorker = base, 2 })
	checkReport(t, rep, 40)
	want := map[string]bool{"127.0.3.254,127.0.4.1": true, "127.0.4.2,127.0.4.3": true}
	for _, w := range rep.Workers {
		if !want[w.Source] {
			t.Errorf("worker %d sources %q, want one of %v", w.ID, w.Source, want)
		}
		delete(want, w.Source)
	}
}

// A loop held up past the pong timeout finds more answered pings ready than one
// epoll_wait returns; the answers it has not read yet are in the sockets, and
// none of those connections is closed for pong_timeout.
func TestPoolPongUnreadWhenDue(t *testing.T) {
	srv := newFakeServer(t)
	srv.activity.Store(1)                              // ping after 1 s of silence
	srv.pongDelay.Store(int64(300 * time.Millisecond)) // answered while the loop is held
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 1, PongTimeout: time.Second})
	const n = 3 * maxEvents / 2
	dialAll(t, p, n, false)
	waitFor(t, "pusher:ping from every client", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.pings >= n
	})
	if err := p.do(ctxT(t, 5*time.Second), p.loops[0], func(*loop) { time.Sleep(3 * time.Second) }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4500 * time.Millisecond) // the hold, then a sweep with every pong due
	st, err := p.Stats(ctxT(t, 5*time.Second), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.ReasonsString(); strings.Contains(r, "pong_timeout") {
		t.Fatalf("answered connections closed: %s", r)
	}
}
