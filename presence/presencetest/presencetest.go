// Package presencetest is the conformance suite that every presence.Store engine must
// pass.
//
// The Store contract is synchronous (a call returns after its effect), so the suite
// checks results directly, with no waiting.
package presencetest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/presence"
)

// SeedEnv names the environment variable that replays the randomized case with a given
// seed (the seed is logged when that case fails).
const SeedEnv = "PRESENCETEST_SEED"

// Cluster is a fresh, empty cluster of one engine, as Run's factory makes it.
type Cluster interface {
	// Node starts the node named id ("a", "b", ...: labels of the suite, which an engine
	// may map to node ids of its own) whose store reports to h. The suite calls it once
	// per id and closes every Store it gets.
	Node(id string, h presence.Handler) presence.Store
	// Kill stops s as kill -9 would stop its process: s refuses further calls and gives
	// nothing up. Within CleanupWithin, the cluster removes s's entries and counts and
	// hands the users who thereby left to the Handler of one surviving node, once.
	Kill(s presence.Store)
	// CleanupWithin bounds how long the cluster takes to remove a dead node's share, and
	// to drop it from Nodes.
	CleanupWithin() time.Duration
	// DepartureGrace is the grace the cluster's stores were made with (keep it short,
	// a few hundred milliseconds: the suite waits it out).
	DepartureGrace() time.Duration
}

// Run runs the suite. newCluster is called once per subtest and returns a fresh, empty
// cluster; whatever it holds besides the Stores is for newCluster to clean up with
// t.Cleanup.
func Run(t *testing.T, newCluster func(t *testing.T) Cluster) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, c *cluster)
	}{
		{"FirstLastOneUserTwoConnections", testOneUserTwoConns},
		{"TwoUsers", testTwoUsers},
		{"SameUserOnTwoNodes", testTwoNodes},
		{"MembersDistinctInfoUnchanged", testMembers},
		{"RandomAgainstModel", testModel},
		{"MaxMembers", testMaxMembers},
		{"JoinIsAddThenMembers", testJoin},
		{"DepartureGrace", testDepartureGrace},
		{"VacancyGrace", testVacancyGrace},
		{"Idempotent", testIdempotent},
		{"EmptyChannel", testEmpty},
		{"Concurrent", testConcurrent},
		{"ConcurrentSameUser", testConcurrentSameUser},
		{"Close", testClose},
		{"CancelledContext", testCancelledContext},
		{"SubscriptionsSumOverNodes", testSubscriptions},
		{"SubscriptionsRefuseNegative", testSubscriptionsNegative},
		{"SubscriptionsPerApp", testSubscriptionsPerApp},
		{"ChannelsPrefix", testChannelsPrefix},
		{"TransitionsOnceUnderConcurrency", testTransitionsOnce},
		{"KilledNodeCleanedUp", testKilledNode},
		{"Nodes", testNodes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &cluster{t: t, c: newCluster(t)})
		})
	}
}

type cluster struct {
	t *testing.T
	c Cluster
}

// node starts node id with a recording Handler and closes it when the test ends. A
// node that was never killed must never be reset: its entries were lost.
func (c *cluster) node(id string) *node {
	c.t.Helper()
	h := &recorder{}
	s := c.c.Node(id, h)
	if s == nil {
		c.t.Fatalf("factory returned a nil Store for node %q", id)
	}
	n := &node{t: c.t, id: id, s: s, h: h}
	c.t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil && !errors.Is(err, presence.ErrClosed) {
			c.t.Errorf("node %s: Close: %v", id, err)
		}
		if r := h.resetCount(); r != 0 {
			c.t.Errorf("node %s: HandleReset called %d times on a healthy node", id, r)
		}
	})
	return n
}

// eventually polls check until it returns nil or within has passed, then fails the
// test with check's last error.
func (c *cluster) eventually(within time.Duration, what string, check func() error) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a Handler that keeps what it gets.
type recorder struct {
	mu      sync.Mutex
	deps    []presence.Departure
	vacated []presence.Transition
	resets  int
}

func (r *recorder) HandleVacated(ts []presence.Transition) {
	r.mu.Lock()
	r.vacated = append(r.vacated, ts...)
	r.mu.Unlock()
}

func (r *recorder) vacancies() []presence.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.vacated)
}

func (r *recorder) HandleDepartures(deps []presence.Departure) {
	r.mu.Lock()
	r.deps = append(r.deps, deps...)
	r.mu.Unlock()
}

func (r *recorder) HandleReset() {
	r.mu.Lock()
	r.resets++
	r.mu.Unlock()
}

func (r *recorder) departures() []presence.Departure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deps)
}

func (r *recorder) resetCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resets
}

// node wraps a Store with calls that fail the test on error.
type node struct {
	t  *testing.T
	id string
	s  presence.Store
	h  *recorder
}

func (n *node) add(channel, conn, userID string, want bool) {
	n.t.Helper()
	n.addInfo(channel, conn, presence.Member{UserID: userID}, 0, want)
}

func (n *node) addInfo(channel, conn string, m presence.Member, maxMembers int, want bool) {
	n.t.Helper()
	first, err := n.s.Add(context.Background(), channel, conn, m, maxMembers)
	if err != nil {
		n.t.Fatalf("node %s: Add(%q, %q, %q, %d): %v", n.id, channel, conn, m.UserID, maxMembers, err)
	}
	if first != want {
		n.t.Fatalf("node %s: Add(%q, %q, %q): first=%v, want %v", n.id, channel, conn, m.UserID, first, want)
	}
}

func (n *node) remove(channel, conn, userID string, want bool) {
	n.t.Helper()
	last, err := n.s.Remove(context.Background(), channel, conn, userID)
	if err != nil {
		n.t.Fatalf("node %s: Remove(%q, %q, %q): %v", n.id, channel, conn, userID, err)
	}
	if last != want {
		n.t.Fatalf("node %s: Remove(%q, %q, %q): last=%v, want %v", n.id, channel, conn, userID, last, want)
	}
}

