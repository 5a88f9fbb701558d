package hub

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
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
	want := c.app.cfg.Key + ":" + sign(c.app.cfg.Secret, signed)
	return subtle.ConstantTimeCompare([]byte(auth), []byte(want)) == 1
}

func (h *Hub) subscribe(c *client, d *subscribeData) {
	a := c.app
	name := d.Channel
	if !validChannelName(name, a.cfg.MaxChannelNameLength) {
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
	case kindPresence:
		if !h.checkAuth(c, d.Auth, sid+":"+name+":"+d.ChannelData) {
			c.conn.WriteText(subscriptionErrorJSON(name, "AuthError", "invalid signature", 401))
			return
		}
		var err string
		member, err = parseChannelData(d.ChannelData, &a.cfg)
		if err != "" {
			c.conn.WriteText(subscriptionErrorJSON(name, "InvalidChannelData", err, 400))
			return
		}
	}

	ch := h.index.acquire(a, name)
	s := &subscription{ch: ch, c: c, idx: -1}
	if k == kindPresence {
		s.member = &member.UserID
	}
	c.subs = append(c.subs, s)
	if k == kindPresence {
		h.joinPresence(c, s, sid, member)
		return
	}
	if ch.ready.Load() {
		ch.mu.Lock()
		ch.addLocked(s)
		ch.mu.Unlock()
		h.sendSubscribed(c, s, nil)
		return
	}
	// The node is not subscribed to this channel in the broker yet: do that off the
	// loop, and confirm to the client only once messages will reach this node.
	if !h.ops.submit(ch.key, false, func() {
		if err := h.ensureBroker(ch); err != nil {
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "broker unavailable", 503) })
			return
		}
		h.activate(c, s, nil)
	}) {
		h.failSubscribe(c, s, "ServiceUnavailable", "server busy, retry later", 503)
	}
}

// ensureBroker subscribes the node to ch in the broker (ops goroutine).
func (h *Hub) ensureBroker(ch *channel) error {
	if ch.ready.Load() {
		return nil
	}
	ctx, cancel := h.opContext()
	defer cancel()
	if err := h.broker.Subscribe(ctx, ch.key); err != nil {
		h.log.Warn("broker subscribe failed", "channel", ch.key, "err", err)
		return err
	}
	ch.ready.Store(true)
	return nil
}

func (h *Hub) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// activate adds c to ch's recipients from an ops goroutine and has c's loop send the
// confirmation. The Do is queued while ch.mu is held, so that any fan-out that includes
// c is queued on c's loop after it: subscription_succeeded always comes first.
func (h *Hub) activate(c *client, s *subscription, presenceData []byte) {
	ch := s.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if s.dead.Load() {
		return
	}
	ch.addLocked(s)
	h.srv.Do(c.conn, func() { h.sendSubscribed(c, s, presenceData) })
}

// sendSubscribed sends subscription_succeeded and, on cache channels, the cached event
// or pusher:cache_miss (loop).
func (h *Hub) sendSubscribed(c *client, s *subscription, presenceData []byte) {
	if s.dead.Load() || c.conn.Closed() {
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
		if frame, ok := h.cache.frame(ch.key, h.clock()); ok {
			c.conn.WriteFrame(frame)
		} else {
			b := append([]byte(`{"event":"pusher:cache_miss","channel":`), appendJSONString(nil, ch.name)...)
			c.conn.WriteText(append(b, '}'))
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
// broker subscription and presence entry are released off the loop.
func (h *Hub) leave(c *client, s *subscription) {
	ch := s.ch
	ch.mu.Lock()
	s.dead.Store(true)
	ch.removeLocked(s)
	ch.mu.Unlock()
	if ch.kind == kindPresence {
		sid := h.socketID(c)
		h.ops.submit(ch.key, true, func() { h.leavePresence(ch, sid, s.memberID()) })
	}
	h.release(ch)
}

// release drops a reference to ch; after the last one the node leaves it in the broker.
func (h *Hub) release(ch *channel) {
	if !h.index.release(ch) {
		return
	}
	h.ops.submit(ch.key, true, func() {
		if !ch.ready.Load() {
			return
		}
		ctx, cancel := h.opContext()
		defer cancel()
		if err := h.broker.Unsubscribe(ctx, ch.key); err != nil {
			h.log.Warn("broker unsubscribe failed", "channel", ch.key, "err", err)
		}
		ch.ready.Store(false)
	})
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
	if len(id) > c.app.cfg.MaxUserIDLength {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: user id too long"))
		return
	}
	if u := c.userID(); u != "" && u != id {
		c.conn.WriteText(errorJSON(4009, "sign-in failed: connection already signed in as another user"))
		return
	}
	if c.userID() == "" {
		c.x().userID = id
		h.users.add(c.app, id, c)
	}
	b := append([]byte(`{"event":"pusher:signin_success","data":{"user_data":`), appendJSONString(nil, d.UserData)...)
	c.conn.WriteText(append(b, `}}`...))
}

// clientEvent relays a client-* event to the channel's other subscribers.
func (h *Hub) clientEvent(c *client, m *clientMessage) {
	a := c.app
	switch {
	case !a.cfg.ClientEvents:
		c.conn.WriteText(errorJSON(4301, "client events are not enabled for this app"))
		return
	case len(m.Event) > a.cfg.MaxEventNameLength:
		c.conn.WriteText(errorJSON(4301, "client event name too long"))
		return
	case len(m.Data) > a.cfg.MaxEventBytes:
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
	now := h.clock().Unix()
	x := c.x()
	if now != x.evWindow {
		x.evWindow, x.evCount = now, 0
	}
	if int(x.evCount) >= a.cfg.MaxClientEventsPerSecond {
		a.stats.dropped("client_event_rate")
		c.conn.WriteText(errorJSON(4301, "client event rate limit exceeded"))
		return
	}
	x.evCount++
	data := m.Data
	if data == nil {
		data = json.RawMessage("null")
	}
	js := eventJSON(make([]byte, 0, 64+len(m.Event)+len(m.Channel)+len(data)), m.Event, m.Channel, data, s.memberID())
	env := h.envelope(js, h.nodeID, c.conn.ID(), false)
	ch := s.ch
	if !h.ops.submit(ch.key, false, func() { h.publishEnvelope(ch.key, env) }) {
		a.stats.dropped("ops_queue_full")
		c.conn.WriteText(errorJSON(4100, "server busy: client event dropped"))
		return
	}
	a.stats.published("client")
}
