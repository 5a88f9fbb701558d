package hub

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-rt/herald/transport"
)

// closedWithin reads w until it closes and returns the close code and when it came.
func closedWithin(w *wsClient, d time.Duration) (websocket.StatusCode, time.Time) {
	for {
		if _, err := w.readErr(d); err != nil {
			return websocket.CloseStatus(err), time.Now()
		}
	}
}

// Drain: Draining is true before any connection closes, every connection opened
// before it is closed with 4200 within the window, and no connection is accepted
// while it runs. (How the closes are spread is the transport's to test.)
func TestDrain(t *testing.T) {
	h := startHub(t, Config{})
	const n, window = 8, time.Second // 4 per loop: the last ones close late in the window
	ws := make([]*wsClient, n)
	for i := range ws {
		ws[i] = connect(t, h, testApp.Key)
		ws[i].subscribe("orders", "", "")
		ws[i].expect("pusher_internal:subscription_succeeded")
	}
	if h.Draining() {
		t.Fatal("draining before Drain")
	}

	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- h.Drain(context.Background(), window) }()

	type closed struct {
		code websocket.StatusCode
		at   time.Time
	}
	closes := make([]closed, n)
	var wg sync.WaitGroup
	var drainingAtFirst sync.Once
	var sawDraining bool
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, at := closedWithin(w, 5*time.Second)
			drainingAtFirst.Do(func() { sawDraining = h.Draining() })
			closes[i] = closed{code, at}
		}()
	}
	// While the drain runs, a new connection is refused (by the closed listener, or
	// 503 for an upgrade under way).
	time.Sleep(window / 4)
	if c, _, err := dialRaw(t, h, "/app/"+testApp.Key, nil); err == nil {
		c.CloseNow()
		t.Error("a connection was accepted during the drain")
	}
	wg.Wait()
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if !sawDraining || !h.Draining() || !h.Stats().Node.Draining {
		t.Fatal("not draining when the first connection closed")
	}
	last := time.Duration(0)
	for i, c := range closes {
		if c.code != 4200 {
			t.Errorf("connection %d closed with %d, want 4200", i, c.code)
		}
		last = max(last, c.at.Sub(start))
	}
	if last > window+500*time.Millisecond {
		t.Errorf("the last connection closed %v after the drain began, window %v", last, window)
	}
	if last < window/4 {
		t.Errorf("every connection closed within %v of a %v window: the drain did not spread them", last, window)
	}
	if st := h.Stats().Node; st.Connections != 0 || st.Transport.DrainTotal != n || st.Transport.DrainClosed != n {
		t.Errorf("after the drain: %d connections, transport drained %d of %d", st.Connections, st.Transport.DrainClosed, st.Transport.DrainTotal)
	}
	// Shutdown follows and finds nothing left to close.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// A drain cut short (the caller's context ends: a second signal) returns at once, and
// Shutdown closes the rest with 4200 at once.
func TestDrainCutShort(t *testing.T) {
	h := startHub(t, Config{})
	ws := make([]*wsClient, 8)
	for i := range ws {
		ws[i] = connect(t, h, testApp.Key)
	}
	ctx, cut := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- h.Drain(ctx, time.Hour) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cut()
	if err := <-drained; !errors.Is(err, transport.ErrDrainCut) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain cut short: %v", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.Shutdown(sctx) }()
	for i, w := range ws {
		if code, at := closedWithin(w, 5*time.Second); code != 4200 || at.Sub(start) > 2*time.Second {
			t.Errorf("connection %d: closed with %d after %v, want 4200 at once", i, code, at.Sub(start))
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}
