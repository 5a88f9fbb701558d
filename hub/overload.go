package hub

import (
	"errors"
	"slices"
	"strings"
	"sync"
)

// Overload: what the hub does when a publisher outruns this node's loops.
//
// The transport bounds each loop's fan-out backlog (transport.Config.MailboxSize jobs
// and MailboxDeliveries deliveries, queued or being written) and refuses a loop's
// share of a fan-out past it. The hub makes sure nothing is lost without a word:
//
//   - Local publishes are refused before anything is published while any loop is
//     past its high-water mark (half the bound; transport.Server.Congested): the HTTP
//     API answers 503 with Retry-After (publish_busy), a client event gets pusher:error
//     4301 "server busy" (client_event_busy). Nothing is published that this node
//     cannot deliver, and the publisher is told at once, rather than 20 s later by
//     its subscribers.
//   - A broker message (another node's publish, HandleMessage) cannot be refused: it
//     was published. The receive path waits for room, at most Config.DeliveryWait per
//     message, which slows Redis's delivery to this node (what backpressure between
//     nodes can be with pub/sub); past the wait, the shares of the loops still full
//     are dropped and counted (delivery_timeout).
//   - A local publish that passed the check but found a loop full (another publisher
//     got there first, between the check and the fan-out) has those deliveries
//     dropped and counted (delivery_overflow); the high-water mark leaves half the
//     bound for such races, so this is rare.
//
// Every drop is counted per app under its reason in herald_dropped_total (publish_busy
// and client_event_busy count refused publishes; the delivery_ reasons count the
// subscribers not reached), the channels with the most dropped deliveries are listed
// per app in /stats (dropped_channels, at most dropTop, from a fixed table of
// dropSlots channels: Space-Saving, so the memory is bounded whatever the number of
// channels), and a warning is logged, rate-limited (internal/warnlimit). herald_messages_sent_total
// counts only the deliveries handed to a loop, so that for every publish the node
// took, sent + dropped deliveries = subscribers.

// Drop reasons of the overload policy (herald_dropped_total's reason label).
const (
	dropPublishBusy      = "publish_busy"      // API publishes refused with 503 (one per request)
	dropClientEventBusy  = "client_event_busy" // client events refused with 4301 (one per event)
	dropDeliveryOverflow = "delivery_overflow" // a local publish's deliveries a full loop refused (one per subscriber)
	dropDeliveryTimeout  = "delivery_timeout"  // a broker message's deliveries still refused after DeliveryWait (one per subscriber)
)

const warnDeliveriesDropped = "deliveries_dropped" // a warning kind (warn.go)

// ErrServerBusy is returned by a local publish refused because this node's loops are
// behind; the HTTP API answers it with 503 and Retry-After.
var ErrServerBusy = errors.New("hub: server busy: this node's fan-out backlog is past its high-water mark")

const (
	dropSlots = 32 // channels whose dropped deliveries are tracked, per app
	dropTop   = 10 // of which /stats lists the worst
)

// ChannelDrops is one channel's dropped deliveries on this node (AppStats.DroppedChannels).
type ChannelDrops struct {
	Channel string `json:"channel"`
	Dropped uint64 `json:"dropped"`
	// Over is how much of Dropped may belong to channels the table stopped tracking
	// to make room for this one (Space-Saving's error bound); 0 means exact.
	Over uint64 `json:"over,omitempty"`
}

// dropTable keeps the channels with the most dropped deliveries of one app in
// dropSlots entries (the Space-Saving algorithm: a channel not in the table takes the
// entry with the least count and inherits that count as its error bound). Its mutex is
// a leaf, taken only on the drop path.
type dropTable struct {
	mu    sync.Mutex
	slots []ChannelDrops
}

func (t *dropTable) add(channel string, n uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.slots {
		if t.slots[i].Channel == channel {
			t.slots[i].Dropped += n
			return
		}
	}
	if len(t.slots) < dropSlots {
		t.slots = append(t.slots, ChannelDrops{Channel: channel, Dropped: n})
		return
	}
	least := 0
	for i := range t.slots {
		if t.slots[i].Dropped < t.slots[least].Dropped {
			least = i
		}
	}
	m := t.slots[least].Dropped
	t.slots[least] = ChannelDrops{Channel: channel, Dropped: m + n, Over: m}
}

// top returns the k channels with the most dropped deliveries, most first (nil for none).
func (t *dropTable) top(k int) []ChannelDrops {
	t.mu.Lock()
	out := slices.Clone(t.slots)
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b ChannelDrops) int {
		switch {
		case a.Dropped != b.Dropped:
			if a.Dropped > b.Dropped {
				return -1
			}
			return 1
		case a.Channel < b.Channel:
			return -1
		case a.Channel > b.Channel:
			return 1
		}
		return 0
	})
	if len(out) > k {
		out = out[:k]
	}
	return out
}

// droppedN counts n drops under reason (appStats.dropped counts one).
func (s *appStats) droppedN(reason string, n uint64) {
	s.mu.Lock()
	if s.drops == nil {
		s.drops = make(map[string]uint64)
	}
	s.drops[reason] += n
	s.mu.Unlock()
}

// droppedDeliveries accounts for n subscribers of ch that a message did not reach.
func (h *Hub) droppedDeliveries(ch *channel, reason string, n int) {
	a := ch.app
	a.stats.droppedN(reason, uint64(n))
	a.drops.add(ch.name, uint64(n))
	h.warns.Warn(warnDeliveriesDropped, "deliveries dropped: a loop's fan-out backlog is full",
		"app", a.id, "channel", ch.name, "reason", reason, "deliveries", n)
}

// busy refuses a local publish of app a while the node is behind (see the top of
// this file), counting it under reason.
func (h *Hub) busy(a *appState, reason string) bool {
	if !h.srv.Congested() {
		return false
	}
	a.stats.dropped(reason)
	return true
}

// refuseBusyEvent refuses a client event while the node is behind: the client hears
// pusher:error 4301 "server busy" (loop).
func (h *Hub) refuseBusyEvent(c *client) bool {
	if !h.busy(c.app, dropClientEventBusy) {
		return false
	}
	c.conn.WriteText(errorJSON(4301, "server busy: client event dropped, retry later"))
	return true
}

// Clean-up work past its bound (hub/doc.go's queue table): counted per app under
// these reasons, and logged rate-limited.
const (
	dropCleanup      = "cleanup_dropped"            // an ops clean-up job past its shard's bound
	dropBrokerUnsub  = "broker_unsubscribe_dropped" // a broker unsubscribe past maxQueuedUnsubs
	dropGraceSkipped = "webhook_grace_skipped"      // a confirmation settled at once: maxSettling were waiting
)

const warnCleanupDropped = "cleanup_dropped" // a warning kind (warn.go)

// cleanupDropped counts and logs clean-up work for key (a channel key, "app:channel")
// that a bound refused.
func (h *Hub) cleanupDropped(reason, key string) {
	id, _, _ := strings.Cut(key, ":")
	if a := h.appByID(id); a != nil {
		a.stats.dropped(reason)
	}
	h.warns.Warn(warnCleanupDropped, "clean-up work past its bound: the broker or the presence store is far behind",
		"reason", reason, "channel", key)
}
