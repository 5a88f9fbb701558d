package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-rt/herald/internal/logtest"
)

// These tests go through the Sender's own HTTP client to a real local server.

// server is a webhook receiver on a local port. Each request it gets goes to reqs;
// the answer is status, after hold is closed if hold is not nil.
type server struct {
	*httptest.Server
	reqs chan request
}

func newServer(t *testing.T, secret string, status int, hold chan struct{}) *server {
	s := &server{reqs: make(chan request, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		s.reqs <- parseRequest(t, r.Method, r.URL.String(), r.Header, body, secret)
		if hold != nil {
			<-hold
		}
		w.WriteHeader(status)
	}))
	return s
}

// next waits for the server's next request; the timeout only turns a hang into a failure.
func (s *server) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request within 10 s")
		return request{}
	}
}

var goldenEvents = []struct {
	ev   Event
	json string
}{
	{Event{Name: ChannelOccupied, Channel: "presence-room"}, `{"name":"channel_occupied","channel":"presence-room"}`},
	{Event{Name: ChannelVacated, Channel: "presence-room"}, `{"name":"channel_vacated","channel":"presence-room"}`},
	{Event{Name: MemberAdded, Channel: "presence-room", UserID: "u1"}, `{"name":"member_added","channel":"presence-room","user_id":"u1"}`},
	{Event{Name: MemberRemoved, Channel: "presence-room", UserID: "u1"}, `{"name":"member_removed","channel":"presence-room","user_id":"u1"}`},
	{Event{Name: ClientEvent, Channel: "presence-room", Event: "client-typing", Data: `{"text":"hi"}`, SocketID: "123.456", UserID: "u1"},
		`{"name":"client_event","channel":"presence-room","event":"client-typing","data":"{\"text\":\"hi\"}","socket_id":"123.456","user_id":"u1"}`},
	{Event{Name: ClientEvent, Channel: "private-a", Event: "client-x", Data: `"s"`, SocketID: "1.2"},
		`{"name":"client_event","channel":"private-a","event":"client-x","data":"\"s\"","socket_id":"1.2"}`},
	{Event{Name: CacheMiss, Channel: "cache-news"}, `{"name":"cache_miss","channel":"cache-news"}`},
	{Event{Name: SubscriptionCount, Channel: "news", SubscriptionCount: 3}, `{"name":"subscription_count","channel":"news","subscription_count":3}`},
}

// TestWire checks every request byte for byte: one per event type, then a batch.
func TestWire(t *testing.T) {
	srv := newServer(t, "secret", 200, nil)
	defer srv.Close()
	clock := func() time.Time { return time.UnixMilli(1700000000123) }
	hook := Hook{URL: srv.URL + "/pusher/hook?tenant=a%20b", Headers: map[string]string{"authorization": "Bearer tok", "X-Custom": "1"}}
	apps := []App{{ID: "1", Key: "the-key", Secret: "secret", Hooks: []Hook{hook}}}

	check := func(r request, wantBody string) {
		t.Helper()
		if string(r.body) != wantBody {
			t.Errorf("body\n got %s\nwant %s", r.body, wantBody)
		}
		want := map[string]string{
			"Content-Type":       "application/json",
			"Content-Length":     fmt.Sprint(len(wantBody)),
			"X-Pusher-Key":       "the-key",
			"X-Pusher-Signature": Sign("secret", []byte(wantBody)),
			"Authorization":      "Bearer tok",
			"X-Custom":           "1",
			"User-Agent":         "herald-webhooks",
		}
		got := map[string]string{}
		for k, v := range r.header {
			got[k] = strings.Join(v, ", ")
		}
		if !maps.Equal(got, want) {
			t.Errorf("headers\n got %v\nwant %v", got, want)
		}
		if r.method != http.MethodPost || r.url != "/pusher/hook?tenant=a%20b" || !r.sigOK {
			t.Errorf("%s %s, signature verified: %v", r.method, r.url, r.sigOK)
		}
	}

	s := mustNew(t, Config{Apps: apps, Clock: clock, BatchMax: 1})
	for _, g := range goldenEvents {
		s.Send("1", g.ev)
	}
	for _, g := range goldenEvents {
		check(srv.next(t), `{"time_ms":1700000000123,"events":[`+g.json+`]}`)
	}
	closeNow(t, s)

	s = mustNew(t, Config{Apps: apps, Clock: clock, BatchWait: time.Hour})
	var all []string
	for _, g := range goldenEvents {
		s.Send("1", g.ev)
		all = append(all, g.json)
	}
	closeNow(t, s) // sends the batch at once
	check(srv.next(t), `{"time_ms":1700000000123,"events":[`+strings.Join(all, ",")+`]}`)
}

