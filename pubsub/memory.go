package pubsub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

var _ Broker = (*Memory)(nil)

// MemoryBus connects in-process brokers as if each were a node of one cluster: a message
// published by any of them reaches every broker on the bus that subscribed to its channel.
// Tests use it to stand in for Redis; a single node uses NewMemory.
//
// The zero value is an empty bus ready to use.
type MemoryBus struct {
	mu sync.RWMutex
	// subs maps a channel to the brokers subscribed to it. A stored slice is never
	// written again (Subscribe and Unsubscribe store a fresh copy), so Publish can
	// iterate the one it read after releasing mu, without copying or allocating.
	subs map[string][]*Memory
	// nodes are the open brokers, for PublishControl; copied on write like subs.
	nodes []*Memory
	// kept holds each channel's last message for PublishKeep and Last. Expired
	// entries are dropped when read and swept every few hundred writes, so it is
	// bounded by the channels kept within one TTL.
	kept      map[string]keptMessage
	keptWrite int
}

type keptMessage struct {
	data    []byte
	expires time.Time
}

// NewMemoryBus returns an empty bus.
func NewMemoryBus() *MemoryBus { return &MemoryBus{} }

// Broker returns a new broker (one node) on b that delivers to h. A nil h drops the
// messages delivered to this node.
func (b *MemoryBus) Broker(h Handler) *Memory {
	m := &Memory{handler: h, bus: b}
	b.mu.Lock()
	m.joinLocked(b)
	b.mu.Unlock()
	return m
}

// Memory is an in-process Broker. It delivers synchronously: Publish returns after every
// subscribed Handler on the bus has returned, which gives ordering per publisher for
// free and makes tests deterministic.
//
// The zero value is a broker with no Handler on a bus of its own.
type Memory struct {
	handler Handler
	bus     *MemoryBus // nil means own
	own     MemoryBus  // the bus of a broker made by NewMemory or left zero

	// closed is written under bus.mu and read without it by Publish.
	closed atomic.Bool
	// joined is set once the broker is on its bus's node list (NewMemory and the zero
	// value join on first use). Guarded by bus.mu.
	joined bool
	// channels is what this broker subscribed to, so that Subscribe is idempotent and
	// Close can take it off the bus. Guarded by bus.mu.
	channels map[string]struct{}

	received, published atomic.Uint64
}

// NewMemory returns a broker on a bus of its own: the whole cluster is this one node.
func NewMemory(h Handler) *Memory {
	m := &Memory{handler: h}
	m.own.mu.Lock()
	m.joinLocked(&m.own)
	m.own.mu.Unlock()
	return m
}

func (m *Memory) getBus() *MemoryBus {
	if m.bus != nil {
		return m.bus
	}
	return &m.own
}

// deliver hands data to m's Handler unless m is closed.
func (m *Memory) deliver(channel string, data []byte) {
	// A broker closed since the subscriber list was read must not see another message.
	if m.handler == nil || m.closed.Load() {
		return
	}
	m.received.Add(1)
	m.handler.HandleMessage(channel, data)
}

// Publish delivers data to the Handler of every broker on the bus subscribed to channel,
// in the calling goroutine, before it returns. No lock is held while a Handler runs, so a
// Handler may call the broker again.
//
// A Handler that publishes on the channel it is handling makes its message overtake the
// one being delivered at the brokers not yet served: re-entrant publishing has no
// "publish order" against its own caller.
func (m *Memory) Publish(ctx context.Context, channel string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	if m.closed.Load() {
		return ErrClosed
	}
	bus := m.getBus()
	bus.mu.RLock()
	subs := bus.subs[channel]
	bus.mu.RUnlock()
	for _, s := range subs {
		s.deliver(channel, data)
	}
	m.published.Add(1)
	return nil
}

// PublishKeep keeps data as channel's last message on the bus for ttl, then publishes it.
func (m *Memory) PublishKeep(ctx context.Context, channel string, data []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	if m.closed.Load() {
		return ErrClosed
	}
	bus := m.getBus()
	now := time.Now()
	bus.mu.Lock()
	if bus.kept == nil {
		bus.kept = make(map[string]keptMessage)
	}
	bus.kept[channel] = keptMessage{data: data, expires: now.Add(ttl)}
	bus.keptWrite++
	if bus.keptWrite%512 == 0 {
		for k, e := range bus.kept {
			if !now.Before(e.expires) {
				delete(bus.kept, k)
			}
		}
	}
	bus.mu.Unlock()
	return m.Publish(ctx, channel, data)
}

