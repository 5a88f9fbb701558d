package loadgen

import (
	"net/url"
	"testing"
)

// PUSHER.md 1.14: key 278d425bdf160c739803, secret 7ad3773142a6692b25b8, socket 1234.1234.
func TestChannelAuthVectors(t *testing.T) {
	const key, secret, socket = "278d425bdf160c739803", "7ad3773142a6692b25b8", "1234.1234"
	for _, tc := range []struct{ channel, data, hex string }{
		{"private-foobar", "", "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"},
		{"presence-foobar", `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`, "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"},
	} {
		if got := ChannelAuth(key, secret, socket, tc.channel, tc.data); got != key+":"+tc.hex {
			t.Errorf("%s: got %s", tc.channel, got)
		}
	}
}

// PUSHER.md 2.4, the HTTP API doc's worked example.
func TestSignQueryVector(t *testing.T) {
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	q := SignQuery("post", "/apps/3/events", "278d425bdf160c739803", "7ad3773142a6692b25b8", body, 1353088179, nil)
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"auth_key":       "278d425bdf160c739803",
		"auth_timestamp": "1353088179",
		"auth_version":   "1.0",
		"body_md5":       "ec365a775a4cd0599faeb73354201b6f",
		"auth_signature": "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
	}
	for k, w := range want {
		if v.Get(k) != w {
			t.Errorf("%s = %q, want %q", k, v.Get(k), w)
		}
	}
	if len(v) != len(want) {
		t.Errorf("query %s has extra params", q)
	}
}

func TestSignQueryEscapesAndNoBody(t *testing.T) {
	q := SignQuery("GET", "/apps/3/channels", "k", "s", nil, 1, map[string]string{"Info": "a b&c"})
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if v.Get("info") != "a b&c" || v.Has("body_md5") {
		t.Fatalf("query %s", q)
	}
}
