package hub

import (
	"encoding/json"
	"github.com/herald-rt/herald/presence"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"
)

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "nl\n cr\r tab\t", "\x00\x01\x1f", "é 漢字 🎉",
		"\u2028\u2029", "bad \xff utf8", "<script>&"} {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: output %s is not JSON: %v", s, got, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if back != want {
			t.Errorf("%q: round trip gave %q, want %q", s, back, want)
		}
	}
}

func TestEventJSONForwardsDataBytes(t *testing.T) {
	data := json.RawMessage(`"{\"a\":1,  \"b\":[1,2]}"`)
	got := string(eventJSON(nil, "my-event", "private-x", data, "u1"))
	want := `{"event":"my-event","channel":"private-x","data":"{\"a\":1,  \"b\":[1,2]}","user_id":"u1"}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestChannelKind(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  kind
		cache bool
	}{
		{"orders", kindPublic, false},
		{"cache-prices", kindPublic, true},
		{"private-a", kindPrivate, false},
		{"private-cache-a", kindPrivate, true},
		{"private-encrypted-a", kindEncrypted, false},
		{"private-encrypted-cache-a", kindEncrypted, true},
		{"presence-a", kindPresence, false},
		{"presence-cache-a", kindPresence, true},
		{"#server-to-user-7", kindUser, false},
		{"privatea", kindPublic, false}, // prefixes match with the dash
		{"presencea", kindPublic, false},
		{"cachea", kindPublic, false},
	} {
		k, c := channelKind(tc.name)
		if k != tc.kind || c != tc.cache {
			t.Errorf("%s: got (%v,%v), want (%v,%v)", tc.name, k, c, tc.kind, tc.cache)
		}
	}
}

func TestParseSocketID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		node uint32
		conn uint64
		ok   bool
	}{
		{"17.42", 17, 42, true},
		{"0.0", 0, 0, true},
		{"99999999999.1", 0, 0, true}, // valid form, not ours
		{"1.2.3", 0, 0, false},
		{"a.1", 0, 0, false},
		{"1.", 0, 0, false},
		{".1", 0, 0, false},
		{"", 0, 0, false},
		{"1 .2", 0, 0, false},
		{"-1.2", 0, 0, false},
	} {
		n, c, ok := parseSocketID(tc.in)
		if n != tc.node || c != tc.conn || ok != tc.ok {
			t.Errorf("%q: got (%d,%d,%v), want (%d,%d,%v)", tc.in, n, c, ok, tc.node, tc.conn, tc.ok)
		}
	}
}

func TestParseChannelData(t *testing.T) {
	a := App{}.withDefaults()
	for _, tc := range []struct {
		in, id, info, err string
	}{
		{`{"user_id":"7","user_info":{"n":"A"}}`, "7", `{"n":"A"}`, ""},
		{`{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, "10", `{"name":"Mr. Channels"}`, ""},
		{`{"user_id":"7"}`, "7", "", ""},
		{`{"user_id":"7","user_info":null}`, "7", "", ""},
		{`{"user_id":""}`, "", "", "user_id must not be empty"},
		{`{"user_id":true}`, "", "", "channel_data needs a user_id (string or number)"},
		{`{"user_info":{}}`, "", "", "channel_data needs a user_id (string or number)"},
		{`not json`, "", "", "channel_data must be a JSON object with a user_id"},
		{``, "", "", "channel_data must be a JSON object with a user_id"},
		{`{"user_id":"` + strings.Repeat("x", 129) + `"}`, "", "", "user_id too long"},
		{`{"user_id":"7","user_info":"` + strings.Repeat("x", 1100) + `"}`, "", "", "user_info too large"},
	} {
		m, err := parseChannelData(tc.in, &a)
		if err != tc.err || m.UserID != tc.id || string(m.Info) != tc.info {
			t.Errorf("%.40s: got (%q,%s,%q), want (%q,%s,%q)", tc.in, m.UserID, m.Info, err, tc.id, tc.info, tc.err)
		}
	}
}

func TestPresenceDataShape(t *testing.T) {
	a := App{}.withDefaults()
	m1, _ := parseChannelData(`{"user_id":"7","user_info":{"n":"A"}}`, &a)
	m2, _ := parseChannelData(`{"user_id":"8"}`, &a)
	var s string
	if err := json.Unmarshal(presenceData(nil), &s); err != nil || s != `{"presence":{"ids":[],"hash":{},"count":0}}` {
		t.Fatalf("empty: %q %v", s, err)
	}
	raw := presenceData([]presence.Member{m1, m2})
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Presence struct {
			IDs   []string                   `json:"ids"`
			Hash  map[string]json.RawMessage `json:"hash"`
			Count int                        `json:"count"`
		} `json:"presence"`
	}
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		t.Fatal(err)
	}
	p := doc.Presence
	if p.Count != 2 || len(p.IDs) != 2 || string(p.Hash["7"]) != `{"n":"A"}` || string(p.Hash["8"]) != "null" {
		t.Fatalf("unexpected presence doc: %s", s)
	}
}

