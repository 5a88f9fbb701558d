package presence_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/presence/presencetest"
)

// testLease is the lease of the tests' nodes: short, so that dead nodes go fast, and
// long enough that a busy test machine (-race) does not miss renewals.
const testLease = time.Second

func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newClusterClient(t testing.TB, addrs []string) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// redisCluster is the conformance suite's cluster over one Redis (or Redis Cluster)
// and a key prefix of the subtest's own.
type redisCluster struct {
	t      *testing.T
	client redis.UniversalClient
	prefix string
	ids    atomic.Uint32
}

func (c *redisCluster) Node(_ string, h presence.Handler) presence.Store {
	c.t.Helper()
	s, err := presence.NewRedis(context.Background(), presence.RedisConfig{
		Client: c.client, Prefix: c.prefix, NodeID: c.ids.Add(1), Lease: testLease, DepartureGrace: testGrace,
	}, h)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *redisCluster) Kill(s presence.Store) { s.(*presence.Redis).Kill() }

// CleanupWithin: a dead node's lease runs out within testLease, the next sweep comes
// within testLease/4, and a slow machine gets a second more.
func (c *redisCluster) CleanupWithin() time.Duration { return testLease + testLease/4 + time.Second }

func (c *redisCluster) DepartureGrace() time.Duration { return testGrace }

func TestRedisConformance(t *testing.T) {
	t.Parallel()
	client := newClient(t, redistest.Shared(t).Addr)
	presencetest.Run(t, func(t *testing.T) presencetest.Cluster {
		return &redisCluster{t: t, client: client, prefix: redistest.Prefix(t)}
	})
}

func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	client := newClusterClient(t, redistest.SharedCluster(t).Addrs())
	presencetest.Run(t, func(t *testing.T) presencetest.Cluster {
		return &redisCluster{t: t, client: client, prefix: redistest.Prefix(t)}
	})
}

// handler records what a node's store reports.
type handler struct {
	mu     sync.Mutex
	deps   []presence.Departure
	resets int
}

func (h *handler) HandleDepartures(deps []presence.Departure) {
	h.mu.Lock()
	h.deps = append(h.deps, deps...)
	h.mu.Unlock()
}

func (h *handler) HandleVacated([]presence.Transition) {}

func (h *handler) HandleReset() {
	h.mu.Lock()
	h.resets++
	h.mu.Unlock()
}

// departures returns what h got, sorted.
func (h *handler) departures() []presence.Departure {
	h.mu.Lock()
	defer h.mu.Unlock()
	return sortDeps(slices.Clone(h.deps))
}

func (h *handler) resetCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resets
}

func sortDeps(d []presence.Departure) []presence.Departure {
	slices.SortFunc(d, func(x, y presence.Departure) int {
		return cmp.Or(cmp.Compare(x.Channel, y.Channel), cmp.Compare(x.UserID, y.UserID))
	})
	return d
}

// env is one test's Redis client and key prefix.
type env struct {
	t      *testing.T
	client redis.UniversalClient
	prefix string
}

func sharedEnv(t *testing.T) *env {
	return &env{t: t, client: newClient(t, redistest.Shared(t).Addr), prefix: redistest.Prefix(t)}
}

// node starts a node with a recording handler; the test's end closes it.
func (e *env) node(id uint32, h *handler, tweak ...func(*presence.RedisConfig)) *presence.Redis {
	e.t.Helper()
	cfg := presence.RedisConfig{Client: e.client, Prefix: e.prefix, NodeID: id, Lease: testLease}
	for _, f := range tweak {
		f(&cfg)
	}
	var hh presence.Handler
	if h != nil {
		hh = h
	}
	s, err := presence.NewRedis(context.Background(), cfg, hh)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil && !errors.Is(err, presence.ErrClosed) {
			e.t.Errorf("Close: %v", err)
		}
	})
	return s
}

func (e *env) nodesKey() string { return e.prefix + ":{nodes}" }

