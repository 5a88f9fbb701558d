package presence

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var _ Store = (*Memory)(nil)

// LocalNode is the node id of a Memory's own entries.
const LocalNode = "local"

// Memory is an in-process Store. On its own it is the store of a single node
// (LocalNode); Node gives other node ids views of the same state, so that tests can play
// a cluster without Redis.
//
// The zero value is an empty store ready to use.
type Memory struct {
	// DepartureGrace is how long a departure or a vacancy stays pending, so that a
	// return within it cancels both for webhooks; default 3 s. Set it before use.
	DepartureGrace time.Duration

	closed atomic.Bool // this view (LocalNode) only

	mu sync.Mutex
	// channels holds only non-empty channels, so that a channel everybody left costs
	// nothing. Count is len(users), which Go keeps as a counter: no extra field can
	// drift from the map.
	channels map[string]map[string]*user // channel → user id → user
	// subs holds the subscription counts each node reported, and totals their sums;
	// both hold only non-zero counts.
	subs   map[appChannel]map[string]int // → node id → count
	totals map[string]map[string]int     // app → channel → cluster-wide count
	// views are the node ids with an open Store over m (LocalNode while m is open).
	views map[string]int
	// departed and vacated are the pending departures and vacancies, since when.
	departed map[string]map[string]time.Time // channel → user id
	vacated  map[appChannel]time.Time
}

// DefaultDepartureGrace is Pusher's delay before channel_vacated and member_removed.
const DefaultDepartureGrace = 3 * time.Second

func (m *Memory) grace() time.Duration {
	if m.DepartureGrace > 0 {
		return m.DepartureGrace
	}
	return DefaultDepartureGrace
}

type appChannel struct{ app, channel string }

// user is one user's presence in one channel.
type user struct {
	conns map[string]string // connection id → id of the node that added it
	info  json.RawMessage   // copied from the first connection; nil when it had none
}

// NewMemory returns an empty store whose node id is LocalNode.
func NewMemory() *Memory { return &Memory{} }

// Node returns the Store of node id over the same state as m, with a Close of its own.
// Node(LocalNode) is another view of m's own entries.
func (m *Memory) Node(id string) Store {
	m.mu.Lock()
	if m.views == nil {
		m.views = make(map[string]int)
	}
	m.views[id]++
	m.mu.Unlock()
	return &memoryNode{m: m, id: id}
}

// memoryNode is the Store of one node id over a shared Memory.
type memoryNode struct {
	m      *Memory
	id     string
	closed atomic.Bool
}

func (n *memoryNode) Add(ctx context.Context, channel, connID string, mem Member, maxMembers int) (bool, error) {
	return n.m.add(ctx, &n.closed, n.id, channel, connID, mem, maxMembers)
}

func (n *memoryNode) Join(ctx context.Context, channel, connID string, mem Member, maxMembers int) (Joined, error) {
	return n.m.join(ctx, &n.closed, n.id, channel, connID, mem, maxMembers)
}

func (n *memoryNode) ConfirmDeparture(ctx context.Context, channel, userID string) (bool, error) {
	return n.m.confirmDeparture(ctx, &n.closed, channel, userID)
}

func (n *memoryNode) ConfirmVacated(ctx context.Context, app, channel string) (bool, error) {
	return n.m.confirmVacated(ctx, &n.closed, app, channel)
}

func (n *memoryNode) Remove(ctx context.Context, channel, connID, userID string) (bool, error) {
	return n.m.remove(ctx, &n.closed, channel, connID, userID)
}

func (n *memoryNode) Members(ctx context.Context, channel string) ([]Member, error) {
	return n.m.members(ctx, &n.closed, channel)
}

func (n *memoryNode) Count(ctx context.Context, channel string) (int, error) {
	return n.m.count(ctx, &n.closed, channel)
}

func (n *memoryNode) SetSubscriptions(ctx context.Context, app string, counts []ChannelCount) (Report, error) {
	return n.m.setSubscriptions(ctx, &n.closed, n.id, app, counts)
}

func (n *memoryNode) Subscriptions(ctx context.Context, app, channel string) (int, error) {
	return n.m.subscriptions(ctx, &n.closed, app, channel)
}

func (n *memoryNode) Channels(ctx context.Context, app, prefix string) ([]ChannelCount, error) {
	return n.m.channelsOf(ctx, &n.closed, app, prefix)
}

func (n *memoryNode) Nodes() []Node { return n.m.Nodes() }

