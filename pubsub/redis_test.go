package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/pubsub/pubsubtest"
)

// Probe settings of the tests that break their Redis: an outage is noticed within
// probeTimeout+probeInterval.
const (
	probeInterval = 200 * time.Millisecond
	probeTimeout  = 600 * time.Millisecond
)

// newClient returns a client of addr, closed when the test ends, set as Herald sets its
// own: ContextTimeoutEnabled, which the engine requires, and no retries.
func newClient(t testing.TB, addr string, protocol int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: protocol, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newClusterClient(t testing.TB, addrs []string, name string) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true, MaxRetries: -1, ClientName: name})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testLogger logs through t, at Debug, so a failing test shows what the engine saw.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newRedis starts a broker, closed when the test ends.
func newRedis(t testing.TB, cfg pubsub.RedisConfig, h pubsub.Handler) *pubsub.Redis {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := pubsub.NewRedis(ctx, cfg, h)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil && !errors.Is(err, pubsub.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// factory makes the conformance suite's nodes on client, with a fresh prefix per subtest.
func factory(client redis.UniversalClient) func(t *testing.T) func(h pubsub.Handler) pubsub.Broker {
	return func(t *testing.T) func(h pubsub.Handler) pubsub.Broker {
		prefix := redistest.Prefix(t)
		var nodes atomic.Int64
		return func(h pubsub.Handler) pubsub.Broker {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := pubsub.NewRedis(ctx, pubsub.RedisConfig{
				Client: client,
				Prefix: prefix,
				Node:   "node" + strconv.FormatInt(nodes.Add(1), 10),
				Logger: testLogger(t),
			}, h)
			if err != nil {
				t.Fatalf("NewRedis: %v", err)
			}
			return b
		}
	}
}

func TestRedisConformance(t *testing.T) {
	pubsubtest.Run(t, factory(newClient(t, redistest.Shared(t).Addr, 0)))
}

// TestRedisConformanceRESP2: the subscriber connection's replies differ between RESP2
// and RESP3 (arrays and push frames); the engine works with both.
func TestRedisConformanceRESP2(t *testing.T) {
	pubsubtest.Run(t, factory(newClient(t, redistest.Shared(t).Addr, 2)))
}

func TestRedisClusterConformance(t *testing.T) {
	pubsubtest.Run(t, factory(newClusterClient(t, redistest.SharedCluster(t).Addrs(), "")))
}

// events is a Handler that queues what it gets, for tests that wait on one event at a
// time.
type events struct {
	msgs   chan delivery
	ctrl   chan []byte
	states chan stateChange
}

type delivery struct {
	channel string
	data    string
}

type stateChange struct {
	up bool
	at time.Time
}

func newEvents() *events {
	return &events{
		msgs:   make(chan delivery, 1<<16),
		ctrl:   make(chan []byte, 1024),
		states: make(chan stateChange, 64),
	}
}

func (e *events) HandleMessage(channel string, data []byte) {
	e.msgs <- delivery{channel, string(data)}
}
func (e *events) HandleControl(data []byte) { e.ctrl <- data }
func (e *events) HandleBrokerState(up bool) { e.states <- stateChange{up, time.Now()} }

// waitState waits up to within for the next state change, which must be up.
func (e *events) waitState(t *testing.T, up bool, within time.Duration) time.Time {
	t.Helper()
	select {
	case s := <-e.states:
		if s.up != up {
			t.Fatalf("HandleBrokerState(%v), want %v", s.up, up)
		}
		return s.at
	case <-time.After(within):
		t.Fatalf("no HandleBrokerState(%v) within %v", up, within)
	}
	return time.Time{}
}

func (e *events) noState(t *testing.T) {
	t.Helper()
	select {
	case s := <-e.states:
		t.Fatalf("unexpected HandleBrokerState(%v)", s.up)
	default:
	}
}

// waitMessage waits for data on channel, skipping anything else.
func (e *events) waitMessage(t *testing.T, channel, data string) {
	t.Helper()
	timer := time.NewTimer(pubsubtest.Timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-e.msgs:
			if m.channel == channel && m.data == data {
				return
			}
		case <-timer.C:
			t.Fatalf("no %q on %q within %v", data, channel, pubsubtest.Timeout)
		}
	}
}

func fastConfig(client redis.UniversalClient, prefix, node string) pubsub.RedisConfig {
	return pubsub.RedisConfig{
		Client:        client,
		Prefix:        prefix,
		Node:          node,
		ProbeInterval: probeInterval,
		ProbeTimeout:  probeTimeout,
	}
}

// publishUntilDelivered publishes data on channel every 100 ms until h got it: after a
// recovery, the first publishes may go out on connections go-redis has not yet found dead.
func publishUntilDelivered(t *testing.T, b pubsub.Broker, h *events, channel, data string) {
	t.Helper()
	deadline := time.Now().Add(pubsubtest.Timeout)
	for time.Now().Before(deadline) {
		if err := b.Publish(context.Background(), channel, []byte(data)); err != nil {
			t.Logf("Publish: %v", err)
		}
		select {
		case m := <-h.msgs:
			if m.channel == channel && m.data == data {
				return
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%q on %q never delivered", data, channel)
}

func checkStats(t *testing.T, b *pubsub.Redis, up bool, subscriptions int, reconnects uint64) {
	t.Helper()
	st := b.Stats()
	if st.Up != up || st.Subscriptions != subscriptions || st.Reconnects != reconnects {
		t.Errorf("Stats: %+v, want up=%v, %d subscriptions, %d reconnects", st, up, subscriptions, reconnects)
	}
}

// TestRedisClientKill: a subscriber connection killed by the server is noticed, and
// replaced; its subscriptions are restored before the engine says it is up again.
func TestRedisClientKill(t *testing.T) {
	srv := redistest.Start(t)
	h := newEvents()
	b := newRedis(t, fastConfig(newClient(t, srv.Addr, 0), "kill", "n1"), h)
	if err := b.Subscribe(context.Background(), "x", "y"); err != nil {
		t.Fatal(err)
	}
	publishUntilDelivered(t, b, h, "x", "before")

	if n, err := srv.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil || n != "1" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %q, %v; want 1 connection killed", n, err)
	}
	h.waitState(t, false, probeTimeout+probeInterval+time.Second)
	h.waitState(t, true, pubsubtest.Timeout)
	checkStats(t, b, true, 2, 1)
	publishUntilDelivered(t, b, h, "y", "after")
	h.noState(t)
}

// TestRedisKillRestart: while the server is gone, publishes and subscribes fail at once
// with ErrUnavailable; the channels subscribed meanwhile are delivered after recovery.
func TestRedisKillRestart(t *testing.T) {
	srv := redistest.Start(t)
	h := newEvents()
	b := newRedis(t, fastConfig(newClient(t, srv.Addr, 0), "restart", "n1"), h)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	publishUntilDelivered(t, b, h, "x", "before")

	srv.Kill()
	h.waitState(t, false, probeTimeout+probeInterval+time.Second)
	start := time.Now()
	if err := b.Publish(ctx, "x", []byte("lost")); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("Publish while down: %v, want ErrUnavailable", err)
	}
	if err := b.PublishControl(ctx, []byte("lost")); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("PublishControl while down: %v, want ErrUnavailable", err)
	}
	if _, _, _, err := b.Last(ctx, "x"); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("Last while down: %v, want ErrUnavailable", err)
	}
	if err := b.Subscribe(ctx, "y"); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("Subscribe while down: %v, want ErrUnavailable", err)
	}
	if err := b.Subscribe(ctx, "gone"); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("Subscribe while down: %v, want ErrUnavailable", err)
	}
	if err := b.Unsubscribe(ctx, "gone"); err != nil {
		t.Errorf("Unsubscribe while down: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("calls while down took %v, want them to fail at once", d)
	}
	checkStats(t, b, false, 2, 0)

	srv.Restart(t)
	h.waitState(t, true, pubsubtest.Timeout)
	checkStats(t, b, true, 2, 1)
	publishUntilDelivered(t, b, h, "y", "subscribed while down")
	publishUntilDelivered(t, b, h, "x", "after")
	if states, _ := b.ChannelStates(); states != 4 { // x, y, control, probe
		t.Errorf("%d channel states, want 4 (x, y, control, probe)", states)
	}
	h.noState(t)
}

