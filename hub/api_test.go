package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/transport"
)

// apiFake is an in-memory apiBackend: channel occupancy, presence members and the
// cache are set by the test, publishes and terminations are recorded.
type apiFake struct {
	mu         sync.Mutex
	apps       map[string]*appState
	clock      time.Time
	subs       map[string]int
	presence   map[string][]presence.Member
	cached     map[string]apiFakeCached
	published  []apiFakePublish
	terminated []string
	publishErr error
	storeErr   error
}

type apiFakeCached struct {
	data json.RawMessage
	ttl  time.Duration
}

type apiFakePublish struct {
	channels []string
	name     string
	data     string
	exclude  string
}

const apiTestTS = 1700000000

func newAPIFake(apps ...App) *apiFake {
	f := &apiFake{
		apps:     map[string]*appState{},
		clock:    time.Unix(apiTestTS, 0),
		subs:     map[string]int{},
		presence: map[string][]presence.Member{},
		cached:   map[string]apiFakeCached{},
	}
	for _, a := range apps {
		f.apps[a.ID] = newAppState(a, &appStats{})
	}
	return f
}

func (f *apiFake) appByID(id string) *appState { return f.apps[id] }

func (f *apiFake) publish(_ context.Context, _ *appState, channels []string, name string, data json.RawMessage, exclude string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.publishErr != nil {
		return f.publishErr
	}
	f.published = append(f.published, apiFakePublish{slices.Clone(channels), name, string(data), exclude})
	return nil
}

func (f *apiFake) subscriptionCount(_ context.Context, _ *appState, ch string) (int, error) {
	if f.storeErr != nil {
		return 0, f.storeErr
	}
	return f.subs[ch], nil
}

func (f *apiFake) userCount(_ context.Context, _ *appState, ch string) (int, error) {
	if f.storeErr != nil {
		return 0, f.storeErr
	}
	return len(f.presence[ch]), nil
}

