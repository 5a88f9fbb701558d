package webhook

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/herald-rt/herald/internal/logtest"
)

// series gathers reg into "name{label=value,...}" → value (a histogram's count).
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := newFakeNet()
		_, url := net.add(t, "a.test", "secret", func(n int) int { return [...]int{500, 200, 200}[n] })
		reg := prometheus.NewRegistry()
		s := mustNew(t, Config{Apps: oneApp(url), Client: net.client(), Registerer: reg, Logger: (&logtest.Recorder{}).Logger(),
			QueueSize: 2, BatchMax: 2})

		if _, err := New(Config{Registerer: reg}); err == nil {
			t.Error("a second Sender registered the same metrics")
		}

		s.Send("1", Event{Name: MemberAdded, Channel: "presence-a", UserID: "u"})
		s.Send("1", Event{Name: ClientEvent, Channel: "private-a", Event: "client-e", Data: "{}", SocketID: "1.1"})
		synctest.Wait() // a full batch: its first attempt failed
		for _, c := range []string{"x", "y", "z"} {
			s.Send("1", ev(c)) // z finds the queue full
		}
		time.Sleep(time.Minute)
		synctest.Wait()

		got := series(t, reg)
		for key, want := range map[string]float64{
			"herald_webhooks_sent_total{app=1,event=member_added}":                          1,
			"herald_webhooks_sent_total{app=1,event=client_event}":                          1,
			"herald_webhooks_sent_total{app=1,event=channel_occupied}":                      2,
			"herald_webhooks_sent_total{app=1,event=cache_miss}":                            0,
			"herald_webhooks_failed_total{app=1,event=member_added}":                        1,
			"herald_webhooks_failed_total{app=1,event=client_event}":                        1,
			"herald_webhooks_failed_total{app=1,event=channel_occupied}":                    0,
			"herald_webhooks_dropped_total{app=1,event=channel_occupied,reason=queue_full}": 1,
			"herald_webhooks_dropped_total{app=1,event=member_added,reason=shutdown}":       0,
			"herald_webhook_latency_seconds{app=1}":                                         4,
			"herald_webhooks_queued{app=1}":                                                 0,
		} {
			if v, ok := got[key]; !ok || v != want {
				t.Errorf("%s = %v (present: %v), want %v", key, v, ok, want)
			}
		}
		// Every series exists from the start, and no other: 7 types, 3 reasons.
		count := map[string]int{}
		for key := range got {
			count[key[:strings.IndexByte(key, '{')]]++
		}
		if want := map[string]int{"herald_webhooks_sent_total": 7, "herald_webhooks_failed_total": 7,
			"herald_webhooks_dropped_total": 21, "herald_webhook_latency_seconds": 1, "herald_webhooks_queued": 1}; !maps.Equal(count, want) {
			t.Errorf("series per metric %v, want %v", count, want)
		}

		st := s.Stats().Apps["1"]
		if st.Sent != 4 || st.Failed != 2 || st.Dropped[DropQueueFull] != 1 || st.LatencyCount != 4 || st.Hooks != 1 {
			t.Errorf("Stats %+v", st)
		}

		closeNow(t, s)
		if got := series(t, reg); len(got) != 0 {
			t.Errorf("after Close, still registered: %v", got)
		}
		s2 := mustNew(t, Config{Registerer: reg}) // the names are free again
		closeNow(t, s2)
	})
}

// The drop reasons are the three the metric documents, each with its own slot.
func TestDropReasons(t *testing.T) {
	want := []string{"queue_full", "retries_exhausted", "shutdown"}
	if !slices.Equal(dropReasons[:], want) ||
		dropReasons[reasonQueueFull] != DropQueueFull || dropReasons[reasonRetriesExhausted] != DropRetriesExhausted ||
		dropReasons[reasonShutdown] != DropShutdown {
		t.Errorf("dropReasons %v", dropReasons)
	}
	for i, name := range eventTypes {
		if typeIndex(name) != i {
			t.Errorf("typeIndex(%q) = %d, want %d", name, typeIndex(name), i)
		}
	}
}

func TestLatencyHistogram(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{-time.Second, 3 * time.Millisecond, 250 * time.Millisecond, 2 * time.Second, time.Hour} {
		h.observe(d)
	}
	n, sum, cum := h.snapshot()
	if n != 5 || sum != (3*time.Millisecond+250*time.Millisecond+2*time.Second+time.Hour).Seconds() {
		t.Errorf("count %d, sum %v", n, sum)
	}
	// le semantics: 250 ms is in the 0.25 bucket; the negative one is clamped to 0.
	for le, want := range map[float64]uint64{.005: 2, .1: 2, .25: 3, 2.5: 4, 300: 4} {
		if cum[le] != want {
			t.Errorf("le %v: %d, want %d", le, cum[le], want)
		}
	}
}
