package hub

// The Pusher HTTP REST API (PUSHER.md 2): publish, batch publish, channel queries and
// user termination. The handlers only parse, validate, authenticate and answer; all
// state lives behind apiBackend, which *Hub implements (internal_api.go).
//
// Status codes, in the order the checks run:
//   - no route → 404; a route with another method → 405 (with Allow);
//   - unknown app id → 404;
//   - body over the cap (see apiBodyLimit) → 413;
//   - malformed query string → 400;
//   - any signature failure (verifyRequest) → 401;
//   - malformed JSON, a missing or ill-typed field, an invalid channel, event name or
//     socket_id, too many channels, too many batch events, an unknown info attribute
//     (or, on the GET endpoints, one that does not apply to the channel's type), an
//     encrypted channel published with others → 400;
//   - event data over MaxEventBytes → 413;
//   - the broker or the presence store unavailable (Redis down or too slow) → 503 with
//     Retry-After: 1, so that the publisher retries; nothing was published;
//   - a publish while this node's loops are past their high-water mark (its fan-out
//     backlog; overload.go) → 503 "server busy" with Retry-After: 1; nothing was
//     published;
//   - any other core failure → 500.
// Every error is JSON {"error":"<message>","code":<status>} (Soketi's shape), every
// success is JSON, except GET / and GET /up, which answer "OK" unsigned for load balancers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
)

// apiBackend is what the HTTP API needs from the hub. *Hub is the implementation; tests
// drive the handlers through an in-memory fake so that parsing, validation and
// responses are checked independently of the protocol core.
type apiBackend interface {
	appByID(id string) *appState
	publish(ctx context.Context, a *appState, channels []string, name string, data json.RawMessage, excludeSocketID string) error
	subscriptionCount(ctx context.Context, a *appState, channel string) (int, error)
	userCount(ctx context.Context, a *appState, channel string) (int, error)
	occupiedChannels(ctx context.Context, a *appState, prefix string) ([]string, error)
	members(ctx context.Context, a *appState, channel string) ([]presence.Member, error)
	terminateUser(ctx context.Context, a *appState, userID string) error
	cachedEvent(ctx context.Context, a *appState, channel string) (data json.RawMessage, ttl time.Duration, ok bool, err error)
	now() time.Time
}

var _ apiBackend = (*Hub)(nil)

// APIHandler serves the Pusher HTTP REST API for every configured app. Mount it at the
// root of its listener: the signed path must be the one the SDK signed.
func (h *Hub) APIHandler() http.Handler { return newAPIHandler(h) }

type apiServer struct {
	b apiBackend
}

// apiFunc handles one authenticated request and returns the value to answer as JSON.
type apiFunc func(ctx context.Context, r *http.Request, a *appState, query url.Values, body []byte) (any, error)

func newAPIHandler(b apiBackend) http.Handler {
	s := &apiServer{b: b}
	mux := http.NewServeMux()
	health := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "OK")
	}
	for _, p := range []string{"/{$}", "/up"} {
		mux.HandleFunc("GET "+p, health)
		mux.Handle(p, apiMethodNotAllowed(http.MethodGet))
	}
	s.route(mux, http.MethodPost, "/apps/{app_id}/events", s.events)
	s.route(mux, http.MethodPost, "/apps/{app_id}/batch_events", s.batchEvents)
	s.route(mux, http.MethodGet, "/apps/{app_id}/channels", s.channels)
	s.route(mux, http.MethodGet, "/apps/{app_id}/channels/{channel_name}", s.channel)
	s.route(mux, http.MethodGet, "/apps/{app_id}/channels/{channel_name}/users", s.users)
	s.route(mux, http.MethodPost, "/apps/{app_id}/users/{user_id}/terminate_connections", s.terminate)
	// The mux's own 404 and 405 answers are plain text; these keep every error JSON.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, newAPIError(http.StatusNotFound, errAPINotFound, "not found: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// route registers fn for method and a JSON 405 for every other method on pattern.