func (f *apiFake) occupiedChannels(_ context.Context, _ *appState, prefix string) ([]string, error) {
	if f.storeErr != nil {
		return nil, f.storeErr
	}
	var out []string
	for ch, n := range f.subs {
		if n > 0 && strings.HasPrefix(ch, prefix) {
			out = append(out, ch)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (f *apiFake) members(_ context.Context, _ *appState, ch string) ([]presence.Member, error) {
	if f.storeErr != nil {
		return nil, f.storeErr
	}
	return f.presence[ch], nil
}

func (f *apiFake) terminateUser(_ context.Context, _ *appState, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.publishErr != nil {
		return f.publishErr
	}
	f.terminated = append(f.terminated, id)
	return nil
}

func (f *apiFake) cachedEvent(_ context.Context, _ *appState, ch string) (json.RawMessage, time.Duration, bool, error) {
	if f.publishErr != nil {
		return nil, 0, false, f.publishErr
	}
	c, ok := f.cached[ch]
	return c.data, c.ttl, ok, nil
}

func (f *apiFake) now() time.Time { return f.clock }

var _ apiBackend = (*apiFake)(nil)

var apiTestApp = App{ID: "1", Key: "key", Secret: "secret"}

// apiTestReq is a request to send; signed unless raw.
type apiTestReq struct {
	method string
	path   string
	query  url.Values // unsigned parameters; signing adds the auth ones
	body   string
	raw    bool   // send path?query as is, unsigned
	key    string // auth_key; default apiTestApp's
	secret string // signing secret; default apiTestApp's
	ts     int64  // auth_timestamp; default apiTestTS
}

// target is the request's path and query string, signed unless raw.
func (r apiTestReq) target(t testing.TB) string {
	t.Helper()
	if r.raw {
		if len(r.query) > 0 {
			return r.path + "?" + r.query.Encode()
		}
		return r.path
	}
	key, secret, ts := r.key, r.secret, r.ts
	if key == "" {
		key = apiTestApp.Key
	}
	if secret == "" {
		secret = apiTestApp.Secret
	}
	if ts == 0 {
		ts = apiTestTS
	}
	var body []byte
	if r.body != "" {
		body = []byte(r.body)
	}
	path, _, _ := strings.Cut(r.path, "?")
	unescaped, err := url.PathUnescape(path)
	if err != nil {
		t.Fatal(err)
	}
	return path + "?" + apiTestSign(r.method, unescaped, r.query, body, key, secret, ts).Encode()
}

func (r apiTestReq) bodyReader() io.Reader {
	if r.body == "" {
		return nil
	}
	return strings.NewReader(r.body)
}

func (r apiTestReq) build(t testing.TB) *http.Request {
	t.Helper()
	return httptest.NewRequest(r.method, r.target(t), r.bodyReader())
}

type apiTestResp struct {
	status int
	ctype  string
	body   string
	allow  string
}

func serveAPITest(t testing.TB, h http.Handler, r apiTestReq) apiTestResp {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r.build(t))
	return apiTestResp{w.Code, w.Header().Get("Content-Type"), w.Body.String(), w.Header().Get("Allow")}
}

func apiErrBody(status int, msg string) string {
	b, _ := json.Marshal(apiErrorBody{Error: msg, Code: status})
	return string(b)
}

func TestAPIErrors(t *testing.T) {
	big := `{"name":"e","channel":"c","data":"` + strings.Repeat("x", 1<<20) + `"}`
	tooMuchData := `{"name":"e","channel":"c","data":"` + strings.Repeat("x", 10241) + `"}`
	manyChannels := make([]string, 101)
	for i := range manyChannels {
		manyChannels[i] = "c" + strconv.Itoa(i)
	}
	manyJSON, _ := json.Marshal(manyChannels)
	batchOf := func(n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = `{"name":"e","channel":"c","data":"x"}`
		}
		return `{"batch":[` + strings.Join(items, ",") + `]}`
	}
	post := func(path, body string) apiTestReq { return apiTestReq{method: "POST", path: path, body: body} }
	events := func(body string) apiTestReq { return post("/apps/1/events", body) }
	get := func(path string, q url.Values) apiTestReq { return apiTestReq{method: "GET", path: path, query: q} }
	info := func(s string) url.Values { return url.Values{"info": {s}} }

	cases := []struct {
		name   string
		req    apiTestReq
		status int
		msg    string
	}{
		// 404
		{"no route", apiTestReq{method: "GET", path: "/nope", raw: true}, 404, "not found: GET /nope"},
		{"trailing slash", apiTestReq{method: "POST", path: "/apps/1/events/", raw: true}, 404, "not found: POST /apps/1/events/"},
		{"unknown app", apiTestReq{method: "POST", path: "/apps/9/events", body: "{}"}, 404, `unknown app id "9"`},
		// 405
		{"GET events", apiTestReq{method: "GET", path: "/apps/1/events", raw: true}, 405, "method GET not allowed; use POST"},
		{"DELETE batch", apiTestReq{method: "DELETE", path: "/apps/1/batch_events", raw: true}, 405, "method DELETE not allowed; use POST"},
		{"POST channels", apiTestReq{method: "POST", path: "/apps/1/channels", raw: true}, 405, "method POST not allowed; use GET, HEAD"},
		{"PUT channel", apiTestReq{method: "PUT", path: "/apps/1/channels/a", raw: true}, 405, "method PUT not allowed; use GET, HEAD"},
		{"POST users", apiTestReq{method: "POST", path: "/apps/1/channels/presence-a/users", raw: true}, 405, "method POST not allowed; use GET, HEAD"},
		{"GET terminate", apiTestReq{method: "GET", path: "/apps/1/users/7/terminate_connections", raw: true}, 405, "method GET not allowed; use POST"},
		{"POST up", apiTestReq{method: "POST", path: "/up", raw: true}, 405, "method POST not allowed; use GET, HEAD"},
		{"POST root", apiTestReq{method: "POST", path: "/", raw: true}, 405, "method POST not allowed; use GET, HEAD"},
		// 413
		{"body over the cap", events(big), 413, "request body too large (limit 1048576 bytes)"},
		{"data over MaxEventBytes", events(tooMuchData), 413, "event data too large: 10241 bytes (limit 10240)"},
		{"batch data over MaxEventBytes", post("/apps/1/batch_events",
			`{"batch":[{"name":"e","channel":"c","data":"x"},`+strings.TrimSuffix(tooMuchData, "}")+`}]}`),
			413, "batch[1]: event data too large: 10241 bytes (limit 10240)"},
		// 401 (the failure kinds are covered in TestVerifyRequestFailures; here: the wiring)
		{"unsigned", apiTestReq{method: "POST", path: "/apps/1/events", body: "{}", raw: true}, 401, "missing auth_key"},
		{"wrong secret", apiTestReq{method: "POST", path: "/apps/1/events", body: `{"name":"e","channel":"c","data":"x"}`, secret: "nope"}, 401, "invalid auth_signature"},
		{"stale", apiTestReq{method: "GET", path: "/apps/1/channels", ts: apiTestTS - 601}, 401,
			"auth_timestamp 1699999399 is -601 s away from server time 1700000000; allowed clock skew is 600 s (check the publisher's clock)"},
		// 400: query string
		{"malformed query", apiTestReq{method: "GET", path: "/apps/1/channels?a=%zz", raw: true}, 400, `malformed query string: invalid URL escape "%zz"`},
		// 400: /events body
		{"empty body", events(""), 400, "empty body: expected a JSON object"},
		{"malformed JSON", events(`{"name":`), 400, "malformed JSON: unexpected end of JSON input"},
		{"trailing garbage", events(`{"name":"e","channel":"c","data":"x"} x`), 400, "malformed JSON: invalid character 'x' after top-level value"},
		{"not an object", events(`[1]`), 400, "expected a JSON object, got array"},
		{"invalid UTF-8", events("{\"name\":\"e\xff\",\"channel\":\"c\",\"data\":\"x\"}"), 400, "body is not valid UTF-8"},
		{"name not a string", events(`{"name":5,"channel":"c","data":"x"}`), 400, "name: expected a string, got number"},
		{"channels not an array", events(`{"name":"e","channels":"c","data":"x"}`), 400, "channels: expected an array of strings, got string"},
		{"missing name", events(`{"channel":"c","data":"x"}`), 400, "missing event name"},
		{"empty name", events(`{"name":"","channel":"c","data":"x"}`), 400, "missing event name"},
		{"name too long", events(`{"name":"` + strings.Repeat("n", 201) + `","channel":"c","data":"x"}`), 400, "event name too long: 201 bytes (limit 200)"},
		{"reserved name", events(`{"name":"pusher_internal:member_added","channel":"c","data":"x"}`), 400, `event names starting with "pusher_internal:" are reserved`},
		{"missing data", events(`{"name":"e","channel":"c"}`), 400, "missing data"},
		{"null data", events(`{"name":"e","channel":"c","data":null}`), 400, "missing data"},
		{"missing channels", events(`{"name":"e","data":"x"}`), 400, "missing channels"},
		{"empty channels", events(`{"name":"e","channels":[],"data":"x"}`), 400, "channels must not be empty"},
		{"both channel and channels", events(`{"name":"e","channel":"a","channels":["b"],"data":"x"}`), 400, `give either "channels" or "channel", not both`},
		{"too many channels", events(`{"name":"e","channels":` + string(manyJSON) + `,"data":"x"}`), 400, "too many channels: 101 (limit 100)"},
		{"invalid channel", events(`{"name":"e","channels":["ok","a b"],"data":"x"}`), 400, `invalid channel name "a b": 1 to 200 of A-Z a-z 0-9 _ - = @ , . ;`},
		{"reserved # channel", events(`{"name":"e","channel":"#foo","data":"x"}`), 400, `invalid channel name "#foo": 1 to 200 of A-Z a-z 0-9 _ - = @ , . ;`},
		{"empty channel", events(`{"name":"e","channel":"","data":"x"}`), 400, `invalid channel name "": 1 to 200 of A-Z a-z 0-9 _ - = @ , . ;`},
		{"encrypted with others", events(`{"name":"e","channels":["a","private-encrypted-b"],"data":"x"}`), 400, `encrypted channel "private-encrypted-b" must be published alone`},
		{"bad socket_id", events(`{"name":"e","channel":"c","data":"x","socket_id":"1.2.3"}`), 400, `invalid socket_id "1.2.3": want digits.digits`},
		{"socket_id not a string", events(`{"name":"e","channel":"c","data":"x","socket_id":1.2}`), 400, "socket_id: expected a string, got number"},
		{"unknown info", events(`{"name":"e","channel":"c","data":"x","info":"user_count,colour"}`), 400, `unsupported info attribute "colour"`},
		{"cache info on publish", events(`{"name":"e","channel":"c","data":"x","info":"cache"}`), 400, `unsupported info attribute "cache"`},
		// 400: /batch_events body
		{"batch missing", post("/apps/1/batch_events", `{}`), 400, "batch must hold at least one event"},
		{"batch empty", post("/apps/1/batch_events", `{"batch":[]}`), 400, "batch must hold at least one event"},
		{"batch not an array", post("/apps/1/batch_events", `{"batch":{}}`), 400, "batch: expected an array, got object"},
		{"batch too many", post("/apps/1/batch_events", batchOf(11)), 400, "too many events in batch: 11 (limit 10)"},
		{"batch channels field", post("/apps/1/batch_events", `{"batch":[{"name":"e","channels":["c"],"data":"x"}]}`), 400, `batch[0]: batch events take "channel", not "channels"`},
		{"batch missing channel", post("/apps/1/batch_events", `{"batch":[{"name":"e","data":"x"}]}`), 400, "batch[0]: missing channel"},
		{"batch item not an object", post("/apps/1/batch_events", `{"batch":[{"name":"e","channel":"c","data":"x"},"e"]}`), 400, "batch[1]: expected a JSON object, got string"},
		{"batch bad item", post("/apps/1/batch_events", `{"batch":[{"name":"e","channel":"c","data":"x"},{"name":"e","channel":"c"}]}`), 400, "batch[1]: missing data"},
		// 400: queries
		{"channels user_count without prefix", get("/apps/1/channels", info("user_count")), 400, `info=user_count requires filter_by_prefix to start with "presence-"`},
		{"channels user_count wrong prefix", get("/apps/1/channels", url.Values{"info": {"user_count"}, "filter_by_prefix": {"private-"}}), 400, `info=user_count requires filter_by_prefix to start with "presence-"`},
		{"channels subscription_count", get("/apps/1/channels", info("subscription_count")), 400, `unsupported info attribute "subscription_count"`},
		{"channel invalid name", get("/apps/1/channels/a%20b", nil), 400, `invalid channel name "a b"`},
		{"channel user_count on public", get("/apps/1/channels/a", info("user_count")), 400, "info=user_count is only available for presence channels"},
		{"channel subscription_count on presence", get("/apps/1/channels/presence-a", info("subscription_count")), 400, "info=subscription_count is not available for presence channels; use user_count"},
		{"channel cache on non-cache", get("/apps/1/channels/private-a", info("cache")), 400, "info=cache is only available for cache channels"},
		{"channel unknown info", get("/apps/1/channels/a", info("occupied")), 400, `unsupported info attribute "occupied"`},
		{"users of public channel", get("/apps/1/channels/a/users", nil), 400, "users are only available for presence channels"},
		{"users invalid name", get("/apps/1/channels/presence-a%2Fb/users", nil), 400, `invalid channel name "presence-a/b"`},
		{"terminate long user id", post("/apps/1/users/"+strings.Repeat("u", 129)+"/terminate_connections", ""), 400, "invalid user id: must be 1 to 128 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newAPIFake(apiTestApp)
			resp := serveAPITest(t, newAPIHandler(f), c.req)
			if resp.status != c.status || resp.body != apiErrBody(c.status, c.msg) {
				t.Fatalf("got %d %s\nwant %d %s", resp.status, resp.body, c.status, apiErrBody(c.status, c.msg))
			}
			if resp.ctype != "application/json" {
				t.Errorf("Content-Type = %q", resp.ctype)
			}
			if c.status == 405 && resp.allow == "" {
				t.Errorf("405 without Allow")
			}
			if len(f.published) != 0 || len(f.terminated) != 0 {
				t.Errorf("a rejected request acted: published %v, terminated %v", f.published, f.terminated)
			}
		})
	}
}

