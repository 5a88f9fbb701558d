package hub

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/transport"
	"github.com/herald-rt/herald/webhook"
)

// testGrace is the departure grace of the webhook tests: short, the tests wait it out.
const testGrace = 300 * time.Millisecond

// hookSink is a webhook endpoint that checks each request's signature and keeps the
// events, as "name channel [user]" strings and in full.
type hookSink struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	events []map[string]any
}

func newHookSink(t *testing.T, secret string) *hookSink {
	k := &hookSink{t: t}
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		if got, want := r.Header.Get("X-Pusher-Signature"), hex.EncodeToString(mac.Sum(nil)); got != want {
			t.Errorf("webhook signature %q, want %q", got, want)
		}
		var doc struct {
			TimeMS int64            `json:"time_ms"`
			Events []map[string]any `json:"events"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || doc.TimeMS == 0 {
			t.Errorf("webhook body %s: %v", body, err)
		}
		k.mu.Lock()
		k.events = append(k.events, doc.Events...)
		k.mu.Unlock()
	}))
	t.Cleanup(k.srv.Close)
	return k
}

// got returns the events received so far as "name channel [user_id]".
func (k *hookSink) got() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, e := range k.events {
		s := fmt.Sprint(e["name"], " ", e["channel"])
		if u, ok := e["user_id"]; ok {
			s += fmt.Sprint(" ", u)
		}
		out = append(out, s)
	}
	return out
}

// wait waits until the events are exactly want (in any order), then a grace more to
// see that nothing else comes.
func (k *hookSink) wait(want ...string) {
	k.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := k.got()
		slices.Sort(got)
		if len(got) >= len(want) {
			time.Sleep(testGrace + 200*time.Millisecond)
			got = k.got()
			slices.Sort(got)
			if !slices.Equal(got, want) {
				k.t.Fatalf("webhook events %q, want %q", got, want)
			}
			k.mu.Lock()
			k.events = nil
			k.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("webhook events %q so far, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (k *hookSink) find(name string) map[string]any {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range k.events {
		if e["name"] == name {
			return e
		}
	}
	return nil
}

func hookedApp(k *hookSink) App {
	a := testApp
	a.Webhooks = []webhook.Hook{{URL: k.srv.URL}}
	return a
}

func hookConfig(k *hookSink) Config {
	return Config{Apps: []App{hookedApp(k)}, DepartureGrace: testGrace,
		Webhooks: webhook.Config{BatchWait: 10 * time.Millisecond}}
}

// TestWebhooksOneNode: occupied and vacated, member_added and member_removed,
// client_event and cache_miss, each once; a return within the grace sends nothing.
func TestWebhooksOneNode(t *testing.T) {
	t.Parallel()
	k := newHookSink(t, testApp.Secret)
	h := startHub(t, hookConfig(k))

	a := subscribeTo(t, h, "private-room")
	k.wait("channel_occupied private-room")
	a.c.Close(websocket.StatusNormalClosure, "")
	k.wait("channel_vacated private-room")

	// A page reload: leave and come back within the grace.
	b := subscribeTo(t, h, "orders")
	k.wait("channel_occupied orders")
	b.c.Close(websocket.StatusNormalClosure, "")
	subscribeTo(t, h, "orders")
	k.wait()

	p := joinPresence(t, h, "presence-lobby", "alice")
	k.wait("channel_occupied presence-lobby", "member_added presence-lobby alice")
	q := joinPresence(t, h, "presence-lobby", "bob")
	p.expect("pusher_internal:member_added")
	k.wait("member_added presence-lobby bob")
	q.c.Close(websocket.StatusNormalClosure, "")
	k.wait("member_removed presence-lobby bob")
	// bob reloads: leaves and comes back within the grace: no webhook at all.
	q2 := joinPresence(t, h, "presence-lobby", "bob")
	k.wait("member_added presence-lobby bob")
	q2.c.Close(websocket.StatusNormalClosure, "")
	joinPresence(t, h, "presence-lobby", "bob")
	k.wait()

	for _, tc := range []struct{ data, want string }{{`"text"`, "text"}, {`{"x":1}`, `{"x":1}`}} {
		p.send(`{"event":"client-typing","channel":"presence-lobby","data":` + tc.data + `}`)
		deadline := time.Now().Add(5 * time.Second)
		for k.find("client_event") == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if e := k.find("client_event"); e == nil || e["data"] != tc.want || e["event"] != "client-typing" || e["socket_id"] != p.socketID {
			t.Fatalf("client_event %v, want data %q", e, tc.want)
		}
		k.wait("client_event presence-lobby alice")
	}

	w := connect(t, h, testApp.Key)
	w.subscribe("cache-x", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	w.expect("pusher:cache_miss")
	k.wait("channel_occupied cache-x", "cache_miss cache-x")
}

// TestWebhooksClusterOnce: with three nodes, channel_occupied and channel_vacated are
// sent once per channel and member_added once per user, however the clients are spread
// over the nodes, and no channel_vacated while another node still has a subscriber.
func TestWebhooksClusterOnce(t *testing.T) {
	t.Parallel()
	k := newHookSink(t, testApp.Secret)
	bus, store := pubsub.NewMemoryBus(), &presence.Memory{DepartureGrace: testGrace}
	var hubs []*Hub
	for i := range 3 {
		cfg := hookConfig(k)
		cfg.NodeID = uint32(i + 1)
		cfg.NewPresence = func(id uint32, _ presence.Handler) (presence.Store, error) { return store.Node(nodeName(id)), nil }
		cfg.NewBroker = func(_ uint32, hd pubsub.Handler) (pubsub.Broker, error) { return bus.Broker(hd), nil }
		hubs = append(hubs, startHub(t, cfg))
	}
	var ws []*wsClient
	for _, h := range hubs {
		ws = append(ws, subscribeTo(t, h, "shared"))
		ws = append(ws, joinPresence(t, h, "presence-team", "carol"))
	}
	k.wait("channel_occupied shared", "channel_occupied presence-team", "member_added presence-team carol")
	for _, w := range ws[:4] { // nodes 1 and 2 empty out; node 3 keeps both
		w.c.Close(websocket.StatusNormalClosure, "")
	}
	k.wait()
	ws[4].c.Close(websocket.StatusNormalClosure, "")
	ws[5].c.Close(websocket.StatusNormalClosure, "")
	k.wait("channel_vacated shared", "channel_vacated presence-team", "member_removed presence-team carol")
}

// TestAuthorizedConnections: with user_authentication_timeout, a connection that
// neither signs in nor subscribes to a private channel in time is closed with 4009.
func TestAuthorizedConnections(t *testing.T) {
	t.Parallel()
	app := testApp
	app.UserAuthenticationTimeout = Duration(400 * time.Millisecond)
	h := startHub(t, Config{Apps: []App{app}})
	idle := connect(t, h, app.Key)
	public := subscribeTo(t, h, "news")
	private := subscribeTo(t, h, "private-x")
	signed := connect(t, h, app.Key)
	ud := `{"id":"9"}`
	signed.send(`{"event":"pusher:signin","data":{"auth":"` + app.Key + ":" + sign(app.Secret, signed.socketID+"::user::"+ud) + `","user_data":` + string(appendJSONString(nil, ud)) + `}}`)
	signed.expect("pusher:signin_success")
	for _, w := range []*wsClient{idle, public} {
		if e := w.expect("pusher:error"); !strings.Contains(string(e.Data), "4009") {
			t.Fatalf("want pusher:error 4009, got %s", e.raw)
		}
		w.expectClose(4009)
	}
	time.Sleep(300 * time.Millisecond)
	private.pingPong()
	signed.pingPong()
}

// TestSubscriptionCountEvents: with subscription_count, the subscribers of a channel
// hear its count when it changes, on every node; presence channels do not.
func TestSubscriptionCountEvents(t *testing.T) {
	app := testApp
	app.SubscriptionCount = true
	bus, store := pubsub.NewMemoryBus(), presence.NewMemory()
	var hubs []*Hub
	for i := range 2 {
		hubs = append(hubs, startHub(t, Config{Apps: []App{app}, NodeID: uint32(i + 1),
			NewPresence: func(id uint32, _ presence.Handler) (presence.Store, error) { return store.Node(nodeName(id)), nil },
			NewBroker:   func(_ uint32, hd pubsub.Handler) (pubsub.Broker, error) { return bus.Broker(hd), nil },
		}))
	}
	countOf := func(w *wsClient) int {
		w.t.Helper()
		e := w.expect("pusher_internal:subscription_count")
		var d struct {
			N int `json:"subscription_count"`
		}
		if err := json.Unmarshal([]byte(e.dataString(t)), &d); err != nil || e.Channel != "room" {
			t.Fatalf("subscription_count %s", e.raw)
		}
		return d.N
	}
	a := subscribeTo(t, hubs[0], "room")
	if n := countOf(a); n != 1 {
		t.Fatalf("count %d, want 1", n)
	}
	b := subscribeTo(t, hubs[1], "room")
	for _, w := range []*wsClient{a, b} {
		if n := countOf(w); n != 2 {
			t.Fatalf("count %d, want 2", n)
		}
	}
	b.c.Close(websocket.StatusNormalClosure, "")
	if n := countOf(a); n != 1 {
		t.Fatalf("count %d after a leave, want 1", n)
	}
	p := joinPresence(t, hubs[0], "presence-room", "dave")
	p.pingPong() // presence channels get member events, not counts
	ctx := context.Background()
	if n, err := hubs[1].subscriptionCount(ctx, hubs[1].appByID("1"), "room"); err != nil || n != 1 {
		t.Fatalf("REST count %d %v", n, err)
	}
}

// closeRecorder is a presence store that records whether its Close came in time.
type closeRecorder struct {
	presence.Store
	closedInTime chan bool
}

func (r *closeRecorder) Close(ctx context.Context) error {
	r.closedInTime <- ctx.Err() == nil
	return r.Store.Close(ctx)
}

// An endpoint that is down must not hold the engines' goodbye (the lease) past the
// shutdown's deadline: they are closed before the webhook sender gets what is left.
func TestShutdownClosesEnginesBeforeWebhooks(t *testing.T) {
	app := testApp
	app.Webhooks = []webhook.Hook{{URL: "http://127.0.0.1:1/hooks"}} // refused: retried until the deadline
	rec := &closeRecorder{Store: presence.NewMemory(), closedInTime: make(chan bool, 1)}
	h, err := New(Config{Apps: []App{app}, Transport: transportConfigForTest(),
		NewPresence: func(uint32, presence.Handler) (presence.Store, error) { return rec, nil },
		Webhooks:    webhook.Config{BatchWait: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Run(); err != nil {
		t.Fatal(err)
	}
	w := subscribeTo(t, h, "orders") // channel_occupied, which the endpoint refuses
	time.Sleep(100 * time.Millisecond)
	w.c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_ = h.Shutdown(ctx)
	if !<-rec.closedInTime {
		t.Fatalf("the presence store was closed after the deadline (shutdown took %v): the node could not give up its lease", time.Since(start))
	}
}

func transportConfigForTest() transport.Config {
	return transport.Config{Addr: "127.0.0.1:0", Loops: 2}
}
