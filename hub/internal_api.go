package hub

// The hub's internal surface used by the HTTP API handlers (api.go). The protocol core
// implements these; the handlers only parse, validate, authenticate and answer.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/herald-rt/herald/presence"
)

// appByID returns the app with that id, or nil (also for an app a reload removed).
func (h *Hub) appByID(id string) *appState { return h.apps.Load().byID[id] }

// subscriptionCount is the cluster-wide number of connections subscribed to channel.
func (h *Hub) subscriptionCount(ctx context.Context, a *appState, channel string) (int, error) {
	h.counts.settle(ctx)
	return h.presence.Subscriptions(ctx, a.id, channel)
}

// userCount is the number of distinct users in a presence channel.
func (h *Hub) userCount(ctx context.Context, a *appState, channel string) (int, error) {
	return h.presence.Count(ctx, channelKey(a, channel))
}

// occupiedChannels lists, sorted, the channels of the cluster with at least one
// subscriber whose name starts with prefix ("" for all).
func (h *Hub) occupiedChannels(ctx context.Context, a *appState, prefix string) ([]string, error) {
	h.counts.settle(ctx)
	cs, err := h.presence.Channels(ctx, a.id, prefix)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		names = append(names, c.Channel)
	}
	sort.Strings(names)
	return names, nil
}

// members lists the users of a presence channel.
func (h *Hub) members(ctx context.Context, a *appState, channel string) ([]presence.Member, error) {
	return h.presence.Members(ctx, channelKey(a, channel))
}

// cachedEvent returns the last event published to a cache channel (the raw "data"
// JSON value of it) and how long it stays cached.
func (h *Hub) cachedEvent(ctx context.Context, a *appState, channel string) (data json.RawMessage, ttl time.Duration, ok bool, err error) {
	env, ttl, ok, err := h.broker.Last(ctx, channelKey(a, channel))
	if err != nil || !ok {
		return nil, 0, false, err
	}
	if len(env) <= envHeader || env[0] != envVersion {
		return nil, 0, false, nil // kept by a node of another version: not readable here
	}
	data, err = frameEventData(env[envHeader:])
	if err != nil {
		return nil, 0, false, err
	}
	return data, ttl, true, nil
}

// frameEventData returns the "data" value of the event JSON inside a server text frame.
func frameEventData(frame []byte) (json.RawMessage, error) {
	if len(frame) < 2 {
		return nil, errBadFrame
	}
	off := 2
	switch frame[1] & 0x7f {
	case 126:
		off = 4
	case 127:
		off = 10
	}
	if len(frame) < off {
		return nil, errBadFrame
	}
	var ev struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(frame[off:], &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadFrame, err)
	}
	return ev.Data, nil
}

var errBadFrame = errors.New("hub: cached event is not a server text frame")

// now is the hub's clock (tests of signature time windows replace it).
func (h *Hub) now() time.Time { return h.clock() }
