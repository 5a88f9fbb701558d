package webhook

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons, the "reason" label of herald_webhooks_dropped_total.
const (
	DropQueueFull        = "queue_full"        // the hook's queue had no room
	DropRetriesExhausted = "retries_exhausted" // RetryFor passed without a 2xx
	DropShutdown         = "shutdown"          // Send after Close, or Close gave up
)

const (
	reasonQueueFull = iota
	reasonRetriesExhausted
	reasonShutdown
	numReasons
)

var dropReasons = [numReasons]string{DropQueueFull, DropRetriesExhausted, DropShutdown}

// latencyBuckets (seconds) reach past RetryFor's default: a retried event is late, not lost.
var latencyBuckets = [...]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// appStats are one app's counters, by event type. Senders and hooks only touch
// atomics; Prometheus and Stats read them when asked.
type appStats struct {
	sent    [numTypes]atomic.Uint64
	failed  [numTypes]atomic.Uint64
	dropped [numReasons][numTypes]atomic.Uint64
	latency histogram
}

func (st *appStats) count(c *[numTypes]atomic.Uint64, batch []queued) {
	for i := range batch {
		c[batch[i].t].Add(1)
	}
}

func (st *appStats) drop(reason int, batch []queued) { st.count(&st.dropped[reason], batch) }

func (st *appStats) delivered(batch []queued, now time.Time) {
	st.count(&st.sent, batch)
	for i := range batch {
		st.latency.observe(now.Sub(batch[i].ev.At))
	}
}

// histogram is a Prometheus histogram made of atomics.
type histogram struct {
	buckets [len(latencyBuckets) + 1]atomic.Uint64 // by latencyBuckets, then +Inf; not cumulative
	sumNS   atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	h.buckets[sort.SearchFloat64s(latencyBuckets[:], d.Seconds())].Add(1)
	h.sumNS.Add(int64(d))
}

// snapshot returns the count, the sum in seconds and the cumulative bucket counts.
func (h *histogram) snapshot() (uint64, float64, map[float64]uint64) {
	cum := make(map[float64]uint64, len(latencyBuckets))
	var n uint64
	for i, b := range latencyBuckets {
		n += h.buckets[i].Load()
		cum[b] = n
	}
	n += h.buckets[len(latencyBuckets)].Load()
	return n, time.Duration(h.sumNS.Load()).Seconds(), cum
}

// Stats is a snapshot of the Sender's figures, for the admin /stats endpoint: the
// totals of the Prometheus counters, per app with webhooks.
type Stats struct {
	Apps map[string]AppStats `json:"apps"`
}

// AppStats are one app's webhook figures, in events.
type AppStats struct {
	Hooks   int               `json:"hooks"`
	Sent    uint64            `json:"sent"`          // delivered (2xx)
	Failed  uint64            `json:"failed"`        // in failed attempts, once per attempt
	Dropped map[string]uint64 `json:"dropped"`       // given up, by reason
	Queued  int               `json:"queued"`        // waiting now, not counting batches in flight
	Failing int               `json:"failing_hooks"` // hooks whose last attempt failed
	// LatencyCount and LatencySeconds are the count and sum of
	// herald_webhook_latency_seconds: from an event's At to its 2xx.
	LatencyCount   uint64  `json:"latency_count"`
	LatencySeconds float64 `json:"latency_seconds"`
}

// Stats returns the current figures.
func (s *Sender) Stats() Stats {
	apps := *s.apps.Load()
	out := Stats{Apps: make(map[string]AppStats, len(apps))}
	for id, a := range apps {
		st := a.stats
		as := AppStats{Hooks: len(a.hooks), Dropped: make(map[string]uint64, numReasons)}
		for t := range numTypes {
			as.Sent += st.sent[t].Load()
			as.Failed += st.failed[t].Load()
			for r := range numReasons {
				as.Dropped[dropReasons[r]] += st.dropped[r][t].Load()
			}
		}
		for _, h := range a.hooks {
			as.Queued += h.pending()
			if h.failing.Load() {
				as.Failing++
			}
		}
		as.LatencyCount, as.LatencySeconds, _ = st.latency.snapshot()
		out.Apps[id] = as
	}
	return out
}

// collector exposes the counters at scrape time. Every series of an app exists from
// the start (zero), so that rates work from the first event; the labels are the
// configured app ids, the seven event types and the three drop reasons.
type collector struct {
	s                              *Sender
	sent, failed, dropped, latency *prometheus.Desc
	queued                         *prometheus.Desc
}

func newCollector(s *Sender) *collector {
	return &collector{
		s:       s,
		sent:    prometheus.NewDesc("herald_webhooks_sent_total", "Webhook events delivered (answered 2xx).", []string{"app", "event"}, nil),
		failed:  prometheus.NewDesc("herald_webhooks_failed_total", "Webhook events in failed attempts (non-2xx, timeout, network error), once per attempt.", []string{"app", "event"}, nil),
		dropped: prometheus.NewDesc("herald_webhooks_dropped_total", "Webhook events given up, by reason (queue_full, retries_exhausted, shutdown).", []string{"app", "event", "reason"}, nil),
		latency: prometheus.NewDesc("herald_webhook_latency_seconds", "From an event to the 2xx answer of the request that delivered it.", []string{"app"}, nil),
		queued:  prometheus.NewDesc("herald_webhooks_queued", "Webhook events waiting in the hooks' queues.", []string{"app"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sent
	ch <- c.failed
	ch <- c.dropped
	ch <- c.latency
	ch <- c.queued
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for id, a := range *c.s.apps.Load() {
		st := a.stats
		for t, name := range eventTypes {
			counter(c.sent, st.sent[t].Load(), id, name)
			counter(c.failed, st.failed[t].Load(), id, name)
			for r, reason := range dropReasons {
				counter(c.dropped, st.dropped[r][t].Load(), id, name, reason)
			}
		}
		n, sum, buckets := st.latency.snapshot()
		ch <- prometheus.MustNewConstHistogram(c.latency, n, sum, buckets, id)
		queued := 0
		for _, h := range a.hooks {
			queued += h.pending()
		}
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(queued), id)
	}
}