func TestAPICoreFailures(t *testing.T) {
	f := newAPIFake(apiTestApp)
	f.publishErr = errors.New("broker down")
	h := newAPIHandler(f)
	resp := serveAPITest(t, h, apiTestReq{method: "POST", path: "/apps/1/events", body: `{"name":"e","channel":"c","data":"x"}`})
	if want := apiErrBody(500, "publish failed: broker down"); resp.status != 500 || resp.body != want {
		t.Errorf("publish: got %d %s, want %s", resp.status, resp.body, want)
	}
	resp = serveAPITest(t, h, apiTestReq{method: "POST", path: "/apps/1/batch_events", body: `{"batch":[{"name":"e","channel":"c","data":"x"}]}`})
	if want := apiErrBody(500, "batch[0]: publish failed: broker down (the events before it were published)"); resp.status != 500 || resp.body != want {
		t.Errorf("batch: got %d %s, want %s", resp.status, resp.body, want)
	}
	f.storeErr = errors.New("redis timeout")
	resp = serveAPITest(t, h, apiTestReq{method: "GET", path: "/apps/1/channels/presence-a/users"})
	if want := apiErrBody(500, "presence store: redis timeout"); resp.status != 500 || resp.body != want {
		t.Errorf("users: got %d %s, want %s", resp.status, resp.body, want)
	}
	resp = serveAPITest(t, h, apiTestReq{method: "GET", path: "/apps/1/channels/presence-a", query: url.Values{"info": {"user_count"}}})
	if want := apiErrBody(500, "presence store: redis timeout"); resp.status != 500 || resp.body != want {
		t.Errorf("user_count: got %d %s, want %s", resp.status, resp.body, want)
	}
}

