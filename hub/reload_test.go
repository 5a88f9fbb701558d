package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/webhook"
)

var otherApp = App{ID: "2", Key: "key2", Secret: "secret2", ClientEvents: true}

// reload applies apps and fails the test if the hub refuses them.
func reload(t testing.TB, h *Hub, apps ...App) ReloadResult {
	t.Helper()
	res, err := h.Reload(func() ([]App, error) { return apps, nil })
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	return res
}

// apiStatus makes a signed request of the HTTP API and returns its status.
func apiStatus(t testing.TB, h *Hub, a App, method, path, body string) int {
	t.Helper()
	q := apiTestSign(method, path, nil, []byte(body), a.Key, a.Secret, time.Now().Unix())
	req, err := http.NewRequest(method, "http://"+h.Addr()+path+"?"+q.Encode(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// refusedWith dials key and expects pusher:error then a close, both with code.
func refusedWith(t *testing.T, h *Hub, key string, code int) {
	t.Helper()
	c, _, err := dialRaw(t, h, "/app/"+key+"?protocol=7", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	w := &wsClient{t: t, c: c}
	if e := w.expect("pusher:error"); !strings.Contains(string(e.Data), fmt.Sprintf(`"code":%d`, code)) {
		t.Fatalf("connecting with %s: %s, want code %d", key, e.raw, code)
	}
	w.expectClose(code)
}

// signin signs w in as user with app a's secret and returns the first answer.
func (w *wsClient) signin(a App, user string) event {
	w.t.Helper()
	ud := `{"id":"` + user + `"}`
	w.send(`{"event":"pusher:signin","data":{"auth":"` + a.Key + ":" + sign(a.Secret, w.socketID+"::user::"+ud) +
		`","user_data":` + string(appendJSONString(nil, ud)) + `}}`)
	return w.read()
}

// alive checks that w is still served (ping, pong).
func (w *wsClient) alive() {
	w.t.Helper()
	w.send(`{"event":"pusher:ping","data":{}}`)
	w.expect("pusher:pong")
}

const publishBody = `{"name":"e","channel":"orders","data":"x"}`

// An app a reload adds takes connections and API calls at once; one that it brings
// back after removing it too.
func TestReloadAddsApp(t *testing.T) {
	h := startHub(t, Config{})
	refusedWith(t, h, otherApp.Key, 4001)
	if got := apiStatus(t, h, otherApp, "POST", "/apps/2/events", publishBody); got != http.StatusNotFound {
		t.Fatalf("API of an unknown app: %d", got)
	}
	res := reload(t, h, testApp, otherApp)
	if !slices.Equal(res.Added, []string{"2"}) || len(res.Removed)+len(res.Changed)+len(res.Disabled) != 0 {
		t.Fatalf("result %+v", res)
	}
	w := connect(t, h, otherApp.Key)
	w.subscribe("orders", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	if got := apiStatus(t, h, otherApp, "POST", "/apps/2/events", publishBody); got != http.StatusOK {
		t.Fatalf("API of the added app: %d", got)
	}
	if e := w.expect("e"); e.Channel != "orders" {
		t.Fatal(e.raw)
	}
	if ids := h.AppIDs(); !slices.Equal(ids, []string{"1", "2"}) {
		t.Fatalf("AppIDs %v", ids)
	}
	// Removed, then back: served again, with its channel index intact.
	reload(t, h, testApp)
	w.expectClose(4003)
	if res := reload(t, h, testApp, otherApp); !slices.Equal(res.Added, []string{"2"}) {
		t.Fatalf("result %+v", res)
	}
	connect(t, h, otherApp.Key).alive()
}

// A removed app's connections are closed with 4003: those in a channel or signed in at
// once, a bare one at its next message; its API answers 404 and its key 4001. The
// other apps are untouched.
func TestReloadRemovesApp(t *testing.T) {
	h := startHub(t, Config{Apps: []App{testApp, otherApp}})
	subscribed := connect(t, h, otherApp.Key)
	subscribed.subscribe("presence-room", authFor(otherApp, subscribed.socketID, "presence-room", `{"user_id":"u"}`), `{"user_id":"u"}`)
	subscribed.expect("pusher_internal:subscription_succeeded")
	signedIn := connect(t, h, otherApp.Key)
	if e := signedIn.signin(otherApp, "7"); e.Event != "pusher:signin_success" {
		t.Fatal(e.raw)
	}
	bare := connect(t, h, otherApp.Key)
	stays := connect(t, h, testApp.Key)
	stays.subscribe("orders", "", "")
	stays.expect("pusher_internal:subscription_succeeded")

	res := reload(t, h, testApp)
	if !slices.Equal(res.Removed, []string{"2"}) || res.Closing != 3 {
		t.Fatalf("result %+v, want app 2 removed and its 3 connections closing", res)
	}
	// Every connection of the app goes at once, a bare one (in no channel, not signed
	// in) too.
	for _, w := range []*wsClient{subscribed, signedIn, bare} {
		if e := w.expect("pusher:error"); !strings.Contains(string(e.Data), `"code":4003`) {
			t.Fatal(e.raw)
		}
		w.expectClose(4003)
	}

	if got := apiStatus(t, h, otherApp, "GET", "/apps/2/channels", ""); got != http.StatusNotFound {
		t.Fatalf("API of a removed app: %d", got)
	}
	refusedWith(t, h, otherApp.Key, 4001)
	h.publishTest(t, "orders", "still", "1", "")
	stays.expect("still")
	if _, ok := h.Stats().Apps["2"]; ok {
		t.Fatal("a removed app is still in the stats")
	}
	waitFor(t, "the removed app's connections to leave the node's count", func() bool { return h.open.Load() == 1 })
}

// A disabled app: its connections are closed with 4003, its API answers 403, a new
// connection gets 4003; enabled again, it is served again.
func TestReloadDisablesApp(t *testing.T) {
	h := startHub(t, Config{Apps: []App{testApp, otherApp}})
	w := connect(t, h, otherApp.Key)
	w.subscribe("orders", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	off := otherApp
	off.Disabled = true
	if res := reload(t, h, testApp, off); !slices.Equal(res.Disabled, []string{"2"}) || res.Closing != 1 {
		t.Fatalf("result %+v", res)
	}
	w.expect("pusher:error")
	w.expectClose(4003)
	if got := apiStatus(t, h, otherApp, "POST", "/apps/2/events", publishBody); got != http.StatusForbidden {
		t.Fatalf("API of a disabled app: %d", got)
	}
	refusedWith(t, h, otherApp.Key, 4003)
	if res := reload(t, h, testApp, otherApp); !slices.Equal(res.Enabled, []string{"2"}) {
		t.Fatalf("result %+v", res)
	}
	connect(t, h, otherApp.Key).alive()
	if got := apiStatus(t, h, otherApp, "GET", "/apps/2/channels", ""); got != http.StatusOK {
		t.Fatalf("API of the app enabled again: %d", got)
	}
	st := h.Stats().Apps["2"]
	if st.Closes["app_disabled"] != 2 || st.ConnectionsOpened != 2 {
		t.Fatalf("stats of app 2 %+v: its counters go on across the reloads", st)
	}
}

// A new secret checks every signature that follows, on a connection opened before
// the reload too: the old one is refused, the new one accepted. The same for a key.
func TestReloadSecretOnOpenConnection(t *testing.T) {
	h := startHub(t, Config{})
	w := connect(t, h, testApp.Key)
	rotated := testApp
	rotated.Secret = "secret1-rotated"
	if res := reload(t, h, rotated); !slices.Equal(res.Changed, []string{"1"}) {
		t.Fatalf("result %+v", res)
	}
	w.subscribe("private-a", authFor(testApp, w.socketID, "private-a", ""), "")
	if e := w.expect("pusher:subscription_error"); !strings.Contains(string(e.Data), `"status":401`) {
		t.Fatal(e.raw)
	}
	w.subscribe("private-a", authFor(rotated, w.socketID, "private-a", ""), "")
	w.expect("pusher_internal:subscription_succeeded")
	cd := `{"user_id":"u"}`
	w.subscribe("presence-a", authFor(testApp, w.socketID, "presence-a", cd), cd)
	w.expect("pusher:subscription_error")
	if e := w.signin(testApp, "7"); e.Event != "pusher:error" {
		t.Fatalf("sign-in with the old secret: %s", e.raw)
	}
	if e := w.signin(rotated, "7"); e.Event != "pusher:signin_success" {
		t.Fatalf("sign-in with the new secret: %s", e.raw)
	}
	if got := apiStatus(t, h, testApp, "POST", "/apps/1/events", publishBody); got != http.StatusUnauthorized {
		t.Fatalf("API with the old secret: %d", got)
	}
	if got := apiStatus(t, h, rotated, "POST", "/apps/1/events", publishBody); got != http.StatusOK {
		t.Fatalf("API with the new secret: %d", got)
	}

	// A new key: new connections use it, the open one stays and signs with it.
	rekeyed := rotated
	rekeyed.Key = "key1-new"
	reload(t, h, rekeyed)
	refusedWith(t, h, testApp.Key, 4001)
	connect(t, h, rekeyed.Key).alive()
	w.subscribe("private-b", authFor(rotated, w.socketID, "private-b", ""), "")
	w.expect("pusher:subscription_error")
	w.subscribe("private-b", authFor(rekeyed, w.socketID, "private-b", ""), "")
	w.expect("pusher_internal:subscription_succeeded")
}

// Changed limits apply to what comes next; what they already let through stays.
func TestReloadLimits(t *testing.T) {
	h := startHub(t, Config{})
	a := connect(t, h, testApp.Key)
	cd := `{"user_id":"a"}`
	a.subscribe("presence-chat", authFor(testApp, a.socketID, "presence-chat", cd), cd)
	a.expect("pusher_internal:subscription_succeeded")
	b := connect(t, h, testApp.Key)
	cd = `{"user_id":"b"}`
	b.subscribe("presence-chat", authFor(testApp, b.socketID, "presence-chat", cd), cd)
	b.expect("pusher_internal:subscription_succeeded")
	a.expect("pusher_internal:member_added")

	limited := testApp
	limited.ClientEvents = false
	limited.MaxConnections = 2
	limited.MaxPresenceMembers = 1
	reload(t, h, limited)
	a.send(`{"event":"client-x","channel":"presence-chat","data":{}}`)
	if e := a.expect("pusher:error"); !strings.Contains(string(e.Data), "not enabled") {
		t.Fatal(e.raw)
	}
	refusedWith(t, h, testApp.Key, 4004) // two are open: the third is over the new quota
	b.alive()                            // the two stay
	a.send(`{"event":"pusher:unsubscribe","data":{"channel":"presence-chat"}}`)
	b.expect("pusher_internal:member_removed")
	a.subscribe("presence-chat", authFor(testApp, a.socketID, "presence-chat", `{"user_id":"a"}`), `{"user_id":"a"}`)
	if e := a.expect("pusher:subscription_error"); !strings.Contains(string(e.Data), "LimitReached") {
		t.Fatalf("presence join past the new limit: %s", e.raw)
	}
}

// A bad set is refused whole: the running apps stay as they were, and the refusal is
// counted in the stats and the metrics.
func TestReloadRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := startHub(t, Config{Registerer: reg})
	w := connect(t, h, testApp.Key)
	changed := testApp
	changed.Secret = "other"
	badHook := otherApp
	badHook.Webhooks = []webhook.Hook{{URL: "ftp://hooks.example/"}}
	noSecret := otherApp
	noSecret.Secret = ""
	for _, c := range []struct {
		name string
		apps []App
		err  error
		want error
	}{
		{"load error", nil, errors.New("config apps.json: unexpected EOF"), nil},
		{"no app", []App{}, nil, ErrNoApps},
		{"duplicate key", []App{changed, {ID: "2", Key: testApp.Key, Secret: "s"}}, nil, ErrDuplicateApp},
		{"duplicate id", []App{changed, {ID: "1", Key: "k", Secret: "s"}}, nil, ErrDuplicateApp},
		{"no secret", []App{changed, noSecret}, nil, ErrInvalidApp},
		{"bad webhook", []App{changed, badHook}, nil, ErrInvalidApp},
	} {
		_, err := h.Reload(func() ([]App, error) { return c.apps, c.err })
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	st := h.Stats().Node.ConfigReloads
	if st.OK != 0 || st.Errors != 6 || !strings.Contains(st.LastError, "webhooks[0]") {
		t.Fatalf("reload stats %+v", st)
	}
	// Still the old apps: the old secret signs, app 2 does not exist.
	w.subscribe("private-a", authFor(testApp, w.socketID, "private-a", ""), "")
	w.expect("pusher_internal:subscription_succeeded")
	refusedWith(t, h, otherApp.Key, 4001)
	if got := apiStatus(t, h, testApp, "GET", "/apps/1/channels", ""); got != http.StatusOK {
		t.Fatalf("API with the running secret: %d", got)
	}
	reload(t, h, testApp)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "herald_config_reloads_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["ok"] != 1 || got["error"] != 6 || len(got) != 2 {
		t.Fatalf("herald_config_reloads_total %v, want ok 1 and error 6", got)
	}
	w.c.CloseNow()
	if err := h.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Reload(func() ([]App, error) { return []App{testApp}, nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("reload after shutdown: %v", err)
	}
}

// Webhooks follow the reload: an app that had none gets its hook; a new secret signs
// what follows, and a hook taken out hears nothing more.
func TestReloadWebhooks(t *testing.T) {
	rotated := testApp
	rotated.Secret = "rotated"
	k := newHookSink(t, testApp.Secret)
	k2 := newHookSink(t, rotated.Secret) // checks the signature with the new secret
	h := startHub(t, Config{DepartureGrace: testGrace, Webhooks: webhook.Config{BatchWait: 10 * time.Millisecond}})
	reload(t, h, hookedApp(k))
	subscribeTo(t, h, "room")
	k.wait("channel_occupied room")

	rotated.Webhooks = []webhook.Hook{{URL: k2.srv.URL}}
	reload(t, h, rotated)
	w := connect(t, h, testApp.Key)
	w.subscribe("hall", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	k2.wait("channel_occupied hall")
	if got := k.got(); len(got) != 0 {
		t.Fatalf("the hook taken out got %q", got)
	}
	if st := h.Stats().Node.Webhooks["1"]; st.Hooks != 1 || st.Sent != 2 {
		t.Fatalf("webhook stats %+v: one hook now, two events sent across the reload", st)
	}
}

// Reloads while connections come and go, subscribe, sign in, publish and send client
// events: the race detector watches the swap, and the hub serves on afterwards.
func TestReloadUnderTraffic(t *testing.T) {
	h := startHub(t, Config{Apps: []App{testApp, otherApp}})
	versions := [][]App{
		{testApp, otherApp},
		{testApp},
		{{ID: "1", Key: "key1", Secret: "secret1", ClientEvents: false, MaxClientEventsPerSecond: 2}, otherApp},
		{testApp, {ID: "2", Key: "key2", Secret: "secret2", Disabled: true}},
		{{ID: "1", Key: "key1", Secret: "secret1", ClientEvents: true, MaxPresenceMembers: 1}, otherApp},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops atomic.Int64
	traffic := func(a App) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, _, err := websocket.Dial(ctx, "ws://"+h.Addr()+"/app/"+a.Key, nil)
			if err != nil {
				cancel()
				continue
			}
			w := &wsClient{t: t, c: c}
			if e, err := w.readErr(2 * time.Second); err == nil && e.Event == "pusher:connection_established" {
				var d struct {
					SocketID string `json:"socket_id"`
				}
				_ = decodeData(e.Data, &d)
				ch := fmt.Sprintf("presence-%d", i%3)
				cd := fmt.Sprintf(`{"user_id":"u%d"}`, i)
				for _, m := range []string{
					`{"event":"pusher:subscribe","data":{"channel":"orders"}}`,
					`{"event":"pusher:subscribe","data":{"channel":"` + ch + `","auth":"` + authFor(a, d.SocketID, ch, cd) + `","channel_data":` + string(appendJSONString(nil, cd)) + `}}`,
					`{"event":"client-x","channel":"` + ch + `","data":{}}`,
					`{"event":"pusher:signin","data":{"auth":"` + a.Key + ":" + sign(a.Secret, d.SocketID+"::user::{\"id\":\"7\"}") + `","user_data":"{\"id\":\"7\"}"}}`,
				} {
					if c.Write(ctx, websocket.MessageText, []byte(m)) != nil {
						break
					}
				}
				for range 3 {
					if _, err := w.readErr(50 * time.Millisecond); err != nil {
						break
					}
				}
			}
			c.CloseNow()
			cancel()
			ops.Add(1)
		}
	}
	publisher := func(a App) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			q := apiTestSign("POST", "/apps/"+a.ID+"/events", nil, []byte(publishBody), a.Key, a.Secret, time.Now().Unix())
			resp, err := http.Post("http://"+h.Addr()+"/apps/"+a.ID+"/events?"+q.Encode(), "application/json", strings.NewReader(publishBody))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			ops.Add(1)
		}
	}
	for _, a := range []App{testApp, otherApp} {
		wg.Add(3)
		go traffic(a)
		go traffic(a)
		go publisher(a)
	}
	deadline := time.Now().Add(time.Second)
	n := 0
	for ; time.Now().Before(deadline); n++ {
		reload(t, h, versions[n%len(versions)]...)
		_ = h.Stats()
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if ops.Load() < 20 {
		t.Fatalf("only %d operations ran during %d reloads", ops.Load(), n)
	}
	reload(t, h, testApp, otherApp)
	for _, a := range []App{testApp, otherApp} {
		w := connect(t, h, a.Key)
		w.subscribe("private-z", authFor(a, w.socketID, "private-z", ""), "")
		w.expect("pusher_internal:subscription_succeeded")
	}
	if st := h.Stats().Node.ConfigReloads; st.OK != uint64(n)+1 || st.Errors != 0 {
		t.Fatalf("reload stats %+v after %d reloads", st, n+1)
	}
	waitFor(t, "every traffic connection to leave", func() bool { return h.open.Load() == 2 })
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
