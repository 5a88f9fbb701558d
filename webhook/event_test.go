package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// The test vector of PUSHER.md §3 (pusher-http-go's webhook test, recomputed there).
const (
	vectorSecret = "secret"
	vectorBody   = `{"hello":"world"}`
	vectorSig    = "2677ad3e7c090b2fa2c0fb13020d66d5420879b8316eb356a2d60fb9073bc778"
)

func TestSignVector(t *testing.T) {
	if got := Sign(vectorSecret, []byte(vectorBody)); got != vectorSig {
		t.Errorf("Sign = %s, want %s", got, vectorSig)
	}
	// The hook's reused HMAC state signs the same, also on its second use.
	s := mustNew(t, Config{Apps: []App{{ID: "1", Key: "k", Secret: vectorSecret, Hooks: []Hook{{URL: "http://x.test/"}}}}})
	defer closeNow(t, s)
	h := (*s.apps.Load())["1"].hooks[0]
	for range 2 {
		if got := h.sign(h.cred.Load(), []byte(vectorBody)); got != vectorSig {
			t.Errorf("hook.sign = %s, want %s", got, vectorSig)
		}
	}
}

func TestEventJSON(t *testing.T) {
	for _, c := range []struct {
		ev   Event
		want string
	}{
		{Event{Name: ChannelOccupied, Channel: "presence-room", UserID: "ignored"}, `{"name":"channel_occupied","channel":"presence-room"}`},
		{Event{Name: ChannelVacated, Channel: "presence-room"}, `{"name":"channel_vacated","channel":"presence-room"}`},
		{Event{Name: MemberAdded, Channel: "presence-room", UserID: "u1"}, `{"name":"member_added","channel":"presence-room","user_id":"u1"}`},
		{Event{Name: MemberRemoved, Channel: "presence-room", UserID: "u1"}, `{"name":"member_removed","channel":"presence-room","user_id":"u1"}`},
		{Event{Name: ClientEvent, Channel: "presence-room", Event: "client-typing", Data: `{"text":"hé \"x\"` + "\n" + `"}`, SocketID: "123.456", UserID: "u1"},
			`{"name":"client_event","channel":"presence-room","event":"client-typing","data":"{\"text\":\"hé \\\"x\\\"\n\"}","socket_id":"123.456","user_id":"u1"}`},
		{Event{Name: ClientEvent, Channel: "private-a", Event: "client-x", Data: "plain", SocketID: "1.2"},
			`{"name":"client_event","channel":"private-a","event":"client-x","data":"plain","socket_id":"1.2"}`},
		{Event{Name: CacheMiss, Channel: "cache-news"}, `{"name":"cache_miss","channel":"cache-news"}`},
		{Event{Name: SubscriptionCount, Channel: "news"}, `{"name":"subscription_count","channel":"news","subscription_count":0}`},
		{Event{Name: SubscriptionCount, Channel: "news", SubscriptionCount: 42}, `{"name":"subscription_count","channel":"news","subscription_count":42}`},
	} {
		got, err := json.Marshal(c.ev)
		if err != nil || string(got) != c.want {
			t.Errorf("%s:\n got %s (%v)\nwant %s", c.ev.Name, got, err, c.want)
		}
		var back Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("%s: decode: %v", c.ev.Name, err)
		} else if c.ev.Name == ClientEvent && back.Data != c.ev.Data {
			t.Errorf("data round trip: %q, want %q", back.Data, c.ev.Data)
		}
	}
	if _, err := json.Marshal(Event{Name: "nope"}); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown name: %v, want ErrUnknownEvent", err)
	}
}

// appendString must escape exactly as encoding/json does without HTML escaping.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " back \ slash`, "\x00\x01\x1f\x7f", "\b\f\n\r\t",
		"héllo 世界 😀", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", "<script>&</script>", `{"a":[1,"b"]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
			t.Fatalf("appendString(%q) = %s, encoding/json: %s", s, got, want.Bytes())
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, got, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("round trip %q -> %q", s, back)
		}
	})
}