func mustAdd(t *testing.T, s presence.Store, channel, conn, user string, want bool) {
	t.Helper()
	first, err := s.Add(context.Background(), channel, conn, presence.Member{UserID: user}, 0)
	if err != nil || first != want {
		t.Fatalf("Add(%s, %s, %s) = %v, %v; want %v", channel, conn, user, first, err, want)
	}
}

func mustCount(t *testing.T, s presence.Store, channel string, want int) {
	t.Helper()
	n, err := s.Count(context.Background(), channel)
	if err != nil || n != want {
		t.Fatalf("Count(%s) = %d, %v; want %d", channel, n, err, want)
	}
}

func mustSubs(t *testing.T, s presence.Store, app, channel string, want int) {
	t.Helper()
	n, err := s.Subscriptions(context.Background(), app, channel)
	if err != nil || n != want {
		t.Fatalf("Subscriptions(%s, %s) = %d, %v; want %d", app, channel, n, err, want)
	}
}

func mustSet(t *testing.T, s presence.Store, app string, wantTransitions int, counts ...presence.ChannelCount) {
	t.Helper()
	rep, err := s.SetSubscriptions(context.Background(), app, counts)
	if tr := rep.Transitions; err != nil || len(tr) != wantTransitions {
		t.Fatalf("SetSubscriptions(%s, %v) = %v, %v; want %d transitions", app, counts, tr, err, wantTransitions)
	}
}

// waitFor polls cond every 10 ms until it holds or within has passed.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDepartures waits until the handlers together got want, then a while more, and
// checks that each came exactly once.
func waitDepartures(t *testing.T, within time.Duration, want []presence.Departure, hs ...*handler) {
	t.Helper()
	all := func() []presence.Departure {
		var out []presence.Departure
		for _, h := range hs {
			out = append(out, h.departures()...)
		}
		return sortDeps(out)
	}
	waitFor(t, within, fmt.Sprintf("departures %v", want), func() bool { return len(all()) >= len(want) })
	time.Sleep(500 * time.Millisecond) // a duplicate would come from the next sweeps
	if got := all(); !slices.Equal(got, sortDeps(slices.Clone(want))) {
		t.Fatalf("departures = %v, want %v, each once", got, want)
	}
}

var ctx = context.Background()

