package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyRequest: any request verifies or fails with a 401 *apiError, never panics; the
// same request correctly signed always verifies.
func FuzzVerifyRequest(f *testing.F) {
	f.Add("POST", apiDocPath, "auth_key="+apiDocKey+"&auth_timestamp=1353088179&auth_version=1.0&body_md5="+apiDocBodyMD5+"&auth_signature="+apiDocSignature, []byte(apiDocBody), int64(0))
	f.Add("GET", "/apps/1/channels", "filter_by_prefix=presence-&info=user_count", []byte(nil), int64(-600))
	f.Add("get", "/apps/1/channels/a b", "A=1&a=2&auth_signature=ZZ", []byte("{}"), int64(601))
	f.Add("", "", "=&&=%41&x=%zz", []byte{0xff}, int64(1<<40))
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, body []byte, skew int64) {
		now := time.Unix(apiTestTS, 0)
		query, _ := parseAPIQuery(rawQuery) // keeps what parsed; the handler answers 400 otherwise
		if err := verifyRequest(method, path, query, body, "key", "secret", now); err != nil {
			if ae, ok := errors.AsType[*apiError](err); !ok || ae.Status != http.StatusUnauthorized {
				t.Fatalf("error %#v is not a 401 *apiError", err)
			}
		}

		// Keep one value per lower-cased name, drop the auth parameters, sign properly.
		params := url.Values{}
		for k, vs := range query {
			lk := strings.ToLower(k)
			if strings.HasPrefix(lk, "auth_") || lk == "body_md5" || params.Has(lk) || len(vs) == 0 {
				continue
			}
			params.Set(lk, vs[0])
		}
		ts := apiTestTS + skew%601
		signed := apiTestSign(method, path, params, body, "key", "secret", ts)
		if err := verifyRequest(method, path, signed, body, "key", "secret", now); err != nil {
			t.Fatalf("correctly signed request rejected: %v\nmethod %q path %q query %v", err, method, path, signed)
		}
	})
}

var fuzzChannelNameRE = regexp.MustCompile(`^(#server-to-user-)?[-a-zA-Z0-9_=@,.;]+$`)

// FuzzChannelName: validChannelName agrees with an independent regular expression.
func FuzzChannelName(f *testing.F) {
	for _, s := range []string{"my-channel", "presence-a", "#server-to-user-1", "#server-to-user-", "#x", "a b", "é", strings.Repeat("a", 201)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got := validChannelName(name, 200)
		want := len(name) <= 200 && fuzzChannelNameRE.MatchString(name)
		if got != want {
			t.Fatalf("validChannelName(%q) = %v, want %v", name, got, want)
		}
	})
}

// FuzzEventsBody: the /events parser never panics, answers 400 or 413 when it refuses,
// and what it accepts obeys every limit and carries data as the exact bytes received.
func FuzzEventsBody(f *testing.F) {
	for _, s := range []string{
		apiDocBody,
		`{"name":"e","channel":"private-encrypted-a","data":{"x":1},"socket_id":"1.2","info":"user_count"}`,
		`{"name":"e","channels":["a","a","presence-b"],"data":"\u00e9\"","info":"subscription_count,user_count"}`,
		`{"name":"e","channels":[],"data":null}`,
		`{"NAME":"e","Channel":"#server-to-user-1","data":"x"}`,
		`[]`, `null`, `{"name":1}`, "{\"name\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	a := App{}.withDefaults()
	a.MaxEventBytes = 64 // small, so that the size check is reached often
	a.MaxChannelsPerEvent = 4
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := parseEventsBody(body, &a)
		if err != nil {
			fuzzCheckRefusal(t, err)
			return
		}
		fuzzCheckEvent(t, body, ev, &a, false)
	})
}

// FuzzBatchBody: as FuzzEventsBody for /batch_events.
func FuzzBatchBody(f *testing.F) {
	for _, s := range []string{
		`{"batch":[{"name":"e","channel":"a","data":"x"},{"name":"e","channel":"b","data":{},"info":"user_count"}]}`,
		`{"batch":[{"name":"e","channels":["a"],"data":"x"}]}`,
		`{"batch":[]}`, `{"batch":null}`, `{"batch":[1]}`, `{"batch":"x"}`,
	} {
		f.Add([]byte(s))
	}
	a := App{}.withDefaults()
	a.MaxEventBytes = 64
	a.MaxBatchEvents = 3
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := parseBatchBody(body, &a)
		if err != nil {
			fuzzCheckRefusal(t, err)
			return
		}
		if len(evs) == 0 || len(evs) > a.MaxBatchEvents {
			t.Fatalf("accepted a batch of %d", len(evs))
		}
		for _, ev := range evs {
			fuzzCheckEvent(t, body, ev, &a, true)
		}
	})
}

func fuzzCheckRefusal(t *testing.T, err error) {
	t.Helper()
	ae, ok := errors.AsType[*apiError](err)
	if !ok || (ae.Status != http.StatusBadRequest && ae.Status != http.StatusRequestEntityTooLarge) || ae.Msg == "" {
		t.Fatalf("refusal %#v is not a 400/413 *apiError with a message", err)
	}
}

func fuzzCheckEvent(t *testing.T, body []byte, ev apiEvent, a *App, batch bool) {
	t.Helper()
	switch {
	case ev.name == "" || len(ev.name) > a.MaxEventNameLength:
		t.Fatalf("accepted event name %q", ev.name)
	case !json.Valid(ev.data) || !bytes.Contains(body, ev.data):
		t.Fatalf("data %q is not valid JSON cut from the body", ev.data)
	case apiDataSize(ev.data) > a.MaxEventBytes:
		t.Fatalf("accepted %d bytes of data", apiDataSize(ev.data))
	case len(ev.channels) == 0 || len(ev.channels) > a.MaxChannelsPerEvent || (batch && len(ev.channels) != 1):
		t.Fatalf("accepted %d channels", len(ev.channels))
	case ev.socketID != "" && !regexp.MustCompile(`^\d+\.\d+$`).MatchString(ev.socketID):
		t.Fatalf("accepted socket_id %q", ev.socketID)
	case ev.info&^(apiInfoUserCount|apiInfoSubscriptionCount) != 0:
		t.Fatalf("accepted info %b", ev.info)
	}
	seen := map[string]bool{}
	for _, ch := range ev.channels {
		if !validChannelName(ch, a.MaxChannelNameLength) || seen[ch] {
			t.Fatalf("accepted channels %q", ev.channels)
		}
		seen[ch] = true
		if apiChannel(ch).encrypted() && len(ev.channels) > 1 {
			t.Fatalf("accepted encrypted channel with others: %q", ev.channels)
		}
	}
}
