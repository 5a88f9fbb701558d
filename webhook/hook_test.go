package webhook

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		hook Hook
		want string // in the error; "" for valid
	}{
		{"valid", Hook{URL: "https://user:pw@example.com:8443/hooks?token=x", EventTypes: []string{MemberAdded, ClientEvent},
			Headers: map[string]string{"Authorization": "Bearer x", "X-Custom": "1"}}, ""},
		{"valid http, all types", Hook{URL: "http://127.0.0.1/"}, ""},
		{"empty url", Hook{}, "url: empty"},
		{"ftp", Hook{URL: "ftp://example.com/x"}, `url "ftp://example.com/x": scheme "ftp" not supported`},
		{"ws", Hook{URL: "ws://example.com/x"}, `scheme "ws" not supported`},
		{"relative path", Hook{URL: "/hooks"}, `url "/hooks": not absolute`},
		{"no scheme", Hook{URL: "example.com/hooks"}, `url "example.com/hooks": not absolute`},
		{"no host", Hook{URL: "http:///hooks"}, `url "http:///hooks": no host`},
		{"opaque", Hook{URL: "https:example.com"}, `no host`},
		{"unparsable", Hook{URL: "http://exa mple.com/"}, `url "http://exa mple.com/": invalid character " " in host name`},
		{"password not echoed", Hook{URL: "ftp://u:secret@h/"}, `url "ftp://u:xxxxx@h/"`},
		{"unknown type", Hook{URL: "http://h/", EventTypes: []string{MemberAdded, "member_joined"}},
			`event_types[1]: unknown event type "member_joined" (want one of channel_occupied, channel_vacated, member_added, member_removed, client_event, cache_miss, subscription_count)`},
		{"signature header", Hook{URL: "http://h/", Headers: map[string]string{"x-pusher-signature": "x"}},
			`headers["x-pusher-signature"]: set by the sender, may not be overridden`},
		{"key header", Hook{URL: "http://h/", Headers: map[string]string{"X-Pusher-Key": "x"}}, `headers["X-Pusher-Key"]: set by the sender`},
		{"content type", Hook{URL: "http://h/", Headers: map[string]string{"content-type": "text/plain"}}, `headers["content-type"]: set by the sender`},
		{"host", Hook{URL: "http://h/", Headers: map[string]string{"Host": "other"}}, `headers["Host"]: set by the HTTP client from the url`},
		{"bad name", Hook{URL: "http://h/", Headers: map[string]string{"Bad Header": "x"}}, `headers["Bad Header"]: not a valid header name`},
		{"empty name", Hook{URL: "http://h/", Headers: map[string]string{"": "x"}}, `headers[""]: not a valid header name`},
		{"CRLF value", Hook{URL: "http://h/", Headers: map[string]string{"X-A": "a\r\nX-Pusher-Key: b"}}, `headers["X-A"]: value contains CR, LF or NUL`},
	} {
		err := c.hook.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == "":
		case err == nil:
			t.Errorf("%s: no error, want %q", c.name, c.want)
		case !errors.Is(err, ErrInvalidHook) || !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: %v, want ErrInvalidHook with %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret@") {
			t.Errorf("%s: error shows the URL's password: %v", c.name, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	hook := []Hook{{URL: "http://h/"}}
	for _, c := range []struct {
		name string
		cfg  Config
		is   error
		want string
	}{
		{"empty id", Config{Apps: []App{{Key: "k", Secret: "s", Hooks: hook}}}, ErrInvalidConfig, "apps[0]: empty id"},
		{"duplicate", Config{Apps: []App{{ID: "1"}, {ID: "1"}}}, ErrInvalidConfig, `app "1" listed twice`},
		{"no secret", Config{Apps: []App{{ID: "1", Key: "k", Hooks: hook}}}, ErrInvalidConfig, `app "1" has webhooks but no key or secret`},
		{"bad hook", Config{Apps: []App{{ID: "1", Key: "k", Secret: "s", Hooks: []Hook{{URL: "http://h/"}, {URL: "h/x"}}}}},
			ErrInvalidHook, `webhook: invalid hook: app "1" webhooks[1]: url "h/x": not absolute`},
		{"negative", Config{QueueSize: -1}, ErrInvalidConfig, "QueueSize -1 is negative"},
		{"backoff", Config{BackoffMin: 10, BackoffMax: 5}, ErrInvalidConfig, "want 0 <= BackoffMin <= BackoffMax"},
	} {
		s, err := New(c.cfg)
		if err == nil {
			s.Close(context.Background())
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %v with %q", c.name, err, c.is, c.want)
		}
	}
}

// The zero Config works: nothing to send to, nothing started.
func TestZeroConfig(t *testing.T) {
	s := mustNew(t, Config{})
	s.Send("1", ev("a"))
	if s.Enabled("1", ChannelOccupied) {
		t.Error("Enabled with no apps")
	}
	if st := s.Stats(); len(st.Apps) != 0 {
		t.Errorf("Stats: %+v", st)
	}
	closeNow(t, s)
	closeNow(t, s) // again
}
