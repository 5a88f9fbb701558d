package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// message is the top level of a Pusher message as raw slices of the frame payload:
// event and channel are the contents of JSON strings (still escaped, if the sender
// escaped anything), data is the raw JSON value.
type message struct {
	event   []byte
	channel []byte
	data    []byte
}

// scanMessage extracts event, channel and data from a Pusher JSON object without
// decoding it, so that the hot path (a channel event) allocates nothing. It checks the
// structure only as far as it needs to find the three fields.
func scanMessage(b []byte) (m message, err error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return m, fmt.Errorf("%w: not an object", ErrJSON)
	}
	i++
	for first := true; ; first = false {
		i = skipSpace(b, i)
		if i >= len(b) {
			return m, fmt.Errorf("%w: unterminated object", ErrJSON)
		}
		if first && b[i] == '}' {
			break
		}
		if b[i] != '"' {
			return m, fmt.Errorf("%w: key at %d", ErrJSON, i)
		}
		kEnd, ok := skipString(b, i)
		if !ok {
			return m, fmt.Errorf("%w: unterminated key", ErrJSON)
		}
		key := b[i+1 : kEnd-1]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return m, fmt.Errorf("%w: no colon after key", ErrJSON)
		}
		i = skipSpace(b, i+1)
		vEnd, ok := skipValue(b, i)
		if !ok {
			return m, fmt.Errorf("%w: bad value at %d", ErrJSON, i)
		}
		val := b[i:vEnd]
		switch string(key) { // no allocation: the compiler compares in place
		case "event":
			if len(val) < 2 || val[0] != '"' {
				return m, fmt.Errorf("%w: event is not a string", ErrJSON)
			}
			m.event = val[1 : len(val)-1]
		case "channel":
			if len(val) >= 2 && val[0] == '"' {
				m.channel = val[1 : len(val)-1]
			}
		case "data":
			m.data = val
		}
		i = skipSpace(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i++
			continue
		}
		if i < len(b) && b[i] == '}' {
			break
		}
		return m, fmt.Errorf("%w: expected , or } at %d", ErrJSON, i)
	}
	if m.event == nil {
		return m, fmt.Errorf("%w: no event", ErrJSON)
	}
	return m, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	}
	start := i
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' &&
		b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i, i > start
}

// dataObject decodes a Pusher data value into v: a JSON string holding JSON (the
// double encoding of PUSHER.md 1.2) or, as some servers send, the object itself.
func dataObject(data []byte, v any) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("%w: %w", ErrJSON, err)
		}
		data = []byte(s)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrJSON, err)
	}
	return nil
}

// established is the data of pusher:connection_established.
type established struct {
	SocketID        string `json:"socket_id"`
	ActivityTimeout int    `json:"activity_timeout"`
}

// pusherError is the data of pusher:error; code is absent in some messages.
type pusherError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// AppendPayload appends a sequenced event payload to dst: the text
// "seq:<seq>:ts:<unixnano>:" padded with 'x' to size bytes (not shorter than the
// prefix). It contains nothing a JSON string must escape, so a publisher can put it
// between quotes as is.
func AppendPayload(dst []byte, seq uint64, unixNano int64, size int) []byte {
	start := len(dst)
	dst = append(dst, "seq:"...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ":ts:"...)
	dst = strconv.AppendInt(dst, unixNano, 10)
	dst = append(dst, ':')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// ParsePayload reads the sequence number and send time from a payload made by
// AppendPayload; p may be the JSON string with its quotes or its contents.
func ParsePayload(p []byte) (seq uint64, unixNano int64, err error) {
	if len(p) >= 2 && p[0] == '"' {
		p = p[1 : len(p)-1]
	}
	rest, ok := bytes.CutPrefix(p, []byte("seq:"))
	if !ok {
		return 0, 0, ErrPayload
	}
	seq, rest, ok = parseUint(rest)
	if !ok {
		return 0, 0, ErrPayload
	}
	rest, ok = bytes.CutPrefix(rest, []byte(":ts:"))
	if !ok {
		return 0, 0, ErrPayload
	}
	ts, rest, ok := parseUint(rest)
	if !ok || ts > 1<<63-1 || (len(rest) > 0 && rest[0] != ':') {
		return 0, 0, ErrPayload
	}
	return seq, int64(ts), nil
}

// parseUint parses leading decimal digits (at most 19, so no overflow).
func parseUint(b []byte) (v uint64, rest []byte, ok bool) {
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		v = v*10 + uint64(b[i]-'0')
	}
	if i == 0 || (i < len(b) && b[i] >= '0' && b[i] <= '9') {
		return 0, b, false
	}
	return v, b[i:], true
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// appendSubscribe appends the JSON of a pusher:subscribe message. auth and channelData
// are omitted when empty.
func appendSubscribe(dst []byte, channel, auth, channelData string) []byte {
	dst = append(dst, `{"event":"pusher:subscribe","data":{"channel":`...)
	dst = appendJSONString(dst, channel)
	if auth != "" {
		dst = append(dst, `,"auth":`...)
		dst = appendJSONString(dst, auth)
	}
	if channelData != "" {
		dst = append(dst, `,"channel_data":`...)
		dst = appendJSONString(dst, channelData)
	}
	return append(dst, "}}"...)
}

// Channel kinds by prefix (PUSHER.md 1.6).
func isPresence(channel string) bool {
	return len(channel) >= 9 && channel[:9] == "presence-"
}

func isPrivate(channel string) bool {
	return len(channel) >= 8 && channel[:8] == "private-"
}
