package hub

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// walkCounts counts app a's channels and subscriptions the slow way, walking the
// index: what Stats did before it kept counters.
func walkCounts(h *Hub, a *appState) (channels, subs int) {
	h.index.each(a, func(ch *channel) {
		channels++
		subs += ch.count()
	})
	return channels, subs
}

// fillIndex puts n channels of app a, one member each, directly in the index.
func fillIndex(h *Hub, a *appState, n int) {
	for i := range n {
		ch := h.index.acquire(a, "fill-"+strconv.Itoa(i))
		ch.mu.Lock()
		ch.addLocked(&subscription{ch: ch, idx: -1})
		ch.mu.Unlock()
	}
}

// Stats reads counters: it takes no index lock, so it answers while every shard is
// held (it walked them all under their locks before).
func TestStatsDoesNotWalkTheIndex(t *testing.T) {
	h := startHub(t, Config{})
	a := h.appByID(testApp.ID)
	fillIndex(h, a, 1000)
	for i := range h.index.shards {
		h.index.shards[i].mu.Lock()
	}
	done := make(chan Stats, 1)
	go func() { done <- h.Stats() }()
	var st Stats
	select {
	case st = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stats waited for the index shard locks")
	}
	for i := range h.index.shards {
		h.index.shards[i].mu.Unlock()
	}
	if as := st.Apps["1"]; as.Channels != 1000 || as.Subscriptions != 1000 || st.Node.Channels != 1000 {
		t.Fatalf("stats %+v", as)
	}
}

// statsCost is the time of one Stats call (the least of several rounds' means, which
// ignores a round that a GC or the scheduler interrupted) and its allocations.
func statsCost(h *Hub) (time.Duration, float64) {
	best := time.Duration(1 << 62)
	for range 7 {
		start := time.Now()
		for range 50 {
			h.Stats()
		}
		best = min(best, time.Since(start)/50)
	}
	return best, testing.AllocsPerRun(50, func() { h.Stats() })
}

// The cost of Stats does not grow with the channels: the same allocations with 10
// channels and with 200,000 (BenchmarkStats takes it to a
// million; the race detector makes a million slow to set up here).
func TestStatsCostIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the index with 200,000 channels")
	}
	small := startHub(t, Config{})
	fillIndex(small, small.appByID(testApp.ID), 10)
	big := startHub(t, Config{})
	fillIndex(big, big.appByID(testApp.ID), 200_000)
	if got := big.Stats().Apps["1"]; got.Channels != 200_000 || got.Subscriptions != 200_000 {
		t.Fatalf("stats of the big index: %+v", got)
	}
	ts, as := statsCost(small)
	tb, ab := statsCost(big)
	t.Logf("Stats: %v and %.0f allocs with 10 channels; %v and %.0f allocs with 200,000", ts, as, tb, ab)
	if ab != as {
		t.Fatalf("allocations per Stats: %.0f with 10 channels, %.0f with 200,000", as, ab)
	}
	// The times are logged, not asserted (a shared machine is noisy; BenchmarkStats
	// gives the figure): that Stats takes no index lock is TestStatsDoesNotWalkTheIndex.
}

func BenchmarkStats(b *testing.B) {
	for _, n := range []int{10, 1_000_000} {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			h := startHub(b, Config{})
			fillIndex(h, h.appByID(testApp.ID), n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Stats()
			}
		})
	}
}