func (s *apiServer) route(mux *http.ServeMux, method, pattern string, fn apiFunc) {
	mux.Handle(method+" "+pattern, s.signed(fn))
	mux.Handle(pattern, apiMethodNotAllowed(method))
}

func apiMethodNotAllowed(allow string) http.Handler {
	if allow == http.MethodGet {
		allow = "GET, HEAD" // a GET pattern also serves HEAD
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeAPIError(w, newAPIError(http.StatusMethodNotAllowed, errAPIMethod,
			"method %s not allowed; use %s", r.Method, allow))
	})
}

// signed resolves the app, reads the body under its cap, checks the signature and only
// then calls fn.
func (s *apiServer) signed(fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := s.serve(w, r, fn)
		if err != nil {
			writeAPIError(w, err)
			return
		}
		writeAPIJSON(w, http.StatusOK, resp)
	})
}

func (s *apiServer) serve(w http.ResponseWriter, r *http.Request, fn apiFunc) (any, error) {
	id := r.PathValue("app_id")
	a := s.b.appByID(id)
	if a == nil {
		return nil, newAPIError(http.StatusNotFound, errAPINotFound, "unknown app id %q", id)
	}
	// One version of the app's config for the whole request: a reload in between
	// cannot pair the old key with the new secret.
	cfg := a.conf()
	if cfg.Disabled {
		return nil, newAPIError(http.StatusForbidden, errAPIForbidden, "app %q is disabled", id)
	}
	body, err := readAPIBody(w, r, apiBodyLimit(cfg))
	if err != nil {
		return nil, err
	}
	query, err := parseAPIQuery(r.URL.RawQuery)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, errAPIBadRequest, "malformed query string: %v", err)
	}
	if err := verifyRequest(r.Method, r.URL.Path, query, body, cfg.Key, cfg.Secret, s.b.now()); err != nil {
		return nil, err
	}
	return fn(r.Context(), r, a, query, body)
}

// parseAPIQuery splits a query string on '&' only. url.ParseQuery refuses ';' (Go
// 1.17+), but ';' is a legal channel-name character and the Pusher SDKs put query
// values in the URL unescaped, exactly as they sign them (filter_by_prefix=a;b).
func parseAPIQuery(raw string) (url.Values, error) {
	q := url.Values{}
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		q[key] = append(q[key], val)
	}
	return q, nil
}

// apiBodyLimit caps what is read of a request body: room for a full batch of maximum
// events with escaping overhead, and never less than 1 MiB so that small limits do not
// reject ordinary requests. Data heavy in JSON escapes can still reach this cap before
// its events reach MaxEventBytes; the answer is then a 413 for the body.
func apiBodyLimit(a *App) int64 {
	const floor = 1 << 20
	const ceiling = 1 << 30 // guards the product against absurd configured limits
	ev, batch := int64(max(a.MaxEventBytes, 1)), int64(max(a.MaxBatchEvents, 1))
	if ev > ceiling/batch/2 {
		return ceiling
	}
	return max(2*ev*batch, floor)
}

func readAPIBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	tooLarge := func() error {
		return newAPIError(http.StatusRequestEntityTooLarge, errAPITooLarge,
			"request body too large (limit %d bytes)", limit)
	}
	if r.ContentLength > limit {
		return nil, tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooLarge()
		}
		return nil, newAPIError(http.StatusBadRequest, errAPIBadRequest, "reading request body: %v", err)
	}
	return body, nil
}

// ---- responses ----

type apiErrorBody struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

func writeAPIError(w http.ResponseWriter, err error) {
	ae, ok := errors.AsType[*apiError](err)
	if !ok {
		// Not ours: do not leak internals to the client.
		ae = newAPIError(http.StatusInternalServerError, errAPIInternal, "internal error")
	}
	if ae.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeAPIJSON(w, ae.Status, apiErrorBody{Error: ae.Msg, Code: ae.Status})
}