func TestRedisConfigRefused(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	for name, cfg := range map[string]presence.RedisConfig{
		"no client":   {NodeID: 1},
		"node id 0":   {Client: e.client},
		"braces":      {Client: e.client, NodeID: 1, Prefix: "a{b}"},
		"short lease": {Client: e.client, NodeID: 1, Lease: time.Millisecond},
	} {
		if s, err := presence.NewRedis(ctx, cfg, nil); err == nil {
			_ = s.Close(ctx)
			t.Errorf("%s: NewRedis accepted %+v", name, cfg)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := presence.NewRedis(cancelled, presence.RedisConfig{Client: e.client, NodeID: 1, Prefix: e.prefix}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("NewRedis with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestRedisNodeIDInUse(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	a := e.node(7, nil, func(c *presence.RedisConfig) { c.Lease = 10 * time.Second })
	_, err := presence.NewRedis(ctx, presence.RedisConfig{Client: e.client, Prefix: e.prefix, NodeID: 7}, nil)
	if !errors.Is(err, presence.ErrNodeIDInUse) {
		t.Fatalf("second node 7: %v, want ErrNodeIDInUse", err)
	}
	if msg := err.Error(); !strings.Contains(msg, a.Name()) || !strings.Contains(msg, "lease runs out in 9.") && !strings.Contains(msg, "lease runs out in 10s") {
		t.Errorf("error %q does not say whose lease runs out when", msg)
	}
	if !strings.HasPrefix(a.Name(), "7-") {
		t.Errorf("Name() = %q, want 7-<incarnation>", a.Name())
	}
	e.node(8, nil) // another id is free
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A closed node's id is free at once, and the new incarnation has a name of its own.
	b := e.node(7, nil)
	if b.Name() == a.Name() {
		t.Errorf("the restarted node has the old name %s", b.Name())
	}
}

// TestRedisFrozenNodeSwept: a node that cannot renew its lease (frozen) loses its
// entries to a sweep by another node, which reports the departures once; when the node
// resumes, it learns of it (HandleReset), takes a new name, and its re-Adds count.
func TestRedisFrozenNodeSwept(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ha, hb := &handler{}, &handler{}
	a, b := e.node(1, ha), e.node(2, hb)
	mustAdd(t, a, "room", "a1", "only-a", true)
	mustAdd(t, a, "room", "a2", "both", true)
	mustAdd(t, b, "room", "b1", "both", false)
	mustSet(t, a, "app", 1, presence.ChannelCount{Channel: "x", Count: 2})
	mustSet(t, b, "app", 0, presence.ChannelCount{Channel: "x", Count: 1})
	old := a.Name()

	a.PauseLoops()
	start := time.Now()
	waitDepartures(t, testLease+2*time.Second, []presence.Departure{{Channel: "room", UserID: "only-a"}}, ha, hb)
	if got := ha.departures(); len(got) != 0 {
		t.Errorf("the frozen node got departures %v", got)
	}
	t.Logf("departures reported %v after the freeze (lease %v)", time.Since(start).Round(time.Millisecond), testLease)
	mustCount(t, b, "room", 1)
	mustSubs(t, b, "app", "x", 1)

	a.ResumeLoops()
	waitFor(t, testLease, "HandleReset on the resumed node", func() bool { return ha.resetCount() == 1 })
	if a.Name() == old || !strings.HasPrefix(a.Name(), "1-") {
		t.Errorf("after the reset, Name() = %q; want a new name for id 1 (was %q)", a.Name(), old)
	}
	// The hub re-Adds: the user whose departure was sent is first again.
	mustAdd(t, a, "room", "a1", "only-a", true)
	mustAdd(t, a, "room", "a2", "both", false)
	mustSet(t, a, "app", 0, presence.ChannelCount{Channel: "x", Count: 2})
	time.Sleep(testLease) // sweeps and renewals come and go; nothing is lost again
	mustCount(t, b, "room", 2)
	mustSubs(t, b, "app", "x", 3)
	if ha.resetCount() != 1 || hb.resetCount() != 0 {
		t.Errorf("resets: a %d, b %d; want 1 and 0", ha.resetCount(), hb.resetCount())
	}
	// The new name's bookkeeping works: when a dies, its re-added entries go.
	a.Kill()
	waitDepartures(t, testLease+2*time.Second, []presence.Departure{
		{Channel: "room", UserID: "only-a"}, {Channel: "room", UserID: "only-a"},
	}, hb)
	mustSubs(t, b, "app", "x", 1)
}

// TestRedisLostClaimReply: a claim whose reply the sweeper never got (Redis ran the call
// after it timed out) is cleaned by that sweeper's next sweep, not 30 s later when the
// claim runs out.
func TestRedisLostClaimReply(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ha, hb := &handler{}, &handler{}
	a, b := e.node(1, ha), e.node(2, hb)
	mustAdd(t, a, "room", "a1", "alice", true)
	b.PauseLoops()
	a.Kill()
	time.Sleep(testLease + 200*time.Millisecond) // a's lease runs out; nobody sweeps
	if err := b.ClaimLostReply(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.ResumeLoops()
	waitDepartures(t, 3*time.Second, []presence.Departure{{Channel: "room", UserID: "alice"}}, hb)
	t.Logf("cleaned %v after the sweeper resumed", time.Since(start).Round(time.Millisecond))
	mustCount(t, b, "room", 0)
}

// TestRedisDeadClaimerTakenOver: a sweeper that claimed a dead node and then died (or
// stopped) before cleaning it leaves the claim to the next live sweeper at once, not
// after claimTTL (30 s); until then the dead node's entries would still be counted.
func TestRedisDeadClaimerTakenOver(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ha, hb, hc := &handler{}, &handler{}, &handler{}
	a, b, c := e.node(1, ha), e.node(2, hb), e.node(3, hc)
	mustAdd(t, a, "room", "a1", "alice", true)
	b.PauseLoops()
	c.PauseLoops()
	a.Kill()
	time.Sleep(testLease + 200*time.Millisecond) // a's lease runs out; nobody sweeps
	if err := c.ClaimLostReply(); err != nil {   // c claims a, and never cleans it
		t.Fatal(err)
	}
	c.Kill()
	start := time.Now()
	b.ResumeLoops()
	waitDepartures(t, testLease+3*time.Second, []presence.Departure{{Channel: "room", UserID: "alice"}}, hb, hc)
	t.Logf("cleaned %v after the live sweeper resumed", time.Since(start).Round(time.Millisecond))
	mustCount(t, b, "room", 0)
}

// TestRedisReassertWinsOverRacingSweep: a sweeper that claimed a frozen node's old name
// cleans it only after the node has re-Added its connections under its new name; the
// re-Added entries survive, and nobody is reported gone.
func TestRedisReassertWinsOverRacingSweep(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	ha, hb := &handler{}, &handler{}
	a, b := e.node(1, ha), e.node(2, hb)
	claimed := make(chan []string, 1)
	release := make(chan struct{})
	var once sync.Once
	b.OnClaim(func(names []string) {
		once.Do(func() {
			claimed <- names
			<-release
		})
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	mustAdd(t, a, "room", "a1", "u1", true)
	mustAdd(t, a, "room", "a2", "u2", true)
	mustSet(t, a, "app", 1, presence.ChannelCount{Channel: "x", Count: 2})
	old := a.Name()

	a.PauseLoops()
	select {
	case names := <-claimed:
		if !slices.Equal(names, []string{old}) {
			t.Fatalf("claimed %v, want [%s]", names, old)
		}
	case <-time.After(testLease + 2*time.Second):
		t.Fatal("the frozen node was not claimed")
	}
	a.ResumeLoops()
	waitFor(t, testLease, "HandleReset", func() bool { return ha.resetCount() == 1 })
	// Re-asserted while the claimer waits to clean the old name: the entries are still
	// there (first=false) and are now the new name's.
	mustAdd(t, a, "room", "a1", "u1", false)
	mustAdd(t, a, "room", "a2", "u2", false)
	mustSet(t, a, "app", 0, presence.ChannelCount{Channel: "x", Count: 2})
	mustSubs(t, b, "app", "x", 4) // the old name's 2 are still counted
	close(release)
	waitFor(t, 2*time.Second, "the claim cleaned", func() bool {
		n, err := e.client.ZCard(ctx, e.nodesKey()+":claims").Result()
		return err == nil && n == 0
	})
	mustCount(t, b, "room", 2)
	mustSubs(t, b, "app", "x", 2)
	if got := hb.departures(); len(got) != 0 {
		t.Errorf("departures %v after a re-assert won, want none", got)
	}
	if last, err := a.Remove(ctx, "room", "a1", "u1"); err != nil || !last {
		t.Errorf("Remove(a1) under the new name = %v, %v; want last", last, err)
	}
}

// TestRedisDataLoss: Redis forgets everything (FLUSHALL, or a restart without
// persistence); the node learns of it at its next renewal and starts over.
func TestRedisDataLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	e := &env{t: t, client: newClient(t, srv.Addr), prefix: "loss"}
	ha := &handler{}
	a := e.node(1, ha)
	mustAdd(t, a, "room", "a1", "u1", true)
	mustSet(t, a, "app", 1, presence.ChannelCount{Channel: "x", Count: 1})
	old := a.Name()
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, testLease, "HandleReset after FLUSHALL", func() bool { return ha.resetCount() == 1 })
	if a.Name() == old {
		t.Errorf("Name() unchanged after a reset")
	}
	mustAdd(t, a, "room", "a1", "u1", true)
	mustSet(t, a, "app", 1, presence.ChannelCount{Channel: "x", Count: 1})
	// The node's sets were rebuilt: a crash now is cleaned up like any other.
	a.Kill()
	hb := &handler{}
	b := e.node(2, hb)
	waitDepartures(t, testLease+2*time.Second, []presence.Departure{{Channel: "room", UserID: "u1"}}, hb)
	mustSubs(t, b, "app", "x", 0)
}

// TestRedisRemoveWhileRedisFrozen: calls fail fast with ErrUnavailable while Redis does
// not answer (ctx errors stay ctx errors); the failed Remove is retried after the thaw
// and the user is reported gone.
func TestRedisRemoveWhileRedisFrozen(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	e := &env{t: t, client: newClient(t, srv.Addr), prefix: "frozen"}
	ha := &handler{}
	const opTimeout = 200 * time.Millisecond
	a := e.node(1, ha, func(c *presence.RedisConfig) { c.OpTimeout = opTimeout; c.Lease = 5 * time.Second })
	mustAdd(t, a, "room", "a1", "u1", true)
	mustAdd(t, a, "room", "a2", "u2", true)

	srv.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw()
		}
	}()
	start := time.Now()
	last, err := a.Remove(ctx, "room", "a1", "u1")
	if !errors.Is(err, presence.ErrUnavailable) || last {
		t.Fatalf("Remove with Redis frozen = %v, %v; want ErrUnavailable", last, err)
	}
	if d := time.Since(start); d > opTimeout+500*time.Millisecond {
		t.Errorf("Remove took %v with OpTimeout %v", d, opTimeout)
	}
	_, errCount := a.Count(ctx, "room")
	_, errMembers := a.Members(ctx, "room")
	_, errSet := a.SetSubscriptions(ctx, "app", []presence.ChannelCount{{Channel: "x", Count: 1}})
	_, errSubs := a.Subscriptions(ctx, "app", "x")
	_, errChannels := a.Channels(ctx, "app", "")
	for name, err := range map[string]error{
		"Count": errCount, "Members": errMembers, "SetSubscriptions": errSet, "Subscriptions": errSubs, "Channels": errChannels,
	} {
		if !errors.Is(err, presence.ErrUnavailable) {
			t.Errorf("%s with Redis frozen: %v, want ErrUnavailable", name, err)
		}
	}
	// The caller's own deadline is reported as such, not as unavailability.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = a.Remove(short, "room", "a2", "u2")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("Remove with a caller deadline shorter than OpTimeout: %v, want context.DeadlineExceeded", err)
	}
	if n := a.QueuedRetries(); n != 2 {
		t.Errorf("%d removals queued, want 2", n)
	}
	srv.Thaw()
	thawed = true
	waitDepartures(t, 3*time.Second, []presence.Departure{
		{Channel: "room", UserID: "u1"}, {Channel: "room", UserID: "u2"},
	}, ha)
	mustCount(t, a, "room", 0)
	if n := a.QueuedRetries(); n != 0 {
		t.Errorf("%d removals still queued", n)
	}
}

// TestRedisAddTimedOutLeavesNoEntry: an Add that timed out may be applied by the server
// later; the store undoes it, reports the user gone (a client may have listed it
// meanwhile), and drops the channel from its node's set.
func TestRedisAddTimedOutLeavesNoEntry(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	e := &env{t: t, client: newClient(t, srv.Addr), prefix: "addfail"}
	ha := &handler{}
	a := e.node(1, ha, func(c *presence.RedisConfig) { c.OpTimeout = 200 * time.Millisecond })
	// The server caches the scripts, so that the EVALSHA it finds after the thaw runs.
	mustAdd(t, a, "warm-up", "w", "w", true)
	if last, err := a.Remove(ctx, "warm-up", "w", "w"); err != nil || !last {
		t.Fatal(last, err)
	}
	srv.Freeze()
	_, err := a.Add(ctx, "room", "c1", presence.Member{UserID: "u1", Info: []byte(`{"a":1}`)}, 0)
	srv.Thaw()
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("Add with Redis frozen: %v, want ErrUnavailable", err)
	}
	if n, err := a.Count(ctx, "room"); err == nil {
		t.Logf("right after the thaw, Count(room) = %d (1: the timed-out Add was applied late)", n)
	}
	waitFor(t, 3*time.Second, "the undoing of the Add", func() bool {
		return a.QueuedRetries() == 0 && len(ha.departures()) > 0
	})
	if got := ha.departures(); !slices.Equal(got, []presence.Departure{{Channel: "room", UserID: "u1"}}) {
		t.Errorf("departures %v, want u1 once", got)
	}
	mustCount(t, a, "room", 0)
	pch := "addfail:{nodes}:pch:" + a.Name()
	keys := []string{"addfail:p:{room}:u", "addfail:p:{room}:c", "addfail:p:{room}:n", pch}
	waitFor(t, 2*testLease, "no entry and no pch member left", func() bool {
		n, err := e.client.Exists(ctx, keys...).Result()
		return err == nil && n == 0
	})
	// The channel's bookkeeping starts over cleanly.
	mustAdd(t, a, "room", "c2", "u2", true)
	if n, err := e.client.SCard(ctx, pch).Result(); err != nil || n != 1 {
		t.Errorf("pch set has %d members, %v; want 1", n, err)
	}
}

// TestRedisCloseGivesUpLease: after Close, another node cleans up within about a sweep,
// far sooner than the lease.
func TestRedisCloseGivesUpLease(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	long := func(c *presence.RedisConfig) { c.Lease = 20 * time.Second }
	hb := &handler{}
	a, b := e.node(1, nil, long), e.node(2, hb, long)
	mustAdd(t, a, "room", "a1", "u1", true)
	mustSet(t, a, "app", 1, presence.ChannelCount{Channel: "x", Count: 1})
	name := a.Name()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Lease 20 s: sweeps every second.
	waitDepartures(t, 2*time.Second, []presence.Departure{{Channel: "room", UserID: "u1"}}, hb)
	t.Logf("cleaned %v after Close", time.Since(start).Round(time.Millisecond))
	mustSubs(t, b, "app", "x", 0)
	if _, err := e.client.ZScore(ctx, e.nodesKey(), name).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("the closed node is still registered: %v", err)
	}
	if err := a.Close(ctx); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	if a.Nodes() != nil {
		t.Errorf("Nodes() after Close = %v, want nil", a.Nodes())
	}
}