func (n *node) members(channel string) []presence.Member {
	n.t.Helper()
	ms, err := n.s.Members(context.Background(), channel)
	if err != nil {
		n.t.Fatalf("node %s: Members(%q): %v", n.id, channel, err)
	}
	return ms
}

func (n *node) count(channel string) int {
	n.t.Helper()
	c, err := n.s.Count(context.Background(), channel)
	if err != nil {
		n.t.Fatalf("node %s: Count(%q): %v", n.id, channel, err)
	}
	return c
}

// expect checks Count and the set of Members' user ids of channel.
func (n *node) expect(channel string, users ...string) {
	n.t.Helper()
	if got := n.count(channel); got != len(users) {
		n.t.Errorf("node %s: Count(%q) = %d, want %d", n.id, channel, got, len(users))
	}
	got := ids(n.members(channel))
	want := slices.Sorted(slices.Values(users))
	if !slices.Equal(got, want) {
		n.t.Errorf("node %s: Members(%q) = %q, want %q", n.id, channel, got, want)
	}
}

// ids returns the sorted user ids of ms, duplicates kept (they are a failure).
func ids(ms []presence.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.UserID
	}
	slices.Sort(out)
	return out
}

func testOneUserTwoConns(t *testing.T, c *cluster) {
	a := c.node("a")
	a.add("room", "c1", "u1", true)
	a.add("room", "c2", "u1", false)
	a.expect("room", "u1")
	a.remove("room", "c1", "u1", false)
	a.expect("room", "u1")
	a.remove("room", "c2", "u1", true)
	a.expect("room")
	// Gone means gone: the next connection is first again.
	a.add("room", "c3", "u1", true)
	a.expect("room", "u1")
}

func testTwoUsers(t *testing.T, c *cluster) {
	a := c.node("a")
	a.add("room", "c1", "u1", true)
	a.add("room", "c2", "u2", true)
	a.add("room", "c3", "u2", false)
	a.expect("room", "u1", "u2")
	a.remove("room", "c1", "u1", true)
	a.expect("room", "u2")
	a.remove("room", "c2", "u2", false)
	a.remove("room", "c3", "u2", true)
	a.expect("room")
	// Channels are independent.
	a.add("room", "c1", "u1", true)
	a.add("other", "c1", "u1", true)
	a.remove("other", "c1", "u1", true)
	a.expect("room", "u1")
	a.expect("other")
}

// testTwoNodes: first and last are cluster-wide, not per node.
func testTwoNodes(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	a.add("room", "ca", "u1", true)
	b.add("room", "cb", "u1", false)
	a.expect("room", "u1")
	b.expect("room", "u1")
	a.remove("room", "ca", "u1", false)
	b.expect("room", "u1")
	b.remove("room", "cb", "u1", true)
	a.expect("room")
	b.expect("room")

	b.add("room", "cb2", "u2", true)
	a.add("room", "ca2", "u3", true)
	a.expect("room", "u2", "u3")
	b.expect("room", "u2", "u3")
}

func testMembers(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	infos := map[string]raw{
		"u1": raw(`{"name":"Ada","tags":["a","b"],"n":1.5e3}`),
		"u2": raw(`{"name":"Zoë 世界 \ud83d\ude00","esc":"\"\\u0000\""}`),
		"u3": nil,
		"u4": raw(`"just a string"`),
		"u5": raw(` { "spaced" : true } `),
	}
	buf := make([]byte, 0, 256)
	for id, info := range infos {
		// The caller's buffer is reused for every Add: a store must keep a copy.
		buf = append(buf[:0], info...)
		m := presence.Member{UserID: id}
		if info != nil {
			m.Info = buf
		}
		a.addInfo("room", "a-"+id, m, 0, true)
		// A second connection on another node, with the same info, adds no member.
		b.addInfo("room", "b-"+id, presence.Member{UserID: id, Info: []byte(info)}, 0, false)
	}
	for i := range buf {
		buf[i] = 'X'
	}
	check := func(ms []presence.Member) {
		t.Helper()
		if got := ids(ms); !slices.Equal(got, []string{"u1", "u2", "u3", "u4", "u5"}) {
			t.Fatalf("Members ids = %q, want u1..u5 once each", got)
		}
		for _, m := range ms {
			if want := infos[m.UserID]; !bytes.Equal(m.Info, want) {
				t.Errorf("Members: %s has info %q, want %q", m.UserID, m.Info, want)
			}
		}
	}
	ms := a.members("room")
	check(ms)
	// The caller owns what Members returns: writing into it changes nothing stored.
	for _, m := range ms {
		for i := range m.Info {
			m.Info[i] = 'Y'
		}
	}
	check(b.members("room"))

	// With different infos per connection, the member has one of them.
	a.addInfo("room2", "c1", presence.Member{UserID: "u", Info: raw(`{"tab":1}`)}, 0, true)
	b.addInfo("room2", "c2", presence.Member{UserID: "u", Info: raw(`{"tab":2}`)}, 0, false)
	ms = a.members("room2")
	if len(ms) != 1 || (string(ms[0].Info) != `{"tab":1}` && string(ms[0].Info) != `{"tab":2}`) {
		t.Errorf("Members(room2) = %q, want u with one of its connections' infos", ms)
	}
}

// raw is a short name for JSON test data.
type raw = []byte

