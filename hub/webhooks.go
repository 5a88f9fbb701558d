package hub

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/webhook"
)

// Webhooks: what happened on channels, told to the apps' backends (PUSHER.md §3). The
// hub decides what to tell; package webhook batches, signs, sends and retries.
//
//   - channel_occupied and channel_vacated come from the cluster-wide subscription
//     counts (the store reports each transition to exactly one node: the one whose
//     count report caused it);
//   - member_added and member_removed from the store's first and last decisions, also
//     made once for the cluster;
//   - client_event from the node that published the client event;
//   - cache_miss from the node that answered a subscriber with pusher:cache_miss.
//
// channel_vacated and member_removed wait the departure grace (3 s): the node that
// learned of the vacancy or departure asks the store after the grace whether it stood.
// A return within the grace cancels both (the store reports the occupation or join as
// Returned, and the hub sends nothing for it): a page reload does not flap a channel or
// a user. A return after the grace but before that question was asked (a busy node's
// timer runs late) settles the vacancy or departure itself (Vacated, Departed): the
// returning node sends it before the occupation or join, and the question then finds
// nothing. Departures and vacancies that a dead node's cleanup finds are settled at
// once. Each webhook is thus sent once, and in order for a channel or a user.

// wants reports whether any webhook of app a takes events of type name, so that the
// hub builds no event nobody wants.
func (h *Hub) wants(a *appState, name string) bool {
	return h.hooks.Enabled(a.id, name)
}

// hook sends ev to app a's webhooks that take it. It never blocks.
func (h *Hub) hook(a *appState, ev webhook.Event) {
	if !h.wants(a, ev.Name) {
		return
	}
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	h.hooks.Send(a.id, ev)
}

// internalChannel reports channels that exist for the hub's own use (#server-to-user-),
// which apps never hear about.
func internalChannel(name string) bool { return strings.HasPrefix(name, "#") }

// afterGrace runs fn on the ops shard of key once the departure grace has passed.
// h.settling counts them until they ran, so that Shutdown can let them finish (a node
// that drains is often the last one with the channel). At most maxSettling wait: past
// that, fn is queued at once, without the grace (counted: webhook_grace_skipped), so
// that a storm of departures cannot hold an unbounded number of timers; the app then
// hears of a departure and a quick return as two events instead of none.
func (h *Hub) afterGrace(key string, fn func(ctx context.Context)) {
	grace := h.cfg.DepartureGrace
	if h.settling.Add(1) > maxSettling {
		h.cleanupDropped(dropGraceSkipped, key)
		grace = 0
	}
	run := func() {
		if !h.ops.submit(key, true, func() {
			defer h.settling.Add(-1)
			ctx, cancel := h.opContext()
			defer cancel()
			fn(ctx)
		}) {
			h.settling.Add(-1) // shut down (or the clean-up bound): the confirmation is lost
		}
	}
	if grace == 0 {
		run()
		return
	}
	time.AfterFunc(grace, run)
}

// maxSettling bounds the confirmations waiting out the departure grace (afterGrace).
const maxSettling = 1 << 16

// settle waits until no queued work and no confirmation is left, or ctx ends
// (Shutdown, after the last connection closed).
func (h *Hub) settle(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !(h.ops.idle() && h.settling.Load() == 0) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// channelTransitions sends channel_occupied for occupations and settles vacancies after
// the grace (countSync goroutine).
func (h *Hub) channelTransitions(a *appState, ts []presence.Transition) {
	for _, t := range ts {
		switch {
		case internalChannel(t.Channel):
		case t.Occupied && !t.Returned:
			if t.Vacated { // the vacancy stood, and its settling falls to us
				h.hook(a, webhook.Event{Name: webhook.ChannelVacated, Channel: t.Channel})
			}
			h.hook(a, webhook.Event{Name: webhook.ChannelOccupied, Channel: t.Channel})
		case !t.Occupied:
			if !h.wants(a, webhook.ChannelVacated) {
				continue
			}
			ch := t.Channel
			h.afterGrace(channelKey(a, ch), func(ctx context.Context) {
				ok, err := h.presence.ConfirmVacated(ctx, a.id, ch)
				if err != nil {
					h.metrics.storeError()
					a.stats.dropped("webhook_unsettled")
					return
				}
				if ok { // dated when settled: the latency metric measures delivery, not the grace
					h.hook(a, webhook.Event{Name: webhook.ChannelVacated, Channel: ch})
				}
			})
		}
	}
}

// HandleVacated sends channel_vacated for channels that a dead node's cleanup left
// empty: the node is gone, nobody comes back to it within a grace.
func (h *Hub) HandleVacated(ts []presence.Transition) {
	for _, t := range ts {
		if a := h.appByID(t.App); a != nil && !internalChannel(t.Channel) {
			h.hook(a, webhook.Event{Name: webhook.ChannelVacated, Channel: t.Channel})
		}
	}
}

// memberLeft settles a departure that Remove reported after the grace, and sends
// member_removed if it stood (ops goroutine).
func (h *Hub) memberLeft(a *appState, ch *channel, userID string) {
	if !h.wants(a, webhook.MemberRemoved) {
		return
	}
	h.afterGrace(ch.key, func(ctx context.Context) {
		ok, err := h.presence.ConfirmDeparture(ctx, ch.key, userID)
		if err != nil {
			h.metrics.storeError()
			a.stats.dropped("webhook_unsettled")
			return
		}
		if ok { // dated when settled, as channel_vacated
			h.hook(a, webhook.Event{Name: webhook.MemberRemoved, Channel: ch.name, UserID: userID})
		}
	})
}

// clientEventHook sends client_event for a client event that was published.
func (h *Hub) clientEventHook(c *client, s *subscription, m *clientMessage, socketID string) {
	a := c.app
	if !h.wants(a, webhook.ClientEvent) {
		return
	}
	h.hook(a, webhook.Event{Name: webhook.ClientEvent, Channel: s.ch.name, Event: m.Event,
		Data: eventDataString(m.Data), SocketID: socketID, UserID: s.memberID()})
}

// eventDataString is a client event's data as Pusher's webhooks give it: a JSON string
// as its text, any other JSON value as its JSON.
func eventDataString(raw json.RawMessage) string {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}
