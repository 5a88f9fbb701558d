package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/hub"
	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/webhook"
)

// setSource is a Source whose figures the test sets. Each Stats call adds step to
// the node's and every app's messages in and out, so that rates follow step.
type setSource struct {
	mu   sync.Mutex
	st   hub.Stats
	step uint64
}

func (f *setSource) set(fn func(st *hub.Stats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

func (f *setSource) setStep(n uint64) { f.mu.Lock(); f.step = n; f.mu.Unlock() }

// Stats returns a deep copy: the server keeps samples while the test changes figures.
func (f *setSource) Stats() hub.Stats {
	f.mu.Lock()
	f.st.Node.MessagesIn += f.step
	f.st.Node.MessagesOut += 3 * f.step
	for id, a := range f.st.Apps {
		a.MessagesIn += f.step
		a.MessagesOut += 3 * f.step
		f.st.Apps[id] = a
	}
	b, err := json.Marshal(f.st)
	f.mu.Unlock()
	if err != nil {
		panic(err)
	}
	var out hub.Stats
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func (f *setSource) Draining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.Node.Draining
}

// busyStats is a node with two apps, webhooks on one, a memory broker and itself as
// the cluster's one node.
func busyStats() hub.Stats {
	return hub.Stats{
		Node: hub.NodeStats{
			NodeID: 42, Connections: 1234, Channels: 56, Subscriptions: 789, SlowConsumers: 2, ErrorCloses: 5,
			Broker: pubsub.Stats{Engine: "memory", Up: true, Subscriptions: 56, Received: 10, Published: 20},
			Nodes:  []presence.Node{{ID: 42, Name: "42.a1"}},
			Webhooks: map[string]webhook.AppStats{
				"alpha": {Hooks: 1, Sent: 17, Failed: 3, Dropped: map[string]uint64{"queue_full": 4}, Queued: 6,
					LatencyCount: 17, LatencySeconds: 0.17},
			},
			Transport: hub.TransportStats{Accepted: 1300, Upgraded: 1290, Open: 1234, BytesIn: 5 << 20, BytesOut: 7 << 30},
		},
		Apps: map[string]hub.AppStats{
			"alpha": {Connections: 1000, Channels: 50, Subscriptions: 700, SlowConsumers: 2, ErrorCloses: 5,
				PublishedAPI: 9, PublishedClient: 1, Closes: map[string]uint64{"slow_consumer": 2, "pong_timeout": 5},
				Dropped: map[string]uint64{"client_event_rate": 8}},
			"beta": {Connections: 234, Channels: 6, Subscriptions: 89, Closes: map[string]uint64{}},
		},
	}
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Run()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { closeServer(t, s) }) })
	return s
}

func closeServer(t *testing.T, s *Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("admin Close: %v", err)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, id, data string }

// sseStream reads events from an open /events response.
type sseStream struct {
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
}

func openStream(t *testing.T, url string) (*sseStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp
	}
	st := &sseStream{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(st.close)
	return st, resp
}

func (s *sseStream) close() { s.cancel(); s.resp.Body.Close() }

// next reads one event (skipping retry-only blocks); an error at the end of the stream.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	data := []string{}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if len(data) == 0 {
				continue // a block with only retry:
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.name = value
		case "id":
			ev.id = value
		case "data":
			data = append(data, value)
		case "retry", "":
		default:
			return ev, fmt.Errorf("unknown SSE field %q", field)
		}
	}
}

// until reads documents (skipping the history) until ok accepts one, or 5 s pass.
func (s *sseStream) until(t *testing.T, what string, ok func(doc statsDoc) bool) statsDoc {
	t.Helper()
	timer := time.AfterFunc(5*time.Second, s.close)
	defer timer.Stop()
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ev.name != "" {
			continue
		}
		var doc statsDoc
		if err := json.Unmarshal([]byte(ev.data), &doc); err != nil {
			t.Fatalf("event data is not the stats document: %v\n%s", err, ev.data)
		}
		if ok(doc) {
			return doc
		}
	}
}

