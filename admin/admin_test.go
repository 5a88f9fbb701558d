package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/herald-rt/herald/hub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource counts messages up by 10 per Stats call and can be set draining.
type fakeSource struct {
	n        atomic.Uint64
	draining atomic.Bool
}

func (f *fakeSource) Stats() hub.Stats {
	n := f.n.Add(10)
	return hub.Stats{
		Node: hub.NodeStats{NodeID: 7, Connections: 3, MessagesIn: n, MessagesOut: 2 * n},
		Apps: map[string]hub.AppStats{"1": {Connections: 3, MessagesIn: n, MessagesOut: 2 * n}},
	}
}
func (f *fakeSource) Draining() bool { return f.draining.Load() }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	src := &fakeSource{}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "herald_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s, err := New(Config{Addr: "127.0.0.1:0", Source: src, Gatherer: reg, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Run()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + s.Addr()

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "herald_test_total 3") {
		t.Fatalf("metrics %d %q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 200 {
		t.Fatalf("pprof %d", code)
	}

	// Rates need two samples; the sampler takes one every 20 ms.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, base+"/stats")
		if code != 200 {
			t.Fatalf("stats %d", code)
		}
		var doc struct {
			Node  hub.NodeStats `json:"node"`
			Rates struct {
				IntervalSeconds float64 `json:"interval_seconds"`
				Node            struct {
					In  float64 `json:"messages_in_per_sec"`
					Out float64 `json:"messages_out_per_sec"`
				} `json:"node"`
			} `json:"rates"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("stats is not JSON: %v", err)
		}
		if doc.Node.NodeID != 7 || doc.Node.Connections != 3 {
			t.Fatalf("stats node %+v", doc.Node)
		}
		if doc.Rates.IntervalSeconds > 0 {
			// 10 more messages in per sample interval, twice as many out.
			if doc.Rates.Node.In <= 0 || doc.Rates.Node.Out != 2*doc.Rates.Node.In {
				t.Fatalf("rates %+v", doc.Rates)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rates after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	src.draining.Store(true)
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d", code)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz while draining: %d", code)
	}
}

func TestNewNeedsSource(t *testing.T) {
	if _, err := New(Config{}); err != ErrNoSource {
		t.Fatalf("got %v", err)
	}
}
