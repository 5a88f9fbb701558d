package hub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/transport"
)

// holdLoops blocks the loops that own the given clients' connections (a transport
// job that waits) until release is called or the test ends.
func holdLoops(t *testing.T, h *Hub, ws ...*wsClient) (release func()) {
	t.Helper()
	ids := map[string]bool{}
	for _, w := range ws {
		ids[w.socketID] = true
	}
	started, done := make(chan struct{}, len(ws)), make(chan struct{})
	h.srv.Each(func(c *transport.Conn) {
		if cl, ok := c.Value().(*client); ok && cl.conn != nil && ids[h.socketID(cl)] {
			started <- struct{}{}
			<-done
		}
	})
	for range ws {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("loop not held")
		}
	}
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return release
}

// subscribed connects n clients to the test app, subscribed to channel (a private
// one is signed), one per loop in turn.
func subscribed(t *testing.T, h *Hub, channel string, n int) []*wsClient {
	t.Helper()
	var ws []*wsClient
	for range n {
		w := connect(t, h, testApp.Key)
		auth := ""
		if strings.HasPrefix(channel, "private-") {
			auth = authFor(testApp, w.socketID, channel, "")
		}
		w.subscribe(channel, auth, "")
		w.expect("pusher_internal:subscription_succeeded")
		ws = append(ws, w)
	}
	return ws
}