func TestEventsStream(t *testing.T) {
	src := &setSource{st: busyStats()}
	s := startServer(t, Config{Source: src, Interval: 20 * time.Millisecond})
	base := "http://" + s.Addr()

	st, resp := openStream(t, base+"/events")
	if st == nil {
		t.Fatalf("events: %s", resp.Status)
	}
	if ct := st.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	first, err := st.next()
	if err != nil {
		t.Fatal(err)
	}
	var h history
	if first.name != "history" || json.Unmarshal([]byte(first.data), &h) != nil || h.IntervalSeconds != 0.02 {
		t.Fatalf("first event is not the history: %+v", first)
	}

	// The document follows the source, and its rates follow the counters.
	st.until(t, "the first figures", func(d statsDoc) bool { return d.Node.NodeID == 42 && d.Node.Connections == 1234 })
	src.set(func(st *hub.Stats) { st.Node.Connections = 99; st.Node.Broker.Reconnects = 3 })
	src.setStep(10)
	d := st.until(t, "the changed figures", func(d statsDoc) bool {
		return d.Node.Connections == 99 && d.Rates.Node.MessagesOutPerSec > 0
	})
	if d.Node.Broker.Reconnects != 3 || math.Abs(d.Rates.Node.MessagesOutPerSec-3*d.Rates.Node.MessagesInPerSec) > 1e-6*d.Rates.Node.MessagesOutPerSec ||
		d.Rates.Apps["alpha"].MessagesOutPerSec <= 0 {
		t.Fatalf("changed document %+v", d)
	}

	// The events carry the /stats document: the same fields at every level.
	var ev, stats map[string]any
	evData, _ := json.Marshal(d)
	_ = json.Unmarshal(evData, &ev)
	_, body := get(t, base+"/stats")
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	for _, path := range [][]string{{}, {"node"}, {"node", "broker"}, {"node", "transport"}, {"rates"}, {"apps", "alpha"}} {
		if a, b := keysAt(ev, path), keysAt(stats, path); !reflect.DeepEqual(a, b) || len(a) == 0 {
			t.Errorf("at %v the event has %v, /stats %v", path, a, b)
		}
	}

	// A new stream starts with the charts' history: points with the figures sampled.
	st.until(t, "one more sample", func(statsDoc) bool { return true })
	st.close()
	st2, _ := openStream(t, base+"/events")
	first, err = st2.next()
	if err != nil || first.name != "history" {
		t.Fatalf("history: %+v %v", first, err)
	}
	h = history{}
	if err := json.Unmarshal([]byte(first.data), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Points) < 2 || h.Points[len(h.Points)-1].Connections != 99 || h.Points[len(h.Points)-1].Out <= 0 {
		t.Fatalf("history %+v", h)
	}
	if first.id == "" {
		t.Fatal("the history has no id: the page cannot tell which documents it holds")
	}
}

func keysAt(m map[string]any, path []string) []string {
	for _, p := range path {
		m, _ = m[p].(map[string]any)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestHistoryIsBounded(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Source: &setSource{st: busyStats()}, Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer closeServer(t, s)
	for range historyLen + 50 {
		s.sample()
		time.Sleep(time.Microsecond) // rates need time between samples
	}
	s.mu.Lock()
	n := len(s.hist)
	s.mu.Unlock()
	if n != historyLen {
		t.Fatalf("history holds %d points, want %d", n, historyLen)
	}
}

func TestEventsBounded(t *testing.T) {
	src := &setSource{st: busyStats()}
	s := startServer(t, Config{Source: src, Interval: 20 * time.Millisecond, MaxStreams: 2})
	url := "http://" + s.Addr() + "/events"

	a, _ := openStream(t, url)
	b, _ := openStream(t, url)
	if a == nil || b == nil {
		t.Fatal("the first two streams were refused")
	}
	if st, resp := openStream(t, url); st != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a third stream over MaxStreams 2: %v", resp.Status)
	}
	if n := s.streams.open(); n != 2 {
		t.Fatalf("%d streams open, want 2", n)
	}
	// /stats still answers: the dashboard falls back to it.
	if code, _ := get(t, "http://"+s.Addr()+"/stats"); code != 200 {
		t.Fatalf("stats %d", code)
	}
	// A client that goes frees its slot.
	a.close()
	deadline := time.Now().Add(5 * time.Second)
	for s.streams.open() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a closed stream still holds its slot after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st, resp := openStream(t, url); st == nil {
		t.Fatalf("a stream after one closed: %v", resp.Status)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	src := &setSource{st: busyStats()}
	s, err := New(Config{Addr: "127.0.0.1:0", Source: src, Gatherer: prometheus.NewRegistry(), Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Run()
	var streams []*sseStream
	for range 3 {
		st, resp := openStream(t, "http://"+s.Addr()+"/events")
		if st == nil {
			t.Fatalf("events: %s", resp.Status)
		}
		if _, err := st.next(); err != nil { // the stream is being served
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	start := time.Now()
	closeServer(t, s)
	if took := time.Since(start); took > 2*time.Second { // a stream that ignored Close would hold it the full 5 s
		t.Errorf("Close took %v with 3 streams open", took)
	}
	for i, st := range streams {
		done := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, st.r); done <- err }()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream %d ended with %v", i, err)
			}
		case <-time.After(5 * time.Second):
			st.close()
			t.Errorf("stream %d still open 5 s after Close", i)
		}
	}
	if n := s.streams.open(); n != 0 {
		t.Fatalf("%d streams counted after Close", n)
	}
}
