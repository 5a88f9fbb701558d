package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/logtest"
)

var benchEvent = Event{Name: ClientEvent, Channel: "private-chat", Event: "client-msg", Data: `{"text":"hello"}`, SocketID: "123.456"}

// Send allocates nothing: whether it queues the event, drops it, or nobody wants it.
func TestSendAllocs(t *testing.T) {
	net := newFakeNet()
	ep, url := net.add(t, "a.test", "secret", always(0))
	ep.arrived = make(chan struct{}, 10)
	s := mustNew(t, Config{Apps: oneApp(url, Hook{URL: url, EventTypes: []string{MemberAdded}}), Client: net.client(),
		QueueSize: 2000, BatchWait: time.Millisecond, Logger: (&logtest.Recorder{}).Logger()})
	s.Send("1", benchEvent)
	<-ep.arrived // in flight for good: the queue only fills
	for range 1100 {
		s.Send("1", benchEvent) // the ring grows to 2048 here, not below
	}
	for _, c := range []struct {
		name string
		app  string
		ev   Event
	}{
		{"queued", "1", benchEvent},
		{"not wanted", "1", Event{Name: CacheMiss, Channel: "x"}},
		{"unknown app", "2", benchEvent},
	} {
		if n := testing.AllocsPerRun(400, func() { s.Send(c.app, c.ev) }); n != 0 {
			t.Errorf("%s: %v allocations per Send", c.name, n)
		}
	}
	for s.Stats().Apps["1"].Queued < 2000 {
		s.Send("1", benchEvent)
	}
	if n := testing.AllocsPerRun(400, func() { s.Send("1", benchEvent) }); n != 0 {
		t.Errorf("queue full: %v allocations per Send", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Close(ctx)
}

// BenchmarkSend: the cost of Send on the caller's goroutine.
//
//	go test -run '^$' -bench Send -benchmem ./webhook/
func BenchmarkSend(b *testing.B) {
	hanging := newFakeNet()
	_, url := hanging.add(b, "a.test", "secret", always(0))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{
		{"delivering", &http.Client{Transport: okTransport{}}}, // a worker as fast as it gets
		{"queue_full", hanging.client()},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := mustNew(b, Config{Apps: oneApp(url), Client: c.client, Logger: (&logtest.Recorder{}).Logger()})
			b.ReportAllocs()
			for b.Loop() {
				s.Send("1", benchEvent)
			}
			b.StopTimer()
			b.ReportMetric(float64(s.Stats().Apps["1"].Dropped[DropQueueFull])/float64(b.N), "dropped/op")
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			s.Close(ctx)
		})
	}
	b.Run("not_wanted", func(b *testing.B) {
		hooks := []Hook{{URL: "http://a.test/", EventTypes: []string{MemberAdded}}}
		s := mustNew(b, Config{Apps: []App{{ID: "1", Key: "k", Secret: "s", Hooks: hooks}}})
		b.ReportAllocs()
		for b.Loop() {
			s.Send("1", benchEvent)
		}
		b.StopTimer()
		closeBench(b, s)
	})
}

// BenchmarkEndToEnd: events per second from Send to a local HTTP server's 2xx, with
// one hook (one request in flight) and with eight hooks (eight apps) in parallel.
//
//	go test -run '^$' -bench EndToEnd -benchmem ./webhook/
func BenchmarkEndToEnd(b *testing.B) {
	for _, hooks := range []int{1, 8} {
		b.Run(fmt.Sprint("hooks=", hooks), func(b *testing.B) {
			var got atomic.Int64
			done := make(chan struct{})
			target := int64(b.N)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				var p struct{ Events []json.RawMessage }
				if err := json.Unmarshal(body, &p); err != nil {
					b.Error(err)
				}
				if got.Add(int64(len(p.Events))) == target {
					close(done)
				}
			}))
			defer srv.Close()
			var apps []App
			for i := range hooks {
				apps = append(apps, App{ID: fmt.Sprint(i), Key: "k", Secret: "s", Hooks: []Hook{{URL: srv.URL}}})
			}
			s := mustNew(b, Config{Apps: apps, QueueSize: b.N + 1, QueueBytes: 1 << 40})
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				s.Send(apps[i%hooks].ID, benchEvent)
			}
			if b.N > 0 {
				<-done
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "webhooks/s")
			b.StopTimer()
			closeBench(b, s)
		})
	}
}

// okTransport answers 204 at once, without a network.
type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: r}, nil
}

func closeBench(b *testing.B, s *Sender) {
	if err := s.Close(context.Background()); err != nil {
		b.Error(err)
	}
}
