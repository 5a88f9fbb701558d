package hub

// The hub's internal surface used by the HTTP API handlers (api.go). The protocol core
// implements these; the handlers only parse, validate, authenticate and answer.

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
)

// appState is one configured app at run time.
type appState struct {
	cfg   App // with defaults applied
	stats *appStats
}

// appByID returns the app with that id, or nil.
func (h *Hub) appByID(id string) *appState { return h.appsByID[id] }

// subscriptionCount is the number of this node's connections subscribed to channel.
func (h *Hub) subscriptionCount(a *appState, channel string) int {
	ch := h.index.get(channelKey(a, channel))
	if ch == nil {
		return 0
	}
	return ch.count()
}

// userCount is the number of distinct users in a presence channel.
func (h *Hub) userCount(ctx context.Context, a *appState, channel string) (int, error) {
	return h.presence.Count(ctx, channelKey(a, channel))
}

// occupiedChannels lists, sorted, the channels with at least one subscriber whose name
// starts with prefix ("" for all).
func (h *Hub) occupiedChannels(a *appState, prefix string) []string {
	var names []string
	h.index.each(a, func(ch *channel) {
		if strings.HasPrefix(ch.name, prefix) && ch.count() > 0 {
			names = append(names, ch.name)
		}
	})
	sort.Strings(names)
	return names
}

// members lists the users of a presence channel.
func (h *Hub) members(ctx context.Context, a *appState, channel string) ([]presence.Member, error) {
	return h.presence.Members(ctx, channelKey(a, channel))
}

// terminateUser closes every connection signed in as userID (pusher:error 4009, close
// 4009) and returns how many there were.
func (h *Hub) terminateUser(a *appState, userID string) int {
	cs := h.users.get(a, userID)
	for _, c := range cs {
		h.srv.Do(c.conn, func() { h.refuse(c, closeTerminated) })
	}
	return len(cs)
}

// cachedEvent returns the last event published to a cache channel (the raw "data"
// JSON value of it) and how long it stays cached.
func (h *Hub) cachedEvent(a *appState, channel string) (data json.RawMessage, ttl time.Duration, ok bool) {
	now := h.clock()
	e, ok := h.cache.get(channelKey(a, channel), now)
	if !ok {
		return nil, 0, false
	}
	return e.data, e.expires.Sub(now), true
}

// now is the hub's clock (tests of signature time windows replace it).
func (h *Hub) now() time.Time { return h.clock() }
