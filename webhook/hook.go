package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Event types, as Pusher names them.
const (
	ChannelOccupied   = "channel_occupied"
	ChannelVacated    = "channel_vacated"
	MemberAdded       = "member_added"
	MemberRemoved     = "member_removed"
	ClientEvent       = "client_event"
	CacheMiss         = "cache_miss"
	SubscriptionCount = "subscription_count"
)

// Type indexes: a type's bit in a hook's mask and its slot in the counters.
const (
	tChannelOccupied = iota
	tChannelVacated
	tMemberAdded
	tMemberRemoved
	tClientEvent
	tCacheMiss
	tSubscriptionCount
	numTypes
)

// eventTypes holds the type names by index; they double as the "event" metric label.
var eventTypes = [numTypes]string{
	ChannelOccupied, ChannelVacated, MemberAdded, MemberRemoved, ClientEvent, CacheMiss, SubscriptionCount,
}

// typeIndex is the index of an event type, or -1 for a name that is not one.
func typeIndex(name string) int {
	switch name {
	case ChannelOccupied:
		return tChannelOccupied
	case ChannelVacated:
		return tChannelVacated
	case MemberAdded:
		return tMemberAdded
	case MemberRemoved:
		return tMemberRemoved
	case ClientEvent:
		return tClientEvent
	case CacheMiss:
		return tCacheMiss
	case SubscriptionCount:
		return tSubscriptionCount
	}
	return -1
}

const allTypes = 1<<numTypes - 1

// Errors. Validate and New wrap ErrInvalidHook and ErrInvalidConfig with a message
// naming the field.
var (
	ErrInvalidHook   = errors.New("webhook: invalid hook")
	ErrInvalidConfig = errors.New("webhook: invalid config")
	// ErrUnknownEvent is returned by Event.MarshalJSON for a name that is no event type.
	ErrUnknownEvent = errors.New("webhook: unknown event type")
	// ErrClosed is returned by Reload after Close.
	ErrClosed = errors.New("webhook: sender closed")
)

// Hook is one endpoint of an app, as the config file gives it:
//
//	"webhooks": [{"url": "https://example.com/pusher", "event_types": ["member_added"],
//	  "headers": {"Authorization": "Bearer x"},
//	  "filter": {"channel_name_starts_with": "presence-", "channel_name_ends_with": "-vip"}}]
type Hook struct {
	// URL is the absolute http or https address each request is POSTed to.
	URL string `json:"url"`
	// EventTypes lists the types the hook receives; empty: every type.
	EventTypes []string `json:"event_types,omitempty"`
	// Headers are sent with each request. They may not replace the headers the sender
	// owns: Content-Type, X-Pusher-Key, X-Pusher-Signature, nor the framing headers
	// the HTTP client sets (Host, Content-Length, Transfer-Encoding, Connection).
	Headers map[string]string `json:"headers,omitempty"`
	// Filter narrows the hook to channels by name.
	Filter Filter `json:"filter,omitempty"`
}

// Filter selects channels by name; an empty field matches every channel, and a channel
// must match both fields that are set.
type Filter struct {
	ChannelNameStartsWith string `json:"channel_name_starts_with,omitempty"`
	ChannelNameEndsWith   string `json:"channel_name_ends_with,omitempty"`
}

func (f *Filter) match(channel string) bool {
	return strings.HasPrefix(channel, f.ChannelNameStartsWith) && strings.HasSuffix(channel, f.ChannelNameEndsWith)
}

// reservedHeaders are the headers a hook may not set (canonical form).
var reservedHeaders = map[string]string{
	"Content-Type":       "set by the sender",
	"X-Pusher-Key":       "set by the sender",
	"X-Pusher-Signature": "set by the sender",
	"Host":               "set by the HTTP client from the url",
	"Content-Length":     "set by the HTTP client",
	"Transfer-Encoding":  "set by the HTTP client",
	"Connection":         "set by the HTTP client",
}

// Validate refuses a URL that is not an absolute http or https URL with a host, an
// unknown event type, and a header that is malformed or replaces one the sender owns.
// The error wraps ErrInvalidHook and names the field.
func (h *Hook) Validate() error {
	if err := h.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidHook, err)
	}
	return nil
}

// validate is Validate without the sentinel, so that New can add where the hook is.
func (h *Hook) validate() error {
	if _, err := h.mask(); err != nil {
		return err
	}
	if _, err := parseURL(h.URL); err != nil {
		return err
	}
	for name, value := range h.Headers {
		switch {
		case name == "" || !isToken(name):
			return fmt.Errorf("headers[%q]: not a valid header name", name)
		case strings.ContainsAny(value, "\r\n\x00"):
			return fmt.Errorf("headers[%q]: value contains CR, LF or NUL", name)
		}
		if why, ok := reservedHeaders[http.CanonicalHeaderKey(name)]; ok {
			return fmt.Errorf("headers[%q]: %s, may not be overridden", name, why)
		}
	}
	return nil
}

// mask is the set of types the hook receives, one bit per type index.
func (h *Hook) mask() (uint8, error) {
	if len(h.EventTypes) == 0 {
		return allTypes, nil
	}
	var m uint8
	for i, name := range h.EventTypes {
		t := typeIndex(name)
		if t < 0 {
			return 0, fmt.Errorf("event_types[%d]: unknown event type %q (want one of %s)",
				i, name, strings.Join(eventTypes[:], ", "))
		}
		m |= 1 << t
	}
	return m, nil
}

func parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("url: empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	shown := u.Redacted()
	switch {
	case u.Scheme == "":
		return nil, fmt.Errorf("url %q: not absolute (want http://host/... or https://host/...)", shown)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("url %q: scheme %q not supported (want http or https)", shown, u.Scheme)
	case u.Host == "":
		return nil, fmt.Errorf("url %q: no host", shown)
	}
	return u, nil
}

// isToken reports whether s is an RFC 9110 token, which a header name must be.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
