package pubsub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
}

// NewMemoryBus returns an empty bus.
func NewMemoryBus() *MemoryBus { return &MemoryBus{} }

// Broker returns a new broker (one node) on b that delivers to h. A nil h drops the
// messages delivered to this node.
func (b *MemoryBus) Broker(h Handler) *Memory { return &Memory{handler: h, bus: b} }

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
	// channels is what this broker subscribed to, so that Subscribe is idempotent and
	// Close can take it off the bus. Guarded by bus.mu.
	channels map[string]struct{}
}

// NewMemory returns a broker on a bus of its own: the whole cluster is this one node.
func NewMemory(h Handler) *Memory { return &Memory{handler: h} }

func (m *Memory) getBus() *MemoryBus {
	if m.bus != nil {
		return m.bus
	}
	return &m.own
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
		// A broker closed since the slice was read must not see another message.
		if s.handler == nil || s.closed.Load() {
			continue
		}
		s.handler.HandleMessage(channel, data)
	}
	return nil
}

// Subscribe starts delivery of channel to this broker's Handler.
func (m *Memory) Subscribe(ctx context.Context, channel string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: subscribe: %w", err)
	}
	bus := m.getBus()
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if _, ok := m.channels[channel]; ok {
		return nil
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
	return nil
}

// Unsubscribe stops delivery of channel to this broker's Handler. A Publish already
// under way may still deliver to it.
func (m *Memory) Unsubscribe(ctx context.Context, channel string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: unsubscribe: %w", err)
	}
	bus := m.getBus()
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if _, ok := m.channels[channel]; !ok {
		return nil
	}
	delete(m.channels, channel)
	bus.removeLocked(channel, m)
	return nil
}

// Close takes the broker off the bus: a Publish that starts after Close returns delivers
// nothing to it. A concurrent Publish that had already read the subscribers may still
// call its Handler; Close does not wait for it, so that a Handler may close its own
// broker.
func (m *Memory) Close() error {
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
