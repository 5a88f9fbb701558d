package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/herald-rt/herald/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testApp = App{ID: "1", Key: "key1", Secret: "secret1", ClientEvents: true}

// startHub runs a hub on a loopback port and stops it when the test ends.
func startHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	if cfg.Apps == nil {
		cfg.Apps = []App{testApp}
	}
	cfg.Transport.Addr = "127.0.0.1:0"
	cfg.Transport.Loops = 2
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
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

type wsClient struct {
	t        testing.TB
	c        *websocket.Conn
	socketID string
}

type event struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
	raw     string
}

// dataString decodes data that Pusher sends as a JSON string holding JSON.
func (e event) dataString(t testing.TB) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(e.Data, &s); err != nil {
		t.Fatalf("data of %s is not a string: %s", e.Event, e.Data)
	}
	return s
}

func dialRaw(t testing.TB, h *Hub, path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, "ws://"+h.Addr()+path, &websocket.DialOptions{HTTPHeader: hdr})
}

// connect opens a connection to app key and reads connection_established.
func connect(t testing.TB, h *Hub, key string) *wsClient {
	t.Helper()
	c, _, err := dialRaw(t, h, "/app/"+key+"?protocol=7&client=js&version=8.6.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	w := &wsClient{t: t, c: c}
	e := w.read()
	if e.Event != "pusher:connection_established" {
		t.Fatalf("first event %s", e.raw)
	}
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(e.dataString(t)), &d); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d+\.\d+$`).MatchString(d.SocketID) || d.ActivityTimeout <= 0 {
		t.Fatalf("bad connection_established %s", e.raw)
	}
	w.socketID = d.SocketID
	return w
}

func (w *wsClient) send(s string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wsClient) readErr(d time.Duration) (event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	typ, b, err := w.c.Read(ctx)
	if err != nil {
		return event{}, err
	}
	if typ != websocket.MessageText {
		return event{}, fmt.Errorf("binary message")
	}
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		return event{}, fmt.Errorf("not JSON: %q", b)
	}
	e.raw = string(b)
	return e, nil
}

func (w *wsClient) read() event {
	w.t.Helper()
	e, err := w.readErr(5 * time.Second)
	if err != nil {
		w.t.Fatal(err)
	}
	return e
}

// expect reads until an event named ev arrives (failing on anything else).
func (w *wsClient) expect(ev string) event {
	w.t.Helper()
	e := w.read()
	if e.Event != ev {
		w.t.Fatalf("want %s, got %s", ev, e.raw)
	}
	return e
}

// expectClose reads until the connection closes and checks the close code.
func (w *wsClient) expectClose(code int) {
	w.t.Helper()
	for i := 0; i < 10; i++ {
		_, err := w.readErr(5 * time.Second)
		if err == nil {
			continue
		}
		if got := int(websocket.CloseStatus(err)); got != code {
			w.t.Fatalf("want close %d, got %v", code, err)
		}
		return
	}
	w.t.Fatal("connection did not close")
}

func (w *wsClient) subscribe(channel, auth, channelData string) {
	w.t.Helper()
	d, _ := json.Marshal(map[string]string{"channel": channel, "auth": auth, "channel_data": channelData})
	w.send(`{"event":"pusher:subscribe","data":` + string(d) + `}`)
}

func authFor(a App, socketID, channel, channelData string) string {
	s := socketID + ":" + channel
	if channelData != "" {
		s += ":" + channelData
	}
	return a.Key + ":" + sign(a.Secret, s)
}

func (h *Hub) publishTest(t *testing.T, channel, name, data, except string) {
	t.Helper()
	js, _ := json.Marshal(data)
	if err := h.publish(context.Background(), h.appByID(testApp.ID), []string{channel}, name, js, except); err != nil {
		t.Fatal(err)
	}
}

func TestConnectAndPing(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	w.send(`{"event":"pusher:ping","data":{}}`)
	if e := w.expect("pusher:pong"); e.raw != `{"event":"pusher:pong","data":{}}` {
		t.Fatalf("pong: %s", e.raw)
	}
}

func TestUnknownKeyGets4001(t *testing.T) {
	h := startHub(t, Config{})
	c, _, err := dialRaw(t, h, "/app/nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	w := &wsClient{t: t, c: c}
	e := w.expect("pusher:error")
	if !strings.Contains(string(e.Data), `"code":4001`) {
		t.Fatalf("error: %s", e.raw)
	}
	w.expectClose(4001)
}

func TestHandshakeRefusals(t *testing.T) {
	h := startHub(t, Config{Apps: []App{{ID: "1", Key: "key1", Secret: "s", AllowedOrigins: []string{"https://ok.example"}}}})
	_, resp, err := dialRaw(t, h, "/nothing/here", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bad path: %v %v", err, resp)
	}
	_, resp, err = dialRaw(t, h, "/app/key1", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin: %v %v", err, resp)
	}
	c, _, err := dialRaw(t, h, "/app/key1", http.Header{"Origin": {"https://ok.example"}})
	if err != nil {
		t.Fatalf("good origin: %v", err)
	}
	c.CloseNow()
	c, _, err = dialRaw(t, h, "/app/key1?protocol=4", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c}
	w.expect("pusher:error")
	w.expectClose(4007)
}

func TestPublicChannelPublishAndExclusion(t *testing.T) {
	h := startHub(t, Config{})
	a, b := connect(t, h, testApp.Key), connect(t, h, testApp.Key)
	for _, w := range []*wsClient{a, b} {
		w.subscribe("orders", "", "")
		e := w.expect("pusher_internal:subscription_succeeded")
		if e.Channel != "orders" {
			t.Fatalf("succeeded: %s", e.raw)
		}
	}
	h.publishTest(t, "orders", "order-created", `{"id":5}`, "")
	want := `{"event":"order-created","channel":"orders","data":"{\"id\":5}"}`
	for _, w := range []*wsClient{a, b} {
		if e := w.read(); e.raw != want {
			t.Fatalf("got %s want %s", e.raw, want)
		}
	}
	// socket_id exclusion: a is skipped; the marker that follows proves it.
	h.publishTest(t, "orders", "skip-a", `1`, a.socketID)
	h.publishTest(t, "orders", "marker", `2`, "")
	if e := a.read(); e.Event != "marker" {
		t.Fatalf("excluded connection got %s", e.raw)
	}
	b.expect("skip-a")
	b.expect("marker")
	if got, err := h.subscriptionCount(context.Background(), h.appByID("1"), "orders"); err != nil || got != 2 {
		t.Fatalf("subscription count %d, %v", got, err)
	}
	a.send(`{"event":"pusher:unsubscribe","data":{"channel":"orders"}}`)
	a.send(`{"event":"pusher:ping","data":{}}`)
	a.expect("pusher:pong")
	h.publishTest(t, "orders", "after", `3`, "")
	b.expect("after")
	a.send(`{"event":"pusher:ping","data":{}}`)
	a.expect("pusher:pong") // and not "after"
}

func TestPrivateChannelAuth(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	w.subscribe("private-a", testApp.Key+":"+strings.Repeat("0", 64), "")
	e := w.expect("pusher:subscription_error")
	if e.Channel != "private-a" || !strings.Contains(string(e.Data), `"status":401`) {
		t.Fatalf("subscription_error: %s", e.raw)
	}
	w.subscribe("private-a", authFor(testApp, w.socketID, "private-a", ""), "")
	w.expect("pusher_internal:subscription_succeeded")
	w.subscribe("bad name!", "", "")
	w.expect("pusher:subscription_error")
}

func TestPresenceMembers(t *testing.T) {
	h := startHub(t, Config{})
	ch := "presence-room"
	join := func(user string) *wsClient {
		w := connect(t, h, testApp.Key)
		cd := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
		w.subscribe(ch, authFor(testApp, w.socketID, ch, cd), cd)
		return w
	}
	a := join("alice")
	e := a.expect("pusher_internal:subscription_succeeded")
	if s := e.dataString(t); s != `{"presence":{"ids":["alice"],"hash":{"alice":{"name":"alice"}},"count":1}}` {
		t.Fatalf("succeeded data %s", s)
	}
	b := join("bob")
	var doc struct {
		Presence struct{ Count int } `json:"presence"`
	}
	_ = json.Unmarshal([]byte(b.expect("pusher_internal:subscription_succeeded").dataString(t)), &doc)
	if doc.Presence.Count != 2 {
		t.Fatalf("count %d", doc.Presence.Count)
	}
	if s := a.expect("pusher_internal:member_added").dataString(t); s != `{"user_id":"bob","user_info":{"name":"bob"}}` {
		t.Fatalf("member_added %s", s)
	}
	// A second connection of bob: no member_added; closing one of them: no member_removed.
	b2 := join("bob")
	b2.expect("pusher_internal:subscription_succeeded")
	if n, _ := h.userCount(context.Background(), h.appByID("1"), ch); n != 2 {
		t.Fatalf("user count %d", n)
	}
	b2.c.Close(websocket.StatusNormalClosure, "")
	b.c.Close(websocket.StatusNormalClosure, "")
	e = a.read()
	if e.Event != "pusher_internal:member_removed" || e.dataString(t) != `{"user_id":"bob"}` {
		t.Fatalf("want one member_removed for bob, got %s", e.raw)
	}
	// Bad channel_data signature and a full channel.
	w := connect(t, h, testApp.Key)
	w.subscribe(ch, authFor(testApp, w.socketID, ch, `{"user_id":"x"}`), `{"user_id":"y"}`)
	w.expect("pusher:subscription_error")
}

func TestPresenceMemberLimit(t *testing.T) {
	app := testApp
	app.MaxPresenceMembers = 1
	h := startHub(t, Config{Apps: []App{app}})
	ch := "presence-small"
	for i, user := range []string{"u1", "u2"} {
		w := connect(t, h, app.Key)
		cd := `{"user_id":"` + user + `"}`
		w.subscribe(ch, authFor(app, w.socketID, ch, cd), cd)
		if i == 0 {
			w.expect("pusher_internal:subscription_succeeded")
			continue
		}
		e := w.expect("pusher:subscription_error")
		if !strings.Contains(string(e.Data), "LimitReached") {
			t.Fatalf("%s", e.raw)
		}
	}
}

func TestClientEvents(t *testing.T) {
	h := startHub(t, Config{})
	ch := "presence-chat"
	join := func(user string) *wsClient {
		w := connect(t, h, testApp.Key)
		cd := `{"user_id":"` + user + `"}`
		w.subscribe(ch, authFor(testApp, w.socketID, ch, cd), cd)
		w.expect("pusher_internal:subscription_succeeded")
		return w
	}
	a := join("alice")
	b := join("bob")
	a.expect("pusher_internal:member_added")
	a.send(`{"event":"client-typing","channel":"presence-chat","data":{"x":1},"user_id":"forged"}`)
	e := b.expect("client-typing")
	if e.raw != `{"event":"client-typing","channel":"presence-chat","data":{"x":1},"user_id":"alice"}` {
		t.Fatalf("relayed %s", e.raw)
	}
	// Not echoed: a's next event is the pong.
	a.send(`{"event":"pusher:ping","data":{}}`)
	a.expect("pusher:pong")
	// On a public channel: refused.
	a.subscribe("public", "", "")
	a.expect("pusher_internal:subscription_succeeded")
	a.send(`{"event":"client-x","channel":"public","data":{}}`)
	if e := a.expect("pusher:error"); !strings.Contains(string(e.Data), "4301") {
		t.Fatal(e.raw)
	}
	// Rate limit: 10 per second, then 4301 errors, and the connection stays.
	var errs int
	for i := 0; i < 15; i++ {
		a.send(`{"event":"client-burst","channel":"presence-chat","data":{}}`)
	}
	a.send(`{"event":"pusher:ping","data":{}}`)
	for {
		e := a.read()
		if e.Event == "pusher:pong" {
			break
		}
		if e.Event == "pusher:error" && strings.Contains(string(e.Data), "4301") {
			errs++
		}
	}
	if errs < 4 {
		t.Fatalf("want at least 4 rate-limit errors, got %d", errs)
	}
}

func TestClientEventsDisabled(t *testing.T) {
	app := testApp
	app.ClientEvents = false
	h := startHub(t, Config{Apps: []App{app}})
	w := connect(t, h, app.Key)
	w.subscribe("private-x", authFor(app, w.socketID, "private-x", ""), "")
	w.expect("pusher_internal:subscription_succeeded")
	w.send(`{"event":"client-x","channel":"private-x","data":{}}`)
	w.expect("pusher:error")
}

func TestSigninServerToUserAndTerminate(t *testing.T) {
	h := startHub(t, Config{})
	signin := func(w *wsClient, user string) {
		ud := `{"id":"` + user + `"}`
		w.send(`{"event":"pusher:signin","data":{"auth":"` + testApp.Key + ":" + sign(testApp.Secret, w.socketID+"::user::"+ud) + `","user_data":` + string(appendJSONString(nil, ud)) + `}}`)
		e := w.expect("pusher:signin_success")
		if !strings.Contains(e.raw, `"user_data":"{\"id\":\"`+user+`\"}"`) {
			t.Fatalf("signin_success %s", e.raw)
		}
	}
	a, other := connect(t, h, testApp.Key), connect(t, h, testApp.Key)
	signin(a, "7")
	signin(other, "8")
	// Only user 7 may subscribe to #server-to-user-7.
	other.subscribe("#server-to-user-7", "", "")
	other.expect("pusher:subscription_error")
	a.subscribe("#server-to-user-7", "", "")
	a.expect("pusher_internal:subscription_succeeded")
	h.publishTest(t, "#server-to-user-7", "hello", "hi", "")
	a.expect("hello")
	// Bad sign-in signature.
	w := connect(t, h, testApp.Key)
	w.send(`{"event":"pusher:signin","data":{"auth":"key1:00","user_data":"{\"id\":\"1\"}"}}`)
	w.expect("pusher:error")
	// Terminate closes the user's connections with 4009.
	if err := h.terminateUser(context.Background(), h.appByID("1"), "7"); err != nil {
		t.Fatal(err)
	}
	a.expect("pusher:error")
	a.expectClose(4009)
	other.send(`{"event":"pusher:ping","data":{}}`)
	other.expect("pusher:pong")
}

func TestCacheChannel(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	w.subscribe("cache-prices", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	w.expect("pusher:cache_miss")
	h.publishTest(t, "cache-prices", "price", "42", "")
	w.expect("price")
	w2 := connect(t, h, testApp.Key)
	w2.subscribe("cache-prices", "", "")
	w2.expect("pusher_internal:subscription_succeeded")
	if e := w2.expect("price"); e.dataString(t) != "42" {
		t.Fatal(e.raw)
	}
	if d, ttl, ok, err := h.cachedEvent(context.Background(), h.appByID("1"), "cache-prices"); err != nil || !ok || string(d) != `"42"` || ttl <= 0 {
		t.Fatalf("cachedEvent %s %v %v %v", d, ttl, ok, err)
	}
}

func TestBadInputKeepsConnection(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	for _, m := range []string{`not json`, `{}`, `{"event":"pusher:subscribe","data":{}}`, `{"event":"pusher:subscribe","data":"x"}`, `{"event":"nope"}`} {
		w.send(m)
		w.expect("pusher:error")
	}
	w.send(`{"event":"pusher:ping","data":{}}`)
	w.expect("pusher:pong")
}

func TestConnectionLimits(t *testing.T) {
	app := testApp
	app.MaxConnections = 1
	h := startHub(t, Config{Apps: []App{app, {ID: "2", Key: "key2", Secret: "s2"}}, MaxConnections: 2})
	connect(t, h, "key1")
	c, _, err := dialRaw(t, h, "/app/key1", nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c}
	w.expect("pusher:error")
	w.expectClose(4004)
	c.CloseNow()
	// Wait until the refused connection is gone from the count, then fill the node.
	deadline := time.Now().Add(5 * time.Second)
	for h.open.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	connect(t, h, "key2")
	c, _, err = dialRaw(t, h, "/app/key2", nil)
	if err != nil {
		t.Fatal(err)
	}
	w = &wsClient{t: t, c: c}
	w.expect("pusher:error")
	w.expectClose(4100)
	c.CloseNow()
}

func TestShutdownClosesWith4200(t *testing.T) {
	cfg := Config{Apps: []App{testApp}}
	cfg.Transport.Addr = "127.0.0.1:0"
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Run(); err != nil {
		t.Fatal(err)
	}
	w := connect(t, h, testApp.Key)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.Shutdown(ctx)
	}()
	w.expectClose(4200)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !h.Draining() {
		t.Fatal("not draining after shutdown")
	}
	if _, _, err := dialRaw(t, h, "/app/key1", nil); err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
}

func TestStatsCountConnections(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	w.subscribe("orders", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	st := h.Stats()
	a := st.Apps["1"]
	if a.Connections != 1 || a.Channels != 1 || a.Subscriptions != 1 || st.Node.Connections != 1 {
		t.Fatalf("stats %+v", st)
	}
}

var _ = errors.Is
var _ = transport.CloseNormal

func TestDisabledApp(t *testing.T) {
	off := App{ID: "9", Key: "key9", Secret: "s9", Disabled: true}
	h := startHub(t, Config{Apps: []App{testApp, off}})
	c, _, err := dialRaw(t, h, "/app/key9", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	w := &wsClient{t: t, c: c}
	if e := w.expect("pusher:error"); !strings.Contains(string(e.Data), `"code":4003`) {
		t.Fatal(e.raw)
	}
	w.expectClose(4003)
	resp, err := http.Get("http://" + h.Addr() + "/apps/9/channels")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("API on a disabled app: %d", resp.StatusCode)
	}
	connect(t, h, testApp.Key) // other apps are unaffected
}