// TestRedisFreeze: a server that stops answering but keeps its connections open
// (SIGSTOP) is noticed by the probe within ProbeTimeout+ProbeInterval; a Publish to it
// fails within OpTimeout, and at once once the outage is known.
func TestRedisFreeze(t *testing.T) {
	srv := redistest.Start(t)
	h := newEvents()
	cfg := fastConfig(newClient(t, srv.Addr, 0), "freeze", "n1")
	b := newRedis(t, cfg, h)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	publishUntilDelivered(t, b, h, "x", "before")

	srv.Freeze()
	frozen := time.Now()
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw()
		}
	}()
	err := b.Publish(ctx, "x", []byte("frozen"))
	if d := time.Since(frozen); !errors.Is(err, pubsub.ErrUnavailable) || d > time.Second+250*time.Millisecond {
		t.Errorf("Publish to a frozen server: %v after %v, want ErrUnavailable within OpTimeout (1s)", err, d)
	}
	down := h.waitState(t, false, 5*time.Second)
	// The contract is ProbeTimeout+ProbeInterval; the slack is for a loaded machine.
	if d := down.Sub(frozen); d > probeTimeout+probeInterval+300*time.Millisecond {
		t.Errorf("outage noticed after %v, want within ProbeTimeout+ProbeInterval = %v", d, probeTimeout+probeInterval)
	} else {
		t.Logf("outage noticed after %v", d)
	}
	start := time.Now()
	if err := b.Publish(ctx, "x", []byte("frozen")); !errors.Is(err, pubsub.ErrUnavailable) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("Publish with the outage known: %v after %v, want ErrUnavailable at once", err, time.Since(start))
	}
	if err := b.Subscribe(ctx, "y"); !errors.Is(err, pubsub.ErrUnavailable) {
		t.Errorf("Subscribe with the outage known: %v, want ErrUnavailable", err)
	}
	time.Sleep(4*time.Second - time.Since(frozen))
	srv.Thaw()
	thawed = true
	h.waitState(t, true, pubsubtest.Timeout)
	checkStats(t, b, true, 2, 1)
	publishUntilDelivered(t, b, h, "x", "after")
	publishUntilDelivered(t, b, h, "y", "subscribed while frozen")
}

