package loadgen

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
)

// ChannelAuth returns the auth value of a pusher:subscribe for a private or presence
// channel (PUSHER.md 1.6): key + ":" + lowercase hex HMAC-SHA256(secret,
// "socket_id:channel"), with ":channel_data" appended to the signed string when
// channelData is not empty (presence).
func ChannelAuth(key, secret, socketID, channel, channelData string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(socketID))
	m.Write([]byte{':'})
	m.Write([]byte(channel))
	if channelData != "" {
		m.Write([]byte{':'})
		m.Write([]byte(channelData))
	}
	var sum [sha256.Size]byte
	out := make([]byte, 0, len(key)+1+2*sha256.Size)
	out = append(out, key...)
	out = append(out, ':')
	out = hex.AppendEncode(out, m.Sum(sum[:0]))
	return string(out)
}

// SignQuery returns the query string of a signed Pusher HTTP API request
// (PUSHER.md 2.2): auth_key, auth_timestamp, auth_version, body_md5 (when body is not
// empty), the extra params, and auth_signature over
// "METHOD\nPATH\nsorted k=v pairs". Values are signed unescaped and sent escaped.
func SignQuery(method, path, key, secret string, body []byte, unixTime int64, params map[string]string) string {
	kv := map[string]string{
		"auth_key":       key,
		"auth_timestamp": strconv.FormatInt(unixTime, 10),
		"auth_version":   "1.0",
	}
	if len(body) > 0 {
		sum := md5.Sum(body)
		kv["body_md5"] = hex.EncodeToString(sum[:])
	}
	for k, v := range params {
		kv[strings.ToLower(k)] = v
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var signed, query strings.Builder
	for i, k := range keys {
		if i > 0 {
			signed.WriteByte('&')
			query.WriteByte('&')
		}
		signed.WriteString(k + "=" + kv[k])
		query.WriteString(queryEscape(k) + "=" + queryEscape(kv[k]))
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strings.ToUpper(method) + "\n" + path + "\n" + signed.String()))
	query.WriteString("&auth_signature=" + hex.EncodeToString(m.Sum(nil)))
	return query.String()
}

// queryEscape escapes everything but unreserved characters (RFC 3986), which is all
// a server needs to get the signed value back.
func queryEscape(s string) string {
	const hexUpper = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hexUpper[c>>4], hexUpper[c&15])
	}
	return string(b)
}
