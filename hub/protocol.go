package hub

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/webhook"
)

// clientMessage is what a client sends: {"event":…,"channel":…,"data":…}.
type clientMessage struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

type subscribeData struct {
	Channel     string `json:"channel"`
	Auth        string `json:"auth"`
	ChannelData string `json:"channel_data"`
}

type signinData struct {
	Auth     string `json:"auth"`
	UserData string `json:"user_data"`
}

// errBadMessage is what a client hears about a message that is not a Pusher event.
var errBadMessage = errors.New("invalid message: expected a JSON object with an event")

// parseClientMessage decodes one client message. It never panics, whatever msg holds.
func parseClientMessage(msg []byte) (clientMessage, error) {
	var m clientMessage
	if err := json.Unmarshal(msg, &m); err != nil || m.Event == "" {
		return clientMessage{}, errBadMessage
	}
	return m, nil
}

// decodeData unmarshals an event's data, which clients send as an object but some send
// as a JSON string holding the object.
func decodeData(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = []byte(s)
	}
	return json.Unmarshal(raw, v)
}

// handleMessage runs one client message on the connection's loop. Bad input gets a
// pusher:error or pusher:subscription_error and leaves the connection (and every other
// one) as it was.
func (h *Hub) handleMessage(c *client, msg []byte) {
	m, err := parseClientMessage(msg)
	if err != nil {
		c.conn.WriteText(errorJSON(0, err.Error()))
		return
	}
	switch {
	case m.Event == "pusher:ping":
		c.conn.WriteText(pongJSON)
	case m.Event == "pusher:pong":
		// Any frame already counted as activity.
	case m.Event == "pusher:subscribe":
		var d subscribeData
		if err := decodeData(m.Data, &d); err != nil || d.Channel == "" {
			c.conn.WriteText(errorJSON(0, "invalid pusher:subscribe: data needs a channel"))
			return
		}
		h.subscribe(c, &d)
	case m.Event == "pusher:unsubscribe":
		var d subscribeData
		if err := decodeData(m.Data, &d); err != nil || d.Channel == "" {
			c.conn.WriteText(errorJSON(0, "invalid pusher:unsubscribe: data needs a channel"))
			return
		}
		h.unsubscribe(c, d.Channel)
	case m.Event == "pusher:signin":
		var d signinData
		if err := decodeData(m.Data, &d); err != nil {
			c.conn.WriteText(errorJSON(0, "invalid pusher:signin: data needs auth and user_data"))
			return
		}
		h.signin(c, &d)
	case strings.HasPrefix(m.Event, "client-"):
		h.clientEvent(c, &m)
	default:
		c.conn.WriteText(errorJSON(0, "unsupported event "+truncate(m.Event, 64)))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// checkAuth compares a client's auth ("key:hexsig") with the expected one in constant time.
func (h *Hub) checkAuth(c *client, auth, signed string) bool {
	cfg := c.app.conf() // key and secret of one version: a reload swaps them together
	want := cfg.Key + ":" + sign(cfg.Secret, signed)
	return subtle.ConstantTimeCompare([]byte(auth), []byte(want)) == 1
}

func (h *Hub) subscribe(c *client, d *subscribeData) {
	a := c.app
	name := d.Channel
	if !validChannelName(name, a.conf().MaxChannelNameLength) {
		c.conn.WriteText(subscriptionErrorJSON(name, "InvalidChannel", "invalid channel name", 400))
		return
	}
	if _, s := c.findSub(name); s != nil {
		// Already subscribed or subscribing: the answer is, or will be, on its way.
		return
	}
	if len(c.subs) >= h.cfg.MaxChannelsPerConnection {
		c.conn.WriteText(subscriptionErrorJSON(name, "LimitReached", "too many channels on this connection", 400))
		return
	}
	k, _ := channelKind(name)
	sid := h.socketID(c)
	var member presence.Member
	switch k {
	case kindUser:
		if u := c.userID(); u == "" || name != serverToUserPrefix+u {
			c.conn.WriteText(subscriptionErrorJSON(name, "AuthError", "sign in as this user to subscribe", 403))
			return
		}
	case kindPrivate, kindEncrypted:
		if !h.checkAuth(c, d.Auth, sid+":"+name) {
			c.conn.WriteText(subscriptionErrorJSON(name, "AuthError", "invalid signature", 401))
			return
		}
		c.authorized()
	case kindPresence:
		if !h.checkAuth(c, d.Auth, sid+":"+name+":"+d.ChannelData) {
			c.conn.WriteText(subscriptionErrorJSON(name, "AuthError", "invalid signature", 401))
			return
		}
		var err string
		member, err = parseChannelData(d.ChannelData, a.conf())
		if err != "" {
			c.conn.WriteText(subscriptionErrorJSON(name, "InvalidChannelData", err, 400))
			return
		}
		c.authorized()
	}

	ch := h.index.acquire(a, name)
	s := &subscription{ch: ch, c: c, idx: -1}
	if k == kindPresence {
		s.member = &presenceSub{Member: member, entry: sid + "#" + strconv.FormatUint(h.entries.Add(1), 10)}
	}
	c.subs = append(c.subs, s)
	switch {
	case k == kindPresence:
		h.joinPresence(c, s)
	case ch.cache:
		h.joinCache(c, s)
	case ch.ready.Load():
		// On the loop: the confirmation is written before the loop runs any fan-out
		// that the new member is part of.
		ch.mu.Lock()
		ch.addLocked(s)
		ch.mu.Unlock()
		h.counts.mark(ch) // before the client hears of it: a query it makes then counts it
		h.sendSubscribed(c, s, nil, nil)
	default:
		// The node is not subscribed to this channel in the broker yet: confirm to
		// the client only once messages will reach this node.
		if !h.bsubs.subscribe(ch.key, func(err error) { h.brokerSubscribed(c, s, err) }) {
			h.failSubscribe(c, s, "ServiceUnavailable", "server busy, retry later", 503)
		}
	}
}

// brokerSubscribed finishes a subscription once the broker answered (brokerSubs
// goroutine). While the broker is down the client is confirmed anyway: the broker
// subscribes the channel again before it is up, nothing is delivered anywhere until
// then, and a client told to go away would have to be resubscribed by hand.
func (h *Hub) brokerSubscribed(c *client, s *subscription, err error) {
	switch {
	case err == nil:
		s.ch.ready.Store(true)
		h.activate(c, s, nil, nil)
	case errors.Is(err, pubsub.ErrUnavailable):
		h.activate(c, s, nil, nil)
	default:
		h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "broker unavailable", 503) })
	}
}

