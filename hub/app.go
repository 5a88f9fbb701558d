package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/webhook"
)

// App is one tenant: its credentials, options and limits. A zero limit takes its default.
type App struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`

	// Disabled refuses the app's connections (close 4003) and API requests (403)
	// while keeping its configuration.
	Disabled bool `json:"disabled,omitempty"`
	// ClientEvents allows client-* events on private and presence channels.
	ClientEvents bool `json:"client_events"`
	// AllowedOrigins lists the Origin values accepted at the handshake; empty accepts any.
	// An entry may be "*" or start with "*." to match any subdomain, e.g. "https://*.example.com".
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// MaxConnections caps this app's open connections on a node; 0 means no cap.
	MaxConnections int `json:"max_connections,omitempty"`
	// MaxClientEventsPerSecond per connection; default 10.
	MaxClientEventsPerSecond int `json:"max_client_events_per_second,omitempty"`
	// MaxPresenceMembers per presence channel; default 100.
	MaxPresenceMembers int `json:"max_presence_members,omitempty"`
	// MaxUserInfoBytes caps a presence member's user_info (bytes of JSON); default 1024.
	MaxUserInfoBytes int `json:"max_user_info_bytes,omitempty"`
	// MaxUserIDLength in characters; default 128.
	MaxUserIDLength int `json:"max_user_id_length,omitempty"`
	// MaxEventBytes caps an event's data (HTTP API and client events); default 10240.
	MaxEventBytes int `json:"max_event_bytes,omitempty"`
	// MaxChannelsPerEvent for one HTTP publish; default 100.
	MaxChannelsPerEvent int `json:"max_channels_per_event,omitempty"`
	// MaxBatchEvents for one batch_events request; default 10.
	MaxBatchEvents int `json:"max_batch_events,omitempty"`
	// MaxChannelNameLength in bytes; default 200 (Pusher documents 164; the SDKs allow 200).
	MaxChannelNameLength int `json:"max_channel_name_length,omitempty"`
	// MaxEventNameLength in bytes; default 200.
	MaxEventNameLength int `json:"max_event_name_length,omitempty"`

	// SubscriptionCount tells the subscribers of non-presence channels the channel's
	// cluster-wide subscription count when it changes (pusher_internal:subscription_count,
	// pusher-js's pusher:subscription_count), at most every 30 s per channel above 100
	// subscribers.
	SubscriptionCount bool `json:"subscription_count,omitempty"`
	// UserAuthenticationTimeout, when set, closes (4009) a connection that neither
	// signs in nor subscribes to a private or presence channel within it ("30s" in the
	// config file). Off by default.
	UserAuthenticationTimeout Duration `json:"user_authentication_timeout,omitempty"`

	// Webhooks are the app's webhook endpoints (package webhook): channel_occupied,
	// channel_vacated, member_added, member_removed, client_event, cache_miss and
	// subscription_count, each sent once for the cluster, signed, batched and retried.
	Webhooks []webhook.Hook `json:"webhooks,omitempty"`
}

// Duration is a time.Duration that the config file gives as a string ("30s", "1m").
type Duration time.Duration

// UnmarshalJSON reads "30s" (time.ParseDuration) or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("duration %q: %w", x, err)
		}
		*d = Duration(p)
	case float64:
		*d = Duration(x * float64(time.Second))
	default:
		return fmt.Errorf("duration: want a string like \"30s\" or seconds, got %s", b)
	}
	return nil
}

// MarshalJSON writes the duration as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// withDefaults returns a copy with every zero limit replaced by its default.
func (a App) withDefaults() App {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&a.MaxClientEventsPerSecond, 10)
	def(&a.MaxPresenceMembers, 100)
	def(&a.MaxUserInfoBytes, 1024)
	def(&a.MaxUserIDLength, 128)
	def(&a.MaxEventBytes, 10240)
	def(&a.MaxChannelsPerEvent, 100)
	def(&a.MaxBatchEvents, 10)
	def(&a.MaxChannelNameLength, 200)
	def(&a.MaxEventNameLength, 200)
	return a
}

// ErrInvalidApp is wrapped by the errors Validate returns.
var ErrInvalidApp = errors.New("hub: invalid app")

// Validate reports a missing credential or a negative limit.
func (a *App) Validate() error {
	switch {
	case a.ID == "":
		return fmt.Errorf("%w: empty id", ErrInvalidApp)
	case a.Key == "":
		return fmt.Errorf("%w %s: empty key", ErrInvalidApp, a.ID)
	case a.Secret == "":
		return fmt.Errorf("%w %s: empty secret", ErrInvalidApp, a.ID)
	case strings.ContainsAny(a.Key, "/?#:"):
		return fmt.Errorf("%w %s: key must not contain '/', '?', '#' or ':'", ErrInvalidApp, a.ID)
	case strings.ContainsAny(a.ID, ":{}"):
		// ':' ends the app id in broker and store keys; braces would change how a
		// Redis Cluster places the app's keys.
		return fmt.Errorf("%w %s: id must not contain ':', '{' or '}'", ErrInvalidApp, a.ID)
	}
	if a.UserAuthenticationTimeout < 0 {
		return fmt.Errorf("%w %s: negative user_authentication_timeout", ErrInvalidApp, a.ID)
	}
	for i := range a.Webhooks {
		if err := a.Webhooks[i].Validate(); err != nil {
			return fmt.Errorf("%w %s: webhooks[%d]: %w", ErrInvalidApp, a.ID, i, err)
		}
	}
	for _, v := range []int{a.MaxConnections, a.MaxClientEventsPerSecond, a.MaxPresenceMembers, a.MaxUserInfoBytes,
		a.MaxUserIDLength, a.MaxEventBytes, a.MaxChannelsPerEvent, a.MaxBatchEvents, a.MaxChannelNameLength, a.MaxEventNameLength} {
		if v < 0 {
			return fmt.Errorf("%w %s: negative limit", ErrInvalidApp, a.ID)
		}
	}
	return nil
}

// originAllowed matches origin against the app's allowed origins.
func (a *App) originAllowed(origin string) bool {
	if len(a.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range a.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
		// "https://*.example.com" matches "https://a.example.com" and "https://a.b.example.com".
		if scheme, rest, ok := strings.Cut(o, "*."); ok {
			if len(origin) > len(scheme)+len(rest) && strings.HasPrefix(origin, scheme) &&
				strings.HasSuffix(strings.ToLower(origin), "."+strings.ToLower(rest)) {
				return true
			}
		}
	}
	return false
}

// appState is one app at run time. The hub knows an app by its id for its whole life:
// a reload that keeps the id updates the same appState (its connections, channels,
// users and counters stay), one that drops the id leaves it disabled, and one that
// brings the id back enables it again.
type appState struct {
	id    string              // never changes
	cfg   atomic.Pointer[App] // with defaults applied; replaced whole by a reload, never modified
	stats *appStats
	auth  authQueue // connections waiting for user_authentication_timeout
	drops dropTable // the channels with the most dropped deliveries (overload.go)
}

func newAppState(cfg App, stats *appStats) *appState {
	a := &appState{id: cfg.ID, stats: stats}
	a.setConf(cfg)
	return a
}

// conf is the app's current config. Code that reads several fields for one decision
// reads them from one conf() (a key with its secret, a limit with its message), so
// that a reload in between cannot mix two versions. Loops read it without a lock: an
// atomic load, no copy, no per-connection state.
func (a *appState) conf() *App { return a.cfg.Load() }

func (a *appState) setConf(cfg App) {
	c := cfg.withDefaults()
	a.cfg.Store(&c)
}

// appSet is the apps served, by key and by id: built whole by New or a reload and
// published through Hub.apps, never modified afterwards.
type appSet struct {
	byKey, byID map[string]*appState
}
