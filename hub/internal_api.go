package hub

// The hub's internal surface used by the HTTP API handlers (api.go). The protocol core
// implements these; the handlers only parse, validate, authenticate and answer.

import (
	"context"
	"encoding/json"
	"time"

	"github.com/herald-rt/herald/presence"
)

// appState is one configured app at run time.
type appState struct {
	cfg App // with defaults applied
}

// appByID returns the app with that id, or nil.
func (h *Hub) appByID(id string) *appState { panic("hub: not implemented") }

// publish sends event name with data (a raw JSON value, normally a JSON string, forwarded
// byte for byte) to each channel, skipping the connection whose socket id is
// excludeSocketID ("" for none). Channel names must already be validated.
func (h *Hub) publish(ctx context.Context, a *appState, channels []string, name string, data json.RawMessage, excludeSocketID string) error {
	panic("hub: not implemented")
}

// subscriptionCount is the number of connections subscribed to channel.
func (h *Hub) subscriptionCount(a *appState, channel string) int { panic("hub: not implemented") }

// userCount is the number of distinct users in a presence channel.
func (h *Hub) userCount(ctx context.Context, a *appState, channel string) (int, error) {
	panic("hub: not implemented")
}

// occupiedChannels lists the channels with at least one subscriber whose name starts
// with prefix ("" for all).
func (h *Hub) occupiedChannels(a *appState, prefix string) []string { panic("hub: not implemented") }

// members lists the users of a presence channel.
func (h *Hub) members(ctx context.Context, a *appState, channel string) ([]presence.Member, error) {
	panic("hub: not implemented")
}

// terminateUser closes every connection signed in as userID (pusher:error 4009, close
// 4009) and returns how many there were.
func (h *Hub) terminateUser(a *appState, userID string) int { panic("hub: not implemented") }

// cachedEvent returns the last event published to a cache channel (the raw "data"
// JSON value of it) and how long it stays cached.
func (h *Hub) cachedEvent(a *appState, channel string) (data json.RawMessage, ttl time.Duration, ok bool) {
	panic("hub: not implemented")
}

// now is the hub's clock (tests of signature time windows replace it).
func (h *Hub) now() time.Time { return h.clock() }