func writeAPIJSON(w http.ResponseWriter, status int, v any) {
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	// Cached event data is echoed back; HTML escaping would alter its bytes.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only reachable if the core hands back invalid raw JSON (cached data).
		status = http.StatusInternalServerError
		buf.Reset()
		fmt.Fprintf(&buf, `{"error":"internal error: encoding response","code":%d}`, status)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, strings.TrimSuffix(buf.String(), "\n"))
}

// apiChannelAttrs are the attributes an info list asks for; absent ones are omitted.
type apiChannelAttrs struct {
	UserCount         *int `json:"user_count,omitempty"`
	SubscriptionCount *int `json:"subscription_count,omitempty"`
}

type apiChannelInfo struct {
	Occupied          bool          `json:"occupied"`
	UserCount         *int          `json:"user_count,omitempty"`
	SubscriptionCount *int          `json:"subscription_count,omitempty"`
	Cache             *apiCacheInfo `json:"cache,omitempty"`
}

type apiCacheInfo struct {
	Data json.RawMessage `json:"data"`
	TTL  int64           `json:"ttl"` // seconds, rounded up so a live entry never shows 0
}

// ---- handlers ----

func (s *apiServer) events(ctx context.Context, _ *http.Request, a *appState, _ url.Values, body []byte) (any, error) {
	ev, err := parseEventsBody(body, a.conf())
	if err != nil {
		return nil, err
	}
	if err := s.publish(ctx, a, ev); err != nil {
		return nil, err
	}
	if ev.info == 0 {
		return struct{}{}, nil
	}
	// Counts are taken after publishing; Pusher documents them as independent of delivery.
	out := make(map[string]apiChannelAttrs, len(ev.channels))
	for _, ch := range ev.channels {
		attrs, err := s.attrs(ctx, a, ch, ev.info)
		if err != nil {
			return nil, err
		}
		out[ch] = attrs
	}
	return struct {
		Channels map[string]apiChannelAttrs `json:"channels"`
	}{out}, nil
}

func (s *apiServer) batchEvents(ctx context.Context, _ *http.Request, a *appState, _ url.Values, body []byte) (any, error) {
	batch, err := parseBatchBody(body, a.conf())
	if err != nil {
		return nil, err
	}
	// Everything was validated above: a batch is published whole or, only if the core
	// fails midway, up to the failing event, which the message names.
	for i := range batch {
		if err := s.publish(ctx, a, batch[i]); err != nil {
			return nil, apiInBatch(i, err, " (the events before it were published)")
		}
	}
	withInfo := false
	for i := range batch {
		withInfo = withInfo || batch[i].info != 0
	}
	if !withInfo {
		return struct{}{}, nil
	}
	out := make([]apiChannelAttrs, len(batch))
	for i := range batch {
		if batch[i].info == 0 {
			continue
		}
		if out[i], err = s.attrs(ctx, a, batch[i].channels[0], batch[i].info); err != nil {
			return nil, err
		}
	}
	return struct {
		Batch []apiChannelAttrs `json:"batch"`
	}{out}, nil
}

func (s *apiServer) publish(ctx context.Context, a *appState, ev apiEvent) error {
	if err := s.b.publish(ctx, a, ev.channels, ev.name, ev.data, ev.socketID); err != nil {
		return coreError(err, errAPIPublishFailed, "publish failed")
	}
	return nil
}

// coreError answers a failure of the broker or the presence store: 503 when the engine
// is unavailable or too slow (a retry will do), 500 otherwise. The caller holds the app
// secret, so the core's reason is theirs to see.
func coreError(err error, kind error, what string) *apiError {
	if errors.Is(err, ErrServerBusy) {
		// Nothing was published: this node's loops are behind (overload.go).
		return newAPIError(http.StatusServiceUnavailable, errAPIUnavailable, "%s: server busy, retry later", what)
	}
	if errors.Is(err, pubsub.ErrUnavailable) || errors.Is(err, presence.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) {
		return newAPIError(http.StatusServiceUnavailable, errAPIUnavailable, "%s: service unavailable, retry later: %v", what, err)
	}
	return newAPIError(http.StatusInternalServerError, kind, "%s: %v", what, err)
}