// TestAPIVerifiedVector sends PUSHER.md 2.4's documented request byte for byte, with the
// clock set to its 2012 timestamp.
func TestAPIVerifiedVector(t *testing.T) {
	f := newAPIFake(App{ID: "3", Key: apiDocKey, Secret: apiDocSecret})
	f.clock = time.Unix(apiDocTimestamp, 0)
	h := newAPIHandler(f)
	send := func() *httptest.ResponseRecorder {
		target := apiDocPath + "?auth_key=" + apiDocKey + "&auth_timestamp=1353088179&auth_version=1.0&body_md5=" + apiDocBodyMD5 + "&auth_signature=" + apiDocSignature
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("POST", target, strings.NewReader(apiDocBody)))
		return w
	}
	if w := send(); w.Code != 200 || w.Body.String() != "{}" {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	want := apiFakePublish{channels: []string{"project-3"}, name: "foo", data: `"{\"some\":\"data\"}"`}
	if len(f.published) != 1 || !apiEqualPublish(f.published[0], want) {
		t.Fatalf("published %+v, want %+v", f.published, want)
	}
	f.clock = f.clock.Add(601 * time.Second)
	if w := send(); w.Code != 401 || !strings.Contains(w.Body.String(), "allowed clock skew is 600 s") {
		t.Fatalf("601 s later: got %d %s", w.Code, w.Body)
	}
}

