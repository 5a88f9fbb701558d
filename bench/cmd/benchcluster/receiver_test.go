package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(t *testing.T, url, key, sig, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", key)
	req.Header.Set("X-Pusher-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// The receiver takes only requests signed with the app secret under the app key,
// counts their events by type, and matches member and channel events.
func TestReceiver(t *testing.T) {
	r, err := startReceiver("k", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ms := time.Now().UnixMilli()
	body := func(events ...string) string {
		return fmt.Sprintf(`{"time_ms":%d,"events":[%s]}`, ms, strings.Join(events, ","))
	}
	added := `{"name":"member_added","channel":"presence-a","user_id":"u1"}`
	removed := `{"name":"member_removed","channel":"presence-a","user_id":"u1"}`
	occupied := `{"name":"channel_occupied","channel":"presence-a"}`
	vacated := `{"name":"channel_vacated","channel":"presence-a"}`

	good := body(occupied, added)
	for _, c := range []struct {
		key, sig, body string
		want           int
	}{
		{"k", sign("s", good), good, 200},
		{"k", sign("other", good), good, 401},                             // wrong secret
		{"k", sign("s", good) + "00", good, 401},                          // not the signature
		{"k", "zz", good, 401},                                            // not hex
		{"other", sign("s", good), good, 401},                             // wrong key
		{"k", sign("s", "{}"), "{}", 400},                                 // no time_ms
		{"k", sign("s", body(`{"name":"x"}`)), body(`{"name":"x"}`), 400}, // unknown type
		{"k", sign("s", body(removed, vacated)), body(removed, vacated), 200},
		{"k", sign("s", body(added)), body(added), 200}, // a duplicate
	} {
		if got := post(t, r.URL(), c.key, c.sig, c.body); got != c.want {
			t.Errorf("key %q body %s: status %d, want %d", c.key, c.body, got, c.want)
		}
	}
	tl := r.tally()
	if tl.Requests != 3 || tl.Events != 5 || tl.BadSignature != 3 || tl.BadKey != 1 || tl.BadBody != 2 {
		t.Errorf("counts %+v", tl.hookCounts)
	}
	if tl.ByType["member_added"] != 2 || tl.ByType["member_removed"] != 1 || tl.ByType["channel_occupied"] != 1 || tl.ByType["channel_vacated"] != 1 {
		t.Errorf("by type %v", tl.ByType)
	}
	if tl.Members != 1 || tl.MembersUnmatched != 1 || tl.MembersDuplicated != 1 || tl.MembersRemovedFirst != 0 {
		t.Errorf("members %+v", tl)
	}
	if tl.Channels != 1 || tl.ChannelsUnbalanced != 0 || tl.ChannelOutOfTurn != 0 {
		t.Errorf("channels %+v", tl)
	}
	if r.requests.Load() != 3 || r.events.Load() != 5 || tl.DelayMax <= 0 || tl.DelayMax > 5000 {
		t.Errorf("atomics %d %d, delay max %v ms", r.requests.Load(), r.events.Load(), tl.DelayMax)
	}
}

func TestAlternation(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	seq := func(spec string, gaps ...time.Duration) *channelSeen {
		c := &channelSeen{}
		at := t0
		for i, ch := range spec {
			if i > 0 {
				at = at.Add(gaps[i-1])
			}
			c.events = append(c.events, channelEvent{at: at, occupied: ch == 'O'})
		}
		return c
	}
	ms := time.Millisecond
	for _, c := range []struct {
		name         string
		c            *channelSeen
		crossed, out int
	}{
		{"in turn", seq("OVOV", 5*time.Second, 5*time.Second, 5*time.Second), 0, 0},
		// The vacancy (one node) and the next occupation (another) crossed in flight.
		{"crossed", seq("OOVV", 5*time.Second, 20*ms, 5*time.Second), 1, 0},
		// Occupied twice, seconds apart: no crossing explains it.
		{"occupied twice", seq("OOVV", 5*time.Second, 5*time.Second, 5*time.Second), 0, 2},
		{"vacated first", seq("VO", 20*ms), 1, 0},
		{"vacated while vacant", seq("OVV", time.Second, 3*time.Second), 0, 1},
	} {
		crossed, out, _, _ := c.c.alternation()
		if crossed != c.crossed || out != c.out {
			t.Errorf("%s: crossed %d out of turn %d, want %d %d", c.name, crossed, out, c.crossed, c.out)
		}
	}
	// Occupied, then a vacancy (request time_ms 100) and the next occupation (101)
	// that arrived swapped: a crossing, 30 ms wide, that time_ms puts right; then the
	// same with equal time_ms, which does not.
	c := &channelSeen{events: []channelEvent{
		{t0, 1, true}, {t0.Add(5 * time.Second), 101, true}, {t0.Add(5*time.Second + 30*ms), 100, false},
		{t0.Add(9 * time.Second), 200, true}, {t0.Add(9*time.Second + 10*ms), 200, false}, {t0.Add(12 * time.Second), 300, false},
	}}
	if crossed, out, widest, byTimeMS := c.alternation(); crossed != 2 || out != 0 || widest != 30*ms || byTimeMS != 1 {
		t.Errorf("crossed %d out %d widest %v by time_ms %d, want 2 0 30ms 1", crossed, out, widest, byTimeMS)
	}
}

func TestCheckWebhooks(t *testing.T) {
	clean := func() *result {
		by := map[string]uint64{"member_added": 10, "member_removed": 10, "channel_occupied": 3, "channel_vacated": 3}
		return &result{Scenario: scWebhooks, Joins: 10, Leaves: 10, NodeConns: []uint64{1, 1, 1}, Webhooks: &webhookFigures{
			Settled:  true,
			Received: hookCounts{Requests: 2, Events: 26, ByType: by},
			Sent:     map[string]float64{"member_added": 10, "member_removed": 10, "channel_occupied": 3, "channel_vacated": 3, "cache_miss": 0},
			SentAll:  26, MemberPairs: 10, ChannelsSeen: 3,
		}}
	}
	ok := clean()
	ok.check(nil)
	if len(ok.Failed) != 0 {
		t.Fatalf("clean run failed: %v", ok.Failed)
	}
	bad := clean()
	w := bad.Webhooks
	w.Settled = false
	w.Received.ByType["member_removed"] = 9
	w.Received.Events = 25
	w.Received.BadSignature = 1
	w.MembersUnmatched = 1
	w.ChannelsUnbalanced, w.ChannelOutOfTurn = 1, 2
	w.Failed, w.Dropped = 3, 4
	bad.check(nil)
	got := strings.Join(bad.Failed, "; ")
	for _, want := range []string{"did not settle", "received 25 webhook events, the nodes count 26", "member_removed: received 9",
		"1 bad signature", "failed_total 3", "dropped_total 4", "member_added 10, member_removed 9", "1 of 3 channels", "2 channel_occupied or channel_vacated out of turn"} {
		if !strings.Contains(got, want) {
			t.Errorf("checks %q lack %q", got, want)
		}
	}
}