func (n *memoryNode) Close(context.Context) error {
	if err := closeOnce(&n.closed); err != nil {
		return err
	}
	n.m.mu.Lock()
	if n.m.views[n.id]--; n.m.views[n.id] <= 0 {
		delete(n.m.views, n.id)
	}
	n.m.mu.Unlock()
	return nil
}

// Add records connID as a connection of LocalNode; see Store.
func (m *Memory) Add(ctx context.Context, channel, connID string, mem Member, maxMembers int) (bool, error) {
	return m.add(ctx, &m.closed, LocalNode, channel, connID, mem, maxMembers)
}

// Join is Add and Members under one lock; see Store.
func (m *Memory) Join(ctx context.Context, channel, connID string, mem Member, maxMembers int) (Joined, error) {
	return m.join(ctx, &m.closed, LocalNode, channel, connID, mem, maxMembers)
}

// ConfirmDeparture settles a pending departure; see Store.
func (m *Memory) ConfirmDeparture(ctx context.Context, channel, userID string) (bool, error) {
	return m.confirmDeparture(ctx, &m.closed, channel, userID)
}

// ConfirmVacated settles a pending vacancy; see Store.
func (m *Memory) ConfirmVacated(ctx context.Context, app, channel string) (bool, error) {
	return m.confirmVacated(ctx, &m.closed, app, channel)
}

// Remove forgets connID, whichever node added it; see Store.
func (m *Memory) Remove(ctx context.Context, channel, connID, userID string) (bool, error) {
	return m.remove(ctx, &m.closed, channel, connID, userID)
}

// Members lists the users of channel with the info of their first connection.
func (m *Memory) Members(ctx context.Context, channel string) ([]Member, error) {
	return m.members(ctx, &m.closed, channel)
}

// Count is the number of distinct users in channel, in O(1).
func (m *Memory) Count(ctx context.Context, channel string) (int, error) {
	return m.count(ctx, &m.closed, channel)
}

// SetSubscriptions records LocalNode's subscription counts; see Store.
func (m *Memory) SetSubscriptions(ctx context.Context, app string, counts []ChannelCount) (Report, error) {
	return m.setSubscriptions(ctx, &m.closed, LocalNode, app, counts)
}

// Subscriptions is the sum of the counts every node reported for channel.
func (m *Memory) Subscriptions(ctx context.Context, app, channel string) (int, error) {
	return m.subscriptions(ctx, &m.closed, app, channel)
}

// Channels lists app's channels with a non-zero count whose name starts with prefix.
func (m *Memory) Channels(ctx context.Context, app, prefix string) ([]ChannelCount, error) {
	return m.channelsOf(ctx, &m.closed, app, prefix)
}

// Nodes lists the node ids with an open view, sorted (LocalNode while m is open).
func (m *Memory) Nodes() []Node {
	m.mu.Lock()
	out := make([]Node, 0, len(m.views)+1)
	if !m.closed.Load() && m.views[LocalNode] == 0 {
		out = append(out, Node{Name: LocalNode})
	}
	for id := range m.views {
		out = append(out, Node{Name: id})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Close closes m's own view. The state stays, for the views of other nodes.
func (m *Memory) Close(context.Context) error { return closeOnce(&m.closed) }

// RemoveNode forgets every connection that node nodeID added and the subscription
// counts it reported, as cluster cleanup does for a crashed node, and returns the users
// who thereby left a channel, sorted by channel then user id, and the channels it left
// empty (settled at once). It scans the whole state:
// crash cleanup is rare, and an index per node would cost memory on every Add.
func (m *Memory) RemoveNode(ctx context.Context, nodeID string) ([]Departure, []Transition, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("presence: remove node: %w", err)
	}
	if m.closed.Load() {
		return nil, nil, ErrClosed
	}
	var gone []Departure
	var vacated []Transition
	m.mu.Lock()
	for channel, users := range m.channels {
		for id, u := range users {
			for conn, owner := range u.conns {
				if owner == nodeID {
					delete(u.conns, conn)
				}
			}
			if len(u.conns) == 0 {
				delete(users, id)
				gone = append(gone, Departure{Channel: channel, UserID: id})
			}
		}
		if len(users) == 0 {
			delete(m.channels, channel)
		}
	}
	for ac, byNode := range m.subs {
		if n := byNode[nodeID]; n != 0 {
			if t, ok := m.addTotalLocked(ac, -n); ok {
				vacated = append(vacated, t)
			}
			delete(byNode, nodeID)
			if len(byNode) == 0 {
				delete(m.subs, ac)
			}
		}
	}
	m.mu.Unlock()
	slices.SortFunc(gone, func(a, b Departure) int {
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.UserID, b.UserID))
	})
	return gone, vacated, nil
}