// TestRedisNewNodeSweepsAtOnce: a node that starts after the whole cluster was down
// cleans the dead nodes at once rather than a sweep period later.
func TestRedisNewNodeSweepsAtOnce(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	a := e.node(1, nil, func(c *presence.RedisConfig) { c.Lease = 200 * time.Millisecond })
	mustAdd(t, a, "room", "a1", "u1", true)
	a.Kill()
	time.Sleep(300 * time.Millisecond)
	hb := &handler{}
	start := time.Now()
	e.node(2, hb, func(c *presence.RedisConfig) { c.Lease = 20 * time.Second }) // sweeps every second
	waitFor(t, 600*time.Millisecond, "departures from the first sweep", func() bool { return len(hb.departures()) == 1 })
	t.Logf("cleaned %v after start", time.Since(start).Round(time.Millisecond))
}

// TestRedisManySweepers: many nodes sweeping at once claim each dead node exactly once,
// and each departure is reported once.
func TestRedisManySweepers(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	const live, dead = 8, 6
	var mu sync.Mutex
	claims := map[string]int{}
	hs := make([]*handler, live)
	for i := range live {
		hs[i] = &handler{}
		s := e.node(uint32(100+i), hs[i])
		s.OnClaim(func(names []string) {
			mu.Lock()
			for _, n := range names {
				claims[n]++
			}
			mu.Unlock()
		})
	}
	var want []presence.Departure
	var names []string
	deadNodes := make([]*presence.Redis, dead)
	for i := range dead {
		s := e.node(uint32(1+i), nil)
		u := "u" + strconv.Itoa(i)
		mustAdd(t, s, "room", "d"+strconv.Itoa(i), u, true)
		mustAdd(t, s, "lobby", "d"+strconv.Itoa(i), "shared", i == 0)
		want = append(want, presence.Departure{Channel: "room", UserID: u})
		names = append(names, s.Name())
		deadNodes[i] = s
	}
	want = append(want, presence.Departure{Channel: "lobby", UserID: "shared"})
	for _, s := range deadNodes {
		s.Kill()
	}
	waitDepartures(t, testLease+2*time.Second, want, hs...)
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		if claims[n] != 1 {
			t.Errorf("dead node %s claimed %d times, want 1", n, claims[n])
		}
	}
	if len(claims) != dead {
		t.Errorf("claims %v, want the %d dead nodes only", claims, dead)
	}
}