// attrs answers a publish's info list for one channel: attributes that do not apply to
// the channel's type are left out rather than refused, because one publish may target
// presence and other channels at once.
func (s *apiServer) attrs(ctx context.Context, a *appState, ch string, info apiInfo) (apiChannelAttrs, error) {
	var out apiChannelAttrs
	if info&apiInfoUserCount != 0 && apiChannel(ch).presence() {
		n, err := s.userCount(ctx, a, ch)
		if err != nil {
			return out, err
		}
		out.UserCount = &n
	}
	if info&apiInfoSubscriptionCount != 0 && !apiChannel(ch).presence() {
		n, err := s.subscriptionCount(ctx, a, ch)
		if err != nil {
			return out, err
		}
		out.SubscriptionCount = &n
	}
	return out, nil
}

func (s *apiServer) userCount(ctx context.Context, a *appState, ch string) (int, error) {
	n, err := s.b.userCount(ctx, a, ch)
	if err != nil {
		return 0, coreError(err, errAPIInternal, "presence store")
	}
	return n, nil
}

func (s *apiServer) subscriptionCount(ctx context.Context, a *appState, ch string) (int, error) {
	n, err := s.b.subscriptionCount(ctx, a, ch)
	if err != nil {
		return 0, coreError(err, errAPIInternal, "presence store")
	}
	return n, nil
}

func (s *apiServer) channels(ctx context.Context, _ *http.Request, a *appState, query url.Values, _ []byte) (any, error) {
	prefix := query.Get("filter_by_prefix")
	info, err := parseAPIInfo(query.Get("info"), apiInfoUserCount)
	if err != nil {
		return nil, err
	}
	if info&apiInfoUserCount != 0 && !strings.HasPrefix(prefix, "presence-") {
		return nil, apiBadRequest("info=user_count requires filter_by_prefix to start with \"presence-\"")
	}
	occupied, err := s.b.occupiedChannels(ctx, a, prefix)
	if err != nil {
		return nil, coreError(err, errAPIInternal, "presence store")
	}
	out := map[string]apiChannelAttrs{}
	for _, ch := range occupied {
		if strings.HasPrefix(ch, "#") {
			continue // per-user channels are an implementation detail of sendToUser
		}
		var attrs apiChannelAttrs
		if info&apiInfoUserCount != 0 {
			n, err := s.userCount(ctx, a, ch)
			if err != nil {
				return nil, err
			}
			attrs.UserCount = &n
		}
		out[ch] = attrs
	}
	return struct {
		Channels map[string]apiChannelAttrs `json:"channels"`
	}{out}, nil
}

func (s *apiServer) channel(ctx context.Context, r *http.Request, a *appState, query url.Values, _ []byte) (any, error) {
	name := r.PathValue("channel_name")
	if !validChannelName(name, a.conf().MaxChannelNameLength) {
		return nil, apiBadRequest("invalid channel name %q", name)
	}
	info, err := parseAPIInfo(query.Get("info"), apiInfoUserCount|apiInfoSubscriptionCount|apiInfoCache)
	if err != nil {
		return nil, err
	}
	ch := apiChannel(name)
	switch {
	case info&apiInfoUserCount != 0 && !ch.presence():
		return nil, apiBadRequest("info=user_count is only available for presence channels")
	case info&apiInfoSubscriptionCount != 0 && ch.presence():
		return nil, apiBadRequest("info=subscription_count is not available for presence channels; use user_count")
	case info&apiInfoCache != 0 && !ch.cache():
		return nil, apiBadRequest("info=cache is only available for cache channels")
	}
	subs, err := s.subscriptionCount(ctx, a, name)
	if err != nil {
		return nil, err
	}
	out := apiChannelInfo{Occupied: subs > 0}
	if info&apiInfoSubscriptionCount != 0 {
		out.SubscriptionCount = &subs
	}
	if info&apiInfoUserCount != 0 {
		n, err := s.userCount(ctx, a, name)
		if err != nil {
			return nil, err
		}
		out.UserCount = &n
	}
	if info&apiInfoCache != 0 {
		data, ttl, ok, err := s.b.cachedEvent(ctx, a, name)
		if err != nil {
			return nil, coreError(err, errAPIInternal, "broker")
		}
		if ok {
			out.Cache = &apiCacheInfo{Data: data, TTL: int64((max(ttl, 0) + time.Second - 1) / time.Second)}
		}
	}
	return out, nil
}

