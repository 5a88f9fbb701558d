package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

var drainReason = CloseReason{Code: 4200, Text: "reconnect", Label: "shutdown"}

// politeClients dials n WebSockets (in parallel) whose readers answer the server's
// close frame and then wait for EOF; each reports the moment its close frame came.
func politeClients(t *testing.T, addr string, n int) (closedAt chan time.Time, wg *sync.WaitGroup) {
	t.Helper()
	clients := make([]*wsClient, n)
	var dial sync.WaitGroup
	for w := range 8 {
		dial.Add(1)
		go func() {
			defer dial.Done()
			for i := w; i < n; i += 8 {
				clients[i] = dialWS(t, addr)
			}
		}()
	}
	dial.Wait()
	closedAt = make(chan time.Time, n)
	wg = &sync.WaitGroup{}
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			op, p, err := c.readFrame()
			if err != nil || op != ws.OpClose || !bytes.Equal(p, appendCloseFrame(nil, 4200, "reconnect")[2:]) {
				t.Errorf("got %v %q %v", op, p, err)
				return
			}
			closedAt <- time.Now()
			_, _ = c.Write(clientFrame(finClose, p[:2]))
			_, _ = io.ReadAll(c)
		}()
	}
	return closedAt, wg
}

// TestDrainPaced closes 1,000 connections over a 2 s window on a fake clock: the
// loops are stepped through the window one 100 ms tick at a time, and each tick
// must see the same number of closes begin.
func TestDrainPaced(t *testing.T) {
	const n, window, ticks = 1000, 2 * time.Second, 20
	var now atomic.Int64
	h := &countingHandler{}
	s, err := New(Config{Handler: h, Addr: "127.0.0.1:0", Loops: 2, Logger: quietLogger(), CloseTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s.nowFn = now.Load
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx, CloseReason{})
	}()
	_, wg := politeClients(t, s.Addr(), n)
	for h.open.Load() < n {
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Drain(ctx, drainReason, window) }()
	for _, l := range s.loops { // wait until every loop has its schedule
		for started := false; !started; {
			onLoop(t, l, func() { started = l.pace != nil })
		}
	}
	if st := s.Stats(); !st.Draining || st.DrainTotal != n || st.DrainClosed != 0 {
		t.Fatalf("at the start: %+v", st)
	}
	if nc, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		_ = nc.Close()
		t.Fatal("still accepting")
	}
	perTick := make([]uint64, 0, ticks)
	prev := uint64(0)
	for range ticks + 2 {
		now.Add(int64(tick))
		for _, l := range s.loops {
			onLoop(t, l, func() { l.now = s.clock(); l.paceStep() })
		}
		closed := s.Stats().DrainClosed
		perTick = append(perTick, closed-prev)
		prev = closed
	}
	t.Logf("closes begun per 100 ms tick: %v", perTick)
	mean := uint64(n / ticks)
	var first, second uint64
	for i, c := range perTick {
		if c > 2*mean {
			t.Errorf("tick %d: %d closes, mean %d", i, c, mean)
		}
		switch {
		case i < ticks/2:
			first += c
		case i < ticks:
			second += c
		case c != 0:
			t.Errorf("tick %d (after the window): %d closes", i, c)
		}
	}
	if first > 2*n/2 || second > 2*n/2 || first+second != n {
		t.Errorf("per second: %d, %d; want %d in all", first, second, n)
	}
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	wg.Wait()
	if st := s.Stats(); st.Open != 0 || st.DrainClosed != n || st.Closed["shutdown"] != n {
		t.Fatalf("after Drain: %+v", st)
	}
}

