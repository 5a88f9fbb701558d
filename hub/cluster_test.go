package hub

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
)

// testCluster is several hubs in one process joined by a memory bus and one memory
// presence store, as Redis joins them in production: the protocol logic across nodes
// is tested here, the Redis engines by their own conformance suites, and the whole by
// the e2e suite with real processes.
type testCluster struct {
	hubs  []*Hub
	bus   *pubsub.MemoryBus
	store *presence.Memory
}

// startCluster starts n hubs with node ids 1..n. wrap, if not nil, wraps each node's
// broker (to make it fail).
func startCluster(t *testing.T, n int, wrap func(pubsub.Broker) pubsub.Broker) *testCluster {
	t.Helper()
	c := &testCluster{bus: pubsub.NewMemoryBus(), store: presence.NewMemory()}
	for i := range n {
		c.hubs = append(c.hubs, startHub(t, Config{
			NodeID: uint32(i + 1),
			NewPresence: func(id uint32, _ presence.Handler) (presence.Store, error) {
				return c.store.Node(nodeName(id)), nil
			},
			NewBroker: func(_ uint32, h pubsub.Handler) (pubsub.Broker, error) {
				var b pubsub.Broker = c.bus.Broker(h)
				if wrap != nil {
					b = wrap(b)
				}
				return b, nil
			},
		}))
	}
	return c
}

func nodeName(id uint32) string { return "node-" + strconv.FormatUint(uint64(id), 10) }

func joinPresence(t *testing.T, h *Hub, ch, user string) *wsClient {
	t.Helper()
	w := connect(t, h, testApp.Key)
	cd := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
	w.subscribe(ch, authFor(testApp, w.socketID, ch, cd), cd)
	w.expect("pusher_internal:subscription_succeeded")
	return w
}

func subscribeTo(t *testing.T, h *Hub, ch string) *wsClient {
	t.Helper()
	w := connect(t, h, testApp.Key)
	auth := ""
	if strings.HasPrefix(ch, "private-") {
		auth = authFor(testApp, w.socketID, ch, "")
	}
	w.subscribe(ch, auth, "")
	w.expect("pusher_internal:subscription_succeeded")
	return w
}

// pingPong proves that nothing is queued for w before the pong.
func (w *wsClient) pingPong() {
	w.t.Helper()
	w.send(`{"event":"pusher:ping","data":{}}`)
	w.expect("pusher:pong")
}

func TestClusterPublishReachesEveryNodeOnce(t *testing.T) {
	c := startCluster(t, 3, nil)
	var ws []*wsClient
	for _, h := range c.hubs {
		ws = append(ws, subscribeTo(t, h, "orders"))
	}
	c.hubs[0].publishTest(t, "orders", "created", "1", "")
	c.hubs[2].publishTest(t, "orders", "created", "2", "")
	for _, w := range ws {
		if e := w.expect("created"); e.dataString(t) != "1" {
			t.Fatalf("first event %s", e.raw)
		}
		if e := w.expect("created"); e.dataString(t) != "2" {
			t.Fatalf("second event %s", e.raw)
		}
		w.pingPong() // no second copy (the publisher's own node drops the echo)
	}
	// socket_id exclusion names a connection on another node.
	c.hubs[0].publishTest(t, "orders", "skip", "x", ws[1].socketID)
	c.hubs[0].publishTest(t, "orders", "marker", "y", "")
	ws[0].expect("skip")
	ws[2].expect("skip")
	ws[1].expect("marker")
}

