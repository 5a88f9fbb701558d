package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/lgrun"
	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

const (
	appID, appKey, appSecret = "1", "bench-key", "bench-secret"
	channelPrefix            = "bench-" // the subscribers' channel is loadgen's channel 0: bench-0
)

var errPublish = errors.New("benchburst: publish failed")

type runner struct {
	o   options
	dir string
	log io.Writer
	lg  *lgrun.Runner
}

// target is one herald node.
type target struct {
	name string
	node *cluster.Node
}

func (r *runner) start(ctx context.Context, name, bin string) (*target, error) {
	n, err := cluster.StartHerald(ctx, bin, r.dir, "herald-"+name, cluster.App{ID: appID, Key: appKey, Secret: appSecret}, nil)
	if err != nil {
		return nil, err
	}
	return &target{name: name, node: n}, nil
}

func (t *target) stop() { t.node.Stop(5 * time.Second) }

// counters are the server figures a scenario takes the difference of.
type counters struct {
	sent, droppedDeliveries, fanoutDropped, busy float64
}

func (t *target) counters(ctx context.Context) (counters, error) {
	ss, err := cluster.ScrapeSeries(ctx, t.node.Admin)
	if err != nil {
		return counters{}, err
	}
	var c counters
	for _, s := range ss {
		switch s.Name {
		case "herald_messages_sent_total":
			c.sent += s.Value
		case "herald_fanout_dropped_total":
			c.fanoutDropped += s.Value
		case "herald_dropped_total":
			switch s.Labels["reason"] {
			case "delivery_overflow", "delivery_timeout":
				c.droppedDeliveries += s.Value
			case "publish_busy":
				c.busy += s.Value
			}
		}
	}
	return c, nil
}

// rssSample is a process's VmRSS at T.
type rssSample struct {
	T   time.Time
	RSS int64
}

