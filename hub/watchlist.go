package hub

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/herald-rt/herald/presence"
)

// The watchlist (PUSHER.md §1.10): a user signs in with "watchlist": [ids] in its
// user_data and hears, as pusher_internal:watchlist_events, which of those users are
// online now and, afterwards, each time one comes online or goes offline. Online means
// at least one signed-in connection anywhere in the cluster.
//
// Both halves reuse the presence machinery, on channels the hub keeps for itself
// (clients cannot name them; they are left out of /channels and webhooks):
//
//   - "#online:<user>": each signed-in connection is a member of its user's channel in
//     the presence store. The store's first and last decisions are the user's online
//     and offline transitions, made once for the cluster, and a dead node's users go
//     offline through its cleanup (HandleDepartures), as members do.
//   - "#watchers:<user>": each connection watching a user subscribes to that user's
//     channel in the broker, so that the node deciding a transition publishes one
//     event there and exactly the nodes with watchers of that user get it, encoded
//     once.
const (
	onlinePrefix   = "#online:"
	watchersPrefix = "#watchers:"
	// maxWatchlist is Pusher's bound; past it the extra ids are dropped and the client
	// hears pusher:error 4302.
	maxWatchlist = 100
)

// watchlistOf reads user_data's watchlist; over maxWatchlist it keeps the first ones
// and reports it.
func watchlistOf(userData string) (ids []string, over bool, err error) {
	var u struct {
		Watchlist []json.RawMessage `json:"watchlist"`
	}
	if err := json.Unmarshal([]byte(userData), &u); err != nil {
		return nil, false, err
	}
	seen := make(map[string]bool, len(u.Watchlist))
	for _, raw := range u.Watchlist {
		var id string
		if json.Unmarshal(raw, &id) != nil || id == "" || seen[id] {
			continue // ids are non-empty strings, as sign-in's own
		}
		if len(ids) == maxWatchlist {
			return ids, true, nil
		}
		seen[id] = true
		ids = append(ids, id)
	}
	return ids, false, nil
}

// watchlistEventsJSON is pusher_internal:watchlist_events with one event.
func watchlistEventsJSON(name string, ids []string) []byte {
	b := append([]byte(nil), `{"event":"pusher_internal:watchlist_events","data":{"events":[{"name":`...)
	b = appendJSONString(b, name)
	b = append(b, `,"user_ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, id)
	}
	return append(b, `]}]}}`...)
}

// goOnline makes c a member of its user's online channel, and watches its watchlist
// (loop, after a first sign-in).
func (h *Hub) goOnline(c *client, userID string, watchlist []string) {
	a := c.app
	sid := h.socketID(c)
	online := h.internalSub(c, onlinePrefix+userID)
	online.member = &presenceSub{Member: presence.Member{UserID: userID}, entry: sid + "#" + strconv.FormatUint(h.entries.Add(1), 10)}
	var watches []*subscription
	for _, id := range watchlist {
		watches = append(watches, h.internalSub(c, watchersPrefix+id))
	}
	ch := online.ch
	if !h.ops.submit(ch.key, true, func() { h.joinOnline(a, online) }) {
		return
	}
	if len(watches) == 0 {
		return
	}
	// The watches go through the broker first, then the online set is read: a user
	// who comes online in between is told twice, never missed.
	h.ops.submit(watches[0].ch.key, true, func() { h.startWatching(c, watches) })
}

// internalSub adds a subscription of c to one of the hub's own channels; it is ended
// with the connection, like any other (loop).
func (h *Hub) internalSub(c *client, name string) *subscription {
	ch := h.index.acquire(c.app, name)
	s := &subscription{ch: ch, c: c, idx: -1}
	c.subs = append(c.subs, s)
	return s
}

// joinOnline records a signed-in connection in its user's online channel and tells
// the user's watchers when the user comes online (ops goroutine).
func (h *Hub) joinOnline(a *appState, s *subscription) {
	if s.dead.Load() {
		return
	}
	ctx, cancel := h.opContext()
	defer cancel()
	j, err := h.presence.Join(ctx, s.ch.key, s.member.entry, s.member.Member, 0)
	if err != nil {
		h.metrics.storeError()
		a.stats.dropped("watchlist_online_failed")
		return
	}
	s.ch.mu.Lock()
	if !s.dead.Load() {
		s.ch.addLocked(s) // so that a reset re-adds it
	}
	s.ch.mu.Unlock()
	if j.First {
		h.publishWatch(a, s.member.UserID, "online")
	}
}

// publishWatch tells the watchers of user, on every node, that it came online or went
// offline (ops goroutine).
func (h *Hub) publishWatch(a *appState, user, name string) {
	h.publishMember(a, channelKey(a, watchersPrefix+user), watchlistEventsJSON(name, []string{user}), 0, 0)
}

// startWatching subscribes c's watch channels in the broker, adds c to them, and sends
// c the online users of its watchlist (ops goroutine).
func (h *Hub) startWatching(c *client, watches []*subscription) {
	a := c.app
	ctx, cancel := h.opContext()
	defer cancel()
	var online []string
	for _, s := range watches {
		if s.dead.Load() {
			return // the connection is gone
		}
		if err := h.ensureBroker(ctx, s.ch); err != nil && !errors.Is(err, errSuperseded) {
			h.warns.Warn(warnWatchlist, "watchlist: broker subscription failed", "channel", s.ch.key, "err", err)
		}
		s.ch.mu.Lock()
		if !s.dead.Load() {
			s.ch.addLocked(s)
		}
		s.ch.mu.Unlock()
		user := s.ch.name[len(watchersPrefix):]
		n, err := h.presence.Count(ctx, channelKey(a, onlinePrefix+user))
		if err != nil {
			h.metrics.storeError()
			continue
		}
		if n > 0 {
			online = append(online, user)
		}
	}
	if len(online) > 0 {
		js := watchlistEventsJSON("online", online)
		h.srv.Do(c.conn, func() {
			if !c.conn.Closed() {
				c.conn.WriteText(js)
			}
		})
	}
}

// internalKind reports the hub's own channels' kinds.
func internalKind(k kind) bool { return k == kindOnline || k == kindWatch }

// leaveOnline removes a signed-in connection from its user's online channel and tells
// the user's watchers when it was the user's last (ops goroutine).
func (h *Hub) leaveOnline(a *appState, ch *channel, m *presenceSub) {
	ctx, cancel := h.opContext()
	defer cancel()
	last, err := h.presence.Remove(ctx, ch.key, m.entry, m.UserID)
	if err != nil {
		h.metrics.storeError()
		return // the store retries it, and reports the departure: HandleDepartures
	}
	if last {
		h.publishWatch(a, m.UserID, "offline")
	}
}