func closeOnce(closed *atomic.Bool) error {
	if closed.Swap(true) {
		return ErrClosed
	}
	return nil
}

func (m *Memory) add(ctx context.Context, closed *atomic.Bool, node, channel, connID string, mem Member, maxMembers int) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("presence: add: %w", err)
	}
	if closed.Load() {
		return false, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addLocked(node, channel, connID, mem, maxMembers)
}

func (m *Memory) addLocked(node, channel, connID string, mem Member, maxMembers int) (bool, error) {
	users := m.channels[channel]
	if u := users[mem.UserID]; u != nil {
		if _, ok := u.conns[connID]; !ok {
			u.conns[connID] = node
		}
		return false, nil
	}
	if maxMembers > 0 && len(users) >= maxMembers {
		return false, fmt.Errorf("%w: %d users in %q", ErrFull, len(users), channel)
	}
	if users == nil {
		if m.channels == nil {
			m.channels = make(map[string]map[string]*user)
		}
		users = make(map[string]*user)
		m.channels[channel] = users
	}
	users[mem.UserID] = &user{
		conns: map[string]string{connID: node},
		info:  bytes.Clone(mem.Info), // the caller may reuse its buffer
	}
	return true, nil
}

func (m *Memory) remove(ctx context.Context, closed *atomic.Bool, channel, connID, userID string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("presence: remove: %w", err)
	}
	if closed.Load() {
		return false, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	users := m.channels[channel]
	u := users[userID]
	if u == nil {
		return false, nil
	}
	if _, ok := u.conns[connID]; !ok {
		return false, nil
	}
	delete(u.conns, connID)
	if len(u.conns) > 0 {
		return false, nil
	}
	delete(users, userID)
	if len(users) == 0 {
		delete(m.channels, channel)
	}
	if m.departed == nil {
		m.departed = make(map[string]map[string]time.Time)
	}
	if m.departed[channel] == nil {
		m.departed[channel] = make(map[string]time.Time)
	}
	m.departed[channel][userID] = time.Now()
	return true, nil
}

// returnedLocked clears a pending departure of user and reports whether it was within
// the grace (returned) or past it (departed, the departure stood) (m.mu held).
func (m *Memory) returnedLocked(channel, user string) (returned, departed bool) {
	t, ok := m.departed[channel][user]
	if !ok {
		return false, false
	}
	delete(m.departed[channel], user)
	if len(m.departed[channel]) == 0 {
		delete(m.departed, channel)
	}
	within := time.Since(t) <= m.grace()
	return within, !within
}

func (m *Memory) confirmDeparture(ctx context.Context, closed *atomic.Bool, channel, userID string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("presence: confirm departure: %w", err)
	}
	if closed.Load() {
		return false, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.departed[channel][userID]; !ok {
		return false, nil // came back (Join cleared it), or settled already
	}
	m.returnedLocked(channel, userID)
	return true, nil // nobody joined since: the departure stood
}

func (m *Memory) confirmVacated(ctx context.Context, closed *atomic.Bool, app, channel string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("presence: confirm vacated: %w", err)
	}
	if closed.Load() {
		return false, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ac := appChannel{app, channel}
	if _, ok := m.vacated[ac]; !ok {
		return false, nil // occupied again (which cleared it), or settled already
	}
	delete(m.vacated, ac)
	return true, nil
}

// members copies the infos into one buffer, so that the caller owns what it gets (it may
// not write into the store) for two allocations whatever the number of members.
func (m *Memory) members(ctx context.Context, closed *atomic.Bool, channel string) ([]Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: members: %w", err)
	}
	if closed.Load() {
		return nil, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.membersLocked(channel), nil
}

func (m *Memory) membersLocked(channel string) []Member {
	users := m.channels[channel]
	size := 0
	for _, u := range users {
		size += len(u.info)
	}
	buf := make([]byte, 0, size)
	out := make([]Member, 0, len(users))
	for id, u := range users {
		var info json.RawMessage
		if u.info != nil {
			start := len(buf)
			buf = append(buf, u.info...)
			info = buf[start:len(buf):len(buf)]
		}
		out = append(out, Member{UserID: id, Info: info})
	}
	return out
}