// Last returns a copy of channel's kept message and its remaining time.
func (m *Memory) Last(ctx context.Context, channel string) ([]byte, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, fmt.Errorf("pubsub: last: %w", err)
	}
	if m.closed.Load() {
		return nil, 0, false, ErrClosed
	}
	bus := m.getBus()
	now := time.Now()
	bus.mu.RLock()
	e, ok := bus.kept[channel]
	bus.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return nil, 0, false, nil
	}
	return append([]byte(nil), e.data...), e.expires.Sub(now), true, nil
}

// PublishControl delivers data to the HandleControl of every open broker on the bus, in
// the calling goroutine.
func (m *Memory) PublishControl(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish control: %w", err)
	}
	if m.closed.Load() {
		return ErrClosed
	}
	bus := m.getBus()
	bus.mu.RLock()
	joined, nodes := m.joined, bus.nodes
	bus.mu.RUnlock()
	if !joined { // a zero-value broker joins its bus on first use
		bus.mu.Lock()
		m.joinLocked(bus)
		nodes = bus.nodes
		bus.mu.Unlock()
	}
	for _, n := range nodes {
		if n.handler == nil || n.closed.Load() {
			continue
		}
		n.received.Add(1)
		n.handler.HandleControl(data)
	}
	m.published.Add(1)
	return nil
}

// joinLocked puts a zero-value broker on its bus's node list on first use (bus.mu held).
func (m *Memory) joinLocked(bus *MemoryBus) {
	if m.joined {
		return
	}
	m.joined = true
	nodes := make([]*Memory, len(bus.nodes)+1)
	copy(nodes, bus.nodes)
	nodes[len(bus.nodes)] = m
	bus.nodes = nodes
}

// Stats returns the broker's counters; the memory engine is up until Close.
func (m *Memory) Stats() Stats {
	bus := m.getBus()
	bus.mu.RLock()
	n := len(m.channels)
	bus.mu.RUnlock()
	return Stats{
		Engine:        "memory",
		Up:            !m.closed.Load(),
		Subscriptions: n,
		Received:      m.received.Load(),
		Published:     m.published.Load(),
	}
}

// Subscribe starts delivery of the channels to this broker's Handler.
func (m *Memory) Subscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: subscribe: %w", err)
	}
	bus := m.getBus()
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	m.joinLocked(bus)
	for _, channel := range channels {
		if _, ok := m.channels[channel]; ok {
			continue
		}
		if m.channels == nil {
			m.channels = make(map[string]struct{})
		}
		m.channels[channel] = struct{}{}
		old := bus.subs[channel]
		subs := make([]*Memory, len(old)+1)
		copy(subs, old)
		subs[len(old)] = m
		if bus.subs == nil {
			bus.subs = make(map[string][]*Memory)
		}
		bus.subs[channel] = subs
	}
	return nil
}

// Unsubscribe stops delivery of the channels to this broker's Handler. A Publish
// already under way may still deliver to it.
func (m *Memory) Unsubscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: unsubscribe: %w", err)
	}
	bus := m.getBus()
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	for _, channel := range channels {
		if _, ok := m.channels[channel]; !ok {
			continue
		}
		delete(m.channels, channel)
		bus.removeLocked(channel, m)
	}
	return nil
}

// Close takes the broker off the bus: a Publish that starts after Close returns delivers
// nothing to it. A concurrent Publish that had already read the subscribers may still
// call its Handler; Close does not wait for it, so that a Handler may close its own
// broker. The memory engine has no goroutine to wait for: Close completes at once
// whatever the context.
func (m *Memory) Close(context.Context) error {
	bus := m.getBus()
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	m.closed.Store(true)
	for channel := range m.channels {
		bus.removeLocked(channel, m)
	}
	m.channels = nil
	nodes := make([]*Memory, 0, len(bus.nodes))
	for _, n := range bus.nodes {
		if n != m {
			nodes = append(nodes, n)
		}
	}
	bus.nodes = nodes
	return nil
}

// removeLocked stores a copy of channel's subscribers without m, or deletes the channel
// when m was the last, so that the map does not grow with channels nobody wants.
func (b *MemoryBus) removeLocked(channel string, m *Memory) {
	old := b.subs[channel]
	if len(old) <= 1 {
		delete(b.subs, channel)
		return
	}
	subs := make([]*Memory, 0, len(old)-1)
	for _, s := range old {
		if s != m {
			subs = append(subs, s)
		}
	}
	b.subs[channel] = subs
}
