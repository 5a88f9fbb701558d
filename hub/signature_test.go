package hub

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The credentials of Pusher's documented examples (PUSHER.md 1.14, 2.4).
const (
	apiDocKey    = "278d425bdf160c739803"
	apiDocSecret = "7ad3773142a6692b25b8"
)

func TestSignatureVectors(t *testing.T) {
	// PUSHER.md 1.14: recomputed independently, equal to Pusher's auth-signatures doc.
	for _, tc := range []struct{ in, want string }{
		{"1234.1234:private-foobar", "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"},
		{`1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"},
		{`1234.1234::user::{"id":"12345"}`, "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"},
	} {
		if got := sign(apiDocSecret, tc.in); got != tc.want {
			t.Errorf("sign(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// The worked example of Pusher's HTTP API doc (PUSHER.md 2.4).
const (
	apiDocBody      = `{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`
	apiDocTimestamp = 1353088179
	apiDocBodyMD5   = "ec365a775a4cd0599faeb73354201b6f"
	apiDocSignature = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	apiDocPath      = "/apps/3/events"
)

func apiDocQuery() url.Values {
	return url.Values{
		"auth_key":       {apiDocKey},
		"auth_timestamp": {strconv.Itoa(apiDocTimestamp)},
		"auth_version":   {"1.0"},
		"body_md5":       {apiDocBodyMD5},
		"auth_signature": {apiDocSignature},
	}
}

func TestVerifyRequestVector(t *testing.T) {
	sum := md5.Sum([]byte(apiDocBody))
	if got := hex.EncodeToString(sum[:]); got != apiDocBodyMD5 {
		t.Fatalf("body md5 = %s, want %s", got, apiDocBodyMD5)
	}
	params := map[string]string{}
	for k, v := range apiDocQuery() {
		params[k] = v[0]
	}
	wantString := "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
	if got := apiStringToSign("POST", apiDocPath, params); got != wantString {
		t.Fatalf("string to sign:\n got %q\nwant %q", got, wantString)
	}
	now := time.Unix(apiDocTimestamp, 0)
	if err := verifyRequest("POST", apiDocPath, apiDocQuery(), []byte(apiDocBody), apiDocKey, apiDocSecret, now); err != nil {
		t.Fatalf("documented request rejected: %v", err)
	}
	// The window is inclusive at ±600 s and closed beyond.
	for _, d := range []time.Duration{-600 * time.Second, 600 * time.Second} {
		if err := verifyRequest("POST", apiDocPath, apiDocQuery(), []byte(apiDocBody), apiDocKey, apiDocSecret, now.Add(d)); err != nil {
			t.Errorf("now%+v: %v", d, err)
		}
	}
}

// apiTestSign signs a request the way the SDKs do, independently of apiStringToSign, and
// returns the full query.
func apiTestSign(method, path string, params url.Values, body []byte, key, secret string, ts int64) url.Values {
	q := url.Values{}
	for k, v := range params {
		q[k] = append([]string(nil), v...)
	}
	q.Set("auth_key", key)
	q.Set("auth_timestamp", strconv.FormatInt(ts, 10))
	q.Set("auth_version", "1.0")
	if len(body) > 0 {
		sum := md5.Sum(body)
		q.Set("body_md5", hex.EncodeToString(sum[:]))
	}
	lower := map[string]string{}
	for k, v := range q {
		lower[strings.ToLower(k)] = v[0]
	}
	keys := make([]string, 0, len(lower))
	for k := range lower {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + lower[k]
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strings.ToUpper(method) + "\n" + path + "\n" + strings.Join(parts, "&")))
	q.Set("auth_signature", hex.EncodeToString(m.Sum(nil)))
	return q
}

func TestVerifyRequestFailures(t *testing.T) {
	const ts = 1700000000
	now := time.Unix(ts, 0)
	body := []byte(`{"name":"e","channel":"c","data":"x"}`)
	good := func() url.Values { return apiTestSign("POST", "/apps/1/events", nil, body, "key", "secret", ts) }

	type tc struct {
		name    string
		method  string
		path    string
		query   url.Values
		body    []byte
		now     time.Time
		kind    error  // nil: must verify
		message string // substring of the message
	}
	with := func(f func(q url.Values)) url.Values { q := good(); f(q); return q }
	emptyMD5 := md5.Sum(nil)

	cases := []tc{
		{name: "good", query: good()},
		{name: "upper-case signature hex accepted", query: with(func(q url.Values) {
			q.Set("auth_signature", strings.ToUpper(q.Get("auth_signature")))
		})},
		{name: "upper-case body_md5 accepted", query: func() url.Values {
			sum := md5.Sum(body)
			q := apiTestSign("POST", "/apps/1/events", url.Values{"body_md5": {strings.ToUpper(hex.EncodeToString(sum[:]))}}, nil, "key", "secret", ts)
			return q
		}()},
		{name: "upper-case parameter names accepted", query: func() url.Values {
			q := good()
			q["AUTH_KEY"] = q["auth_key"]
			delete(q, "auth_key")
			return q
		}()},
		{name: "extra signed parameter with escapes", query: apiTestSign("POST", "/apps/1/events",
			url.Values{"info": {"a b&c=d%"}}, body, "key", "secret", ts)},
		{name: "empty body, no body_md5", body: []byte{}, query: apiTestSign("GET", "/apps/1/channels", nil, nil, "key", "secret", ts), method: "GET", path: "/apps/1/channels"},
		{name: "empty body, md5 of nothing", body: []byte{}, method: "GET", path: "/apps/1/channels",
			query: apiTestSign("GET", "/apps/1/channels", url.Values{"body_md5": {hex.EncodeToString(emptyMD5[:])}}, nil, "key", "secret", ts)},
		{name: "lower-case method signed upper", method: "post", query: good()},

		{name: "wrong key", query: with(func(q url.Values) { q.Set("auth_key", "other") }),
			kind: errAPIWrongKey, message: "auth_key does not match the app"},
		{name: "missing key", query: with(func(q url.Values) { q.Del("auth_key") }),
			kind: errAPIMissingParam, message: "missing auth_key"},
		{name: "missing signature", query: with(func(q url.Values) { q.Del("auth_signature") }),
			kind: errAPIMissingParam, message: "missing auth_signature"},
		{name: "missing timestamp", query: with(func(q url.Values) { q.Del("auth_timestamp") }),
			kind: errAPIMissingParam, message: "missing auth_timestamp"},
		{name: "missing version", query: with(func(q url.Values) { q.Del("auth_version") }),
			kind: errAPIMissingParam, message: "missing auth_version"},
		{name: "stale timestamp", query: good(), now: now.Add(601 * time.Second),
			kind: errAPITimestamp, message: "auth_timestamp 1700000000 is -601 s away from server time 1700000601; allowed clock skew is 600 s"},
		{name: "future timestamp", query: good(), now: now.Add(-601 * time.Second),
			kind: errAPITimestamp, message: "is 601 s away"},
		{name: "absurd timestamp", query: with(func(q url.Values) { q.Set("auth_timestamp", "-9223372036854775808") }),
			kind: errAPITimestamp, message: "allowed clock skew is 600 s"},
		{name: "timestamp not a number", query: with(func(q url.Values) { q.Set("auth_timestamp", "1.5e9") }),
			kind: errAPITimestamp, message: `auth_timestamp "1.5e9" is not a Unix time in seconds`},
		{name: "bad version", query: with(func(q url.Values) { q.Set("auth_version", "2.0") }),
			kind: errAPIAuthVersion, message: `unsupported auth_version "2.0" (want "1.0")`},
		{name: "missing body_md5", query: with(func(q url.Values) { q.Del("body_md5") }),
			kind: errAPIBodyMD5, message: "missing body_md5 (required when the body is not empty)"},
		{name: "mismatched body_md5", query: with(func(q url.Values) { q.Set("body_md5", hex.EncodeToString(emptyMD5[:])) }),
			kind: errAPIBodyMD5, message: "body_md5 does not match the body"},
		{name: "body_md5 on empty body must hash nothing", body: []byte{}, query: good(),
			kind: errAPIBodyMD5, message: "body_md5 does not match the body"},
		{name: "tampered body", body: []byte(`{"name":"e","channel":"d","data":"x"}`), query: good(),
			kind: errAPIBodyMD5, message: "body_md5 does not match the body"},
		{name: "tampered body with its md5 re-done", body: []byte(`{"name":"e","channel":"d","data":"x"}`),
			query: with(func(q url.Values) {
				sum := md5.Sum([]byte(`{"name":"e","channel":"d","data":"x"}`))
				q.Set("body_md5", hex.EncodeToString(sum[:]))
			}), kind: errAPISignature, message: "invalid auth_signature"},
		{name: "tampered query", query: with(func(q url.Values) { q.Set("info", "user_count") }),
			kind: errAPISignature, message: "invalid auth_signature"},
		{name: "tampered path", path: "/apps/2/events", query: good(),
			kind: errAPISignature, message: "invalid auth_signature"},
		{name: "tampered method", method: "PUT", query: good(),
			kind: errAPISignature, message: "invalid auth_signature"},
		{name: "wrong secret", query: apiTestSign("POST", "/apps/1/events", nil, body, "key", "other", ts),
			kind: errAPISignature, message: "invalid auth_signature"},
		{name: "signature not hex", query: with(func(q url.Values) { q.Set("auth_signature", "zz") }),
			kind: errAPISignature, message: "auth_signature is not a hex HMAC-SHA256"},
		{name: "signature truncated", query: with(func(q url.Values) { q.Set("auth_signature", q.Get("auth_signature")[:62]) }),
			kind: errAPISignature, message: "auth_signature is not a hex HMAC-SHA256"},
		{name: "duplicate parameter", query: with(func(q url.Values) { q.Add("auth_key", "key") }),
			kind: errAPIDuplicate, message: `duplicate query parameter "auth_key"`},
		{name: "duplicate parameter by case", query: with(func(q url.Values) { q["Auth_Timestamp"] = []string{"1"} }),
			kind: errAPIDuplicate, message: `duplicate query parameter "auth_timestamp"`},
		{name: "duplicate signed extra parameter", query: apiTestSign("POST", "/apps/1/events", url.Values{"info": {"a", "b"}}, body, "key", "secret", ts),
			kind: errAPIDuplicate, message: `duplicate query parameter "info"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path, b, n := c.method, c.path, c.body, c.now
			if method == "" {
				method = "POST"
			}
			if path == "" {
				path = "/apps/1/events"
			}
			if b == nil {
				b = body
			}
			if n.IsZero() {
				n = now
			}
			err := verifyRequest(method, path, c.query, b, "key", "secret", n)
			if c.kind == nil {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, c.kind) {
				t.Fatalf("err = %v, want kind %v", err, c.kind)
			}
			ae, ok := errors.AsType[*apiError](err)
			if !ok || ae.Status != http.StatusUnauthorized {
				t.Fatalf("err = %#v, want a 401 *apiError", err)
			}
			if !strings.Contains(ae.Msg, c.message) {
				t.Fatalf("message %q does not contain %q", ae.Msg, c.message)
			}
		})
	}
}

