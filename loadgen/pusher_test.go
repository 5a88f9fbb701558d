package loadgen

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestScanMessage(t *testing.T) {
	for _, tc := range []struct {
		in                   string
		event, channel, data string
	}{
		{`{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}`,
			"pusher:connection_established", "", `"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"`},
		{`{"channel":"orders","data":"{\"id\":5}","event":"order-created"}`, "order-created", "orders", `"{\"id\":5}"`},
		{` { "event" : "x" , "data" : {"a":[1,{"b":"}"}]}, "channel":"c", "user_id":"7" } `, "x", "c", `{"a":[1,{"b":"}"}]}`},
		{`{"event":"pusher:pong","data":{}}`, "pusher:pong", "", `{}`},
		{`{"event":"e","data":null,"n":-1.5e3,"t":true}`, "e", "", `null`},
	} {
		m, err := scanMessage([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if string(m.event) != tc.event || string(m.channel) != tc.channel || string(m.data) != tc.data {
			t.Fatalf("%s: got %q %q %q", tc.in, m.event, m.channel, m.data)
		}
	}
	for _, bad := range []string{``, `[]`, `{"data":"x"}`, `{"event":1}`, `{"event":"e"`, `{"event" "e"}`, `{"event":"e",}`, `{"event":"e" "x":1}`, `{"a":{"b":1}`} {
		if _, err := scanMessage([]byte(bad)); !errors.Is(err, ErrJSON) {
			t.Errorf("%q: err=%v, want ErrJSON", bad, err)
		}
	}
}

func TestScanMessageAllocatesNothing(t *testing.T) {
	msg := []byte(`{"event":"tick","channel":"bench","data":"seq:12:ts:1700000000000000000:xxxxxxxx"}`)
	allocs := testing.AllocsPerRun(100, func() {
		m, _ := scanMessage(msg)
		_, _, _ = ParsePayload(m.data)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

func TestPayload(t *testing.T) {
	p := AppendPayload(nil, 42, 1700000000123456789, 100)
	if len(p) != 100 {
		t.Fatalf("len %d", len(p))
	}
	js, _ := json.Marshal(string(p))
	if string(js) != `"`+string(p)+`"` {
		t.Fatal("payload needs JSON escaping")
	}
	for _, in := range [][]byte{p, js} {
		seq, ts, err := ParsePayload(in)
		if err != nil || seq != 42 || ts != 1700000000123456789 {
			t.Fatalf("%s: %d %d %v", in, seq, ts, err)
		}
	}
	if p := AppendPayload(nil, 1, 2, 0); string(p) != "seq:1:ts:2:" {
		t.Fatalf("short payload %q", p)
	}
	for _, bad := range []string{"", "seq:", "seq:1", "seq:1:ts:", "seq:x:ts:1:", "seq:1:ts:1x", "seq:99999999999999999999:ts:1:", `"{\"id\":5}"`} {
		if _, _, err := ParsePayload([]byte(bad)); !errors.Is(err, ErrPayload) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestAppendSubscribe(t *testing.T) {
	b := appendSubscribe(nil, "presence-room", "K:abc", `{"user_id":"7","user_info":{"n":"A\u0001"}}`)
	var m struct {
		Event string `json:"event"`
		Data  struct {
			Channel, Auth string
			ChannelData   string `json:"channel_data"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if m.Event != "pusher:subscribe" || m.Data.Channel != "presence-room" || m.Data.Auth != "K:abc" ||
		m.Data.ChannelData != `{"user_id":"7","user_info":{"n":"A\u0001"}}` {
		t.Fatalf("%+v", m)
	}
	if got := string(appendSubscribe(nil, "public", "", "")); got != `{"event":"pusher:subscribe","data":{"channel":"public"}}` {
		t.Fatal(got)
	}
}
