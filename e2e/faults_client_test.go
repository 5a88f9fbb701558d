package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/loadgen"
)

// The harness of faults_test.go: three herald nodes, each reaching the instance's
// redis-server through a toxiproxy proxy of its own (so that a fault can hit every node
// or one), Pusher clients in Go, a signed API publisher, and the figures they measure.

const (
	faultLease           = nodeLease       // --node-lease (3 s)
	faultShutdownTimeout = 6 * time.Second // --shutdown-timeout
	// faultProbeDown is how long a node may take to call its broker down once Redis
	// stops answering: pubsub's probe timeout (3 s) plus its probe interval (1 s).
	faultProbeDown = 4 * time.Second
)

// faultCluster is a Redis, one toxiproxy proxy in front of it per node, and the nodes.
type faultCluster struct {
	name    string
	redis   *redistest.Server
	proxies []*toxiproxy.Proxy // proxies[n-1] is node n's way to Redis
	nodes   []*herald
	app     app
	api     *http.Client

	mu          sync.Mutex // guards the state below
	frozenNodes map[int]bool
	redisFrozen bool
}

// startFaultCluster starts a redis-server, the proxies (toxiproxy's Proxy type, run in
// this process on free loopback ports: no toxiproxy HTTP server is needed to add
// toxics) and three nodes, each with --redis redis://<its proxy>. Everything is undone
// when the test ends, the toxics and freezes first, so that the nodes stop against a
// working Redis.
func startFaultCluster(t *testing.T, name string) *faultCluster {
	t.Helper()
	// toxiproxy's toxics log through zerolog's global logger (to stderr).
	zerolog.SetGlobalLevel(zerolog.Disabled)
	c := &faultCluster{name: name, redis: redistest.Start(t), app: mainApp, frozenNodes: map[int]bool{},
		api: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	for i := 1; i <= clusterNodes; i++ {
		p := toxiproxy.NewProxy(srv, fmt.Sprintf("%s-redis-%d", name, i), "127.0.0.1:0", c.redis.Addr)
		if err := srv.Collection.Add(p, true); err != nil {
			t.Fatalf("toxiproxy: start proxy %d: %v", i, err)
		}
		c.proxies = append(c.proxies, p)
	}
	// Registered before the nodes: runs after they stopped.
	t.Cleanup(func() {
		for _, p := range c.proxies {
			p.Stop()
		}
		c.api.CloseIdleConnections()
	})
	cfg := writeApps(t, c.app)
	for i := 1; i <= clusterNodes; i++ {
		c.nodes = append(c.nodes, startHerald(t, name+strconv.Itoa(i), "--config", cfg,
			"--redis", "redis://"+c.proxies[i-1].Listen, "--node-lease", faultLease.String(),
			"--redis-prefix", "e2e-"+name, "--shutdown-timeout", faultShutdownTimeout.String()))
	}
	t.Cleanup(func() { c.restore(t) }) // runs first
	return c
}

// stop restores the proxies and Redis, then stops the nodes still running, all at once
// (each must exit 0 without a data race report).
func (c *faultCluster) stop(t *testing.T) {
	c.restore(t)
	var wg sync.WaitGroup
	for _, h := range c.nodes {
		wg.Go(func() { h.stop(t) })
	}
	wg.Wait()
}

// restore removes every toxic and thaws what a test left frozen.
func (c *faultCluster) restore(t *testing.T) {
	c.clearToxics(t, 1, 2, 3)
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.frozenNodes {
		t.Logf("faults: thawing node %d, which the test left stopped", n)
		_ = c.nodes[n-1].cmd.Process.Signal(syscall.SIGCONT)
		delete(c.frozenNodes, n)
	}
	if c.redisFrozen {
		t.Log("faults: thawing the Redis that the test left frozen")
		c.redis.Thaw()
		c.redisFrozen = false
	}
	if t.Failed() {
		c.dumpRedis(t)
	}
}

// dumpRedis logs the instance's presence keys (node registry, claims, counts), to
// explain a failure.
func (c *faultCluster) dumpRedis(t *testing.T) {
	keys, err := c.redis.Do("KEYS", "e2e-"+c.name+"*")
	if err != nil {
		t.Logf("faults: KEYS: %v", err)
		return
	}
	for _, k := range strings.Split(keys, "\n") {
		if strings.Contains(k, ":p:") || k == "" {
			continue
		}
		typ, _ := c.redis.Do("TYPE", k)
		var v string
		switch typ {
		case "zset":
			v, err = c.redis.Do("ZRANGE", k, "0", "-1", "WITHSCORES")
		case "hash":
			v, err = c.redis.Do("HGETALL", k)
		case "set":
			v, err = c.redis.Do("SMEMBERS", k)
		default:
			continue
		}
		t.Logf("faults: redis %s %s: %q %v", typ, k, v, err)
	}
}

// addToxic adds a toxic of type typ with attrs to the proxies of nodes, on both
// streams (herald → Redis and Redis → herald) unless streams names one.
func (c *faultCluster) addToxic(t *testing.T, typ string, attrs map[string]any, streams []string, nodes ...int) {
	t.Helper()
	if len(streams) == 0 {
		streams = []string{"upstream", "downstream"}
	}
	for _, n := range nodes {
		for _, s := range streams {
			b, _ := json.Marshal(map[string]any{"name": typ + "_" + s, "type": typ, "stream": s, "toxicity": 1.0, "attributes": attrs})
			if _, err := c.proxies[n-1].Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
				t.Fatalf("toxiproxy: add %s: %v", b, err)
			}
		}
	}
	t.Logf("faults: toxic %s %v on %v of nodes %v", typ, attrs, streams, nodes)
}