// ensureBroker subscribes the node to ch in the broker (ops goroutine).
func (h *Hub) ensureBroker(ctx context.Context, ch *channel) error {
	if ch.ready.Load() {
		return nil
	}
	if err := h.bsubs.wait(ctx, ch.key); err != nil {
		return err
	}
	ch.ready.Store(true)
	return nil
}

// joinCache subscribes to a cache channel off the loop: the confirmation carries the
// channel's last event, read from the broker (any node may have published it), or
// pusher:cache_miss.
func (h *Hub) joinCache(c *client, s *subscription) {
	ch := s.ch
	ok := h.ops.submit(ch.key, false, func() {
		if s.dead.Load() {
			return
		}
		ctx, cancel := h.opContext()
		defer cancel()
		if err := h.ensureBroker(ctx, ch); err != nil && !errors.Is(err, pubsub.ErrUnavailable) {
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "broker unavailable", 503) })
			return
		}
		h.activate(c, s, nil, h.lastFrame(ctx, ch))
	})
	if !ok {
		h.failSubscribe(c, s, "ServiceUnavailable", "server busy, retry later", 503)
	}
}

// lastFrame is the frame of a cache channel's last event, or nil for none (ops
// goroutine). When the broker cannot tell, the client hears cache_miss and fetches the
// state itself.
func (h *Hub) lastFrame(ctx context.Context, ch *channel) []byte {
	env, _, found, err := h.broker.Last(ctx, ch.key)
	switch {
	case err != nil:
		h.metrics.brokerError()
	case found && len(env) > envHeader && env[0] == envVersion:
		return env[envHeader:]
	}
	return nil
}

