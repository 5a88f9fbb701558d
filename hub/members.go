package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/herald-rt/herald/presence"
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
func (h *Hub) joinPresence(c *client, s *subscription, sid string, m presence.Member) {
	ch := s.ch
	a := c.app
	ok := h.ops.submit(ch.key, false, func() {
		if s.dead.Load() {
			return // gone before we got here; its Remove job follows and finds nothing
		}
		if err := h.ensureBroker(ch); err != nil {
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "broker unavailable", 503) })
			return
		}
		ctx, cancel := h.opContext()
		defer cancel()
		first, err := h.presence.Add(ctx, ch.key, sid, m, a.cfg.MaxPresenceMembers)
		if errors.Is(err, presence.ErrFull) {
			a.stats.dropped("presence_full")
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "LimitReached", "presence channel member limit reached", 403) })
			return
		}
		if err != nil {
			h.log.Warn("presence add failed", "channel", ch.key, "err", err)
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "presence store unavailable", 503) })
			return
		}
		members, err := h.presence.Members(ctx, ch.key)
		if err != nil {
			h.log.Warn("presence members failed", "channel", ch.key, "err", err)
			_, _ = h.presence.Remove(ctx, ch.key, sid, m.UserID)
			h.srv.Do(c.conn, func() { h.failSubscribe(c, s, "ServiceUnavailable", "presence store unavailable", 503) })
			return
		}
		h.activate(c, s, presenceData(members))
		if first {
			h.publishEnvelope(ch.key, h.envelope(memberAddedJSON(ch.name, m), h.nodeID, c.conn.ID(), false))
		}
	})
	if !ok {
		h.failSubscribe(c, s, "ServiceUnavailable", "server busy, retry later", 503)
	}
}

// leavePresence removes one connection of a member (ops goroutine) and tells the
// channel when it was the user's last.
func (h *Hub) leavePresence(ch *channel, sid, userID string) {
	ctx, cancel := h.opContext()
	defer cancel()
	last, err := h.presence.Remove(ctx, ch.key, sid, userID)
	if err != nil {
		h.log.Warn("presence remove failed", "channel", ch.key, "err", err)
		return
	}
	if last {
		b := append([]byte(nil), `{"user_id":`...)
		b = appendJSONString(b, userID)
		b = append(b, '}')
		js := eventJSON(nil, "pusher_internal:member_removed", ch.name, stringData(b), "")
		h.publishEnvelope(ch.key, h.envelope(js, 0, 0, false))
	}
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
