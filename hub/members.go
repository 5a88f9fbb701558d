package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/webhook"
)

// parseChannelData reads a presence subscription's channel_data: {"user_id": string or
// number, "user_info": any}. It returns a message for the client when it is unusable.
func parseChannelData(cd string, a *App) (presence.Member, string) {
	var v struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if cd == "" || json.Unmarshal([]byte(cd), &v) != nil {
		return presence.Member{}, "channel_data must be a JSON object with a user_id"
	}
	var id string
	raw := bytes.TrimSpace(v.UserID)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if json.Unmarshal(raw, &id) != nil {
			return presence.Member{}, "invalid user_id"
		}
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return presence.Member{}, "invalid user_id"
		}
		id = string(raw)
	default:
		return presence.Member{}, "channel_data needs a user_id (string or number)"
	}
	if id == "" {
		return presence.Member{}, "user_id must not be empty"
	}
	if len(id) > a.MaxUserIDLength {
		return presence.Member{}, "user_id too long"
	}
	info := bytes.TrimSpace(v.UserInfo)
	if len(info) > a.MaxUserInfoBytes {
		return presence.Member{}, "user_info too large"
	}
	m := presence.Member{UserID: id}
	if len(info) > 0 && string(info) != "null" {
		m.Info = append(json.RawMessage(nil), info...)
	}
	return m, ""
}

// joinPresence records the member in the store off the loop, then confirms with the
// member list and tells the channel's other subscribers (on every node) if the user is new.
func (h *Hub) joinPresence(c *client, s *subscription) {
	ch := s.ch
	a := c.app
	m := s.member
	ok := h.ops.submit(ch.key, false, func() {
		if s.dead.Load() {
			return // gone before we got here; its Remove job follows and finds nothing
		}
		fail := func(typ, msg string, status int) {
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, typ, msg, status) })
		}
		ctx, cancel := h.opContext()
		defer cancel()
		if err := h.ensureBroker(ctx, ch); err != nil {
			fail("ServiceUnavailable", "broker unavailable", 503)
			return
		}
		j, err := h.presence.Join(ctx, ch.key, m.entry, m.Member, a.conf().MaxPresenceMembers)
		if errors.Is(err, presence.ErrFull) {
			a.stats.dropped("presence_full")
			fail("LimitReached", "presence channel member limit reached", 403)
			return
		}
		if err != nil {
			h.metrics.storeError()
			h.warns.Warn(warnPresenceJoin, "presence join failed", "channel", ch.key, "err", err)
			fail("ServiceUnavailable", "presence store unavailable", 503)
			return
		}
		var cached []byte
		if ch.cache {
			cached = h.lastFrame(ctx, ch)
		}
		h.activate(c, s, presenceData(j.Members), cached)
		if j.First {
			h.publishMember(a, ch.key, memberAddedJSON(ch.name, m.Member), h.nodeID, c.conn.ID())
			if j.Departed { // the user's departure stood, and its settling falls to us
				h.hook(a, webhook.Event{Name: webhook.MemberRemoved, Channel: ch.name, UserID: m.UserID})
			}
			if !j.Returned { // back within the grace: its member_removed was never sent
				h.hook(a, webhook.Event{Name: webhook.MemberAdded, Channel: ch.name, UserID: m.UserID})
			}
		}
	})
	if !ok {
		h.failSubscribe(c, s, "ServiceUnavailable", "server busy, retry later", 503)
	}
}

// leavePresence removes one connection of a member (ops goroutine) and tells the
// channel when it was the user's last. When the store fails, it retries by itself and
// reports the departure through HandleDepartures.
func (h *Hub) leavePresence(a *appState, ch *channel, m *presenceSub) {
	ctx, cancel := h.opContext()
	defer cancel()
	last, err := h.presence.Remove(ctx, ch.key, m.entry, m.UserID)
	if err != nil {
		h.metrics.storeError()
		h.warns.Warn(warnPresenceRemove, "presence remove failed; the store retries it", "channel", ch.key, "err", err)
		return
	}
	if last {
		h.publishMember(a, ch.key, memberRemovedJSON(ch.name, m.UserID), 0, 0)
		h.memberLeft(a, ch, m.UserID)
	}
}

// Member events must not be lost to a short broker outage (a lost member_removed leaves
// a ghost in every client's list until it resubscribes): publishMember retries, in the
// ops job so that the channel's later events wait their turn, for up to memberRetryFor.
const (
	memberRetryFor   = 10 * time.Second
	memberRetryEvery = 250 * time.Millisecond
)