type apiUser struct {
	ID string `json:"id"`
}

func (s *apiServer) users(ctx context.Context, r *http.Request, a *appState, _ url.Values, _ []byte) (any, error) {
	name := r.PathValue("channel_name")
	if !validChannelName(name, a.conf().MaxChannelNameLength) {
		return nil, apiBadRequest("invalid channel name %q", name)
	}
	if !apiChannel(name).presence() {
		return nil, apiBadRequest("users are only available for presence channels")
	}
	ms, err := s.b.members(ctx, a, name)
	if err != nil {
		return nil, coreError(err, errAPIInternal, "presence store")
	}
	users := make([]apiUser, len(ms)) // never nil: the answer is [] when empty
	for i, m := range ms {
		users[i] = apiUser{ID: m.UserID}
	}
	return struct {
		Users []apiUser `json:"users"`
	}{users}, nil
}

func (s *apiServer) terminate(ctx context.Context, r *http.Request, a *appState, _ url.Values, _ []byte) (any, error) {
	id := r.PathValue("user_id")
	if n := a.conf().MaxUserIDLength; id == "" || len(id) > n {
		return nil, apiBadRequest("invalid user id: must be 1 to %d bytes", n)
	}
	if err := s.b.terminateUser(ctx, a, id); err != nil {
		return nil, coreError(err, errAPIInternal, "terminate_connections reached this node only")
	}
	return struct{}{}, nil
}

// ---- request bodies (pure, fuzzed) ----

// apiEvent is one validated publish.
type apiEvent struct {
	name     string
	data     json.RawMessage // exactly the bytes received
	channels []string        // valid, distinct, 1..MaxChannelsPerEvent
	socketID string          // "" for none
	info     apiInfo
}