// clearToxics removes every toxic from the proxies of nodes.
func (c *faultCluster) clearToxics(t *testing.T, nodes ...int) {
	for _, n := range nodes {
		c.proxies[n-1].Toxics.ResetToxics(context.Background())
	}
}

func (c *faultCluster) freezeNode(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozenNodes[n] = true
	return c.nodes[n-1].cmd.Process.Signal(syscall.SIGSTOP)
}

func (c *faultCluster) thawNode(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.frozenNodes, n)
	return c.nodes[n-1].cmd.Process.Signal(syscall.SIGCONT)
}

func (c *faultCluster) freezeRedis() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.redisFrozen = true
	c.redis.Freeze()
}

func (c *faultCluster) thawRedis() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.redisFrozen = false
	c.redis.Thaw()
}

// --- the HTTP API and the admin server ------------------------------------------------

// publish triggers event on channel through node n with a signed request and returns
// the status (0 when no answer came) and how long the answer took.
func (c *faultCluster) publish(ctx context.Context, n int, channel, event, data string) (int, time.Duration, error) {
	path := "/apps/" + c.app.ID + "/events"
	body, _ := json.Marshal(map[string]any{"name": event, "channel": channel, "data": data})
	u := "http://" + c.nodes[n-1].addr + path + "?" + loadgen.SignQuery("POST", path, c.app.Key, c.app.Secret, body, time.Now().Unix(), nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(string(body)))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	res, err := c.api.Do(req)
	if err != nil {
		return 0, time.Since(start), err
	}
	text, _ := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(start)
	if res.StatusCode != http.StatusOK {
		return res.StatusCode, took, fmt.Errorf("%d %s", res.StatusCode, strings.TrimSpace(string(text)))
	}
	return res.StatusCode, took, nil
}

// apiGet is a signed GET of the HTTP API through node n; it decodes a 200's JSON into v.
func (c *faultCluster) apiGet(n int, path string, params map[string]string, v any) error {
	path = "/apps/" + c.app.ID + path
	u := "http://" + c.nodes[n-1].addr + path + "?" + loadgen.SignQuery("GET", path, c.app.Key, c.app.Secret, nil, time.Now().Unix(), params)
	res, err := c.api.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s through node %d: %d %s", path, n, res.StatusCode, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, v)
}

