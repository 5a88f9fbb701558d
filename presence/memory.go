package presence

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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
	closed atomic.Bool // this view (LocalNode) only

	mu sync.Mutex
	// channels holds only non-empty channels, so that a channel everybody left costs
	// nothing. Count is len(users), which Go keeps as a counter: no extra field can
	// drift from the map.
	channels map[string]map[string]*user // channel → user id → user
}

// user is one user's presence in one channel.
type user struct {
	conns map[string]string // connection id → id of the node that added it
	info  json.RawMessage   // copied from the first connection; nil when it had none
}

// NewMemory returns an empty store whose node id is LocalNode.
func NewMemory() *Memory { return &Memory{} }

// Node returns the Store of node id over the same state as m, with a Close of its own.
// Node(LocalNode) is another view of m's own entries.
func (m *Memory) Node(id string) Store { return &memoryNode{m: m, id: id} }

// memoryNode is the Store of one node id over a shared Memory.
type memoryNode struct {
	m      *Memory
	id     string
	closed atomic.Bool
}

func (n *memoryNode) Add(ctx context.Context, channel, connID string, mem Member, maxMembers int) (bool, error) {
	return n.m.add(ctx, &n.closed, n.id, channel, connID, mem, maxMembers)
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

func (n *memoryNode) Close() error { return closeOnce(&n.closed) }

// Add records connID as a connection of LocalNode; see Store.
func (m *Memory) Add(ctx context.Context, channel, connID string, mem Member, maxMembers int) (bool, error) {
	return m.add(ctx, &m.closed, LocalNode, channel, connID, mem, maxMembers)
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

// Close closes m's own view. The state stays, for the views of other nodes.
func (m *Memory) Close() error { return closeOnce(&m.closed) }

// RemoveNode forgets every connection that node nodeID added, as cluster cleanup does for
// a crashed node, and returns the users who thereby left a channel, sorted by channel
// then user id. It scans the whole state: crash cleanup is rare, and an index per node
// would cost memory on every Add.
func (m *Memory) RemoveNode(ctx context.Context, nodeID string) ([]Departure, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: remove node: %w", err)
	}
	if m.closed.Load() {
		return nil, ErrClosed
	}
	var gone []Departure
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
	m.mu.Unlock()
	slices.SortFunc(gone, func(a, b Departure) int {
		return cmp.Or(cmp.Compare(a.Channel, b.Channel), cmp.Compare(a.UserID, b.UserID))
	})
	return gone, nil
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
	return out, nil
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