// publishMember publishes a member event (ops goroutine), skipping the connection
// (exceptNode, exceptConn).
func (h *Hub) publishMember(a *appState, key string, js []byte, exceptNode uint32, exceptConn uint64) {
	env := h.envelope(js, exceptNode, exceptConn)
	deadline := time.Now().Add(memberRetryFor)
	for {
		ctx, cancel := h.opContext()
		err := h.publishEnvelope(ctx, key, env, 0)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || h.base.Err() != nil {
			a.stats.dropped("member_event_unpublished")
			h.warns.Warn(warnMemberEventLost, "member event lost: the broker refused it for too long", "channel", key, "err", err)
			return
		}
		select {
		case <-time.After(memberRetryEvery):
		case <-h.base.Done():
		}
	}
}

// HandleDepartures sends member_removed for users whose entries the store removed on
// its own (a dead node's, or a retried removal of ours).
func (h *Hub) HandleDepartures(deps []presence.Departure) {
	for _, d := range deps {
		appID, name, ok := strings.Cut(d.Channel, ":")
		a := h.appByID(appID)
		if !ok || a == nil {
			continue // an app this node does not serve
		}
		key, user := d.Channel, d.UserID
		if strings.HasPrefix(name, onlinePrefix) { // a signed-in user's last connection
			h.ops.submit(key, true, func() { h.publishWatch(a, user, "offline") })
			continue
		}
		h.ops.submit(key, true, func() { h.publishMember(a, key, memberRemovedJSON(name, user), 0, 0) })
		h.hook(a, webhook.Event{Name: webhook.MemberRemoved, Channel: name, UserID: user})
	}
}

// resetGrace delays the re-adds after a reset. The node that cleaned up after this one
// publishes member_removed for its users just after the cleaning; a member_added sent
// before that reaches the clients would be undone by it.
const resetGrace = time.Second

// HandleReset adds this node's live presence members to the store again, and reports
// every subscription count again, after the store lost them. Users the cluster thought
// gone are announced again with member_added, to every connection: the member_removed
// that the cluster sent reached this node's clients too, the users' own included.
func (h *Hub) HandleReset() {
	h.log.Warn("the presence store lost this node's entries (it was taken for dead, or lost its data): adding them again")
	h.counts.markAll()
	time.AfterFunc(resetGrace, h.reassertAll)
}

// reassertAll queues the re-add of every live presence subscription.
func (h *Hub) reassertAll() {
	for _, a := range h.apps.Load().byID {
		var chans []*channel
		h.index.each(a, func(ch *channel) {
			if ch.kind == kindPresence || ch.kind == kindOnline {
				chans = append(chans, ch)
			}
		})
		for _, ch := range chans {
			ch.mu.Lock()
			subs := append([]*subscription(nil), ch.members...)
			ch.mu.Unlock()
			for _, s := range subs {
				h.ops.submit(ch.key, true, func() { h.reassert(a, s) })
			}
		}
	}
}

// reassert adds one live presence subscription to the store again (ops goroutine).
func (h *Hub) reassert(a *appState, s *subscription) {
	if s.dead.Load() {
		return
	}
	ctx, cancel := h.opContext()
	defer cancel()
	m := s.member
	first, err := h.presence.Add(ctx, s.ch.key, m.entry, m.Member, 0)
	if err != nil {
		h.metrics.storeError()
		a.stats.dropped("presence_reassert_failed")
		h.warns.Warn(warnPresenceReadd, "presence re-add failed", "channel", s.ch.key, "err", err)
		return
	}
	switch {
	case !first:
	case s.ch.kind == kindOnline:
		h.publishWatch(a, m.UserID, "online")
	default:
		h.publishMember(a, s.ch.key, memberAddedJSON(s.ch.name, m.Member), 0, 0)
		h.hook(a, webhook.Event{Name: webhook.MemberAdded, Channel: s.ch.name, UserID: m.UserID})
	}
}

func memberRemovedJSON(channel, userID string) []byte {
	b := append([]byte(nil), `{"user_id":`...)
	b = appendJSONString(b, userID)
	b = append(b, '}')
	return eventJSON(nil, "pusher_internal:member_removed", channel, stringData(b), "")
}

func memberAddedJSON(channel string, m presence.Member) []byte {
	b := append([]byte(nil), `{"user_id":`...)
	b = appendJSONString(b, m.UserID)
	b = append(b, `,"user_info":`...)
	if m.Info != nil {
		b = append(b, m.Info...)
	} else {
		b = append(b, `null`...)
	}
	b = append(b, '}')
	return eventJSON(nil, "pusher_internal:member_added", channel, stringData(b), "")
}

// presenceData is subscription_succeeded's data for a presence channel, as a JSON string.
func presenceData(members []presence.Member) []byte {
	b := append([]byte(nil), `{"presence":{"ids":[`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, m.UserID)
	}
	b = append(b, `],"hash":{`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, m.UserID)
		b = append(b, ':')
		if m.Info != nil {
			b = append(b, m.Info...)
		} else {
			b = append(b, `null`...)
		}
	}
	b = append(b, `},"count":`...)
	b = strconv.AppendInt(b, int64(len(members)), 10)
	b = append(b, `}}`...)
	return stringData(b)
}