// TestOverloadRefusesLocalPublishes: while a loop is past its high-water mark, an API
// publish answers 503 with Retry-After and a client event gets pusher:error 4301;
// nothing refused is delivered, everything accepted is, and each refusal is counted.
func TestOverloadRefusesLocalPublishes(t *testing.T) {
	h := startHub(t, Config{Transport: transport.Config{MailboxDeliveries: 4}})
	ws := subscribed(t, h, "private-orders", 2) // one per loop
	a := h.appByID(testApp.ID)
	release := holdLoops(t, h, ws[0])
	accepted := 0
	for i := 0; i < 10; i++ {
		js := []byte(`"x"`)
		err := h.publish(context.Background(), a, []string{"private-orders"}, "tick", js, "")
		if errors.Is(err, ErrServerBusy) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if accepted != 2 { // the held loop's backlog reaches its high-water mark (2) with two
		t.Fatalf("%d publishes accepted before the node said busy, want 2", accepted)
	}
	// Over HTTP: 503, Retry-After, JSON.
	rec := httptest.NewRecorder()
	req := apiTestReq{method: "POST", path: "/apps/1/events", body: `{"name":"tick","channel":"private-orders","data":"x"}`,
		key: testApp.Key, secret: testApp.Secret, ts: time.Now().Unix()}
	h.APIHandler().ServeHTTP(rec, req.build(t))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" ||
		rec.Body.String() != apiErrBody(503, "publish failed: server busy, retry later") {
		t.Fatalf("API publish while busy: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	// A client on the other loop: its event is refused.
	ws[1].send(`{"event":"client-x","channel":"private-orders","data":{}}`)
	e := ws[1].expect("tick") // the other loop delivered its share of the accepted ones
	_ = e
	ws[1].expect("tick")
	if e := ws[1].expect("pusher:error"); !strings.Contains(e.raw, `"code":4301`) || !strings.Contains(e.raw, "server busy") {
		t.Fatalf("client event while busy: %s", e.raw)
	}
	release()
	ws[0].expect("tick")
	ws[0].expect("tick")
	if _, err := ws[0].readErr(100 * time.Millisecond); err == nil {
		t.Fatal("a refused publish was delivered")
	}
	st := h.Stats().Apps[testApp.ID]
	if st.Dropped[dropPublishBusy] != 2 || st.Dropped[dropClientEventBusy] != 1 || st.MessagesOut != 4 {
		t.Fatalf("dropped %v, messages out %d; want publish_busy 2, client_event_busy 1, 4 sent", st.Dropped, st.MessagesOut)
	}
	if err := h.publish(context.Background(), a, []string{"private-orders"}, "tick", []byte(`"x"`), ""); err != nil {
		t.Fatalf("after the loop caught up: %v", err)
	}
}

// TestRemoteDeliveryWaits: a broker message waits for a full loop, at most
// DeliveryWait; then its deliveries there are dropped, counted, and the channel shows
// in /stats; a loop that catches up within the wait gets the message.
func TestRemoteDeliveryWaits(t *testing.T) {
	const wait = 100 * time.Millisecond
	h := startHub(t, Config{DeliveryWait: wait, Transport: transport.Config{MailboxDeliveries: 2}})
	ws := subscribed(t, h, "orders", 2)
	key := channelKey(h.appByID(testApp.ID), "orders")
	msg := func(n string) []byte {
		return remoteEnvelope(h.envelope(eventJSON(nil, "tick", "orders", []byte(`"`+n+`"`), ""), 0, 0))
	}
	release := holdLoops(t, h, ws...)
	h.HandleMessage(key, msg("1"))
	h.HandleMessage(key, msg("2")) // each loop's backlog is now 2, its bound
	start := time.Now()
	h.HandleMessage(key, msg("lost"))
	if took := time.Since(start); took < wait {
		t.Fatalf("gave up after %v, want %v", took, wait)
	}
	st := h.Stats().Apps[testApp.ID]
	if st.Dropped[dropDeliveryTimeout] != 2 || len(st.DroppedChannels) != 1 ||
		st.DroppedChannels[0] != (ChannelDrops{Channel: "orders", Dropped: 2}) || st.MessagesOut != 4 {
		t.Fatalf("dropped %v %v, messages out %d", st.Dropped, st.DroppedChannels, st.MessagesOut)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.HandleMessage(key, msg("3"))
	}()
	time.Sleep(wait / 4)
	release()
	<-done
	for _, w := range ws {
		for _, want := range []string{`"1"`, `"2"`, `"3"`} {
			if e := w.expect("tick"); string(e.Data) != want {
				t.Fatalf("got %s, want data %s", e.raw, want)
			}
		}
	}
	if st := h.Stats().Apps[testApp.ID]; st.Dropped[dropDeliveryTimeout] != 2 || st.MessagesOut != 6 {
		t.Fatalf("dropped %v, messages out %d", st.Dropped, st.MessagesOut)
	}
}

// TestOverloadAccounting publishes, locally and as another node, much faster than
// the loops can write: every publish the node took is delivered to each subscriber or
// counted as dropped, messages_sent counts exactly what was delivered, and the loops'
// backlog never passes its bound by more than one job.
func TestOverloadAccounting(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	const subs, bound = 60, 600
	h := startHub(t, Config{DeliveryWait: 5 * time.Millisecond, Transport: transport.Config{MailboxDeliveries: bound}})
	ws := subscribed(t, h, "orders", subs)
	var received atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	for _, w := range ws {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, b, err := w.c.Read(ctx)
				if err != nil {
					return
				}
				if strings.Contains(string(b), `"event":"tick"`) {
					received.Add(1)
				}
			}
		}()
	}
	a := h.appByID(testApp.ID)
	key := channelKey(a, "orders")
	env := remoteEnvelope(h.envelope(eventJSON(nil, "tick", "orders", []byte(`"r"`), ""), 0, 0))
	var local, busy, remote atomic.Int64
	var peak atomic.Int64
	stop := time.Now().Add(time.Second)
	var pubs sync.WaitGroup
	for range 4 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for time.Now().Before(stop) {
				err := h.publish(context.Background(), a, []string{"orders"}, "tick", []byte(`"l"`), "")
				switch {
				case err == nil:
					local.Add(1)
				case errors.Is(err, ErrServerBusy):
					busy.Add(1)
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	pubs.Add(2)
	go func() {
		defer pubs.Done()
		for time.Now().Before(stop) {
			h.HandleMessage(key, env)
			remote.Add(1)
		}
	}()
	go func() {
		defer pubs.Done()
		for time.Now().Before(stop) {
			if b := h.srv.Stats().FanoutBacklog; b > peak.Load() {
				peak.Store(b)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	pubs.Wait()
	published := (local.Load() + remote.Load()) * subs
	var dropped int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := h.Stats().Apps[testApp.ID]
		dropped = int64(st.Dropped[dropDeliveryOverflow] + st.Dropped[dropDeliveryTimeout])
		if received.Load()+dropped == published && int64(st.MessagesOut) == received.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d × %d = %d deliveries; received %d, dropped %d, messages_sent %d",
				local.Load()+remote.Load(), subs, published, received.Load(), dropped, st.MessagesOut)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := h.Stats().Apps[testApp.ID]
	if st.SlowConsumers != 0 || busy.Load() != int64(st.Dropped[dropPublishBusy]) {
		t.Fatalf("slow consumers %d; busy %d counted %d", st.SlowConsumers, busy.Load(), st.Dropped[dropPublishBusy])
	}
	loops := int64(h.srv.NumLoops())
	if max := loops * (bound + subs); peak.Load() > max {
		t.Fatalf("backlog peaked at %d deliveries, past %d", peak.Load(), max)
	}
	if busy.Load() == 0 {
		t.Fatal("the publishers never outran the loops: the test proves nothing")
	}
	t.Logf("local publishes %d taken, %d refused (503); remote %d; %d deliveries: %d received, %d dropped; backlog peak %d",
		local.Load(), busy.Load(), remote.Load(), published, received.Load(), dropped, peak.Load())
	cancel()
	for _, w := range ws {
		w.c.CloseNow()
	}
	readers.Wait()
}

// TestOpsCleanupBound: clean-up jobs are admitted past the bound for new work, up to
// mustFactor times it; past that they are refused and reported.
func TestOpsCleanupBound(t *testing.T) {
	o := newOps(1, 2)
	var dropped []string
	o.dropped = func(key string) { dropped = append(dropped, key) }
	hold, held := make(chan struct{}), make(chan struct{})
	if !o.submit("a:x", false, func() { close(held); <-hold }) {
		t.Fatal("first job refused")
	}
	<-held // running: the queue is empty again
	var ran atomic.Int32
	for i := range 2 {
		if !o.submit("a:x", false, func() { ran.Add(1) }) {
			t.Fatalf("new work %d refused under the bound", i)
		}
	}
	if o.submit("a:x", false, func() {}) {
		t.Fatal("new work admitted past the bound")
	}
	for i := 2; i < mustFactor*2; i++ {
		if !o.submit("a:x", true, func() { ran.Add(1) }) {
			t.Fatalf("clean-up %d refused under its bound", i)
		}
	}
	if o.submit("a:y", true, func() {}) || len(dropped) != 1 || dropped[0] != "a:y" {
		t.Fatalf("clean-up past its bound: dropped %v", dropped)
	}
	close(hold)
	o.close()
	if ran.Load() != mustFactor*2 {
		t.Fatalf("%d jobs ran, want %d", ran.Load(), mustFactor*2)
	}
}
