package loadgen

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// verifyPusherRequest checks a signed API request the way a server does
// (PUSHER.md 2.2), with code independent of SignQuery.
func verifyPusherRequest(r *http.Request, body []byte, key, secret string) bool {
	q := r.URL.Query()
	if q.Get("auth_key") != key || q.Get("auth_version") != "1.0" {
		return false
	}
	sum := md5.Sum(body)
	if q.Get("body_md5") != hex.EncodeToString(sum[:]) {
		return false
	}
	var pairs []string
	for k, vs := range q {
		if k != "auth_signature" {
			pairs = append(pairs, strings.ToLower(k)+"="+vs[0])
		}
	}
	sort.Strings(pairs)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(r.Method + "\n" + r.URL.Path + "\n" + strings.Join(pairs, "&")))
	return hmac.Equal([]byte(q.Get("auth_signature")), []byte(hex.EncodeToString(m.Sum(nil))))
}

func TestPublisher(t *testing.T) {
	var conns atomic.Int32
	var got struct{ Name, Channel, Data string }
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/apps/9/events" || !verifyPusherRequest(r, body, "k", "s") {
			http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		if err := json.Unmarshal(body, &got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "{}")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p, err := NewPublisher(PublisherConfig{BaseURL: srv.URL, AppID: "9", Key: "k", Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	data := AppendPayload(nil, 5, time.Now().UnixNano(), 100)
	for i := 0; i < 3; i++ {
		if err := p.Publish(ctx, "bench", "tick", data); err != nil {
			t.Fatal(err)
		}
	}
	if got.Name != "tick" || got.Channel != "bench" || got.Data != string(data) {
		t.Fatalf("server got %+v", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential publishes, want 1 (keep-alive)", n)
	}
	bad, _ := NewPublisher(PublisherConfig{BaseURL: srv.URL, AppID: "9", Key: "k", Secret: "wrong"})
	defer bad.Close()
	if err := bad.Publish(ctx, "bench", "tick", data); !errors.Is(err, ErrPublish) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := NewPublisher(PublisherConfig{BaseURL: srv.URL}); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty config: %v", err)
	}
}