// commandCalls reads the calls of each command from INFO commandstats.
func commandCalls(t *testing.T, srv *redistest.Server) map[string]int {
	t.Helper()
	info, err := srv.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	calls := make(map[string]int)
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(n)
	}
	return calls
}

// TestRedisBatching: many channels, from one call or from concurrent ones, go to Redis
// in few commands, both ways; and once unsubscribed, nothing of them is left.
func TestRedisBatching(t *testing.T) {
	const goroutines, perGoroutine = 8, 250
	srv := redistest.Start(t)
	b := newRedis(t, fastConfig(newClient(t, srv.Addr, 0), "batch", "n1"), nil)
	ctx := context.Background()
	names := func(prefix string) [][]string {
		out := make([][]string, goroutines)
		for g := range out {
			for i := range perGoroutine {
				out[g] = append(out[g], fmt.Sprintf("%s-%d-%d", prefix, g, i))
			}
		}
		return out
	}
	concurrently := func(fn func(chs []string) error, chs [][]string) {
		var wg sync.WaitGroup
		for _, part := range chs {
			wg.Go(func() {
				if err := fn(part); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	measure := func(what, cmd string, want int, fn func()) {
		t.Helper()
		before := commandCalls(t, srv)[cmd]
		fn()
		got := commandCalls(t, srv)[cmd] - before
		t.Logf("%s: %d %s commands for %d channels", what, got, cmd, goroutines*perGoroutine)
		if got > want {
			t.Errorf("%s: %d %s commands, want at most %d", what, got, cmd, want)
		}
	}

	one := names("one")
	measure("one Subscribe per channel from 8 goroutines", "subscribe", goroutines*perGoroutine/4, func() {
		concurrently(func(chs []string) error {
			for _, ch := range chs {
				if err := b.Subscribe(ctx, ch); err != nil {
					return err
				}
			}
			return nil
		}, one)
	})
	many := names("many")
	measure("one Subscribe of 250 channels from each of 8 goroutines", "subscribe", goroutines, func() {
		concurrently(func(chs []string) error { return b.Subscribe(ctx, chs...) }, many)
	})
	var all []string
	for g := range goroutines {
		all = append(all, many[g]...)
	}
	measure("one Unsubscribe of 2,000 channels", "unsubscribe", 2, func() {
		if err := b.Unsubscribe(ctx, all...); err != nil {
			t.Fatal(err)
		}
		waitNoLeak(t, b, 2+goroutines*perGoroutine)
	})
	measure("one Unsubscribe per channel from 8 goroutines", "unsubscribe", goroutines*perGoroutine/4, func() {
		concurrently(func(chs []string) error { return b.Unsubscribe(ctx, chs...) }, one)
		waitNoLeak(t, b, 2)
	})
	if n := b.Stats().Subscriptions; n != 0 {
		t.Errorf("Subscriptions: %d, want 0", n)
	}
	// The server's view: the subscriber connection holds the control and probe channels.
	clients, err := srv.Do("CLIENT", "LIST", "TYPE", "pubsub")
	if err != nil {
		t.Fatal(err)
	}
	if clients = strings.TrimSpace(clients); !strings.Contains(clients, " sub=2 ") || strings.Count(clients, "\n") > 0 {
		t.Errorf("CLIENT LIST TYPE pubsub: %s; want one connection with sub=2", clients)
	}
}

// waitNoLeak waits until the engine holds want channel states (those wanted, the
// control and the probe channels): every unsubscribed channel was confirmed by Redis
// and forgotten.
func waitNoLeak(t *testing.T, b *pubsub.Redis, want int) {
	t.Helper()
	deadline := time.Now().Add(pubsubtest.Timeout)
	for {
		n, _ := b.ChannelStates()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d channel states, want %d", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisResubscribeRace: Subscribe, Unsubscribe and Subscribe again in quick
// succession; the last Subscribe must not return before Redis confirmed it, or the
// message published right after it would be lost.
func TestRedisResubscribeRace(t *testing.T) {
	srv := redistest.Shared(t)
	client := newClient(t, srv.Addr, 0)
	prefix := redistest.Prefix(t)
	h := newEvents()
	b := newRedis(t, fastConfig(client, prefix, "sub"), h)
	pub := newRedis(t, fastConfig(client, prefix, "pub"), nil)
	ctx := context.Background()
	for i := range 200 {
		data := strconv.Itoa(i)
		for _, call := range []func(context.Context, ...string) error{b.Subscribe, b.Unsubscribe, b.Subscribe} {
			if err := call(ctx, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Publish(ctx, "x", []byte(data)); err != nil {
			t.Fatal(err)
		}
		h.waitMessage(t, "x", data)
		if i%2 == 0 { // half the time, let the UNSUBSCRIBE go out before subscribing again
			if err := b.Unsubscribe(ctx, "x"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	waitNoLeak(t, b, 3)
}

// TestRedisUnsubscribeStopsAtOnce: Unsubscribe does not wait for Redis, yet nothing
// published after it returns is delivered.
func TestRedisUnsubscribeStopsAtOnce(t *testing.T) {
	srv := redistest.Shared(t)
	client := newClient(t, srv.Addr, 0)
	prefix := redistest.Prefix(t)
	h := newEvents()
	b := newRedis(t, fastConfig(client, prefix, "sub"), h)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "x", "marker"); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := b.Publish(ctx, "x", []byte("before")); err != nil {
			t.Fatal(err)
		}
		if err := b.Unsubscribe(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, "x", []byte("after")); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, "marker", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		for got := false; !got; {
			select {
			case m := <-h.msgs:
				if m.data == "after" {
					t.Fatalf("iteration %d: delivered on %q after Unsubscribe returned", i, m.channel)
				}
				got = m.channel == "marker"
			case <-time.After(pubsubtest.Timeout):
				t.Fatal("marker not delivered")
			}
		}
		if err := b.Subscribe(ctx, "x"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNewRedisFails: without a server, NewRedis gives up when its context ends, and
// leaves no goroutine behind (TestMain checks); a bad configuration fails at once.
func TestNewRedisFails(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr
	srv.Kill()
	client := newClient(t, addr, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	cfg := fastConfig(client, "p", "n")
	cfg.Logger = testLogger(t)
	_, err := pubsub.NewRedis(ctx, cfg, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewRedis without a server: %v, want a context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("NewRedis took %v to give up", d)
	}
	t.Logf("NewRedis: %v", err)

	cc := newClusterClient(t, []string{addr}, "")
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	cfg = fastConfig(cc, "p", "n")
	cfg.Logger = testLogger(t)
	if _, err := pubsub.NewRedis(ctx, cfg, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("NewRedis without a cluster: %v, want a context.DeadlineExceeded", err)
	}

	ring := redis.NewRing(&redis.RingOptions{})
	defer ring.Close()
	for _, cfg := range []pubsub.RedisConfig{
		{Node: "n"},
		{Client: client},
		{Client: client, Node: "a{b}"},
		{Client: client, Node: "n", Prefix: "p{"},
		{Client: ring, Node: "n"},
	} {
		if _, err := pubsub.NewRedis(context.Background(), cfg, nil); err == nil {
			t.Errorf("NewRedis(%+v) = nil error", cfg)
		}
	}
}

// TestRedisKeySlot: the engine's slot function agrees with the cluster's, on names with
// and without hash tags, so that channels, keys and probes go where it thinks.
func TestRedisKeySlot(t *testing.T) {
	cl := redistest.SharedCluster(t)
	names := []string{"", "a", "{a}", "herald:c:{chan}", "herald:c:{}", "herald:c:{}}", "x{}{y}", "{{a}}", "é世\x00", "p:c:{a}b}", "p:c:{a{b}"}
	for i := range 50 {
		names = append(names, fmt.Sprintf("herald:probe:node-%d:{%d}", i, i*7919))
	}
	for _, name := range names {
		want, err := redistest.Do(cl.Servers[0].Addr, "CLUSTER", "KEYSLOT", name)
		if err != nil {
			t.Fatal(err)
		}
		if got := pubsub.KeySlot(name); strconv.Itoa(got) != want {
			t.Errorf("KeySlot(%q) = %d, Redis says %s", name, got, want)
		}
	}
}

// clientList returns the lines of CLIENT LIST on addr that name name.
func clientList(t *testing.T, addr, name string) []string {
	t.Helper()
	out, err := redistest.Do(addr, "CLIENT", "LIST")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, " name="+name+" ") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// field returns the value of field (e.g. "ssub") in a CLIENT LIST line.
func field(line, name string) string {
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

// channelOn finds a channel whose Redis name is served by the master at addr.
func channelOn(t *testing.T, cl *redistest.Cluster, prefix, addr, start string) string {
	t.Helper()
	slots := masterSlots(t, cl)
	for i := range 100000 {
		ch := start + strconv.Itoa(i)
		if slots[pubsub.KeySlot(prefix+":c:{"+ch+"}")] == addr {
			return ch
		}
	}
	t.Fatalf("no channel served by %s", addr)
	return ""
}

// masterSlots maps each slot to the address of its master.
func masterSlots(t *testing.T, cl *redistest.Cluster) []string {
	t.Helper()
	c := newClusterClient(t, cl.Addrs(), "")
	ranges, err := c.ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	slots := make([]string, 16384)
	for _, rg := range ranges {
		for s := rg.Start; s <= rg.End; s++ {
			slots[s] = rg.Nodes[0].Addr
		}
	}
	return slots
}

// TestRedisClusterShards: on a cluster, the engine holds one subscriber connection per
// master, subscribes each channel on its own master only, and a node gets nothing from
// a channel it did not subscribe to even when that channel lives on the same master.
func TestRedisClusterShards(t *testing.T) {
	cl := redistest.SharedCluster(t)
	prefix := redistest.Prefix(t)
	client := newClusterClient(t, cl.Addrs(), prefix)
	h := newEvents()
	b := newRedis(t, fastConfig(client, prefix, "n1"), h)
	pub := newRedis(t, fastConfig(client, prefix, "n2"), nil)
	if st := b.Stats(); st.Engine != "redis-cluster" {
		t.Errorf("Engine %q, want redis-cluster", st.Engine)
	}
	if _, shards := b.ChannelStates(); shards != 3 {
		t.Errorf("%d shards, want 3", shards)
	}
	ctx := context.Background()
	// One channel on each master, and a neighbour of the first on the same master.
	var chs []string
	for i, srv := range cl.Servers {
		chs = append(chs, channelOn(t, cl, prefix, srv.Addr, "c"+strconv.Itoa(i)+"-"))
	}
	neighbour := channelOn(t, cl, prefix, cl.Servers[0].Addr, "n-")
	if err := b.Subscribe(ctx, chs...); err != nil {
		t.Fatal(err)
	}
	if err := pub.Subscribe(ctx, neighbour); err != nil {
		t.Fatal(err)
	}
	for _, srv := range cl.Servers {
		var subscribers []string
		for _, line := range clientList(t, srv.Addr, prefix) {
			if n, _ := strconv.Atoi(field(line, "ssub")); n > 0 {
				subscribers = append(subscribers, line)
			}
		}
		// Two nodes, one subscriber connection each on every master.
		if len(subscribers) != 2 {
			t.Errorf("master %s: %d subscriber connections of this test, want 2 (one per node):\n%s", srv.Addr, len(subscribers), strings.Join(subscribers, "\n"))
		}
	}
	for _, ch := range chs {
		if err := pub.Publish(ctx, ch, []byte("on "+ch)); err != nil {
			t.Fatal(err)
		}
		h.waitMessage(t, ch, "on "+ch)
	}
	if err := pub.Publish(ctx, neighbour, []byte("not for b")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, chs[0], []byte("marker")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-h.msgs:
			if m.channel == neighbour {
				t.Fatalf("got %q on %q, a channel this node did not subscribe to", m.data, m.channel)
			}
			if m.data == "marker" {
				return
			}
		case <-time.After(pubsubtest.Timeout):
			t.Fatal("marker not delivered")
		}
	}
}

// TestRedisClusterChanges, on a cluster of the test's own: when the slot of a
// subscribed channel moves to another master, Redis drops the subscription
// (sunsubscribe), and the engine subscribes it again on the new master without taking
// the path down; when one master's subscriber connection is killed, that shard goes
// down and comes back, with its channels.
func TestRedisClusterChanges(t *testing.T) {
	cl := redistest.StartCluster(t)
	client := newClusterClient(t, cl.Addrs(), "")
	h := newEvents()
	b := newRedis(t, fastConfig(client, "mig", "n1"), h)
	ctx := context.Background()
	src := cl.Servers[0]
	dst := cl.Servers[1]
	ch := channelOn(t, cl, "mig", src.Addr, "moving-")
	slot := strconv.Itoa(pubsub.KeySlot("mig:c:{" + ch + "}"))
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	publishUntilDelivered(t, b, h, ch, "before")

	ids := make(map[*redistest.Server]string)
	for _, s := range cl.Servers {
		id, err := s.Do("CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		ids[s] = id
	}
	for _, step := range []struct {
		on   *redistest.Server
		args []string
	}{
		{dst, []string{"CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src]}},
		{src, []string{"CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst]}},
		{dst, []string{"CLUSTER", "SETSLOT", slot, "NODE", ids[dst]}},
		{src, []string{"CLUSTER", "SETSLOT", slot, "NODE", ids[dst]}},
		{cl.Servers[2], []string{"CLUSTER", "SETSLOT", slot, "NODE", ids[dst]}},
	} {
		if _, err := step.on.Do(step.args...); err != nil {
			t.Fatalf("%v on %s: %v", step.args, step.on.Addr, err)
		}
	}
	publishUntilDelivered(t, b, h, ch, "after")
	// The subscription now lives on dst, next to the probe of that shard.
	deadline := time.Now().Add(pubsubtest.Timeout)
	for {
		out, err := dst.Do("PUBSUB", "SHARDNUMSUB", "mig:c:{"+ch+"}")
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(out, "\n1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB SHARDNUMSUB on the new master: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.noState(t)
	checkStats(t, b, true, 1, 0)

	// Lose the subscriber connection to the master that now serves the channel.
	if n, err := dst.Do("CLIENT", "KILL", "TYPE", "pubsub"); err != nil || n != "1" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %q, %v; want 1 connection killed", n, err)
	}
	h.waitState(t, false, probeTimeout+probeInterval+time.Second)
	h.waitState(t, true, pubsubtest.Timeout)
	checkStats(t, b, true, 1, 1)
	publishUntilDelivered(t, b, h, ch, "after the reconnection")
}
