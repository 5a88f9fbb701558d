package hub

// Request signing for the Pusher HTTP API (PUSHER.md 2.2), the HMAC shared with channel,
// presence and sign-in auth, and the channel name rule. Everything here is pure: no Hub,
// no clock of its own, so that it can be fuzzed and tested against fixed vectors.

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// apiAuthVersion is the only auth_version Pusher has ever defined.
	apiAuthVersion = "1.0"
	// apiMaxClockSkew is Pusher's window for auth_timestamp either side of server time.
	apiMaxClockSkew = 600 * time.Second

	// serverToUserPrefix names the reserved per-user channels that server SDKs publish to
	// for sendToUser (PUSHER.md 1.10). It is the only channel name that may start with '#'.
	serverToUserPrefix = "#server-to-user-"
)

// Errors of the HTTP API. An apiError wraps exactly one of them, so callers and tests can
// tell failures apart with errors.Is while the response carries a human message.
var (
	errAPIWrongKey      = errors.New("hub: api: auth_key does not match the app")
	errAPIAuthVersion   = errors.New("hub: api: unsupported auth_version")
	errAPITimestamp     = errors.New("hub: api: auth_timestamp outside the allowed window")
	errAPIBodyMD5       = errors.New("hub: api: body_md5 missing or wrong")
	errAPISignature     = errors.New("hub: api: auth_signature missing or wrong")
	errAPIDuplicate     = errors.New("hub: api: duplicate query parameter")
	errAPIMissingParam  = errors.New("hub: api: missing auth parameter")
	errAPIBadRequest    = errors.New("hub: api: bad request")
	errAPITooLarge      = errors.New("hub: api: payload too large")
	errAPINotFound      = errors.New("hub: api: not found")
	errAPIForbidden     = errors.New("hub: api: forbidden")
	errAPIMethod        = errors.New("hub: api: method not allowed")
	errAPIInternal      = errors.New("hub: api: internal error")
	errAPIPublishFailed = errors.New("hub: api: publish failed")
	errAPIUnavailable   = errors.New("hub: api: service unavailable")
)

// apiError is an HTTP API failure: the status to answer with and the message the caller
// sees in {"error": Msg, "code": Status}.
type apiError struct {
	Status int
	Msg    string
	kind   error // one of the errAPI* vars
}

func (e *apiError) Error() string { return e.Msg }
func (e *apiError) Unwrap() error { return e.kind }

func newAPIError(status int, kind error, format string, args ...any) *apiError {
	return &apiError{Status: status, Msg: fmt.Sprintf(format, args...), kind: kind}
}

// apiAuthError builds a 401. Every failure of verifyRequest is a 401, including a wrong
// auth_version, a malformed timestamp, a duplicated parameter or a bad body_md5: Pusher
// documents 401 as "authentication error" and the SDKs treat the whole family alike, so
// a finer split (400 for some) would tell a client nothing it can act on differently.
func apiAuthError(kind error, format string, args ...any) *apiError {
	return newAPIError(http.StatusUnauthorized, kind, format, args...)
}