// TestRedisClusterSpreadsChannels runs the engine's every script against a Redis
// Cluster with channel and app names whose hash tags land on different masters.
func TestRedisClusterSpreadsChannels(t *testing.T) {
	t.Parallel()
	c := redistest.SharedCluster(t)
	e := &env{t: t, client: newClusterClient(t, c.Addrs()), prefix: redistest.Prefix(t)}
	hb := &handler{}
	a, b := e.node(1, nil), e.node(2, hb)
	var want []presence.Departure
	for i := range 30 {
		ch := "app:presence-" + strconv.Itoa(i)
		mustAdd(t, a, ch, "a", "u", true)
		mustSet(t, a, "app"+strconv.Itoa(i), 1, presence.ChannelCount{Channel: "x", Count: 1})
		want = append(want, presence.Departure{Channel: ch, UserID: "u"})
	}
	a.Kill()
	waitDepartures(t, testLease+2*time.Second, want, hb)
	for i := range 30 {
		mustSubs(t, b, "app"+strconv.Itoa(i), "x", 0)
	}
}

func TestRedisRefusesBadTags(t *testing.T) {
	t.Parallel()
	e := sharedEnv(t)
	a := e.node(1, nil)
	if _, err := a.Add(ctx, "", "c", presence.Member{UserID: "u"}, 0); err == nil {
		t.Error("Add to an empty channel name: no error")
	}
	if _, err := a.Add(ctx, "}x", "c", presence.Member{UserID: "u"}, 0); err == nil {
		t.Error("Add to a channel starting with '}': no error")
	}
	if _, err := a.SetSubscriptions(ctx, "", nil); err == nil {
		t.Error("SetSubscriptions of an empty app name: no error")
	}
	// Braces elsewhere are fine: the keys of a channel still share one hash tag.
	mustAdd(t, a, "a{b}c", "c", "u", true)
	mustCount(t, a, "a{b}c", 1)
}