// rssSampler records a process's VmRSS every 50 ms until stopped.
type rssSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []rssSample
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() { // stopped by end
		defer close(s.done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			if v, err := proc.ReadRSS(pid); err == nil {
				s.samples = append(s.samples, rssSample{time.Now(), v})
			}
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// end stops the sampler and returns the peak from from on.
func (s *rssSampler) end(from time.Time) int64 {
	close(s.stop)
	<-s.done
	return peakFrom(s.samples, from)
}

// peakFrom is the highest reading from the one in force at from (the last taken at
// or before it) on.
func peakFrom(samples []rssSample, from time.Time) int64 {
	var peak int64
	for i, x := range samples {
		if i+1 < len(samples) && !samples[i+1].T.After(from) {
			continue // a later sample is still at or before from
		}
		peak = max(peak, x.RSS)
	}
	return peak
}

// figures are one scenario's results on one target. Times in ms, memory in bytes.
type figures struct {
	Offered        int     `json:"offered"`
	Accepted       int     `json:"accepted"`
	Refused        int     `json:"refused_503"`
	Deliveries     int64   `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P50            float64 `json:"p50_ms"`
	P99            float64 `json:"p99_ms"`
	Max            float64 `json:"max_ms"`
	Span           float64 `json:"first_publish_to_last_delivery_ms"`
	PeakRSS        int64   `json:"server_peak_rss"`
	Dropped        int64   `json:"dropped_deliveries_counted"`
	FanoutDropped  int64   `json:"fanout_jobs_dropped"`
	Unaccounted    int64   `json:"unaccounted"`
	SentCounted    int64   `json:"messages_sent_counted"`
	// Overrun: publishes the schedule called for that were not sent because the
	// previous one was still unanswered (loadgen's publish_overrun).
	Overrun int64 `json:"overrun,omitempty"`
}

// settleAfterRamp is how long publishing waits once every subscriber is up.
const settleAfterRamp = 2 * time.Second

// spec is a scenario as a loadgen run: -conns subscribers of one channel over
// -workers worker processes (256 handshakes in flight each), settleAfterRamp of
// quiet (--publish-delay), then count publishes
// to it one request at a time, at rate per second (loadgen.PublishRateMax: each
// sent when the previous one was answered). The run ends when every accepted
// publish has reached every subscriber, or nothing has arrived for 5 s, or -drain
// after the last answer.
func (r *runner) spec(t *target, rate float64, count int) loadgen.Spec {
	return loadgen.Spec{
		Scenario: loadgen.ScenarioBroadcast, Target: "ws://" + t.node.Addr, AppID: appID, Key: appKey, Secret: appSecret,
		Connections: r.o.conns, Ramp: 1e9, Spread: loadgen.SpreadOne, Channels: 1, ChannelPrefix: channelPrefix,
		PublishRate: rate, PublishConcurrency: 1, PublishCount: count, PayloadSize: r.o.payload,
		PublishDelay:  loadgen.Duration(settleAfterRamp),
		MaxHandshakes: 256, Drain: loadgen.Duration(r.o.drain), Duration: loadgen.Duration(3*r.o.drain + 2*time.Minute),
		CloseTimeout: loadgen.Duration(10 * time.Second),
	}
}

// scenario runs spec against t and fills the figures: loadgen's report for what
// the clients saw, the server's /metrics (before and after) for what it dropped,
// its VmRSS sampled from /proc for its peak over the load phase.
func (r *runner) scenario(ctx context.Context, t *target, spec loadgen.Spec) (*figures, error) {
	c0, err := t.counters(ctx)
	if err != nil {
		return nil, err
	}
	rss := sampleRSS(t.node.PID())
	rep, err := r.lg.Run(ctx, spec, r.o.workers, nil)
	if rep == nil {
		_ = rss.end(time.Time{})
		return nil, err
	}
	peak := rss.end(rep.LoadStarted)
	if err != nil {
		return nil, err
	}
	tot := rep.Totals
	if tot.Connected < uint64(r.o.conns) || tot.Subscribed < uint64(r.o.conns) {
		return nil, fmt.Errorf("%d of %d subscribers (%s)", tot.Subscribed, r.o.conns, errorKinds(tot.Errors))
	}
	refused := tot.Errors["publish_http_503"]
	for k := range tot.Errors {
		if strings.HasPrefix(k, "publish_") && k != "publish_http_503" && k != "publish_overrun" {
			return nil, fmt.Errorf("%w: %s", errPublish, errorKinds(tot.Errors))
		}
	}
	c, err := t.counters(ctx)
	if err != nil {
		return nil, err
	}
	cs := rep.Completion
	f := &figures{
		Accepted: int(tot.Published), Refused: int(refused), Offered: int(tot.Published + refused),
		Overrun:    int64(tot.Errors["publish_overrun"]),
		Deliveries: int64(tot.Delivered), PeakRSS: peak,
	}
	ms := func(v float64) float64 { return math.Round(v*1000) / 1000 }
	f.P50, f.P99, f.Max = ms(rep.Latency.P50Ms), ms(rep.Latency.P99Ms), ms(rep.Latency.MaxMs)
	if cs != nil && !cs.FirstSent.IsZero() && cs.LastReceived.After(cs.FirstSent) {
		span := cs.LastReceived.Sub(cs.FirstSent)
		f.Span = float64(span) / float64(time.Millisecond)
		f.DeliveriesPerS = float64(tot.Delivered) / span.Seconds()
	}
	f.Dropped = int64(c.droppedDeliveries - c0.droppedDeliveries)
	f.FanoutDropped = int64(c.fanoutDropped - c0.fanoutDropped)
	f.SentCounted = int64(c.sent - c0.sent)
	f.Unaccounted = int64(f.Accepted)*int64(r.o.conns) - f.Deliveries - f.Dropped
	return f, nil
}

// rate offers rate publishes per second for -duration, sequentially.
func (r *runner) rate(ctx context.Context, t *target, rate float64) (*figures, error) {
	n := int(math.Ceil(rate * r.o.duration.Seconds()))
	return r.scenario(ctx, t, r.spec(t, rate, n))
}

// burst sends -burst publishes back to back (each when the previous one was
// answered) and waits for their deliveries.
func (r *runner) burst(ctx context.Context, t *target) (*figures, error) {
	f, err := r.scenario(ctx, t, r.spec(t, loadgen.PublishRateMax, r.o.burst))
	if err == nil && f.Accepted == 0 {
		return nil, errors.New("every publish of the burst was refused")
	}
	return f, err
}

func errorKinds(m map[string]uint64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}

// median returns the figures with the median deliveries per second.
func median(fs []*figures) *figures {
	if len(fs) == 0 {
		return nil
	}
	s := slices.Clone(fs)
	slices.SortFunc(s, func(a, b *figures) int {
		switch {
		case a.DeliveriesPerS < b.DeliveriesPerS:
			return -1
		case a.DeliveriesPerS > b.DeliveriesPerS:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}