// The counters stay exact while channels are created and emptied from many
// goroutines at once (the index and channel paths the loops and ops shards take):
// at the end they equal a walk of the index and what the goroutines hold.
func TestStatsCountersExactUnderConcurrentChurn(t *testing.T) {
	h := startHub(t, Config{})
	a := h.appByID(testApp.ID)
	const workers, steps, names = 8, 20_000, 64
	members := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			type held struct {
				s      *subscription
				member bool
			}
			var mine []held
			for range steps {
				if len(mine) == 0 || rng.IntN(2) == 0 {
					ch := h.index.acquire(a, "churn-"+strconv.Itoa(rng.IntN(names)))
					s := &subscription{ch: ch, idx: -1}
					member := rng.IntN(4) > 0 // some stay "subscribing": a reference, not a member
					if member {
						ch.mu.Lock()
						ch.addLocked(s)
						ch.mu.Unlock()
					}
					mine = append(mine, held{s, member})
					continue
				}
				i := rng.IntN(len(mine))
				s := mine[i].s
				mine[i] = mine[len(mine)-1]
				mine = mine[:len(mine)-1]
				s.ch.mu.Lock()
				s.ch.removeLocked(s)
				s.ch.mu.Unlock()
				h.index.release(s.ch)
			}
			for _, m := range mine {
				if m.member {
					members[w]++
				}
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // Stats is read all along, as the admin server does
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
				if as := h.Stats().Apps["1"]; as.Channels < 0 || as.Subscriptions < 0 || as.Channels > names {
					t.Errorf("stats out of range: %+v", as)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	want := 0
	for _, n := range members {
		want += n
	}
	chans, subs := walkCounts(h, a)
	as := h.Stats().Apps["1"]
	if as.Channels != chans || as.Subscriptions != subs || subs != want {
		t.Fatalf("counters: %d channels, %d subscriptions; walk: %d, %d; held: %d", as.Channels, as.Subscriptions, chans, subs, want)
	}
}

// Through real connections: clients subscribing and unsubscribing public, private and
// presence channels at once leave counters equal to a walk of the index and to what
// the clients hold; and all zero once they are gone.
func TestStatsCountersMatchWalkWithClients(t *testing.T) {
	h := startHub(t, Config{})
	a := h.appByID(testApp.ID)
	const clients, steps = 12, 60
	names := []string{"pub-a", "pub-b", "pub-c", "private-x", "private-y", "presence-p", "presence-q", "cache-z"}
	ws := make([]*wsClient, clients)
	for i := range ws {
		ws[i] = connect(t, h, testApp.Key)
	}
	want := make([]map[string]bool, clients)
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			on := map[string]bool{}
			for range steps {
				name := names[rng.IntN(len(names))]
				if on[name] && rng.IntN(2) == 0 {
					if err := w.c.Write(t.Context(), websocket.MessageText, []byte(`{"event":"pusher:unsubscribe","data":{"channel":"`+name+`"}}`)); err != nil {
						t.Error(err)
						return
					}
					delete(on, name)
					continue
				}
				cd, auth := "", ""
				switch {
				case len(name) > 9 && name[:9] == "presence-":
					cd = `{"user_id":"u` + strconv.Itoa(i) + `"}`
					auth = authFor(testApp, w.socketID, name, cd)
				case len(name) > 8 && name[:8] == "private-":
					auth = authFor(testApp, w.socketID, name, "")
				}
				d := `{"channel":"` + name + `","auth":"` + auth + `","channel_data":` + strconv.Quote(cd) + `}`
				if err := w.c.Write(t.Context(), websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":`+d+`}`)); err != nil {
					t.Error(err)
					return
				}
				on[name] = true
			}
			want[i] = on
		}()
	}
	wg.Wait()
	total := 0
	for _, on := range want {
		total += len(on)
	}
	// Subscriptions finish off the loops (broker, presence store): wait until they
	// all did, then the counters must equal the walk exactly.
	eventually(t, "every subscription to be active", func() bool {
		_, subs := walkCounts(h, a)
		return subs == total && h.ops.idle()
	})
	chans, subs := walkCounts(h, a)
	as := h.Stats().Apps["1"]
	if as.Channels != chans || as.Subscriptions != subs {
		t.Fatalf("counters: %d channels, %d subscriptions; walk: %d, %d", as.Channels, as.Subscriptions, chans, subs)
	}
	for _, w := range ws {
		w.c.CloseNow()
	}
	eventually(t, "the counters to reach zero", func() bool {
		as := h.Stats().Apps["1"]
		return as.Channels == 0 && as.Subscriptions == 0 && as.Connections == 0
	})
	if c, s := walkCounts(h, a); c != 0 || s != 0 {
		t.Fatalf("walk after every client left: %d channels, %d subscriptions", c, s)
	}
}
