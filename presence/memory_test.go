package presence_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/presence/presencetest"
)

func TestMemoryConformance(t *testing.T) {
	presencetest.Run(t, func(t *testing.T) presencetest.Cluster {
		m := presence.NewMemory()
		m.DepartureGrace = testGrace
		return &memoryCluster{m: m}
	})
}

// TestMemoryLocalConformance runs the suite with a zero Memory serving node "a" itself,
// so that its own methods are covered and not only the views'.
func TestMemoryLocalConformance(t *testing.T) {
	presencetest.Run(t, func(t *testing.T) presencetest.Cluster {
		return &memoryCluster{m: &presence.Memory{DepartureGrace: testGrace}, local: true}
	})
}

// memoryCluster plays a cluster on one Memory: Kill does what crash cleanup does, at
// once, and hands the departures to a surviving node.
type memoryCluster struct {
	m     *presence.Memory
	local bool // node "a" is m itself (presence.LocalNode)

	mu    sync.Mutex
	nodes []*memoryClusterNode
}

type memoryClusterNode struct {
	s    presence.Store
	id   string
	h    presence.Handler
	dead bool
}

func (c *memoryCluster) Node(id string, h presence.Handler) presence.Store {
	n := &memoryClusterNode{id: id, h: h}
	if c.local && id == "a" {
		n.s, n.id = c.m, presence.LocalNode
	} else {
		n.s = c.m.Node(id)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n.s
}

func (c *memoryCluster) Kill(s presence.Store) {
	c.mu.Lock()
	var dead *memoryClusterNode
	var heir presence.Handler
	for _, n := range c.nodes {
		switch {
		case n.s == s:
			dead, n.dead = n, true
		case !n.dead && heir == nil:
			heir = n.h
		}
	}
	c.mu.Unlock()
	if dead == nil {
		panic("memoryCluster.Kill: unknown store")
	}
	// RemoveNode first: once m itself is closed, it refuses.
	deps, vacated, err := c.m.RemoveNode(context.Background(), dead.id)
	if err != nil {
		panic(err)
	}
	_ = s.Close(context.Background())
	if heir != nil && len(deps) > 0 {
		heir.HandleDepartures(deps)
	}
	if heir != nil && len(vacated) > 0 {
		heir.HandleVacated(vacated)
	}
}

func (c *memoryCluster) CleanupWithin() time.Duration { return 0 }

// testGrace is the departure grace of the suite's stores: short, the suite waits it out.
const testGrace = 300 * time.Millisecond

func (c *memoryCluster) DepartureGrace() time.Duration { return c.m.DepartureGrace }

func add(t *testing.T, s presence.Store, channel, conn, userID, info string) {
	t.Helper()
	m := presence.Member{UserID: userID}
	if info != "" {
		m.Info = []byte(info)
	}
	if _, err := s.Add(context.Background(), channel, conn, m, 0); err != nil {
		t.Fatalf("Add(%s, %s, %s): %v", channel, conn, userID, err)
	}
}

func TestMemoryMembersHaveFirstConnectionsInfo(t *testing.T) {
	m := presence.NewMemory()
	add(t, m, "room", "c1", "u", `{"tab":1}`)
	add(t, m.Node("b"), "room", "c2", "u", `{"tab":2}`)
	ms, err := m.Members(context.Background(), "room")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || string(ms[0].Info) != `{"tab":1}` {
		t.Fatalf("Members = %q, want u with the first connection's info", ms)
	}
}

func TestMemoryEmptyChannelsAreDeleted(t *testing.T) {
	ctx := context.Background()
	m := presence.NewMemory()
	for i := range 100 {
		ch := "room-" + strconv.Itoa(i)
		add(t, m, ch, "c1", "u1", "")
		add(t, m.Node("b"), ch, "c2", "u1", "")
		add(t, m, ch, "c3", "u2", "")
	}
	if got := m.PresenceChannels(); got != 100 {
		t.Fatalf("%d channels, want 100", got)
	}
	for i := range 100 {
		ch := "room-" + strconv.Itoa(i)
		for _, r := range [][2]string{{"c1", "u1"}, {"c2", "u1"}, {"c3", "u2"}} {
			if _, err := m.Remove(ctx, ch, r[0], r[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Refused and no-op calls must not create state either.
	if _, err := m.Remove(ctx, "never", "c1", "u1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Members(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	if got := m.PresenceChannels(); got != 0 {
		t.Fatalf("%d channels left after everyone left, want 0", got)
	}
}

func TestMemoryRemoveNode(t *testing.T) {
	ctx := context.Background()
	m := presence.NewMemory()
	a, b := m.Node("a"), m.Node("b")
	add(t, a, "room", "a1", "only-a", "")
	add(t, a, "room", "a2", "both", `{"first":"a"}`)
	add(t, b, "room", "b1", "both", `{"first":"b"}`)
	add(t, b, "room", "b2", "only-b", "")
	add(t, a, "lobby", "a3", "only-a", "")
	add(t, a, "lobby", "a4", "two-conns-on-a", "")
	add(t, a, "lobby", "a5", "two-conns-on-a", "")
	add(t, a, "solo", "a6", "only-a", "")
	add(t, m, "room", "l1", "local", "")

	gone, _, err := m.RemoveNode(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	want := []presence.Departure{
		{Channel: "lobby", UserID: "only-a"},
		{Channel: "lobby", UserID: "two-conns-on-a"},
		{Channel: "room", UserID: "only-a"},
		{Channel: "solo", UserID: "only-a"},
	}
	if !slices.Equal(gone, want) {
		t.Fatalf("RemoveNode(a) = %v, want %v", gone, want)
	}
	ms, err := b.Members(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ms, func(x, y presence.Member) int { return cmp.Compare(x.UserID, y.UserID) })
	if len(ms) != 3 || ms[0].UserID != "both" || ms[1].UserID != "local" || ms[2].UserID != "only-b" {
		t.Fatalf("room after RemoveNode(a) = %q, want both, local, only-b", ms)
	}
	// "both" keeps the info it had: its first connection's, though that one is gone.
	if string(ms[0].Info) != `{"first":"a"}` {
		t.Errorf("both's info = %s, want the first connection's", ms[0].Info)
	}
	if n, _ := b.Count(ctx, "lobby"); n != 0 {
		t.Errorf("Count(lobby) = %d, want 0", n)
	}
	if got := m.PresenceChannels(); got != 1 {
		t.Errorf("%d channels left, want 1 (room)", got)
	}
	// b's remaining connection of "both" is now its last.
	if last, err := b.Remove(ctx, "room", "b1", "both"); err != nil || !last {
		t.Errorf("Remove(b1, both) = %v, %v; want last", last, err)
	}
	// A node's view keeps working after its entries were removed (a node that was
	// presumed dead but was not can re-add its connections).
	if first, err := a.Add(ctx, "room", "a2", presence.Member{UserID: "both"}, 0); err != nil || !first {
		t.Errorf("Add on a after RemoveNode(a) = %v, %v; want first", first, err)
	}

	if gone, _, err := m.RemoveNode(ctx, "unknown"); err != nil || len(gone) != 0 {
		t.Errorf("RemoveNode(unknown) = %v, %v; want nothing", gone, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := m.RemoveNode(cancelled, "b"); !errors.Is(err, context.Canceled) {
		t.Errorf("RemoveNode with a cancelled context: %v, want context.Canceled", err)
	}
	if n, _ := b.Count(ctx, "room"); n != 3 {
		t.Errorf("a refused RemoveNode(b) changed room: Count = %d, want 3", n)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.RemoveNode(ctx, "b"); !errors.Is(err, presence.ErrClosed) {
		t.Errorf("RemoveNode after Close: %v, want ErrClosed", err)
	}
}
