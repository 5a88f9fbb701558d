package hub

import (
	"strconv"
	"unicode/utf8"
)

// Server→client frames are built by appending into one byte slice: the JSON of an event
// is produced once per message and wrapped in a WebSocket frame once (transport
// AppendTextFrame); the same bytes then go to every recipient.

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal. Invalid UTF-8 becomes U+FFFD, and
// U+2028/U+2029 are escaped so the output is also safe inside a JavaScript string.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// eventJSON builds {"event":E,"channel":C,"data":D[,"user_id":U]} where data is a raw JSON
// value forwarded byte for byte. channel and userID are omitted when empty.
func eventJSON(dst []byte, event, channel string, data []byte, userID string) []byte {
	dst = append(dst, `{"event":`...)
	dst = appendJSONString(dst, event)
	if channel != "" {
		dst = append(dst, `,"channel":`...)
		dst = appendJSONString(dst, channel)
	}
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	if userID != "" {
		dst = append(dst, `,"user_id":`...)
		dst = appendJSONString(dst, userID)
	}
	return append(dst, '}')
}

// errorJSON is a pusher:error event with a code (omitted when 0) and message.
func errorJSON(code int, message string) []byte {
	b := []byte(`{"event":"pusher:error","data":{`)
	if code != 0 {
		b = append(b, `"code":`...)
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, ',')
	}
	b = append(b, `"message":`...)
	b = appendJSONString(b, message)
	return append(b, `}}`...)
}

// subscriptionErrorJSON is the pusher:subscription_error sent when a subscription is
// refused; the connection stays open. The shape ({type,error,status}) is what
// pusher-js and Laravel Echo surface to the app.
func subscriptionErrorJSON(channel, typ, message string, status int) []byte {
	b := []byte(`{"event":"pusher:subscription_error","channel":`)
	b = appendJSONString(b, channel)
	b = append(b, `,"data":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"error":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	return append(b, `}}`...)
}

// stringData JSON-encodes an inner JSON document as a string, as Pusher sends the data
// of connection_established, subscription_succeeded and member events.
func stringData(inner []byte) []byte {
	return appendJSONString(make([]byte, 0, len(inner)+len(inner)/4+2), string(inner))
}

var (
	pongJSON = []byte(`{"event":"pusher:pong","data":{}}`)
	pingJSON = []byte(`{"event":"pusher:ping","data":{}}`)
)
