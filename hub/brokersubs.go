package hub

import (
	"context"
	"errors"
	"sync"
)

// brokerSubs holds the node's broker subscriptions: a channel is subscribed in the
// broker on its first local subscriber and unsubscribed after its last. Requests are
// queued in order and one goroutine takes everything queued at once, reduces it to the
// last request per channel, and makes one Unsubscribe call and one Subscribe call for
// the lot: a thousand clients subscribing to a thousand new channels in the same moment
// cost one round trip to the broker, not a thousand. While one batch is with the
// broker, the next one gathers.
//
// Queue bounds: subscribe requests past maxQueuedSubs are refused (the client gets a
// 503 subscription error). Unsubscribes have their own bound, maxQueuedUnsubs: one is
// queued each time a channel loses its last local subscriber, so the bound is reached
// only when the broker has not answered for a long time; past it an unsubscribe is dropped
// and counted (broker_unsubscribe_dropped). What that leaves is traffic, not a wrong
// answer: the node stays subscribed to a channel it has no subscriber for, and drops
// what arrives for it, until the channel is used and left again.
type brokerSubs struct {
	h *Hub

	mu      sync.Mutex
	queue   []subRequest
	nsubs   int // subscribe requests in queue
	nunsubs int // unsubscribe requests in queue
	closed  bool

	wake chan struct{} // capacity 1
	done chan struct{} // closed when run returns
}

type subRequest struct {
	key string
	sub bool
	// done gets the outcome of a subscribe: nil once the broker delivers the channel,
	// errSuperseded when a later unsubscribe of the same batch won, or the broker's
	// error. It runs on the brokerSubs goroutine and must not block.
	done func(error)
}

const (
	maxQueuedSubs   = 1 << 16
	maxQueuedUnsubs = 1 << 16
)

var (
	errSuperseded = errors.New("hub: broker subscription superseded by an unsubscribe")
	errSubsBusy   = errors.New("hub: too many broker subscriptions in progress")
)

func newBrokerSubs(h *Hub) *brokerSubs {
	b := &brokerSubs{h: h, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go b.run()
	return b
}

// subscribe asks for key to be subscribed in the broker and calls done with the
// outcome. It reports false (and never calls done) when the queue is full or closed.
func (b *brokerSubs) subscribe(key string, done func(error)) bool {
	b.mu.Lock()
	if b.closed || b.nsubs >= maxQueuedSubs {
		b.mu.Unlock()
		return false
	}
	b.queue = append(b.queue, subRequest{key: key, sub: true, done: done})
	b.nsubs++
	b.mu.Unlock()
	b.kick()
	return true
}

// unsubscribe asks for key to be unsubscribed in the broker.
func (b *brokerSubs) unsubscribe(key string) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return // the broker is about to be closed, which drops every subscription
	}
	if b.nunsubs >= maxQueuedUnsubs {
		b.mu.Unlock()
		b.h.cleanupDropped(dropBrokerUnsub, key)
		return
	}
	b.queue = append(b.queue, subRequest{key: key})
	b.nunsubs++
	b.mu.Unlock()
	b.kick()
}

// wait subscribes key and waits for the outcome (ops goroutines only).
func (b *brokerSubs) wait(ctx context.Context, key string) error {
	res := make(chan error, 1)
	if !b.subscribe(key, func(err error) { res <- err }) {
		return errSubsBusy
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *brokerSubs) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *brokerSubs) run() {
	defer close(b.done)
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue, b.nsubs, b.nunsubs = nil, 0, 0
		closed := b.closed
		b.mu.Unlock()
		if len(batch) > 0 {
			b.apply(batch)
			continue
		}
		if closed {
			return
		}
		<-b.wake
	}
}

// apply makes the broker calls for one batch and reports to the subscribe requests.
func (b *brokerSubs) apply(batch []subRequest) {
	last := make(map[string]bool, len(batch)) // key → the last request subscribes
	for _, r := range batch {
		last[r.key] = r.sub
	}
	var subs, unsubs []string
	for k, sub := range last {
		if sub {
			subs = append(subs, k)
		} else {
			unsubs = append(unsubs, k)
		}
	}
	if len(unsubs) > 0 {
		ctx, cancel := b.h.opContext()
		if err := b.h.broker.Unsubscribe(ctx, unsubs...); err != nil {
			b.h.warns.Warn(warnBrokerUnsubscribe, "broker unsubscribe failed", "channels", len(unsubs), "err", err)
		}
		cancel()
	}
	var err error
	if len(subs) > 0 {
		ctx, cancel := b.h.opContext()
		err = b.h.broker.Subscribe(ctx, subs...)
		cancel()
		if err != nil {
			b.h.metrics.brokerError()
		}
	}
	for _, r := range batch {
		switch {
		case !r.sub:
		case !last[r.key]:
			r.done(errSuperseded)
		default:
			r.done(err)
		}
	}
}

// close applies what is queued and stops the goroutine.
func (b *brokerSubs) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.kick()
	<-b.done
}