// verifyRequest checks a signed HTTP API request against the app's key and secret.
//
// path is the URL path as received (decoded), query every query parameter, body the raw
// request body (nil or empty for none) and now the server's time. The rules, beyond
// PUSHER.md 2.2:
//   - Parameter names are compared lower-cased. A name given twice (also "a" and "A") is
//     rejected: the string to sign would be ambiguous, and the checked value could differ
//     from the signed one.
//   - body_md5 is recomputed from body and must equal the given one. It is required when
//     the body is not empty; on an empty body it is optional but, if given, must be the
//     MD5 of nothing (some SDKs hash the empty body of a bodiless POST).
//   - auth_signature is hex, compared as bytes in constant time, so upper-case hex is
//     accepted: it carries the same MAC and strictness would buy no security.
//   - The hex digests (body_md5, auth_signature) are case-insensitive for the same reason;
//     the string to sign uses the body_md5 exactly as sent, as the client signed it.
func verifyRequest(method, path string, query url.Values, body []byte, key, secret string, now time.Time) error {
	params := make(map[string]string, len(query))
	for k, vs := range query {
		if len(vs) == 0 {
			continue // url.Values.Encode skips these too, so the client never signed them
		}
		lk := strings.ToLower(k)
		if _, dup := params[lk]; dup || len(vs) > 1 {
			return apiAuthError(errAPIDuplicate, "duplicate query parameter %q", lk)
		}
		params[lk] = vs[0]
	}

	get := func(name string) (string, error) {
		v, ok := params[name]
		if !ok || v == "" {
			return "", apiAuthError(errAPIMissingParam, "missing %s", name)
		}
		return v, nil
	}
	gotKey, err := get("auth_key")
	if err != nil {
		return err
	}
	if gotKey != key { // the key is public; no constant-time compare needed
		return apiAuthError(errAPIWrongKey, "auth_key does not match the app")
	}
	gotSig, err := get("auth_signature")
	if err != nil {
		return err
	}
	version, err := get("auth_version")
	if err != nil {
		return err
	}
	if version != apiAuthVersion {
		return apiAuthError(errAPIAuthVersion, "unsupported auth_version %q (want %q)", version, apiAuthVersion)
	}
	tsText, err := get("auth_timestamp")
	if err != nil {
		return err
	}
	ts, perr := strconv.ParseInt(tsText, 10, 64)
	if perr != nil {
		return apiAuthError(errAPITimestamp, "auth_timestamp %q is not a Unix time in seconds", tsText)
	}
	skew := int64(apiMaxClockSkew / time.Second)
	nowUnix := now.Unix()
	if ts < nowUnix-skew || ts > nowUnix+skew {
		// Float arithmetic: ts may be any int64 and the difference must not overflow.
		return apiAuthError(errAPITimestamp,
			"auth_timestamp %d is %.0f s away from server time %d; allowed clock skew is %d s (check the publisher's clock)",
			ts, float64(ts)-float64(nowUnix), nowUnix, skew)
	}

	sum := md5.Sum(body)
	wantMD5 := hex.EncodeToString(sum[:])
	gotMD5, hasMD5 := params["body_md5"]
	switch {
	case len(body) > 0 && !hasMD5:
		return apiAuthError(errAPIBodyMD5, "missing body_md5 (required when the body is not empty)")
	case hasMD5 && !strings.EqualFold(gotMD5, wantMD5):
		return apiAuthError(errAPIBodyMD5, "body_md5 does not match the body")
	}

	mac, derr := hex.DecodeString(gotSig)
	if derr != nil || len(mac) != sha256.Size {
		return apiAuthError(errAPISignature, "auth_signature is not a hex HMAC-SHA256")
	}
	want := signBytes(secret, apiStringToSign(method, path, params))
	if !hmac.Equal(mac, want) {
		return apiAuthError(errAPISignature, "invalid auth_signature")
	}
	return nil
}

// apiStringToSign is METHOD\nPATH\nQUERY with QUERY the lower-cased parameters other than
// auth_signature, sorted by name, joined k=v with '&', values not escaped.
func apiStringToSign(method, path string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	n := len(method) + len(path) + 2
	for k, v := range params {
		if k == "auth_signature" {
			continue
		}
		keys = append(keys, k)
		n += len(k) + len(v) + 2
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(n)
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
	}
	return b.String()
}

// sign is lower-case hex HMAC-SHA256(secret, s): the API request signature and the
// channel, presence and sign-in auth signatures (PUSHER.md 1.6, 1.10, 2.2) all use it.
// Verifiers compare with hmac.Equal.
func sign(secret, s string) string {
	return hex.EncodeToString(signBytes(secret, s))
}

func signBytes(secret, s string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return m.Sum(nil)
}

// channelNameChars marks the bytes Pusher allows in a channel name (PUSHER.md 1.6).
var channelNameChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_-=@,.;" {
		t[c] = true
	}
	return t
}()

// validChannelName reports whether name is a channel name Herald accepts: non-empty, at
// most maxLen bytes (callers pass App.MaxChannelNameLength with defaults applied; a
// maxLen ≤ 0 accepts nothing), only `A-Z a-z 0-9 _ - = @ , . ;`, except that the reserved
// serverToUserPrefix may lead, followed by at least one allowed character (the user id).
// Any other leading '#' is refused so that the reserved namespace stays reserved.
func validChannelName(name string, maxLen int) bool {
	if name == "" || len(name) > maxLen {
		return false
	}
	rest := name
	if name[0] == '#' {
		if !strings.HasPrefix(name, serverToUserPrefix) || len(name) == len(serverToUserPrefix) {
			return false
		}
		rest = name[len(serverToUserPrefix):]
	}
	for i := 0; i < len(rest); i++ {
		if !channelNameChars[rest[i]] {
			return false
		}
	}
	return true
}