// users lists a presence channel's user ids through node n, sorted.
func (c *faultCluster) users(n int, channel string) ([]string, error) {
	var v struct {
		Users []struct {
			ID string `json:"id"`
		} `json:"users"`
	}
	if err := c.apiGet(n, "/channels/"+channel+"/users", nil, &v); err != nil {
		return nil, err
	}
	var ids []string
	for _, u := range v.Users {
		ids = append(ids, u.ID)
	}
	sort.Strings(ids)
	return ids, nil
}

// subscriptionCount is a channel's cluster-wide subscription_count through node n.
func (c *faultCluster) subscriptionCount(n int, channel string) (int, error) {
	var v struct {
		Count int `json:"subscription_count"`
	}
	err := c.apiGet(n, "/channels/"+channel, map[string]string{"info": "subscription_count"}, &v)
	return v.Count, err
}

// faultStats is what the tests read from a node's /stats.
type faultStats struct {
	Node struct {
		Broker struct {
			Up         bool   `json:"up"`
			Reconnects uint64 `json:"reconnects"`
		} `json:"broker"`
		Nodes       []json.RawMessage `json:"nodes"`
		OpsPending  int               `json:"ops_pending"`
		StoreErrors uint64            `json:"store_errors"`
	} `json:"node"`
}

var adminClient = &http.Client{Timeout: 3 * time.Second}

func (c *faultCluster) stats(n int) (faultStats, error) {
	var s faultStats
	res, err := adminClient.Get("http://" + c.nodes[n-1].admin + "/stats")
	if err != nil {
		return s, err
	}
	defer res.Body.Close()
	err = json.NewDecoder(res.Body).Decode(&s)
	return s, err
}

// metric reads one unlabelled metric from node n's /metrics.
func (c *faultCluster) metric(n int, name string) (float64, error) {
	res, err := adminClient.Get("http://" + c.nodes[n-1].admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("node %d: no %s in /metrics", n, name)
}

func (c *faultCluster) readyz(n int) (int, error) {
	res, err := adminClient.Get("http://" + c.nodes[n-1].admin + "/readyz")
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// --- a Pusher client in Go ---------------------------------------------------------------

// fclient is a Pusher connection (coder/websocket, which answers WebSocket pings while
// it reads) whose reader goroutine keeps every message with the time it arrived.
type fclient struct {
	name     string
	node     int
	ws       *websocket.Conn
	socketID string
	done     chan struct{} // closed when the reader ended

	mu     sync.Mutex
	events []fevent
	dl     map[string][]fdelivery // the numbered events of each channel, as they came
	wake   chan struct{}          // closed and replaced on every message and at the end
	err    error                  // why the read loop ended
}

type fevent struct {
	at      time.Time
	Event   string `json:"event"`
	Channel string `json:"channel"`
	data    string // the data string (or the raw JSON of an object)
}

// dialClient connects to node n and waits for pusher:connection_established.
func (c *faultCluster) dialClient(name string, n int) (*fclient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+c.nodes[n-1].addr+"/app/"+c.app.Key+"?protocol=7&client=herald-e2e-faults&version=1.0", nil)
	if err != nil {
		return nil, fmt.Errorf("%s: dial node %d: %w", name, n, err)
	}
	ws.SetReadLimit(1 << 20)
	f := &fclient{name: name, node: n, ws: ws, done: make(chan struct{}), wake: make(chan struct{}), dl: map[string][]fdelivery{}}
	go f.read()
	_, ev, err := f.waitFor(5*time.Second, 0, func(e fevent) bool { return e.Event == "pusher:connection_established" })
	if err != nil {
		f.close()
		return nil, err
	}
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal([]byte(ev.data), &est); err != nil || est.SocketID == "" {
		f.close()
		return nil, fmt.Errorf("%s: connection_established %q", name, ev.data)
	}
	f.socketID = est.SocketID
	return f, nil
}

func (f *fclient) read() {
	defer close(f.done)
	for {
		_, b, err := f.ws.Read(context.Background())
		if err != nil {
			f.mu.Lock()
			f.err = err
			close(f.wake)
			f.mu.Unlock()
			return
		}
		var m struct {
			fevent
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		ev := m.fevent
		ev.at = time.Now()
		if len(m.Data) > 0 && m.Data[0] == '"' {
			_ = json.Unmarshal(m.Data, &ev.data)
		} else {
			ev.data = string(m.Data)
		}
		f.mu.Lock()
		f.events = append(f.events, ev)
		if ev.Event == "ev" {
			s, _, _ := strings.Cut(ev.data, ":")
			if n, err := strconv.Atoi(s); err == nil {
				f.dl[ev.Channel] = append(f.dl[ev.Channel], fdelivery{n, ev.at})
			}
		}
		close(f.wake)
		f.wake = make(chan struct{})
		f.mu.Unlock()
	}
}

// closeCode is the close code the server ended the connection with, -1 if it did not
// (still open, or ended without a close frame).
func (f *fclient) closeCode() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return -1
	}
	return int(websocket.CloseStatus(f.err))
}