// A node with no subscriber of a channel holds no broker subscription for it and
// receives none of its messages.
func TestClusterInterest(t *testing.T) {
	c := startCluster(t, 2, nil)
	w := subscribeTo(t, c.hubs[0], "busy")
	before := c.hubs[1].broker.Stats()
	for i := range 20 {
		c.hubs[0].publishTest(t, "busy", "e", strconv.Itoa(i), "")
	}
	for range 20 {
		w.expect("e")
	}
	after := c.hubs[1].broker.Stats()
	if after.Received != before.Received || after.Subscriptions != 0 {
		t.Fatalf("node without subscribers: received %d→%d, subscriptions %d", before.Received, after.Received, after.Subscriptions)
	}
	if got := c.hubs[0].broker.Stats().Subscriptions; got != 1 {
		t.Fatalf("subscribed node holds %d broker subscriptions, want 1", got)
	}
	// The last subscriber leaving releases the broker subscription.
	w.c.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for c.hubs[0].broker.Stats().Subscriptions != 0 {
		if time.Now().After(deadline) {
			t.Fatal("broker subscription kept after the last subscriber left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClusterPresence(t *testing.T) {
	c := startCluster(t, 3, nil)
	ch := "presence-room"
	a := joinPresence(t, c.hubs[0], ch, "alice")
	b := connect(t, c.hubs[1], testApp.Key)
	cd := `{"user_id":"bob","user_info":{"name":"bob"}}`
	b.subscribe(ch, authFor(testApp, b.socketID, ch, cd), cd)
	var doc struct {
		Presence struct {
			IDs   []string `json:"ids"`
			Count int      `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(b.expect("pusher_internal:subscription_succeeded").dataString(t)), &doc); err != nil {
		t.Fatal(err)
	}
	slices.Sort(doc.Presence.IDs)
	if doc.Presence.Count != 2 || !slices.Equal(doc.Presence.IDs, []string{"alice", "bob"}) {
		t.Fatalf("members seen from node 2: %+v", doc.Presence)
	}
	if s := a.expect("pusher_internal:member_added").dataString(t); s != `{"user_id":"bob","user_info":{"name":"bob"}}` {
		t.Fatalf("member_added on node 1: %s", s)
	}
	// bob on a third node: no second member_added; leaving one node: no member_removed.
	b3 := joinPresence(t, c.hubs[2], ch, "bob")
	b3.c.Close(websocket.StatusNormalClosure, "")
	a.pingPong()
	b.c.Close(websocket.StatusNormalClosure, "")
	if e := a.read(); e.Event != "pusher_internal:member_removed" || e.dataString(t) != `{"user_id":"bob"}` {
		t.Fatalf("want member_removed for bob, got %s", e.raw)
	}
	for _, h := range c.hubs {
		if n, err := h.userCount(context.Background(), h.appByID("1"), ch); err != nil || n != 1 {
			t.Fatalf("user count on node %d: %d %v", h.NodeID(), n, err)
		}
	}
}

func TestClusterClientEventsUserMessagesTerminate(t *testing.T) {
	c := startCluster(t, 2, nil)
	ch := "private-chat"
	a, b := subscribeTo(t, c.hubs[0], ch), subscribeTo(t, c.hubs[1], ch)
	a.send(`{"event":"client-typing","channel":"private-chat","data":{"x":1}}`)
	if e := b.expect("client-typing"); e.raw != `{"event":"client-typing","channel":"private-chat","data":{"x":1}}` {
		t.Fatalf("relayed %s", e.raw)
	}
	a.pingPong() // not echoed to its sender

	// A user signed in on node 2 gets sendToUser published through node 1, and
	// terminate_connections through node 1 closes it.
	u := connect(t, c.hubs[1], testApp.Key)
	ud := `{"id":"7"}`
	u.send(`{"event":"pusher:signin","data":{"auth":"` + testApp.Key + ":" + sign(testApp.Secret, u.socketID+"::user::"+ud) + `","user_data":` + string(appendJSONString(nil, ud)) + `}}`)
	u.expect("pusher:signin_success")
	u.subscribe("#server-to-user-7", "", "")
	u.expect("pusher_internal:subscription_succeeded")
	c.hubs[0].publishTest(t, "#server-to-user-7", "hello", "hi", "")
	u.expect("hello")
	if err := c.hubs[0].terminateUser(context.Background(), c.hubs[0].appByID("1"), "7"); err != nil {
		t.Fatal(err)
	}
	u.expect("pusher:error")
	u.expectClose(4009)
	b.pingPong() // others untouched
}

func TestClusterCacheAndQueries(t *testing.T) {
	c := startCluster(t, 2, nil)
	ctx := context.Background()
	w := subscribeTo(t, c.hubs[0], "cache-prices")
	w.expect("pusher:cache_miss")
	c.hubs[0].publishTest(t, "cache-prices", "price", "42", "")
	w.expect("price")
	// A subscriber on another node gets the last event published on the first.
	w2 := connect(t, c.hubs[1], testApp.Key)
	w2.subscribe("cache-prices", "", "")
	w2.expect("pusher_internal:subscription_succeeded")
	if e := w2.expect("price"); e.dataString(t) != "42" {
		t.Fatal(e.raw)
	}
	if d, _, ok, err := c.hubs[1].cachedEvent(ctx, c.hubs[1].appByID("1"), "cache-prices"); err != nil || !ok || string(d) != `"42"` {
		t.Fatalf("cachedEvent on node 2: %s %v %v", d, ok, err)
	}

	subscribeTo(t, c.hubs[1], "orders")
	subscribeTo(t, c.hubs[1], "orders")
	// The counts are the cluster's, on every node: node 2 reports them, node 1 answers.
	want := map[string]int{"cache-prices": 2, "orders": 2}
	for name, n := range want {
		eventually(t, "subscription count of "+name+" on node 1", func() bool {
			got, err := c.hubs[0].subscriptionCount(ctx, c.hubs[0].appByID("1"), name)
			return err == nil && got == n
		})
	}
	got, err := c.hubs[0].occupiedChannels(ctx, c.hubs[0].appByID("1"), "")
	if err != nil || !slices.Equal(got, []string{"cache-prices", "orders"}) {
		t.Fatalf("occupied channels on node 1: %v %v", got, err)
	}
	got, _ = c.hubs[0].occupiedChannels(ctx, c.hubs[0].appByID("1"), "ord")
	if !slices.Equal(got, []string{"orders"}) {
		t.Fatalf("occupied channels with prefix: %v", got)
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A node's own count is answered at once (read-your-writes on one node).
func TestCountsReadYourWrites(t *testing.T) {
	h := startHub(t, Config{})
	ctx := context.Background()
	for i := range 5 {
		subscribeTo(t, h, "rw")
		if n, err := h.subscriptionCount(ctx, h.appByID("1"), "rw"); err != nil || n != i+1 {
			t.Fatalf("after %d subscribes the count is %d, %v", i+1, n, err)
		}
	}
}

// Departures that the store reports (a dead node's users) become member_removed on
// every node; a reset makes the node add its live members again, and users the
// cluster thought gone are announced again.
func TestClusterDeparturesAndReset(t *testing.T) {
	c := startCluster(t, 2, nil)
	ch := "presence-room"
	a := joinPresence(t, c.hubs[0], ch, "alice")
	b := joinPresence(t, c.hubs[1], ch, "bob")
	a.expect("pusher_internal:member_added")

	// The cluster takes node 2 for dead: its entries go, a survivor reports them.
	deps, _, err := c.store.RemoveNode(context.Background(), nodeName(2))
	if err != nil || len(deps) != 1 || deps[0].UserID != "bob" {
		t.Fatalf("RemoveNode: %v %v", deps, err)
	}
	c.hubs[0].HandleDepartures(deps)
	if e := a.expect("pusher_internal:member_removed"); e.dataString(t) != `{"user_id":"bob"}` {
		t.Fatalf("member_removed %s", e.raw)
	}
	b.expect("pusher_internal:member_removed") // node 2's own clients hear it too

	// Node 2 learns that the store lost it and adds bob again. Every client heard that
	// bob left, bob's own connection included (pusher-js then drops him from his own
	// list), so every client hears that he is back.
	c.hubs[1].HandleReset()
	for _, w := range []*wsClient{a, b} {
		if s := w.expect("pusher_internal:member_added").dataString(t); s != `{"user_id":"bob","user_info":{"name":"bob"}}` {
			t.Fatalf("member_added after reset: %s", s)
		}
	}
	ms, err := c.hubs[0].members(context.Background(), c.hubs[0].appByID("1"), ch)
	if err != nil || len(ms) != 2 {
		t.Fatalf("members after reset: %v %v", ms, err)
	}
	// Its counts come back too.
	eventually(t, "node 2's count after the reset", func() bool {
		n, err := c.hubs[0].subscriptionCount(context.Background(), c.hubs[0].appByID("1"), ch)
		return err == nil && n == 2
	})
}

// A presence cache channel replays its last event to a subscriber on another node.
func TestClusterPresenceCache(t *testing.T) {
	c := startCluster(t, 2, nil)
	ch := "presence-cache-room"
	a := joinPresence(t, c.hubs[0], ch, "alice")
	a.expect("pusher:cache_miss")
	c.hubs[0].publishTest(t, ch, "state", "7", "")
	a.expect("state")
	w := connect(t, c.hubs[1], testApp.Key)
	cd := `{"user_id":"bob"}`
	w.subscribe(ch, authFor(testApp, w.socketID, ch, cd), cd)
	w.expect("pusher_internal:subscription_succeeded")
	if e := w.expect("state"); e.dataString(t) != "7" {
		t.Fatalf("replayed %s", e.raw)
	}
}

func TestEnvelopeVersionChecked(t *testing.T) {
	h := startHub(t, Config{})
	w := subscribeTo(t, h, "orders")
	key := channelKey(h.appByID("1"), "orders")
	env := remoteEnvelope(h.envelope(eventJSON(nil, "future", "orders", []byte(`"x"`), ""), 0, 0))
	env[0] = envVersion + 1
	h.HandleMessage(key, env)
	h.HandleMessage(key, env[:5]) // truncated
	h.HandleControl([]byte{envVersion + 1, 0, 0, 0, 9, ctlTerminate})
	h.HandleControl([]byte{envVersion, 0, 0, 0, 9, 99})
	w.pingPong()
	if got := h.Stats().Node.BadMessages; got != 4 {
		t.Fatalf("bad messages counted %d, want 4", got)
	}
}

// flakyBroker is a broker that can be made to fail as a Redis broker does while its
// server is unreachable.
type flakyBroker struct {
	pubsub.Broker
	down atomic.Bool
}

func (f *flakyBroker) Publish(ctx context.Context, ch string, data []byte) error {
	if f.down.Load() {
		return pubsub.ErrUnavailable
	}
	return f.Broker.Publish(ctx, ch, data)
}

func (f *flakyBroker) PublishKeep(ctx context.Context, ch string, data []byte, ttl time.Duration) error {
	if f.down.Load() {
		return pubsub.ErrUnavailable
	}
	return f.Broker.PublishKeep(ctx, ch, data, ttl)
}

func (f *flakyBroker) PublishControl(ctx context.Context, data []byte) error {
	if f.down.Load() {
		return pubsub.ErrUnavailable
	}
	return f.Broker.PublishControl(ctx, data)
}

func (f *flakyBroker) Subscribe(ctx context.Context, chs ...string) error {
	if f.down.Load() {
		return errors.Join(pubsub.ErrUnavailable, f.Broker.Subscribe(ctx, chs...)) // stays wanted
	}
	return f.Broker.Subscribe(ctx, chs...)
}

// While the broker is down: connections stay, API publishes fail with 503 and deliver
// nothing, subscriptions to ordinary channels are confirmed, client events are
// dropped and counted; when it is back, everything flows again.
func TestBrokerOutage(t *testing.T) {
	var flaky []*flakyBroker
	c := startCluster(t, 2, func(b pubsub.Broker) pubsub.Broker {
		f := &flakyBroker{Broker: b}
		flaky = append(flaky, f)
		return f
	})
	a := subscribeTo(t, c.hubs[0], "private-room")
	b := subscribeTo(t, c.hubs[1], "private-room")
	for _, f := range flaky {
		f.down.Store(true)
	}
	api := c.hubs[0].APIHandler()
	resp := serveAPITest(t, api, apiTestReq{method: "POST", path: "/apps/1/events",
		body: `{"name":"e","channels":["private-room"],"data":"lost"}`, key: testApp.Key, secret: testApp.Secret, ts: time.Now().Unix()})
	if resp.status != 503 || !strings.Contains(resp.body, "unavailable") {
		t.Fatalf("publish while down: %d %s", resp.status, resp.body)
	}
	a.send(`{"event":"client-x","channel":"private-room","data":{}}`)
	late := subscribeTo(t, c.hubs[1], "private-late") // confirmed although the broker is down
	a.pingPong()
	b.pingPong()
	eventually(t, "the dropped client event to be counted", func() bool {
		return c.hubs[0].Stats().Apps["1"].Dropped["client_event_unpublished"] == 1
	})

	for _, f := range flaky {
		f.down.Store(false)
	}
	c.hubs[0].publishTest(t, "private-room", "back", "1", "")
	a.expect("back")
	b.expect("back")
	c.hubs[0].publishTest(t, "private-late", "late", "1", "")
	late.expect("late")
}

// signinAs signs w in as user with the given user_data fields (JSON without braces).
func signinAs(t *testing.T, w *wsClient, user, extra string) {
	t.Helper()
	ud := `{"id":"` + user + `"` + extra + `}`
	w.send(`{"event":"pusher:signin","data":{"auth":"` + testApp.Key + ":" + sign(testApp.Secret, w.socketID+"::user::"+ud) + `","user_data":` + string(appendJSONString(nil, ud)) + `}}`)
	w.expect("pusher:signin_success")
}

// watchEvent reads one pusher_internal:watchlist_events and returns "name id,id".
func watchEvent(t *testing.T, w *wsClient) string {
	t.Helper()
	e := w.expect("pusher_internal:watchlist_events")
	var d struct {
		Events []struct {
			Name    string   `json:"name"`
			UserIDs []string `json:"user_ids"`
		} `json:"events"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil || len(d.Events) != 1 {
		t.Fatalf("watchlist_events %s", e.raw)
	}
	slices.Sort(d.Events[0].UserIDs)
	return d.Events[0].Name + " " + strings.Join(d.Events[0].UserIDs, ",")
}

// The watchlist across nodes: the online set at sign-in, then each user's transitions
// once, decided cluster-wide (a user's second connection changes nothing).
func TestClusterWatchlist(t *testing.T) {
	c := startCluster(t, 2, nil)
	u1 := connect(t, c.hubs[1], testApp.Key)
	signinAs(t, u1, "u1", "")
	w := connect(t, c.hubs[0], testApp.Key)
	signinAs(t, w, "watcher", `,"watchlist":["u1","u2","u1"]`)
	if got := watchEvent(t, w); got != "online u1" {
		t.Fatalf("at sign-in: %s, want online u1", got)
	}
	u2 := connect(t, c.hubs[1], testApp.Key)
	signinAs(t, u2, "u2", "")
	if got := watchEvent(t, w); got != "online u2" {
		t.Fatalf("%s, want online u2", got)
	}
	u2b := connect(t, c.hubs[0], testApp.Key) // u2's second connection, on the other node
	signinAs(t, u2b, "u2", "")
	// The sign-in is answered before its join reaches the store (ops goroutine);
	// wait for it, or u2's first connection may still be its last.
	h0 := c.hubs[0]
	eventually(t, "u2's second connection in the online set", func() bool {
		ch := h0.index.get(channelKey(h0.appByID(testApp.ID), onlinePrefix+"u2"))
		return ch != nil && ch.count() == 1
	})
	u2.c.Close(websocket.StatusNormalClosure, "")
	w.pingPong() // u2 is still online
	u2b.c.Close(websocket.StatusNormalClosure, "")
	if got := watchEvent(t, w); got != "offline u2" {
		t.Fatalf("%s, want offline u2", got)
	}
	// Over 100 ids: the first 100 are watched and the client hears 4302.
	ids := make([]string, 101)
	for i := range ids {
		ids[i] = `"x` + strconv.Itoa(i) + `"`
	}
	big := connect(t, c.hubs[0], testApp.Key)
	signinAs(t, big, "big", `,"watchlist":[`+strings.Join(ids, ",")+`]`)
	if e := big.expect("pusher:error"); !strings.Contains(string(e.Data), "4302") {
		t.Fatalf("want 4302, got %s", e.raw)
	}
	big.pingPong()
}