// TestDrainRealTime runs the same on the real clock, as the clients see it: the
// close frames arrive spread over the window, not all at once.
func TestDrainRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	const n, window = 200, time.Second
	h := &countingHandler{}
	s := startServer(t, Config{Handler: h, Loops: 2})
	closedAt, wg := politeClients(t, s.Addr(), n)
	for h.open.Load() < n {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Drain(ctx, drainReason, window); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	took := time.Since(start)
	wg.Wait()
	close(closedAt)
	const buckets = 4
	var count [buckets + 1]int
	for at := range closedAt {
		count[min(int(at.Sub(start)/(window/buckets)), buckets)]++
	}
	t.Logf("Drain took %v; closes per 250 ms: %v", took, count)
	for i, c := range count[:buckets] {
		if c > 2*n/buckets || c == 0 {
			t.Errorf("quarter %d of the window: %d closes of %d", i, c, n)
		}
	}
	if count[buckets] > n/10 {
		t.Errorf("%d closes after the window", count[buckets])
	}
	if took < window*9/10 {
		t.Errorf("Drain returned after %v, before its window", took)
	}
	if st := s.Stats(); st.Open != 0 || st.Closed["shutdown"] != n {
		t.Fatalf("stats %+v", st)
	}
}

// TestDrainRefusesUpgrades: once Drain has started, a handshake in progress is
// answered 503 if it asks for an upgrade, and served if it is a plain HTTP request.
func TestDrainRefusesUpgrades(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "api") })})
	up, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	api, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	req := upgradeRequest("/app/k")
	_, _ = io.WriteString(up, req[:20])
	_, _ = io.WriteString(api, "GET /apps/1/channels HTTP/1.1\r\n")
	for s.Stats().Accepted < 2 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Drain(ctx, drainReason, time.Second); err != nil { // nothing open: returns at once
		t.Fatal(err)
	}
	_, _ = io.WriteString(up, req[20:])
	_, _ = io.WriteString(api, "Host: x\r\nConnection: close\r\n\r\n")
	if b, _ := io.ReadAll(up); !bytes.HasPrefix(b, []byte("HTTP/1.1 503 ")) || !bytes.Contains(b, []byte("Retry-After: 1\r\n")) {
		t.Fatalf("upgrade during drain: %q", b)
	}
	if b, _ := io.ReadAll(api); !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) || !bytes.HasSuffix(b, []byte("api")) {
		t.Fatalf("API during drain: %q", b)
	}
	if st := s.Stats(); st.Refused[RefusedDraining] != 1 || st.Upgraded != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Drain(ctx, drainReason, time.Second); !errors.Is(err, ErrDraining) {
		t.Fatalf("second Drain: %v", err)
	}
}

// TestDrainCutThenShutdown: a client that never answers keeps Drain waiting until its
// context ends; Shutdown then ends the rest, and OnClose keeps the drain's reason.
func TestDrainCutThenShutdown(t *testing.T) {
	h := newTestHandler()
	s, err := New(Config{Handler: h, Addr: "127.0.0.1:0", Logger: quietLogger(), CloseTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, s.Addr()) // reads nothing, answers nothing
	defer c.Close()
	conn := h.waitOpen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Drain(ctx, drainReason, 0); !errors.Is(err, ErrDrainCut) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := s.Shutdown(ctx2, CloseReason{}); !errors.Is(err, ErrForcedClose) {
		t.Fatalf("Shutdown: %v", err)
	}
	if r := h.closeReasons(conn.ID()); len(r) != 1 || r[0] != drainReason {
		t.Fatalf("OnClose %v", r)
	}
	if err := s.Drain(context.Background(), drainReason, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Drain after Shutdown: %v", err)
	}
}

func TestCeilMulDiv(t *testing.T) {
	for _, tc := range []struct {
		n    int
		a, b int64
		want int
	}{
		{500, 0, 2e9, 0}, {500, 1, 2e9, 1}, {500, 1e8, 2e9, 25}, {500, 1e8 + 1, 2e9, 26}, {500, 2e9 - 1, 2e9, 500},
		{1_000_000, 3 * 3600e9, 4 * 3600e9, 750_000}, // overflows int64 if multiplied plainly
	} {
		if got := ceilMulDiv(tc.n, tc.a, tc.b); got != tc.want {
			t.Errorf("ceil(%d×%d/%d) = %d, want %d", tc.n, tc.a, tc.b, got, tc.want)
		}
	}
}