// activate adds c to ch's recipients and has c's loop send the confirmation (and, on a
// cache channel, the cached frame or cache_miss). The Do is queued while ch.mu is held,
// so that any fan-out that includes c is queued on c's loop after it:
// subscription_succeeded always comes first. Safe from any goroutine.
func (h *Hub) activate(c *client, s *subscription, presenceData, cached []byte) {
	ch := s.ch
	ch.mu.Lock()
	if s.dead.Load() {
		ch.mu.Unlock()
		return
	}
	ch.addLocked(s)
	h.counts.mark(ch) // before the client hears of it: a query it makes then counts it
	h.srv.Do(c.conn, func() { h.sendSubscribed(c, s, presenceData, cached) })
	ch.mu.Unlock()
}

// sendSubscribed sends subscription_succeeded and, on cache channels, the cached event
// or pusher:cache_miss (loop).
func (h *Hub) sendSubscribed(c *client, s *subscription, presenceData, cached []byte) {
	if s.dead.Load() || c.conn.Closed() || h.closeIfOff(c) {
		// A reload disabled the app while the subscription was under way, after it
		// closed the connections it found in channels (reload.go).
		return
	}
	ch := s.ch
	b := make([]byte, 0, 96+len(presenceData))
	b = append(b, `{"event":"pusher_internal:subscription_succeeded","channel":`...)
	b = appendJSONString(b, ch.name)
	if presenceData != nil {
		b = append(b, `,"data":`...)
		b = append(b, presenceData...)
	} else {
		b = append(b, `,"data":"{}"`...)
	}
	b = append(b, '}')
	c.conn.WriteText(b)
	if ch.cache {
		if cached != nil {
			c.conn.WriteFrame(cached)
		} else {
			b := append([]byte(`{"event":"pusher:cache_miss","channel":`), appendJSONString(nil, ch.name)...)
			c.conn.WriteText(append(b, '}'))
			h.hook(c.app, webhook.Event{Name: webhook.CacheMiss, Channel: ch.name})
		}
	}
}

// failSubscribe undoes a pending subscription and tells the client (loop).
func (h *Hub) failSubscribe(c *client, s *subscription, typ, msg string, status int) {
	i, cur := c.findSub(s.ch.name)
	if cur != s {
		return // unsubscribed meanwhile
	}
	c.dropSub(i)
	s.ch.mu.Lock()
	s.dead.Store(true)
	s.ch.mu.Unlock()
	h.release(s.ch)
	c.conn.WriteText(subscriptionErrorJSON(s.ch.name, typ, msg, status))
}

func (h *Hub) unsubscribe(c *client, name string) {
	i, s := c.findSub(name)
	if s == nil {
		return
	}
	c.dropSub(i)
	h.leave(c, s)
}

// leave ends one subscription (loop): the connection stops receiving at once; the
// presence entry is removed off the loop.
func (h *Hub) leave(c *client, s *subscription) {
	ch := s.ch
	ch.mu.Lock()
	s.dead.Store(true)
	member := s.idx >= 0
	ch.removeLocked(s)
	ch.mu.Unlock()
	if member && !internalKind(ch.kind) {
		h.counts.mark(ch)
	}
	if m := s.member; m != nil {
		a := c.app
		if ch.kind == kindOnline {
			h.ops.submit(ch.key, true, func() { h.leaveOnline(a, ch, m) })
		} else {
			h.ops.submit(ch.key, true, func() { h.leavePresence(a, ch, m) })
		}
	}
	h.release(ch)
}

// release drops a reference to ch; after the last one the node leaves it in the broker.
func (h *Hub) release(ch *channel) {
	if h.index.release(ch) {
		h.bsubs.unsubscribe(ch.key)
	}
}