// Over real HTTP: 45 events make requests of 20, 20 and 5, in order, and Close sends
// the last one without waiting for BatchWait.
func TestHTTPBatchingAndClose(t *testing.T) {
	srv := newServer(t, "secret", 200, nil)
	defer srv.Close()
	before := goleak.IgnoreCurrent()
	s := mustNew(t, Config{Apps: oneApp(srv.URL), BatchWait: time.Hour})
	var want []string
	for i := range 45 {
		want = append(want, fmt.Sprint(i))
		s.Send("1", ev(want[i]))
	}
	var sizes []int
	var got []string
	for range 2 {
		r := srv.next(t)
		sizes = append(sizes, len(r.events))
		got = append(got, r.names()...)
	}
	closeNow(t, s)
	r := srv.next(t)
	sizes = append(sizes, len(r.events))
	got = append(got, r.names()...)
	if !slices.Equal(sizes, []int{20, 20, 5}) || !slices.Equal(got, want) {
		t.Errorf("batches %v, events %v", sizes, got)
	}
	if st := s.Stats().Apps["1"]; st.Sent != 45 {
		t.Errorf("stats %+v", st)
	}
	// Close also closed the client's kept-alive connection, though the server is up.
	goleak.VerifyNone(t, before)
}

// A real server that answers too late: the request is abandoned after Timeout, and
// with retries off the batch is dropped at once.
func TestHTTPTimeout(t *testing.T) {
	hold := make(chan struct{})
	srv := newServer(t, "secret", 200, hold)
	defer srv.Close()
	defer close(hold)
	logs := &logtest.Recorder{}
	s := mustNew(t, Config{Apps: oneApp(srv.URL), BatchWait: time.Millisecond, Timeout: 100 * time.Millisecond,
		RetryFor: -1, Logger: logs.Logger()})
	s.Send("1", ev("a"))
	srv.next(t)
	start := time.Now()
	closeNow(t, s) // waits for the attempt, which times out
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close waited %v", d)
	}
	if st := s.Stats().Apps["1"]; st.Failed != 1 || st.Dropped[DropRetriesExhausted] != 1 || st.Sent != 0 {
		t.Errorf("stats %+v", st)
	}
	if l := logs.Lines(); len(l) == 0 || l[0].Attrs["error"] != "no answer within 100ms" {
		t.Errorf("logs %+v", l)
	}
}

// A million Sends to a hook whose endpoint never answers: each returns at once, the
// queue stays at QueueSize (so does memory), and the rest is counted as queue_full.
func TestSendNeverBlocks(t *testing.T) {
	net := newFakeNet()
	ep, url := net.add(t, "a.test", "secret", always(0))
	ep.arrived = make(chan struct{}, 10)
	const queueSize, sends = 1000, 1_000_000
	s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), QueueSize: queueSize, BatchWait: time.Millisecond,
		Logger: (&logtest.Recorder{}).Logger()})
	s.Send("1", ev("first"))
	<-ep.arrived // in flight, and stays so

	e := Event{Name: ClientEvent, Channel: "private-chat", Event: "client-msg", Data: strings.Repeat("x", 200), SocketID: "1.1"}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range sends {
		s.Send("1", e)
	}
	elapsed := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d Sends in %v (%v each), heap grew %d KB", sends, elapsed, elapsed/sends, growth>>10)
	if elapsed > 10*time.Second {
		t.Errorf("%d Sends took %v", sends, elapsed)
	}
	// The queue holds 1000 events of ~200 bytes of struct: unbounded, it would hold
	// a million.
	if growth > 4<<20 {
		t.Errorf("heap grew by %d KB", growth>>10)
	}
	if st := s.Stats().Apps["1"]; st.Queued != queueSize || st.Dropped[DropQueueFull] != sends-queueSize {
		t.Errorf("stats %+v", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v", err)
	}
	if st := s.Stats().Apps["1"]; st.Dropped[DropShutdown] != queueSize+1 || st.Queued != 0 {
		t.Errorf("after Close: %+v", st)
	}
}