// testModel drives a random sequence of adds and removes from two nodes over two
// channels and checks every result against a plain model.
func testModel(t *testing.T, c *cluster) {
	const (
		ops     = 2000
		users   = 20
		conns   = 50
		maxUser = 15 // the limit used by a third of the adds
	)
	seed := rand.Uint64()
	if s := os.Getenv(SeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", SeedEnv, s, err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with %s=%d", SeedEnv, seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nodes := []*node{c.node("a"), c.node("b")}
	channels := []string{"room-0", "room-1"}
	// model: channel → user → set of conns. A connection always belongs to the same user,
	// and is always added from the same node, as in the hub.
	model := map[string]map[string]map[string]bool{}
	ctx := context.Background()
	for i := range ops {
		channel := channels[rng.IntN(len(channels))]
		conn := rng.IntN(conns)
		connID := "c" + strconv.Itoa(conn)
		userID := "u" + strconv.Itoa(conn%users)
		n := nodes[conn/users%len(nodes)] // a user has connections on both nodes
		present := model[channel][userID]
		if rng.IntN(2) == 0 {
			limit := 0
			if rng.IntN(3) == 0 {
				limit = maxUser
			}
			wantFull := present == nil && limit > 0 && len(model[channel]) >= limit
			wantFirst := present == nil && !wantFull
			first, err := n.s.Add(ctx, channel, connID, presence.Member{UserID: userID}, limit)
			switch {
			case wantFull && !errors.Is(err, presence.ErrFull):
				t.Fatalf("op %d: Add(%s, %s, %s, %d) with %d users: err=%v, want ErrFull", i, channel, connID, userID, limit, len(model[channel]), err)
			case !wantFull && err != nil:
				t.Fatalf("op %d: Add(%s, %s, %s, %d): %v", i, channel, connID, userID, limit, err)
			case first != wantFirst:
				t.Fatalf("op %d: Add(%s, %s, %s): first=%v, want %v", i, channel, connID, userID, first, wantFirst)
			}
			if !wantFull {
				if model[channel] == nil {
					model[channel] = map[string]map[string]bool{}
				}
				if present == nil {
					present = map[string]bool{}
					model[channel][userID] = present
				}
				present[connID] = true
			}
		} else {
			wantLast := present[connID] && len(present) == 1
			last, err := n.s.Remove(ctx, channel, connID, userID)
			if err != nil {
				t.Fatalf("op %d: Remove(%s, %s, %s): %v", i, channel, connID, userID, err)
			}
			if last != wantLast {
				t.Fatalf("op %d: Remove(%s, %s, %s): last=%v, want %v", i, channel, connID, userID, last, wantLast)
			}
			delete(present, connID)
			if len(present) == 0 {
				delete(model[channel], userID)
			}
		}
		// Check the channel just touched through the other node.
		other := nodes[(conn/users+1)%len(nodes)]
		want := make([]string, 0, len(model[channel]))
		for u := range model[channel] {
			want = append(want, u)
		}
		slices.Sort(want)
		if got := other.count(channel); got != len(want) {
			t.Fatalf("op %d: Count(%s) = %d, want %d", i, channel, got, len(want))
		}
		if got := ids(other.members(channel)); !slices.Equal(got, want) {
			t.Fatalf("op %d: Members(%s) = %q, want %q", i, channel, got, want)
		}
	}
}

func testMaxMembers(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	const limit = 2
	a.addInfo("room", "c1", presence.Member{UserID: "u1"}, limit, true)
	b.addInfo("room", "c2", presence.Member{UserID: "u2"}, limit, true)
	for _, n := range []*node{a, b} {
		first, err := n.s.Add(context.Background(), "room", "c3", presence.Member{UserID: "u3"}, limit)
		if !errors.Is(err, presence.ErrFull) || first {
			t.Fatalf("node %s: third user in a channel of %d: first=%v err=%v, want ErrFull", n.id, limit, first, err)
		}
	}
	a.expect("room", "u1", "u2") // ErrFull recorded nothing
	// A present user's new connection is always accepted, even at the limit.
	b.addInfo("room", "c4", presence.Member{UserID: "u1"}, limit, false)
	a.addInfo("room", "c5", presence.Member{UserID: "u2"}, 1, false)
	a.expect("room", "u1", "u2")
	// ErrFull recorded nothing: removing the refused connection is not a "last".
	a.remove("room", "c3", "u3", false)
	// Room frees up: the refused user gets in.
	a.remove("room", "c2", "u2", false)
	a.remove("room", "c5", "u2", true)
	a.addInfo("room", "c3", presence.Member{UserID: "u3"}, limit, true)
	a.expect("room", "u1", "u3")
	// The limit is per channel, and zero or negative means none.
	for i := range 50 {
		a.addInfo("big", "c"+strconv.Itoa(i), presence.Member{UserID: "u" + strconv.Itoa(i)}, 0, true)
	}
	a.addInfo("big", "c-neg", presence.Member{UserID: "u-neg"}, -1, true)
	if got := a.count("big"); got != 51 {
		t.Errorf("Count(big) = %d, want 51", got)
	}
}

func testIdempotent(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	a.add("room", "c1", "u1", true)
	a.add("room", "c1", "u1", false) // the same connection again
	b.add("room", "c1", "u1", false) // even through another node
	a.expect("room", "u1")
	a.remove("room", "c-unknown", "u1", false) // unknown connection of a present user
	a.remove("room", "c1", "u-unknown", false) // unknown user
	a.remove("room-unknown", "c1", "u1", false)
	a.expect("room", "u1")
	a.remove("room", "c1", "u1", true) // one Remove undoes the repeated Adds
	a.remove("room", "c1", "u1", false)
	a.expect("room")
	// A known connection at the limit is still a no-op, not ErrFull.
	a.addInfo("full", "c1", presence.Member{UserID: "u1"}, 1, true)
	a.addInfo("full", "c1", presence.Member{UserID: "u1"}, 1, false)
}

func testEmpty(t *testing.T, c *cluster) {
	a := c.node("a")
	a.expect("never-used")
	a.add("room", "c1", "u1", true)
	a.remove("room", "c1", "u1", true)
	a.expect("room")
	if ms := a.members("room"); len(ms) != 0 {
		t.Errorf("Members of an emptied channel = %q, want none", ms)
	}
}

// testConcurrent: goroutines on two nodes add and remove their own users in shared
// channels while others read; every result is what the goroutine alone predicts, and the
// channels end empty.
func testConcurrent(t *testing.T, c *cluster) {
	const workers, rounds = 8, 50
	nodes := []*node{c.node("a"), c.node("b")}
	channels := []string{"room-0", "room-1", "room-2"}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range workers {
		n := nodes[w%len(nodes)]
		wg.Go(func() {
			userID := "u" + strconv.Itoa(w)
			for r := range rounds {
				channel := channels[r%len(channels)]
				c1, c2 := fmt.Sprintf("w%d-r%d-1", w, r), fmt.Sprintf("w%d-r%d-2", w, r)
				steps := []struct {
					add  bool
					conn string
					want bool
				}{{true, c1, true}, {true, c2, false}, {false, c1, false}, {false, c2, true}}
				for _, s := range steps {
					var got bool
					var err error
					if s.add {
						got, err = n.s.Add(ctx, channel, s.conn, presence.Member{UserID: userID, Info: raw(`{}`)}, 0)
					} else {
						got, err = n.s.Remove(ctx, channel, s.conn, userID)
					}
					if err != nil || got != s.want {
						t.Errorf("worker %d round %d: add=%v %s: got %v, %v; want %v", w, r, s.add, s.conn, got, err, s.want)
						return
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for i := range 2 {
		n := nodes[i]
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, ch := range channels {
					cnt, err := n.s.Count(ctx, ch)
					if err != nil || cnt < 0 || cnt > workers {
						t.Errorf("Count(%s) = %d, %v; want 0..%d", ch, cnt, err, workers)
						return
					}
					ms, err := n.s.Members(ctx, ch)
					if err != nil || len(ms) > workers {
						t.Errorf("Members(%s): %d members, %v; want at most %d", ch, len(ms), err, workers)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	for _, ch := range channels {
		nodes[0].expect(ch)
	}
}

// testConcurrentSameUser: connections of one user arriving and leaving at once on
// several nodes yield exactly one first and one last per round, cluster-wide.
func testConcurrentSameUser(t *testing.T, c *cluster) {
	const conns, rounds = 6, 30
	nodes := []*node{c.node("a"), c.node("b"), c.node("c")}
	ctx := context.Background()
	for r := range rounds {
		var firsts, lasts atomic.Int32
		var wg sync.WaitGroup
		for i := range conns {
			n := nodes[i%len(nodes)]
			connID := fmt.Sprintf("r%d-c%d", r, i)
			wg.Go(func() {
				first, err := n.s.Add(ctx, "room", connID, presence.Member{UserID: "u"}, 1)
				if err != nil {
					t.Errorf("Add(%s): %v", connID, err)
				}
				if first {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		for i := range conns {
			n := nodes[(i+1)%len(nodes)]
			connID := fmt.Sprintf("r%d-c%d", r, i)
			wg.Go(func() {
				last, err := n.s.Remove(ctx, "room", connID, "u")
				if err != nil {
					t.Errorf("Remove(%s): %v", connID, err)
				}
				if last {
					lasts.Add(1)
				}
			})
		}
		wg.Wait()
		if firsts.Load() != 1 || lasts.Load() != 1 {
			t.Fatalf("round %d: %d firsts and %d lasts among %d connections of one user, want 1 and 1", r, firsts.Load(), lasts.Load(), conns)
		}
	}
	nodes[0].expect("room")
}

// testClose: a closed Store refuses every call with ErrClosed; the other nodes, and what
// they see, are unaffected.
func testClose(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	a.add("room", "ca", "u1", true)
	b.add("room", "cb", "u2", true)
	if err := a.s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	_, errAdd := a.s.Add(ctx, "room", "ca2", presence.Member{UserID: "u3"}, 0)
	_, errRemove := a.s.Remove(ctx, "room", "ca", "u1")
	_, errMembers := a.s.Members(ctx, "room")
	_, errCount := a.s.Count(ctx, "room")
	_, errSet := a.s.SetSubscriptions(ctx, "app", []presence.ChannelCount{{Channel: "x", Count: 1}})
	_, errSubs := a.s.Subscriptions(ctx, "app", "x")
	_, errChannels := a.s.Channels(ctx, "app", "")
	for name, err := range map[string]error{
		"Add": errAdd, "Remove": errRemove, "Members": errMembers, "Count": errCount,
		"SetSubscriptions": errSet, "Subscriptions": errSubs, "Channels": errChannels,
		"Close": a.s.Close(context.Background()),
	} {
		if !errors.Is(err, presence.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	b.add("room", "cb2", "u4", true)
	b.remove("room", "cb2", "u4", true)
	if got := b.count("room"); got < 1 || got > 2 {
		// u1's entry may or may not outlive its node's Close; u2's must.
		t.Errorf("Count(room) on the open node = %d, want u2 (and maybe u1)", got)
	}
	if !slices.Contains(ids(b.members("room")), "u2") {
		t.Errorf("Members(room) on the open node lost u2")
	}
}

func testCancelledContext(t *testing.T, c *cluster) {
	a := c.node("a")
	a.add("room", "c1", "u1", true)
	a.setSubs("app", []presence.Transition{occ("x")}, cc("x", 1))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel2()
	for _, tc := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		_, errAdd := a.s.Add(tc.ctx, "room", "c2", presence.Member{UserID: "u2"}, 0)
		_, errJoin := a.s.Join(tc.ctx, "room", "c3", presence.Member{UserID: "u3"}, 0)
		_, errConfirmD := a.s.ConfirmDeparture(tc.ctx, "room", "u1")
		_, errConfirmV := a.s.ConfirmVacated(tc.ctx, "app", "x")
		_, errRemove := a.s.Remove(tc.ctx, "room", "c1", "u1")
		_, errMembers := a.s.Members(tc.ctx, "room")
		_, errCount := a.s.Count(tc.ctx, "room")
		_, errSet := a.s.SetSubscriptions(tc.ctx, "app", []presence.ChannelCount{{Channel: "y", Count: 1}})
		_, errSubs := a.s.Subscriptions(tc.ctx, "app", "x")
		_, errChannels := a.s.Channels(tc.ctx, "app", "")
		for name, err := range map[string]error{
			"Add": errAdd, "Join": errJoin, "Remove": errRemove,
			"ConfirmDeparture": errConfirmD, "ConfirmVacated": errConfirmV, "Members": errMembers, "Count": errCount,
			"SetSubscriptions": errSet, "Subscriptions": errSubs, "Channels": errChannels,
		} {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s with a done context: %v, want %v", name, err, tc.want)
			}
		}
	}
	// Checked at entry: neither the Add nor the Remove happened.
	a.expect("room", "u1")
	a.remove("room", "c1", "u1", true)
	a.expectSubs("app", "y", 0)
}

// testJoin: Join decides first as Add does and returns the members with the new one,
// from every node, info unchanged; a full channel refuses a new user with ErrFull and
// records nothing.
func testJoin(t *testing.T, c *cluster) {
	ctx := context.Background()
	a, b := c.node("a"), c.node("b")
	join := func(n *node, conn, user string, max int, wantFirst bool, wantUsers ...string) []presence.Member {
		t.Helper()
		j, err := n.s.Join(ctx, "room", conn, presence.Member{UserID: user, Info: []byte(`{"n":"` + user + `"}`)}, max)
		if err != nil || j.First != wantFirst || j.Returned {
			t.Fatalf("node %s: Join(%s, %s) = %+v, %v; want first=%v, not returned", n.id, conn, user, j, err, wantFirst)
		}
		if got := ids(j.Members); !slices.Equal(got, wantUsers) {
			t.Fatalf("node %s: Join(%s, %s) members %q, want %q", n.id, conn, user, got, wantUsers)
		}
		return j.Members
	}
	join(a, "c1", "u1", 2, true, "u1")
	ms := join(b, "c2", "u2", 2, true, "u1", "u2")
	for _, m := range ms {
		if string(m.Info) != `{"n":"`+m.UserID+`"}` {
			t.Errorf("member %s info %q", m.UserID, m.Info)
		}
	}
	join(b, "c3", "u1", 2, false, "u1", "u2") // another connection of a present user
	join(a, "c1", "u1", 2, false, "u1", "u2") // the same connection again: a no-op
	if j, err := a.s.Join(ctx, "room", "c4", presence.Member{UserID: "u3"}, 2); !errors.Is(err, presence.ErrFull) || j.Members != nil {
		t.Fatalf("Join into a full channel: %+v, %v; want ErrFull and no members", j, err)
	}
	a.expect("room", "u1", "u2")
	a.remove("room", "c1", "u1", false)
	a.remove("room", "c3", "u1", true)
	b.remove("room", "c2", "u2", true)
	a.expect("room")
}

// testDepartureGrace: a user's last Remove leaves a pending departure. A Join within
// the grace cancels it (Returned) and ConfirmDeparture then says it did not stand; one
// without a return stands, once; a Join after the grace is not a return.
func testDepartureGrace(t *testing.T, c *cluster) {
	ctx := context.Background()
	a, b := c.node("a"), c.node("b")
	grace := c.c.DepartureGrace()
	join := func(n *node, conn, user string, wantFirst, wantReturned, wantDeparted bool) {
		t.Helper()
		j, err := n.s.Join(ctx, "room", conn, presence.Member{UserID: user}, 0)
		if err != nil || j.First != wantFirst || j.Returned != wantReturned || j.Departed != wantDeparted {
			t.Fatalf("node %s: Join(%s, %s) = %+v, %v; want first=%v returned=%v departed=%v",
				n.id, conn, user, j, err, wantFirst, wantReturned, wantDeparted)
		}
	}
	confirm := func(n *node, user string, want bool) {
		t.Helper()
		got, err := n.s.ConfirmDeparture(ctx, "room", user)
		if err != nil || got != want {
			t.Fatalf("node %s: ConfirmDeparture(%s) = %v, %v; want %v", n.id, user, got, err, want)
		}
	}
	// A page reload: leave on a, come back on b within the grace.
	join(a, "a1", "reload", true, false, false)
	a.remove("room", "a1", "reload", true)
	join(b, "b1", "reload", true, true, false)
	time.Sleep(grace)
	confirm(a, "reload", false)
	// A real departure stands, once.
	join(a, "a2", "gone", true, false, false)
	a.remove("room", "a2", "gone", true)
	time.Sleep(grace)
	confirm(a, "gone", true)
	confirm(b, "gone", false)
	// Back after the grace, its departure not settled yet: the Join settles it (the
	// departure stood, and the joining node reports it), the late confirmation does not.
	join(a, "a3", "late", true, false, false)
	a.remove("room", "a3", "late", true)
	time.Sleep(grace + grace/2)
	join(b, "b3", "late", true, false, true)
	confirm(a, "late", false)
	// Another connection of a present user neither returns nor settles anything.
	join(a, "a4", "reload", false, false, false)
	// A removal that is not the last leaves nothing pending.
	a.remove("room", "a4", "reload", false)
	confirm(a, "reload", false)
}

// testVacancyGrace: a vacancy is pending; an occupation within the grace is Returned
// and the vacancy does not stand; one without stands, once.
func testVacancyGrace(t *testing.T, c *cluster) {
	ctx := context.Background()
	a, b := c.node("a"), c.node("b")
	grace := c.c.DepartureGrace()
	confirm := func(n *node, ch string, want bool) {
		t.Helper()
		got, err := n.s.ConfirmVacated(ctx, "app", ch)
		if err != nil || got != want {
			t.Fatalf("node %s: ConfirmVacated(%s) = %v, %v; want %v", n.id, ch, got, err, want)
		}
	}
	ret := func(ch string) presence.Transition {
		return presence.Transition{App: "app", Channel: ch, Occupied: true, Returned: true}
	}
	a.setSubs("app", []presence.Transition{occ("flap"), occ("gone")}, cc("flap", 1), cc("gone", 1))
	a.setSubs("app", []presence.Transition{vac("flap"), vac("gone")}, cc("flap", 0), cc("gone", 0))
	b.setSubs("app", []presence.Transition{ret("flap")}, cc("flap", 2))
	time.Sleep(grace)
	confirm(a, "flap", false)
	confirm(a, "gone", true)
	confirm(b, "gone", false)
	// Occupied after the grace, the vacancy not settled yet: the occupation settles it
	// (Vacated: it stood, and the occupying node reports it), the late confirmation
	// does not.
	b.setSubs("app", []presence.Transition{vac("flap")}, cc("flap", 0))
	time.Sleep(grace + grace/2)
	a.setSubs("app", []presence.Transition{{App: "app", Channel: "flap", Occupied: true, Vacated: true}}, cc("flap", 1))
	confirm(b, "flap", false)
}

// --- subscription counts ---------------------------------------------------------------

// cc is a short name for a ChannelCount.
func cc(channel string, n int) presence.ChannelCount {
	return presence.ChannelCount{Channel: channel, Count: n}
}

// occ and vac are short names for transitions of app "app".
func occ(channel string) presence.Transition {
	return presence.Transition{App: "app", Channel: channel, Occupied: true}
}

func vac(channel string) presence.Transition {
	return presence.Transition{App: "app", Channel: channel, Occupied: false}
}

// setSubs reports counts and checks the transitions, in any order.
func (n *node) setSubs(app string, want []presence.Transition, counts ...presence.ChannelCount) {
	n.t.Helper()
	rep, err := n.s.SetSubscriptions(context.Background(), app, counts)
	if err != nil {
		n.t.Fatalf("node %s: SetSubscriptions(%s, %v): %v", n.id, app, counts, err)
	}
	if got := rep.Transitions; !slices.Equal(sortedTransitions(got), sortedTransitions(want)) {
		n.t.Fatalf("node %s: SetSubscriptions(%s, %v) = %v, want %v", n.id, app, counts, got, want)
	}
	// Counts are the new totals of the channels whose count on this node changed (a
	// channel given twice in one report, as often as it changed: the last one holds).
	last := make(map[string]int)
	for _, c := range rep.Counts {
		last[c.Channel] = c.Count
	}
	for ch, n0 := range last {
		total, err := n.s.Subscriptions(context.Background(), app, ch)
		if err != nil || total != n0 {
			n.t.Fatalf("node %s: SetSubscriptions(%s, %v) says %s is at %d; Subscriptions says %d, %v", n.id, app, counts, ch, n0, total, err)
		}
	}
}

func sortedTransitions(ts []presence.Transition) []presence.Transition {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b presence.Transition) int {
		return cmp.Or(cmp.Compare(a.App, b.App), cmp.Compare(a.Channel, b.Channel), boolCmp(a.Occupied, b.Occupied))
	})
	return out
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func (n *node) expectSubs(app, channel string, want int) {
	n.t.Helper()
	got, err := n.s.Subscriptions(context.Background(), app, channel)
	if err != nil {
		n.t.Fatalf("node %s: Subscriptions(%s, %s): %v", n.id, app, channel, err)
	}
	if got != want {
		n.t.Errorf("node %s: Subscriptions(%s, %s) = %d, want %d", n.id, app, channel, got, want)
	}
}

// expectChannels checks Channels(app, prefix), in any order.
func (n *node) expectChannels(app, prefix string, want ...presence.ChannelCount) {
	n.t.Helper()
	got, err := n.s.Channels(context.Background(), app, prefix)
	if err != nil {
		n.t.Fatalf("node %s: Channels(%s, %q): %v", n.id, app, prefix, err)
	}
	byName := func(a, b presence.ChannelCount) int { return cmp.Compare(a.Channel, b.Channel) }
	got = slices.SortedFunc(slices.Values(got), byName)
	want = slices.SortedFunc(slices.Values(want), byName)
	if !slices.Equal(got, want) {
		n.t.Errorf("node %s: Channels(%s, %q) = %v, want %v", n.id, app, prefix, got, want)
	}
}

// testSubscriptions: counts are per node and absolute; totals are their sums; zero
// removes; each transition from or to zero is reported once, to the node that caused it.
func testSubscriptions(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	a.expectSubs("app", "x", 0)
	a.expectChannels("app", "")
	a.setSubs("app", []presence.Transition{occ("x"), occ("y")}, cc("x", 2), cc("y", 1))
	b.setSubs("app", nil, cc("x", 3))
	for _, n := range []*node{a, b} {
		n.expectSubs("app", "x", 5)
		n.expectSubs("app", "y", 1)
		n.expectSubs("app", "never", 0)
	}
	// Absolute numbers: the same report again changes nothing; another replaces.
	a.setSubs("app", nil, cc("x", 2), cc("y", 1))
	b.expectSubs("app", "x", 5)
	a.setSubs("app", nil, cc("x", 4))
	b.expectSubs("app", "x", 7)
	a.expectChannels("app", "", cc("x", 7), cc("y", 1))
	// Zero removes a node's share; the last share's removal vacates the channel.
	a.setSubs("app", nil, cc("x", 0))
	b.expectSubs("app", "x", 3)
	b.setSubs("app", []presence.Transition{vac("x")}, cc("x", 0))
	a.expectSubs("app", "x", 0)
	b.setSubs("app", nil, cc("x", 0)) // zero on zero: nothing
	b.setSubs("app", nil)             // nothing at all
	a.expectChannels("app", "", cc("y", 1))
	// A channel may become occupied again, through any node.
	// Back within the grace of its vacancy: Returned (see testVacancyGrace).
	b.setSubs("app", []presence.Transition{{App: "app", Channel: "x", Occupied: true, Returned: true}}, cc("x", 1))
	a.setSubs("app", []presence.Transition{vac("y")}, cc("y", 0))
	b.setSubs("app", []presence.Transition{vac("x")}, cc("x", 0))
	a.expectChannels("app", "")
	// Within one report, the last count of a channel is the node's count.
	a.setSubs("app", []presence.Transition{occ("z")}, cc("z", 5), cc("z", 2))
	b.expectSubs("app", "z", 2)
	// Counts lists the channels whose count on the node changed, with their totals.
	rep, err := a.s.SetSubscriptions(context.Background(), "app", []presence.ChannelCount{cc("z", 2), cc("q", 0), cc("w", 4)})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(rep.Counts, func(x, y presence.ChannelCount) int { return cmp.Compare(x.Channel, y.Channel) })
	if want := []presence.ChannelCount{cc("w", 4)}; !slices.Equal(rep.Counts, want) {
		t.Errorf("SetSubscriptions counts = %v, want %v (the changed channels, with their totals)", rep.Counts, want)
	}
}

// testSubscriptionsNegative: a negative count is refused, and the report records nothing.
func testSubscriptionsNegative(t *testing.T, c *cluster) {
	a := c.node("a")
	if _, err := a.s.SetSubscriptions(context.Background(), "app", []presence.ChannelCount{cc("x", 1), cc("y", -1)}); err == nil {
		t.Fatal("SetSubscriptions with a negative count: no error")
	}
	a.expectSubs("app", "x", 0)
	a.expectChannels("app", "")
}

// testSubscriptionsPerApp: the same channel name in two apps is two channels.
func testSubscriptionsPerApp(t *testing.T, c *cluster) {
	a, b := c.node("a"), c.node("b")
	a.setSubs("app1", []presence.Transition{{App: "app1", Channel: "x", Occupied: true}}, cc("x", 1))
	b.setSubs("app2", []presence.Transition{
		{App: "app2", Channel: "x", Occupied: true}, {App: "app2", Channel: "y", Occupied: true},
	}, cc("x", 2), cc("y", 1))
	a.expectSubs("app1", "x", 1)
	a.expectSubs("app2", "x", 2)
	a.expectSubs("app1", "y", 0)
	b.expectChannels("app1", "", cc("x", 1))
	b.expectChannels("app2", "", cc("x", 2), cc("y", 1))
	b.expectChannels("app3", "")
	a.setSubs("app1", []presence.Transition{{App: "app1", Channel: "x", Occupied: false}}, cc("x", 0))
	a.expectSubs("app2", "x", 2)
	a.expectChannels("app1", "")
}

// testChannelsPrefix: Channels filters on a plain prefix; characters that patterns give a
// meaning to are matched as themselves.
func testChannelsPrefix(t *testing.T, c *cluster) {
	a := c.node("a")
	all := []presence.ChannelCount{
		cc("presence-room", 1), cc("presence-lobby", 2), cc("private-x", 3), cc("pre", 4),
		cc("a*b", 5), cc("a?c", 6), cc("a[b]", 7), cc(`a\b`, 8), cc("ab", 9), cc("axb", 10),
	}
	want := make([]presence.Transition, len(all))
	for i, ch := range all {
		want[i] = occ(ch.Channel)
	}
	a.setSubs("app", want, all...)
	a.expectChannels("app", "", all...)
	a.expectChannels("app", "presence-", all[0], all[1])
	a.expectChannels("app", "pre", all[0], all[1], all[3])
	a.expectChannels("app", "private-x", all[2])
	a.expectChannels("app", "a*", all[4])
	a.expectChannels("app", "a?", all[5])
	a.expectChannels("app", "a[", all[6])
	a.expectChannels("app", "a[b]", all[6])
	a.expectChannels("app", `a\`, all[7])
	a.expectChannels("app", "zzz")
	a.expectChannels("app", "presence-room-and-more")
}

// testTransitionsOnce: nodes reporting the same channels at once see each transition
// from and to zero exactly once between them.
func testTransitionsOnce(t *testing.T, c *cluster) {
	const nodes, channels, rounds = 4, 20, 5
	ns := make([]*node, nodes)
	for i := range ns {
		ns[i] = c.node(string(rune('a' + i)))
	}
	names := make([]string, channels)
	for i := range names {
		names[i] = "ch-" + strconv.Itoa(i)
	}
	ctx := context.Background()
	// phase has every node report count(i) for every channel, in two reports each, in
	// an order of its own, all at once; it returns the transitions seen.
	phase := func(count func(i int) int) []presence.Transition {
		var mu sync.Mutex
		var seen []presence.Transition
		var wg sync.WaitGroup
		for i, n := range ns {
			wg.Go(func() {
				order := slices.Clone(names)
				rand.Shuffle(len(order), func(x, y int) { order[x], order[y] = order[y], order[x] })
				for _, half := range [][]string{order[:channels/2], order[channels/2:]} {
					counts := make([]presence.ChannelCount, len(half))
					for j, ch := range half {
						counts[j] = cc(ch, count(i))
					}
					rep, err := n.s.SetSubscriptions(ctx, "app", counts)
					ts := rep.Transitions
					if err != nil {
						t.Errorf("node %s: SetSubscriptions: %v", n.id, err)
						return
					}
					mu.Lock()
					seen = append(seen, ts...)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return sortedTransitions(seen)
	}
	wantOcc := make([]presence.Transition, channels)
	wantVac := make([]presence.Transition, channels)
	for i, ch := range names {
		wantOcc[i], wantVac[i] = occ(ch), vac(ch)
	}
	wantOcc, wantVac = sortedTransitions(wantOcc), sortedTransitions(wantVac)
	// Whether an occupation came within the grace of the channel's vacancy depends on
	// the machine's speed here; testVacancyGrace checks Returned.
	occupying := func(r int) []presence.Transition {
		got := phase(func(i int) int { return i + 1 + r })
		for i := range got {
			got[i].Returned, got[i].Vacated = false, false
		}
		return got
	}
	for r := range rounds {
		if got := occupying(r); !slices.Equal(got, wantOcc) {
			t.Fatalf("round %d: occupying: transitions %v, want each channel occupied once", r, got)
		}
		sum := 0
		for i := range nodes {
			sum += i + 1 + r
		}
		ns[0].expectSubs("app", names[channels-1], sum)
		if got := phase(func(int) int { return 0 }); !slices.Equal(got, wantVac) {
			t.Fatalf("round %d: vacating: transitions %v, want each channel vacated once", r, got)
		}
		ns[1].expectChannels("app", "")
	}
}

// --- dead nodes ----------------------------------------------------------------------

// settle is how long the suite keeps watching for duplicate departures after the
// expected ones arrived.
func (c *cluster) settle() time.Duration {
	if c.c.CleanupWithin() == 0 {
		return 0
	}
	return 500 * time.Millisecond
}

// testKilledNode: a node that dies without a word loses its entries and its counts
// within the cluster's bound, and the users who thereby left are reported once, to
// one surviving node.
func testKilledNode(t *testing.T, c *cluster) {
	a, b, d := c.node("a"), c.node("b"), c.node("d")
	a.add("room", "a1", "only-a", true)
	a.add("room", "a2", "both", true)
	b.add("room", "b1", "both", false)
	b.add("room", "b2", "only-b", true)
	a.add("lobby", "a3", "only-a", true)
	a.add("lobby", "a4", "two-on-a", true)
	a.add("lobby", "a5", "two-on-a", false)
	a.setSubs("app", []presence.Transition{occ("x"), occ("shared")}, cc("x", 2), cc("shared", 1))
	b.setSubs("app", nil, cc("shared", 3))
	a.setSubs("app2", []presence.Transition{{App: "app2", Channel: "x", Occupied: true}}, cc("x", 5))
	// Nodes is as the node last saw it: wait until b sees all three.
	var nodesBefore int
	c.eventually(c.c.CleanupWithin(), "b listing a, b and d", func() error {
		if nodesBefore = len(b.s.Nodes()); nodesBefore < 3 {
			return fmt.Errorf("b lists %v", b.s.Nodes())
		}
		return nil
	})

	c.c.Kill(a.s)
	if _, err := a.s.Add(context.Background(), "room", "a9", presence.Member{UserID: "late"}, 0); err == nil {
		t.Errorf("Add on a killed node: no error")
	}
	want := []presence.Departure{
		{Channel: "lobby", UserID: "only-a"},
		{Channel: "lobby", UserID: "two-on-a"},
		{Channel: "room", UserID: "only-a"},
	}
	survivors := []*node{b, d}
	departures := func() []presence.Departure {
		var all []presence.Departure
		for _, n := range survivors {
			all = append(all, n.h.departures()...)
		}
		slices.SortFunc(all, func(x, y presence.Departure) int {
			return cmp.Or(cmp.Compare(x.Channel, y.Channel), cmp.Compare(x.UserID, y.UserID))
		})
		return all
	}
	within := c.c.CleanupWithin()
	c.eventually(within, "departures of the killed node", func() error {
		if got := departures(); len(got) < len(want) {
			return fmt.Errorf("departures %v so far, want %v", got, want)
		}
		return nil
	})
	time.Sleep(c.settle())
	if got := departures(); !slices.Equal(got, want) {
		t.Errorf("departures = %v, want %v, each once", got, want)
	}
	holders := 0
	for _, n := range survivors {
		if len(n.h.departures()) > 0 {
			holders++
		}
	}
	if holders != 1 {
		t.Errorf("%d surviving nodes got departures, want 1", holders)
	}
	var vacated []presence.Transition
	for _, n := range survivors {
		vacated = append(vacated, n.h.vacancies()...)
	}
	wantVac := sortedTransitions([]presence.Transition{vac("x"), {App: "app2", Channel: "x"}})
	if got := sortedTransitions(vacated); !slices.Equal(got, wantVac) {
		t.Errorf("vacancies reported = %v, want %v, each once", got, wantVac)
	}
	b.expect("room", "both", "only-b")
	d.expect("lobby")
	b.expectSubs("app", "x", 0)
	b.expectSubs("app", "shared", 3)
	d.expectChannels("app", "", cc("shared", 3))
	d.expectChannels("app2", "")
	// The users left standing are intact: b's connection of "both" is now its last.
	b.remove("room", "b1", "both", true)
	c.eventually(within, "the killed node's leaving Nodes", func() error {
		if got := len(b.s.Nodes()); got != nodesBefore-1 {
			return fmt.Errorf("%d nodes, want %d", got, nodesBefore-1)
		}
		return nil
	})
}

// testNodes: Nodes lists the live nodes, each once, and drops a closed one.
func testNodes(t *testing.T, c *cluster) {
	a, b, d := c.node("a"), c.node("b"), c.node("d")
	within := c.c.CleanupWithin()
	var names []string
	c.eventually(within, "every node listing the three", func() error {
		for _, n := range []*node{a, b, d} {
			nodes := n.s.Nodes()
			names = names[:0]
			for _, x := range nodes {
				if x.Name == "" {
					return fmt.Errorf("node %s: Nodes() = %v has an empty name", n.id, nodes)
				}
				names = append(names, x.Name)
			}
			slices.Sort(names)
			if len(slices.Compact(slices.Clone(names))) != len(names) {
				return fmt.Errorf("node %s: Nodes() = %v lists a node twice", n.id, nodes)
			}
			if len(names) < 3 {
				return fmt.Errorf("node %s: Nodes() = %v, want at least a, b and d", n.id, nodes)
			}
		}
		return nil
	})
	before := len(a.s.Nodes())
	if err := d.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.eventually(within, "the closed node's leaving Nodes", func() error {
		if got := len(a.s.Nodes()); got != before-1 {
			return fmt.Errorf("%d nodes, want %d", got, before-1)
		}
		return nil
	})
}