func apiEqualPublish(a, b apiFakePublish) bool {
	return slices.Equal(a.channels, b.channels) && a.name == b.name && a.data == b.data && a.exclude == b.exclude
}

func TestAPIHealth(t *testing.T) {
	h := newAPIHandler(newAPIFake(apiTestApp))
	for _, path := range []string{"/", "/up"} {
		for _, m := range []string{"GET", "HEAD"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(m, path, nil))
			if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
				t.Errorf("%s %s: %d %q", m, path, w.Code, w.Header().Get("Content-Type"))
			}
			if m == "GET" && w.Body.String() != "OK" {
				t.Errorf("GET %s: body %q", path, w.Body)
			}
		}
	}
}

func TestAPIEvents(t *testing.T) {
	for _, c := range []struct {
		name    string
		body    string
		setup   func(f *apiFake)
		want    string
		publish apiFakePublish
	}{
		{
			name:    "data forwarded byte for byte",
			body:    `{ "name" : "e" , "channels" : ["a"], "data" :  "{\"html\":\"<b>&amp;</b>\",\"u\":\"\u00e9\ud83d\ude00\"}" }`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"a"}, name: "e", data: `"{\"html\":\"<b>&amp;</b>\",\"u\":\"\u00e9\ud83d\ude00\"}"`},
		},
		{
			name:    "non-string data forwarded raw",
			body:    `{"name":"e","channel":"a","data":{"x": [1, 2.50]}}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"a"}, name: "e", data: `{"x": [1, 2.50]}`},
		},
		{
			name:    "duplicate channels once",
			body:    `{"name":"e","channels":["a","b","a"],"data":"x","socket_id":"12.34"}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"a", "b"}, name: "e", data: `"x"`, exclude: "12.34"},
		},
		{
			name:    "empty socket_id is none",
			body:    `{"name":"e","channel":"a","data":"x","socket_id":""}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"a"}, name: "e", data: `"x"`},
		},
		{
			name:    "sendToUser channel",
			body:    `{"name":"e","channels":["#server-to-user-42"],"data":"x"}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"#server-to-user-42"}, name: "e", data: `"x"`},
		},
		{
			name:    "encrypted alone",
			body:    `{"name":"e","channel":"private-encrypted-a","data":"{\"nonce\":\"n\",\"ciphertext\":\"c\"}"}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"private-encrypted-a"}, name: "e", data: `"{\"nonce\":\"n\",\"ciphertext\":\"c\"}"`},
		},
		{
			name: "data at the limit, measured decoded",
			// 10240 decoded bytes, 20480 on the wire: Pusher and the SDKs count the former.
			body:    `{"name":"e","channel":"a","data":"` + strings.Repeat(`\"`, 10240) + `"}`,
			want:    `{}`,
			publish: apiFakePublish{channels: []string{"a"}, name: "e", data: `"` + strings.Repeat(`\"`, 10240) + `"`},
		},
		{
			name: "info attributes per channel type",
			body: `{"name":"e","channels":["presence-p","pub","private-x"],"data":"x","info":" user_count , subscription_count,"}`,
			setup: func(f *apiFake) {
				f.subs["pub"] = 3
				f.subs["presence-p"] = 5
				f.presence["presence-p"] = []presence.Member{{UserID: "1"}, {UserID: "2"}}
			},
			want:    `{"channels":{"presence-p":{"user_count":2},"private-x":{"subscription_count":0},"pub":{"subscription_count":3}}}`,
			publish: apiFakePublish{channels: []string{"presence-p", "pub", "private-x"}, name: "e", data: `"x"`},
		},
		{
			name:    "info not applicable leaves an empty object",
			body:    `{"name":"e","channels":["pub"],"data":"x","info":"user_count"}`,
			want:    `{"channels":{"pub":{}}}`,
			publish: apiFakePublish{channels: []string{"pub"}, name: "e", data: `"x"`},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newAPIFake(apiTestApp)
			if c.setup != nil {
				c.setup(f)
			}
			resp := serveAPITest(t, newAPIHandler(f), apiTestReq{method: "POST", path: "/apps/1/events", body: c.body})
			if resp.status != 200 || resp.body != c.want || resp.ctype != "application/json" {
				t.Fatalf("got %d %q %s, want 200 %s", resp.status, resp.ctype, resp.body, c.want)
			}
			if len(f.published) != 1 || !apiEqualPublish(f.published[0], c.publish) {
				t.Fatalf("published %+v\nwant %+v", f.published, c.publish)
			}
		})
	}
}

func TestAPIBatchEvents(t *testing.T) {
	f := newAPIFake(apiTestApp)
	f.subs["a"] = 2
	f.presence["presence-b"] = []presence.Member{{UserID: "7"}}
	h := newAPIHandler(f)
	body := `{"batch":[
		{"name":"e1","channel":"a","data":"1","info":"subscription_count"},
		{"name":"e2","channel":"c","data":{"k":"v"},"socket_id":"1.2"},
		{"name":"e3","channel":"presence-b","data":"3","info":"user_count,subscription_count"}]}`
	resp := serveAPITest(t, h, apiTestReq{method: "POST", path: "/apps/1/batch_events", body: body})
	if want := `{"batch":[{"subscription_count":2},{},{"user_count":1}]}`; resp.status != 200 || resp.body != want {
		t.Fatalf("got %d %s, want %s", resp.status, resp.body, want)
	}
	want := []apiFakePublish{
		{[]string{"a"}, "e1", `"1"`, ""},
		{[]string{"c"}, "e2", `{"k":"v"}`, "1.2"},
		{[]string{"presence-b"}, "e3", `"3"`, ""},
	}
	if !slices.EqualFunc(f.published, want, apiEqualPublish) {
		t.Fatalf("published %+v\nwant %+v", f.published, want)
	}

	// Without info the answer is {}; an invalid last event stops the whole batch.
	f.published = nil
	if resp := serveAPITest(t, h, apiTestReq{method: "POST", path: "/apps/1/batch_events",
		body: `{"batch":[{"name":"e","channel":"a","data":"1"}]}`}); resp.status != 200 || resp.body != "{}" {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	f.published = nil
	if resp := serveAPITest(t, h, apiTestReq{method: "POST", path: "/apps/1/batch_events",
		body: `{"batch":[{"name":"e","channel":"a","data":"1"},{"name":"e","channel":"a b","data":"1"}]}`}); resp.status != 400 {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	if len(f.published) != 0 {
		t.Fatalf("published %+v before validating the whole batch", f.published)
	}
}

func TestAPIBatchLimitFromApp(t *testing.T) {
	app := apiTestApp
	app.MaxBatchEvents = 2
	f := newAPIFake(app)
	resp := serveAPITest(t, newAPIHandler(f), apiTestReq{method: "POST", path: "/apps/1/batch_events",
		body: `{"batch":[{"name":"e","channel":"a","data":"1"},{"name":"e","channel":"a","data":"1"},{"name":"e","channel":"a","data":"1"}]}`})
	if want := apiErrBody(400, "too many events in batch: 3 (limit 2)"); resp.status != 400 || resp.body != want {
		t.Fatalf("got %d %s, want %s", resp.status, resp.body, want)
	}
}

func TestAPIQueries(t *testing.T) {
	f := newAPIFake(apiTestApp)
	f.subs["presence-room"] = 4
	f.subs["presence-empty"] = 0
	f.subs["news"] = 2
	f.subs["private-cache-x"] = 1
	f.subs["#server-to-user-7"] = 1
	f.presence["presence-room"] = []presence.Member{{UserID: "1"}, {UserID: "2", Info: json.RawMessage(`{"n":1}`)}}
	f.cached["cache-prices"] = apiFakeCached{data: json.RawMessage(`"{\"p\":\"<1>\"}"`), ttl: 1799*time.Second + time.Millisecond}
	h := newAPIHandler(f)

	for _, c := range []struct {
		path  string
		query url.Values
		want  string
	}{
		{"/apps/1/channels", nil, `{"channels":{"news":{},"presence-room":{},"private-cache-x":{}}}`},
		{"/apps/1/channels", url.Values{"filter_by_prefix": {"presence-"}}, `{"channels":{"presence-room":{}}}`},
		{"/apps/1/channels", url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}, `{"channels":{"presence-room":{"user_count":2}}}`},
		{"/apps/1/channels", url.Values{"filter_by_prefix": {"nothing-"}}, `{"channels":{}}`},
		{"/apps/1/channels/news", nil, `{"occupied":true}`},
		{"/apps/1/channels/quiet", url.Values{"info": {"subscription_count"}}, `{"occupied":false,"subscription_count":0}`},
		{"/apps/1/channels/news", url.Values{"info": {"subscription_count"}}, `{"occupied":true,"subscription_count":2}`},
		{"/apps/1/channels/presence-room", url.Values{"info": {"user_count"}}, `{"occupied":true,"user_count":2}`},
		{"/apps/1/channels/cache-prices", url.Values{"info": {"cache,subscription_count"}}, `{"occupied":false,"subscription_count":0,"cache":{"data":"{\"p\":\"<1>\"}","ttl":1800}}`},
		{"/apps/1/channels/private-cache-x", url.Values{"info": {"cache"}}, `{"occupied":true}`},
		{"/apps/1/channels/%23server-to-user-7", nil, `{"occupied":true}`},
		{"/apps/1/channels/presence-room/users", nil, `{"users":[{"id":"1"},{"id":"2"}]}`},
		{"/apps/1/channels/presence-empty/users", nil, `{"users":[]}`},
	} {
		resp := serveAPITest(t, h, apiTestReq{method: "GET", path: c.path, query: c.query})
		if resp.status != 200 || resp.body != c.want || resp.ctype != "application/json" {
			t.Errorf("GET %s?%s: got %d %q %s\nwant 200 %s", c.path, c.query.Encode(), resp.status, resp.ctype, resp.body, c.want)
		}
	}
}

func TestAPITerminate(t *testing.T) {
	f := newAPIFake(apiTestApp)
	resp := serveAPITest(t, newAPIHandler(f), apiTestReq{method: "POST", path: "/apps/1/users/u%2042/terminate_connections"})
	if resp.status != 200 || resp.body != "{}" {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	if !slices.Equal(f.terminated, []string{"u 42"}) {
		t.Fatalf("terminated %q", f.terminated)
	}
}

// TestAPICoreHub runs the handler against the real protocol core: requests signed at the
// documented 2012 timestamp with the hub's clock replaced, publishes to channels nobody
// is subscribed to, and the cache round trip.
func TestAPICoreHub(t *testing.T) {
	h := newTestHubForAPI(t, App{ID: "3", Key: apiDocKey, Secret: apiDocSecret})
	h.clock = func() time.Time { return time.Unix(apiDocTimestamp, 0) }
	api := h.APIHandler()

	target := apiDocPath + "?auth_key=" + apiDocKey + "&auth_timestamp=1353088179&auth_version=1.0&body_md5=" + apiDocBodyMD5 + "&auth_signature=" + apiDocSignature
	w := httptest.NewRecorder()
	api.ServeHTTP(w, httptest.NewRequest("POST", target, strings.NewReader(apiDocBody)))
	if w.Code != 200 || w.Body.String() != "{}" {
		t.Fatalf("PUSHER.md 2.4 request: got %d %s", w.Code, w.Body)
	}

	do := func(r apiTestReq) apiTestResp {
		t.Helper()
		r.key, r.secret, r.ts = apiDocKey, apiDocSecret, apiDocTimestamp
		return serveAPITest(t, api, r)
	}
	for _, c := range []struct {
		r    apiTestReq
		want string
	}{
		{apiTestReq{method: "POST", path: "/apps/3/events", body: `{"name":"e","channels":["a","presence-b"],"data":"x","info":"subscription_count,user_count"}`},
			`{"channels":{"a":{"subscription_count":0},"presence-b":{"user_count":0}}}`},
		{apiTestReq{method: "POST", path: "/apps/3/events", body: `{"name":"e","channel":"cache-c","data":"{\"v\":1}"}`}, `{}`},
		{apiTestReq{method: "GET", path: "/apps/3/channels/cache-c", query: url.Values{"info": {"cache"}}},
			`{"occupied":false,"cache":{"data":"{\"v\":1}","ttl":1800}}`},
		{apiTestReq{method: "GET", path: "/apps/3/channels"}, `{"channels":{}}`},
		{apiTestReq{method: "GET", path: "/apps/3/channels/presence-b/users"}, `{"users":[]}`},
		{apiTestReq{method: "POST", path: "/apps/3/users/42/terminate_connections"}, `{}`},
		{apiTestReq{method: "POST", path: "/apps/3/batch_events", body: `{"batch":[{"name":"e","channel":"#server-to-user-42","data":"x"}]}`}, `{}`},
	} {
		if resp := do(c.r); resp.status != 200 || resp.body != c.want {
			t.Errorf("%s %s: got %d %s\nwant 200 %s", c.r.method, c.r.path, resp.status, resp.body, c.want)
		}
	}
}

// newTestHubForAPI is a real hub on a loopback port of its own, not running: the API
// handler needs no listener, only the core's state.
func newTestHubForAPI(t *testing.T, apps ...App) *Hub {
	t.Helper()
	h, err := New(Config{Apps: apps, Transport: transport.Config{Addr: "127.0.0.1:0", Loops: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return h
}

// TestAPIEndToEnd drives the API the way a backend SDK does, over HTTP on the hub's own
// listener, against real WebSocket clients.
func TestAPIEndToEnd(t *testing.T) {
	h := startHub(t, Config{Apps: []App{apiTestApp}})
	call := func(r apiTestReq) apiTestResp {
		t.Helper()
		r.ts = time.Now().Unix()
		req, err := http.NewRequest(r.method, "http://"+h.Addr()+r.target(t), r.bodyReader())
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return apiTestResp{resp.StatusCode, resp.Header.Get("Content-Type"), string(b), ""}
	}
	expectOK := func(r apiTestReq, want string) {
		t.Helper()
		if resp := call(r); resp.status != 200 || resp.body != want {
			t.Fatalf("%s %s: got %d %s\nwant 200 %s", r.method, r.path, resp.status, resp.body, want)
		}
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections) // keep-alive goroutines would trip goleak

	a, b := connect(t, h, apiTestApp.Key), connect(t, h, apiTestApp.Key)
	for _, w := range []*wsClient{a, b} {
		w.subscribe("orders", "", "")
		w.expect("pusher_internal:subscription_succeeded")
	}
	cd := `{"user_id":"alice","user_info":{"n":1}}`
	a.subscribe("presence-room", authFor(apiTestApp, a.socketID, "presence-room", cd), cd)
	a.expect("pusher_internal:subscription_succeeded")

	// Publish excluding a, with info; data arrives byte for byte; a sees only the marker.
	expectOK(apiTestReq{method: "POST", path: "/apps/1/events",
		body: `{"name":"order-created","channels":["orders"],"data":"{\"id\":5,\"h\":\"<&>\"}","socket_id":"` + a.socketID + `","info":"subscription_count"}`},
		`{"channels":{"orders":{"subscription_count":2}}}`)
	if e := b.read(); e.raw != `{"event":"order-created","channel":"orders","data":"{\"id\":5,\"h\":\"<&>\"}"}` {
		t.Fatalf("b got %s", e.raw)
	}
	expectOK(apiTestReq{method: "POST", path: "/apps/1/batch_events",
		body: `{"batch":[{"name":"marker","channel":"orders","data":"1"},{"name":"p","channel":"presence-room","data":"2","info":"user_count"}]}`},
		`{"batch":[{},{"user_count":1}]}`)
	a.expect("marker")
	b.expect("marker")
	a.expect("p")

	expectOK(apiTestReq{method: "GET", path: "/apps/1/channels"}, `{"channels":{"orders":{},"presence-room":{}}}`)
	expectOK(apiTestReq{method: "GET", path: "/apps/1/channels", query: url.Values{"filter_by_prefix": {"presence-"}, "info": {"user_count"}}},
		`{"channels":{"presence-room":{"user_count":1}}}`)
	expectOK(apiTestReq{method: "GET", path: "/apps/1/channels/orders", query: url.Values{"info": {"subscription_count"}}},
		`{"occupied":true,"subscription_count":2}`)
	expectOK(apiTestReq{method: "GET", path: "/apps/1/channels/presence-room", query: url.Values{"info": {"user_count"}}},
		`{"occupied":true,"user_count":1}`)
	expectOK(apiTestReq{method: "GET", path: "/apps/1/channels/presence-room/users"}, `{"users":[{"id":"alice"}]}`)

	// sendToUser and terminate_connections for a signed-in user.
	ud := `{"id":"u7"}`
	b.send(`{"event":"pusher:signin","data":{"auth":"` + apiTestApp.Key + ":" + sign(apiTestApp.Secret, b.socketID+"::user::"+ud) + `","user_data":"{\"id\":\"u7\"}"}}`)
	b.expect("pusher:signin_success")
	b.subscribe("#server-to-user-u7", "", "")
	b.expect("pusher_internal:subscription_succeeded")
	expectOK(apiTestReq{method: "POST", path: "/apps/1/events", body: `{"name":"dm","channels":["#server-to-user-u7"],"data":"hi"}`}, `{}`)
	b.expect("dm")
	expectOK(apiTestReq{method: "POST", path: "/apps/1/users/u7/terminate_connections", body: `{}`}, `{}`)
	b.expect("pusher:error")
	b.expectClose(4009)

	// A refusal over the wire keeps its JSON shape.
	if resp := call(apiTestReq{method: "POST", path: "/apps/1/events", body: `{"name":"e","channel":"#nope","data":"x"}`}); resp.status != 400 ||
		resp.ctype != "application/json" || !strings.HasPrefix(resp.body, `{"error":"invalid channel name \"#nope\"`) {
		t.Fatalf("got %d %q %s", resp.status, resp.ctype, resp.body)
	}
}