// apiEventJSON is the wire form of /events and of one batch item. Pointers tell an absent
// field from an empty one.
type apiEventJSON struct {
	Name     *string         `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channel  *string         `json:"channel"`
	Channels []string        `json:"channels"`
	SocketID *string         `json:"socket_id"`
	Info     *string         `json:"info"`
}

// parseEventsBody validates a POST /events body against a's limits (a must have its
// defaults applied). Errors are *apiError: 413 for data over MaxEventBytes, 400 for the rest.
func parseEventsBody(body []byte, a *App) (apiEvent, error) {
	var in apiEventJSON
	if err := decodeAPIJSON(body, &in); err != nil {
		return apiEvent{}, err
	}
	return checkAPIEvent(&in, a, false)
}

// parseBatchBody validates a POST /batch_events body: {"batch":[event,...]} with at most
// MaxBatchEvents events, each taking "channel" (not "channels"). Too many events is a 400,
// not a 413: it is a rule about the request's shape, not its size. The whole batch is
// checked before anything is published.
func parseBatchBody(body []byte, a *App) ([]apiEvent, error) {
	var in struct {
		Batch []json.RawMessage `json:"batch"`
	}
	if err := decodeAPIJSON(body, &in); err != nil {
		return nil, err
	}
	switch {
	case len(in.Batch) == 0:
		return nil, apiBadRequest("batch must hold at least one event")
	case len(in.Batch) > a.MaxBatchEvents:
		return nil, apiBadRequest("too many events in batch: %d (limit %d)", len(in.Batch), a.MaxBatchEvents)
	}
	out := make([]apiEvent, len(in.Batch))
	for i, raw := range in.Batch {
		var ev apiEventJSON
		err := decodeAPIJSON(raw, &ev)
		if err == nil {
			out[i], err = checkAPIEvent(&ev, a, true)
		}
		if err != nil {
			return nil, apiInBatch(i, err, "")
		}
	}
	return out, nil
}

// apiInBatch prefixes an error's message with the index of the batch event it is about.
func apiInBatch(i int, err error, suffix string) error {
	ae, ok := errors.AsType[*apiError](err)
	if !ok {
		return err
	}
	return &apiError{Status: ae.Status, Msg: fmt.Sprintf("batch[%d]: %s%s", i, ae.Msg, suffix), kind: ae.kind}
}

func checkAPIEvent(in *apiEventJSON, a *App, batch bool) (apiEvent, error) {
	var ev apiEvent

	switch {
	case in.Name == nil || *in.Name == "":
		return ev, apiBadRequest("missing event name")
	case len(*in.Name) > a.MaxEventNameLength:
		return ev, apiBadRequest("event name too long: %d bytes (limit %d)", len(*in.Name), a.MaxEventNameLength)
	case strings.HasPrefix(*in.Name, "pusher_internal:"):
		// pusher-js acts on these itself (member lists, subscription state); a publisher
		// could only corrupt its clients' view with them.
		return ev, apiBadRequest("event names starting with \"pusher_internal:\" are reserved")
	}
	ev.name = *in.Name

	if len(in.Data) == 0 || string(in.Data) == "null" {
		return ev, apiBadRequest("missing data")
	}
	if n, limit := apiDataSize(in.Data), a.MaxEventBytes; n > limit {
		return ev, newAPIError(http.StatusRequestEntityTooLarge, errAPITooLarge,
			"event data too large: %d bytes (limit %d)", n, limit)
	}
	ev.data = in.Data

	switch {
	case batch && in.Channels != nil:
		return ev, apiBadRequest("batch events take \"channel\", not \"channels\"")
	case in.Channels != nil && in.Channel != nil:
		return ev, apiBadRequest("give either \"channels\" or \"channel\", not both")
	case in.Channel != nil:
		ev.channels = []string{*in.Channel}
	case in.Channels != nil:
		if len(in.Channels) == 0 {
			return ev, apiBadRequest("channels must not be empty")
		}
		if len(in.Channels) > a.MaxChannelsPerEvent {
			return ev, apiBadRequest("too many channels: %d (limit %d)", len(in.Channels), a.MaxChannelsPerEvent)
		}
		ev.channels = apiDedupe(in.Channels)
	default:
		if batch {
			return ev, apiBadRequest("missing channel")
		}
		return ev, apiBadRequest("missing channels")
	}
	for _, ch := range ev.channels {
		if !validChannelName(ch, a.MaxChannelNameLength) {
			return ev, apiBadRequest("invalid channel name %q: 1 to %d of A-Z a-z 0-9 _ - = @ , . ;",
				ch, a.MaxChannelNameLength)
		}
		if apiChannel(ch).encrypted() && len(ev.channels) > 1 {
			// The SDK encrypts with a per-channel key, so one ciphertext cannot serve two channels.
			return ev, apiBadRequest("encrypted channel %q must be published alone", ch)
		}
	}

	if in.SocketID != nil && *in.SocketID != "" {
		if !apiSocketIDValid(*in.SocketID) {
			return ev, apiBadRequest("invalid socket_id %q: want digits.digits", *in.SocketID)
		}
		ev.socketID = *in.SocketID
	}

	if in.Info != nil {
		info, err := parseAPIInfo(*in.Info, apiInfoUserCount|apiInfoSubscriptionCount)
		if err != nil {
			return ev, err
		}
		ev.info = info
	}
	return ev, nil
}

// apiDataSize measures event data as Pusher and the SDKs do: a JSON string by its decoded
// length in bytes (the SDKs check the string before encoding it, so escapes must not
// count), any other JSON value by its raw length.
func apiDataSize(raw json.RawMessage) int {
	if len(raw) < 2 || raw[0] != '"' {
		return len(raw)
	}
	// Escapes only ever shrink when decoded, so a short literal needs no decoding.
	if !apiHasEscape(raw) {
		return len(raw) - 2
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return len(raw) // unreachable: raw came out of a successful decode
	}
	return len(s)
}

func apiHasEscape(b []byte) bool {
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}

func apiDedupe(chans []string) []string {
	if len(chans) == 1 {
		return chans
	}
	seen := make(map[string]struct{}, len(chans))
	out := chans[:0:0]
	for _, ch := range chans {
		if _, ok := seen[ch]; !ok {
			seen[ch] = struct{}{}
			out = append(out, ch)
		}
	}
	return out
}

// apiSocketIDValid matches ^\d+\.\d+$, the format every SDK enforces (PUSHER.md 1.3).
func apiSocketIDValid(s string) bool {
	dot := strings.IndexByte(s, '.')
	return dot > 0 && dot < len(s)-1 && apiAllDigits(s[:dot]) && apiAllDigits(s[dot+1:])
}

func apiAllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// decodeAPIJSON decodes a JSON object body. It refuses invalid UTF-8 up front: raw data
// is forwarded byte for byte into WebSocket text frames, which must be UTF-8.
func decodeAPIJSON(body []byte, v any) error {
	if len(body) == 0 {
		return apiBadRequest("empty body: expected a JSON object")
	}
	if !utf8.Valid(body) {
		return apiBadRequest("body is not valid UTF-8")
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return apiBadRequest("expected a JSON object, got %s", te.Value)
		}
		return apiBadRequest("%s: expected %s, got %s", te.Field, apiJSONKind(te.Type), te.Value)
	}
	return apiBadRequest("malformed JSON: %v", err)
}

func apiJSONKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

func apiBadRequest(format string, args ...any) *apiError {
	return newAPIError(http.StatusBadRequest, errAPIBadRequest, format, args...)
}

// ---- info lists and channel types ----

// apiInfo is a set of info attributes.
type apiInfo uint8

const (
	apiInfoUserCount apiInfo = 1 << iota
	apiInfoSubscriptionCount
	apiInfoCache
)

var apiInfoNames = map[string]apiInfo{
	"user_count":         apiInfoUserCount,
	"subscription_count": apiInfoSubscriptionCount,
	"cache":              apiInfoCache,
}

// parseAPIInfo reads a comma list of attributes. Empty items and spaces around items are
// ignored (hand-written URLs have them); an attribute unknown or not in allowed is a 400,
// so a typo does not silently return nothing.
func parseAPIInfo(list string, allowed apiInfo) (apiInfo, error) {
	var out apiInfo
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		bit, ok := apiInfoNames[item]
		if !ok || bit&allowed == 0 {
			return 0, apiBadRequest("unsupported info attribute %q", item)
		}
		out |= bit
	}
	return out, nil
}

// apiChannel classifies a channel name by its exact, dash-terminated prefix.
type apiChannel string

func (c apiChannel) presence() bool { return strings.HasPrefix(string(c), "presence-") }

func (c apiChannel) encrypted() bool { return strings.HasPrefix(string(c), "private-encrypted-") }

func (c apiChannel) cache() bool {
	for _, p := range [...]string{"cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"} {
		if strings.HasPrefix(string(c), p) {
			return true
		}
	}
	return false
}