func TestOriginAllowed(t *testing.T) {
	a := App{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org"}}
	for origin, want := range map[string]bool{
		"https://app.example.com":    true,
		"HTTPS://APP.EXAMPLE.COM":    true,
		"https://evil.com":           false,
		"https://a.example.org":      true,
		"https://a.b.example.org":    true,
		"https://example.org":        false,
		"http://a.example.org":       false,
		"https://a.example.org.evil": false,
	} {
		if got := a.originAllowed(origin); got != want {
			t.Errorf("%s: got %v, want %v", origin, got, want)
		}
	}
	if !(&App{}).originAllowed("https://anything") {
		t.Error("no list must allow any origin")
	}
}

func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{
		`{"event":"pusher:subscribe","data":{"channel":"presence-room","auth":"k:x","channel_data":"{\"user_id\":\"7\"}"}}`,
		`{"event":"pusher:ping","data":{}}`,
		`{"event":"client-typing","channel":"private-a","data":{"x":1}}`,
		`{"event":"pusher:signin","data":"{\"auth\":\"k:x\",\"user_data\":\"{}\"}"}`,
		`{}`, `[]`, `"x"`, `{"event":1}`, ``,
	} {
		f.Add([]byte(s))
	}
	a := App{}.withDefaults()
	f.Fuzz(func(t *testing.T, msg []byte) {
		m, err := parseClientMessage(msg)
		if err != nil {
			return
		}
		if m.Event == "" {
			t.Fatal("accepted a message without an event")
		}
		var d subscribeData
		if decodeData(m.Data, &d) == nil {
			mem, e := parseChannelData(d.ChannelData, &a)
			if e == "" && (mem.UserID == "" || len(mem.Info) > a.MaxUserInfoBytes) {
				t.Fatalf("accepted bad channel_data %q", d.ChannelData)
			}
			if e == "" && mem.Info != nil && !json.Valid(mem.Info) {
				t.Fatalf("user_info not valid JSON: %q", mem.Info)
			}
		}
		// Whatever the input, what we would send back is valid JSON.
		out := eventJSON(nil, m.Event, m.Channel, []byte("null"), m.Channel)
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out: %q", out)
		}
		if !utf8.Valid(out) {
			t.Fatalf("invalid UTF-8 out: %q", out)
		}
	})
}

// A node holds hundreds of thousands of clients: keep the struct in the 48-byte size class.
func TestClientSize(t *testing.T) {
	if n := unsafe.Sizeof(client{}); n > 48 {
		t.Fatalf("client is %d bytes, want <= 48 (move rarely used fields to clientExt)", n)
	}
	if n := unsafe.Sizeof(subscription{}); n > 32 {
		t.Fatalf("subscription is %d bytes, want <= 32", n)
	}
}

// Members are removed by swapping in the last one: every index must stay right
// through any sequence of adds and removes.
func TestChannelMembersSwapRemove(t *testing.T) {
	ch := &channel{app: &appState{stats: &appStats{}}}
	rng := rand.New(rand.NewPCG(1, 2))
	in := map[*subscription]bool{}
	var all []*subscription
	for i := 0; i < 3000; i++ {
		if len(all) == 0 || rng.IntN(3) > 0 {
			s := &subscription{idx: -1}
			all = append(all, s)
			ch.addLocked(s)
			in[s] = true
		} else {
			s := all[rng.IntN(len(all))]
			ch.removeLocked(s) // also when already removed: a no-op
			delete(in, s)
		}
		if len(ch.members) != len(in) || ch.app.stats.subscriptions.Load() != int64(len(in)) {
			t.Fatalf("step %d: %d members, app counts %d, want %d", i, len(ch.members), ch.app.stats.subscriptions.Load(), len(in))
		}
	}
	for i, s := range ch.members {
		if int(s.idx) != i || !in[s] {
			t.Fatalf("member %d has idx %d (in=%v)", i, s.idx, in[s])
		}
	}
	for _, s := range all {
		if !in[s] && s.idx != -1 {
			t.Fatalf("removed subscription keeps idx %d", s.idx)
		}
	}
}