func (h *Hub) signin(c *client, d *signinData) {
	sid := h.socketID(c)
	if d.UserData == "" || !h.checkAuth(c, d.Auth, sid+"::user::"+d.UserData) {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: invalid signature"))
		return
	}
	var u struct {
		ID json.RawMessage `json:"id"`
	}
	var id string
	if json.Unmarshal([]byte(d.UserData), &u) != nil || json.Unmarshal(u.ID, &id) != nil || id == "" {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: user_data needs a non-empty string id"))
		return
	}
	if len(id) > c.app.conf().MaxUserIDLength {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: user id too long"))
		return
	}
	if u := c.userID(); u != "" && u != id {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: connection already signed in as another user"))
		return
	}
	watchlist, over, _ := watchlistOf(d.UserData)
	first := c.userID() == ""
	if first {
		c.x().userID = id
		h.users.add(c.app, id, c)
	}
	c.authorized()
	b := append([]byte(`{"event":"pusher:signin_success","data":{"user_data":`), appendJSONString(nil, d.UserData)...)
	c.conn.WriteText(append(b, `}}`...))
	if over {
		c.conn.WriteText(errorJSON(4302, "watchlist over "+strconv.Itoa(maxWatchlist)+" users: the first "+strconv.Itoa(maxWatchlist)+" are watched"))
	}
	if first {
		h.goOnline(c, id, watchlist)
	}
}

// clockBase is the origin of the client-event limiter's clock: h.clock() minus it is
// monotonic while the clock is time.Now (both carry a monotonic reading).
var clockBase = time.Now()

// clientEvent relays a client-* event to the channel's other subscribers, at most the
// app's MaxClientEventsPerSecond per connection (a token bucket, clientExt.allowEvent).
func (h *Hub) clientEvent(c *client, m *clientMessage) {
	a := c.app
	cfg := a.conf()
	switch {
	case !cfg.ClientEvents:
		c.conn.WriteText(errorJSON(4301, "client events are not enabled for this app"))
		return
	case len(m.Event) > cfg.MaxEventNameLength:
		c.conn.WriteText(errorJSON(4301, "client event name too long"))
		return
	case len(m.Data) > cfg.MaxEventBytes:
		c.conn.WriteText(errorJSON(4301, "client event data too large"))
		return
	}
	_, s := c.findSub(m.Channel)
	if s == nil || (s.ch.kind != kindPrivate && s.ch.kind != kindPresence) {
		c.conn.WriteText(errorJSON(4301, "client events need a subscribed private or presence channel"))
		return
	}
	s.ch.mu.Lock()
	active := s.idx >= 0
	s.ch.mu.Unlock()
	if !active {
		c.conn.WriteText(errorJSON(4301, "client event before subscription_succeeded"))
		return
	}
	if !c.x().allowEvent(int64(h.clock().Sub(clockBase)), cfg.MaxClientEventsPerSecond) {
		a.stats.dropped("client_event_rate")
		c.conn.WriteText(errorJSON(4301, "client event rate limit exceeded"))
		return
	}
	if h.refuseBusyEvent(c) { // overload.go
		return
	}
	data := m.Data
	if data == nil {
		data = json.RawMessage("null")
	}
	js := eventJSON(make([]byte, 0, 64+len(m.Event)+len(m.Channel)+len(data)), m.Event, m.Channel, data, s.memberID())
	env := h.envelope(js, h.nodeID, c.conn.ID())
	ch := s.ch
	sid := h.socketID(c)
	if !h.ops.submit(ch.key, false, func() {
		if h.publishAsync(a, ch.key, env, "client_event_unpublished") {
			h.clientEventHook(c, s, m, sid)
		}
	}) {
		a.stats.dropped("ops_queue_full")
		c.conn.WriteText(errorJSON(4100, "server busy: client event dropped"))
		return
	}
	a.stats.published("client")
}