func (m *Memory) join(ctx context.Context, closed *atomic.Bool, node, channel, connID string, mem Member, maxMembers int) (Joined, error) {
	if err := ctx.Err(); err != nil {
		return Joined{}, fmt.Errorf("presence: join: %w", err)
	}
	if closed.Load() {
		return Joined{}, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first, err := m.addLocked(node, channel, connID, mem, maxMembers)
	if err != nil {
		return Joined{}, err
	}
	j := Joined{First: first, Members: m.membersLocked(channel)}
	if first {
		j.Returned, j.Departed = m.returnedLocked(channel, mem.UserID)
	}
	return j, nil
}

func (m *Memory) count(ctx context.Context, closed *atomic.Bool, channel string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("presence: count: %w", err)
	}
	if closed.Load() {
		return 0, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels[channel]), nil
}

func (m *Memory) setSubscriptions(ctx context.Context, closed *atomic.Bool, node, app string, counts []ChannelCount) (Report, error) {
	if err := ctx.Err(); err != nil {
		return Report{}, fmt.Errorf("presence: set subscriptions: %w", err)
	}
	if closed.Load() {
		return Report{}, ErrClosed
	}
	// A report is refused whole: applied in part, it would leave the node's counts
	// neither the old ones nor the new.
	for _, c := range counts {
		if c.Count < 0 {
			return Report{}, fmt.Errorf("presence: set subscriptions: negative count %d for %q", c.Count, c.Channel)
		}
	}
	var out Report
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range counts {
		ac := appChannel{app, c.Channel}
		old := m.subs[ac][node]
		if old == c.Count {
			continue
		}
		if c.Count == 0 {
			delete(m.subs[ac], node)
			if len(m.subs[ac]) == 0 {
				delete(m.subs, ac)
			}
		} else {
			if m.subs == nil {
				m.subs = make(map[appChannel]map[string]int)
			}
			if m.subs[ac] == nil {
				m.subs[ac] = make(map[string]int)
			}
			m.subs[ac][node] = c.Count
		}
		if t, ok := m.addTotalLocked(ac, c.Count-old); ok {
			if t.Occupied {
				if since, ok := m.vacated[ac]; ok {
					delete(m.vacated, ac)
					t.Returned = time.Since(since) <= m.grace()
					t.Vacated = !t.Returned
				}
			} else {
				if m.vacated == nil {
					m.vacated = make(map[appChannel]time.Time)
				}
				m.vacated[ac] = time.Now()
			}
			out.Transitions = append(out.Transitions, t)
		}
		out.Counts = append(out.Counts, ChannelCount{Channel: c.Channel, Count: m.totals[app][c.Channel]})
	}
	return out, nil
}

// addTotalLocked changes a channel's cluster-wide count by d and reports a transition
// from or to zero (m.mu held).
func (m *Memory) addTotalLocked(ac appChannel, d int) (Transition, bool) {
	if m.totals == nil {
		m.totals = make(map[string]map[string]int)
	}
	chans := m.totals[ac.app]
	if chans == nil {
		chans = make(map[string]int)
		m.totals[ac.app] = chans
	}
	old := chans[ac.channel]
	n := old + d
	if n <= 0 {
		delete(chans, ac.channel)
		if len(chans) == 0 {
			delete(m.totals, ac.app)
		}
		n = 0
	} else {
		chans[ac.channel] = n
	}
	switch {
	case old == 0 && n > 0:
		return Transition{App: ac.app, Channel: ac.channel, Occupied: true}, true
	case old > 0 && n == 0:
		return Transition{App: ac.app, Channel: ac.channel, Occupied: false}, true
	}
	return Transition{}, false
}

func (m *Memory) subscriptions(ctx context.Context, closed *atomic.Bool, app, channel string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("presence: subscriptions: %w", err)
	}
	if closed.Load() {
		return 0, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.totals[app][channel], nil
}

func (m *Memory) channelsOf(ctx context.Context, closed *atomic.Bool, app, prefix string) ([]ChannelCount, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: channels: %w", err)
	}
	if closed.Load() {
		return nil, ErrClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ChannelCount
	for ch, n := range m.totals[app] {
		if strings.HasPrefix(ch, prefix) {
			out = append(out, ChannelCount{Channel: ch, Count: n})
		}
	}
	return out, nil
}