func BenchmarkRedisAddRemove(b *testing.B) {
	client := newClient(b, redistest.Shared(b).Addr)
	s, err := presence.NewRedis(ctx, presence.RedisConfig{Client: client, Prefix: redistest.Prefix(b), NodeID: 1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	// A resident member keeps the channel in the node's set, as in a live channel.
	if _, err := s.Add(ctx, "app:presence-bench", "resident", presence.Member{UserID: "r"}, 0); err != nil {
		b.Fatal(err)
	}
	m := presence.Member{UserID: "u", Info: []byte(`{"name":"Ada"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if first, err := s.Add(ctx, "app:presence-bench", "c1", m, 100); err != nil || !first {
			b.Fatal(first, err)
		}
		if last, err := s.Remove(ctx, "app:presence-bench", "c1", "u"); err != nil || !last {
			b.Fatal(last, err)
		}
	}
}

func BenchmarkRedisSetSubscriptions100(b *testing.B) {
	client := newClient(b, redistest.Shared(b).Addr)
	s, err := presence.NewRedis(ctx, presence.RedisConfig{Client: client, Prefix: redistest.Prefix(b), NodeID: 1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	counts := [2][]presence.ChannelCount{}
	for i := range 100 {
		ch := "private-ch-" + strconv.Itoa(i)
		counts[0] = append(counts[0], presence.ChannelCount{Channel: ch, Count: 1 + i%3})
		counts[1] = append(counts[1], presence.ChannelCount{Channel: ch, Count: 2 + i%3})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.SetSubscriptions(ctx, "app", counts[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
