package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// Event is one webhook event. Its JSON is Pusher's: the name, the channel, and only
// the fields its type has (MarshalJSON); the field tags let a receiver decode it.
type Event struct {
	// Name is one of the event types (ChannelOccupied, ...).
	Name    string `json:"name"`
	Channel string `json:"channel"`
	// UserID: member_added, member_removed; client_event on presence channels.
	UserID string `json:"user_id,omitempty"`
	// Event is a client_event's event name.
	Event string `json:"event,omitempty"`
	// Data is a client_event's data, sent as a JSON string: the string the client
	// sent, or the JSON text of the object it sent.
	Data string `json:"data,omitempty"`
	// SocketID is the sender of a client_event.
	SocketID string `json:"socket_id,omitempty"`
	// SubscriptionCount: subscription_count.
	SubscriptionCount int `json:"subscription_count,omitempty"`
	// At is when it happened, for the latency metric; zero: when Send was called.
	At time.Time `json:"-"`
}

// MarshalJSON encodes the event as Pusher does; an unknown Name is ErrUnknownEvent.
func (e Event) MarshalJSON() ([]byte, error) {
	t := typeIndex(e.Name)
	if t < 0 {
		return nil, ErrUnknownEvent
	}
	return e.appendJSON(nil, t), nil
}

// appendJSON appends the event's JSON; t is typeIndex(e.Name), known to be valid.
func (e *Event) appendJSON(dst []byte, t int) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, e.Name)
	dst = append(dst, `,"channel":`...)
	dst = appendString(dst, e.Channel)
	switch t {
	case tMemberAdded, tMemberRemoved:
		dst = append(dst, `,"user_id":`...)
		dst = appendString(dst, e.UserID)
	case tClientEvent:
		dst = append(dst, `,"event":`...)
		dst = appendString(dst, e.Event)
		dst = append(dst, `,"data":`...)
		dst = appendString(dst, e.Data)
		dst = append(dst, `,"socket_id":`...)
		dst = appendString(dst, e.SocketID)
		if e.UserID != "" {
			dst = append(dst, `,"user_id":`...)
			dst = appendString(dst, e.UserID)
		}
	case tSubscriptionCount:
		dst = append(dst, `,"subscription_count":`...)
		dst = strconv.AppendInt(dst, int64(e.SubscriptionCount), 10)
	}
	return append(dst, '}')
}

// size is what the event holds in a queue beyond its fixed struct: its strings.
func (e *Event) size() int {
	return len(e.Channel) + len(e.UserID) + len(e.Event) + len(e.Data) + len(e.SocketID)
}

// appendBody appends a request body: {"time_ms":…,"events":[…]}.
func appendBody(dst []byte, timeMS int64, batch []queued) []byte {
	dst = append(dst, `{"time_ms":`...)
	dst = strconv.AppendInt(dst, timeMS, 10)
	dst = append(dst, `,"events":[`...)
	for i := range batch {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = batch[i].ev.appendJSON(dst, int(batch[i].t))
	}
	return append(dst, "]}"...)
}

// appendString appends s as a JSON string, escaped exactly as encoding/json does with
// HTML escaping off (a webhook body is never HTML): invalid UTF-8 becomes U+FFFD, and
// U+2028 and U+2029 are escaped for JavaScript receivers.
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Sign returns a body's X-Pusher-Signature: the lowercase hex HMAC-SHA256 of the raw
// body, keyed with the app secret. A receiver compares it with hmac.Equal.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}