// ended reports why the connection ended, or nil while it is open.
func (f *fclient) ended() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// mark is the number of messages received so far, for waitFor's from.
func (f *fclient) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

// waitFor waits for a message matching pred from index from on and returns its index.
func (f *fclient) waitFor(within time.Duration, from int, pred func(fevent) bool) (int, fevent, error) {
	deadline := time.Now().Add(within)
	for {
		f.mu.Lock()
		for i := from; i < len(f.events); i++ {
			if pred(f.events[i]) {
				ev := f.events[i]
				f.mu.Unlock()
				return i, ev, nil
			}
		}
		from = len(f.events)
		wake, err := f.wake, f.err
		f.mu.Unlock()
		if err != nil {
			return -1, fevent{}, fmt.Errorf("%s (node %d): connection ended: %w", f.name, f.node, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return -1, fevent{}, fmt.Errorf("%s (node %d): not received within %v", f.name, f.node, within)
		}
		timer := time.NewTimer(left)
		select {
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (f *fclient) send(event string, data any) error {
	b, err := json.Marshal(map[string]any{"event": event, "data": data})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.ws.Write(ctx, websocket.MessageText, b)
}

// subscribe subscribes to a public channel, or to a presence channel as user (with an
// authorization signed here), and waits for the confirmation.
func (f *fclient) subscribe(c *faultCluster, channel, user string) error {
	from := f.mark()
	data := map[string]any{"channel": channel}
	if user != "" {
		cd := `{"user_id":"` + user + `","user_info":{"name":"` + strings.ToUpper(user) + `"}}`
		data["channel_data"] = cd
		data["auth"] = loadgen.ChannelAuth(c.app.Key, c.app.Secret, f.socketID, channel, cd)
	}
	if err := f.send("pusher:subscribe", data); err != nil {
		return err
	}
	_, ev, err := f.waitFor(10*time.Second, from, func(e fevent) bool {
		return e.Channel == channel && (e.Event == "pusher_internal:subscription_succeeded" || e.Event == "pusher:subscription_error")
	})
	if err == nil && ev.Event != "pusher_internal:subscription_succeeded" {
		err = fmt.Errorf("%s: subscribe %s: %s", f.name, channel, ev.data)
	}
	return err
}

// ping sends pusher:ping and waits for the pong.
func (f *fclient) ping(within time.Duration) error {
	from := f.mark()
	if err := f.send("pusher:ping", map[string]any{}); err != nil {
		return err
	}
	_, _, err := f.waitFor(within, from, func(e fevent) bool { return e.Event == "pusher:pong" })
	return err
}

// members is the client's member list of a presence channel, as pusher-js keeps it: the
// ids of the last subscription_succeeded, then member_added and member_removed.
func (f *fclient) members(channel string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	set := map[string]bool{}
	for _, e := range f.events {
		if e.Channel != channel {
			continue
		}
		switch e.Event {
		case "pusher_internal:subscription_succeeded":
			var v struct {
				Presence struct {
					IDs []string `json:"ids"`
				} `json:"presence"`
			}
			_ = json.Unmarshal([]byte(e.data), &v)
			set = map[string]bool{}
			for _, id := range v.Presence.IDs {
				set[id] = true
			}
		case "pusher_internal:member_added", "pusher_internal:member_removed":
			var v struct {
				UserID string `json:"user_id"`
			}
			_ = json.Unmarshal([]byte(e.data), &v)
			set[v.UserID] = e.Event == "pusher_internal:member_added"
		}
	}
	var ids []string
	for id, in := range set {
		if in {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// memberEvents lists the member events of channel from index from, for messages.
func (f *fclient) memberEvents(channel string, from int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events[min(from, len(f.events)):] {
		if e.Channel == channel && strings.HasPrefix(e.Event, "pusher_internal:member_") {
			var v struct {
				UserID string `json:"user_id"`
			}
			_ = json.Unmarshal([]byte(e.data), &v)
			out = append(out, strings.TrimPrefix(e.Event, "pusher_internal:member_")+" "+v.UserID)
		}
	}
	if len(out) == 0 {
		return "no member events"
	}
	return strings.Join(out, ", ")
}

// lastMemberEvent is when the client got its last member event of channel (zero if
// none).
func (f *fclient) lastMemberEvent(channel string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.events) - 1; i >= 0; i-- {
		if e := f.events[i]; e.Channel == channel && strings.HasPrefix(e.Event, "pusher_internal:member_") {
			return e.at
		}
	}
	return time.Time{}
}

// fdelivery is one numbered event a client received.
type fdelivery struct {
	seq int
	at  time.Time
}

// deliveries are the numbered events ("ev", data "<seq>:…") the client got on channel,
// in the order it got them. The slice is shared: only read it.
func (f *fclient) deliveries(channel string) []fdelivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.dl[channel]
	return d[:len(d):len(d)]
}

func (f *fclient) close() {
	_ = f.ws.CloseNow()
	<-f.done
}

// --- figures -------------------------------------------------------------------------------

// fpercentile of unsorted durations (q in 0..1); 0 for none.
func fpercentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// fms rounds a duration for a figure: to 0.1 ms under 10 ms, else to the millisecond.
func fms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// faultWait polls cond every 50 ms until it holds, and returns how long that took; it
// fails t after within, with cond's last word on why not.
func faultWait(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %s", what, within, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fcond is a named condition for faultWaitAll.
type fcond struct {
	name  string
	holds func() (bool, string)
}

// faultWaitAll polls every condition every 50 ms until each has held once, and returns
// how long each took to, in order; it fails t after within, naming those that never
// held and why.
func faultWaitAll(t *testing.T, within time.Duration, conds ...fcond) []time.Duration {
	t.Helper()
	start := time.Now()
	took := make([]time.Duration, len(conds))
	left := len(conds)
	for {
		var why []string
		for i, c := range conds {
			if took[i] > 0 {
				continue
			}
			if ok, w := c.holds(); ok {
				took[i] = max(time.Since(start), time.Nanosecond)
				left--
			} else {
				why = append(why, c.name+": "+w)
			}
		}
		if left == 0 {
			return took
		}
		if time.Since(start) > within {
			t.Fatalf("not within %v: %s", within, strings.Join(why, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// errText is an error's text, "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return err.Error()
}