func TestValidChannelName(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		name string
		max  int
		ok   bool
	}{
		{"my-channel", 200, true},
		{"private-encrypted-cache-a", 200, true},
		{"presence-room_1", 200, true},
		{"A-Za-z0-9_-=@,.;", 200, true},
		{long, 200, true},
		{long + "a", 200, false},
		{"abc", 3, true},
		{"abcd", 3, false},
		{"a", 0, false},
		{"", 200, false},
		{"a b", 200, false},
		{"a/b", 200, false},
		{"a:b", 200, false},
		{"a*", 200, false},
		{"é", 200, false},
		{"a\x00", 200, false},
		{"#server-to-user-42", 200, true},
		{"#server-to-user-a.b@c", 200, true},
		{"#server-to-user-", 200, false},
		{"#server-to-user-a#b", 200, false},
		{"#server-to-user-a b", 200, false},
		{"#other", 200, false},
		{"#", 200, false},
		{"##server-to-user-1", 200, false},
		{"a#server-to-user-1", 200, false},
		{"server-to-user-1", 200, true},
		{"#server-to-user-" + strings.Repeat("1", 184), 200, true},
		{"#server-to-user-" + strings.Repeat("1", 185), 200, false},
	} {
		if got := validChannelName(tc.name, tc.max); got != tc.ok {
			t.Errorf("validChannelName(%q, %d) = %v, want %v", tc.name, tc.max, got, tc.ok)
		}
	}
}

func TestParseAPIQuerySemicolon(t *testing.T) {
	q, err := parseAPIQuery("auth_key=k&filter_by_prefix=public-a;b=c&info=user_count&x=%41")
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Get("filter_by_prefix"); got != "public-a;b=c" {
		t.Fatalf("filter_by_prefix = %q", got)
	}
	if q.Get("x") != "A" || q.Get("info") != "user_count" {
		t.Fatalf("query %v", q)
	}
	if _, err := parseAPIQuery("a=%zz"); err == nil {
		t.Fatal("bad escape accepted")
	}
}
