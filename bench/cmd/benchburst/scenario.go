package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/worker"
	"github.com/herald-rt/herald/loadgen"
)

const (
	appID, appKey, appSecret = "1", "bench-key", "bench-secret"
	channel                  = "bench"
	eventName                = "bench-event"
)

var errPublish = errors.New("benchburst: publish failed")

type runner struct {
	o       options
	dir     string
	log     io.Writer
	nextSrc int // last octet of the next fresh source address 127.0.0.x
}

// target is one herald node with its subscribers and its publisher.
type target struct {
	name    string
	node    *cluster.Node
	ws      []*worker.Worker
	share   []int
	http    *http.Client
	seq     uint64 // last sequence number published
	payload int
}

func (r *runner) start(ctx context.Context, name, bin string) (*target, error) {
	n, err := cluster.StartHerald(ctx, bin, r.dir, "herald-"+name, cluster.App{ID: appID, Key: appKey, Secret: appSecret}, nil)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, node: n, payload: r.o.payload,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}}
	for i := range r.o.workers {
		if r.nextSrc > 254 {
			t.stop()
			return nil, errors.New("out of source addresses in 127.0.0.0/24")
		}
		src := "127.0.0." + strconv.Itoa(r.nextSrc)
		r.nextSrc++
		w, err := worker.Start(filepath.Join(r.dir, "benchclient"), []string{"--addr", n.Addr, "--key", appKey,
			"--secret", appSecret, "--src", src, "--channel", channel, "--handshakes", "256"}, r.log)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.ws = append(t.ws, w)
		k := r.o.conns / r.o.workers
		if i < r.o.conns%r.o.workers {
			k++
		}
		t.share = append(t.share, k)
	}
	fmt.Fprintf(r.log, "benchburst: %s: connecting %d subscribers\n", name, r.o.conns)
	err = t.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_, err := w.Call(ctx, worker.Request{Op: "dial", N: t.share[i], TimeoutMS: 110000})
		return err
	})
	if err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

func (t *target) stop() {
	_ = t.all(context.Background(), func(ctx context.Context, i int, w *worker.Worker) error {
		return w.Close(5 * time.Second)
	})
	t.node.Stop(5 * time.Second)
	t.http.CloseIdleConnections()
}

// all runs fn for every worker concurrently and returns the errors joined.
func (t *target) all(ctx context.Context, fn func(ctx context.Context, i int, w *worker.Worker) error) error {
	errs := make([]error, len(t.ws))
	var wg sync.WaitGroup
	for i, w := range t.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx, i, w)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// delivered is the sequenced events the subscribers received so far.
func (t *target) delivered(ctx context.Context) (int64, error) {
	var mu sync.Mutex
	var total int64
	err := t.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "delivered"})
		mu.Lock()
		total += resp.Delivered
		mu.Unlock()
		return err
	})
	return total, err
}

// stats merges the workers' cumulative figures (histograms included).
func (t *target) stats(ctx context.Context) (*loadgen.Stats, error) {
	var mu sync.Mutex
	var merged *loadgen.Stats
	err := t.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "stats"})
		if err != nil {
			return err
		}
		if resp.Stats == nil {
			return errors.New("a worker sent no stats")
		}
		mu.Lock()
		defer mu.Unlock()
		if merged == nil {
			merged = resp.Stats
			return nil
		}
		return merged.Merge(resp.Stats)
	})
	return merged, err
}

// lastReceive is the latest receive time (unix ns) of sequence number seq over the
// workers, waiting up to timeout for want deliveries of it.
func (t *target) lastReceive(ctx context.Context, seq uint64, timeout time.Duration) (int64, error) {
	var mu sync.Mutex
	var last int64
	err := t.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "wait", Seq: seq, Want: int64(t.share[i]), TimeoutMS: timeout.Milliseconds()})
		mu.Lock()
		last = max(last, resp.Last)
		mu.Unlock()
		return err
	})
	return last, err
}

// publish sends one sequenced event and reports whether the server took it (200) or
// refused it as busy (503); any other answer is an error.
func (t *target) publish(ctx context.Context) (seq uint64, accepted bool, err error) {
	seq = t.seq + 1
	data := loadgen.AppendPayload(nil, seq, time.Now().UnixNano(), t.payload)
	body, _ := json.Marshal(map[string]string{"name": eventName, "channel": channel, "data": string(data)})
	path := "/apps/" + appID + "/events"
	q := loadgen.SignQuery(http.MethodPost, path, appKey, appSecret, body, time.Now().Unix(), nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+t.node.Addr+path+"?"+q, bytes.NewReader(body))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %w", errPublish, err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		t.seq = seq
		return seq, true, nil
	case http.StatusServiceUnavailable:
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("%w: %s: %s", errPublish, resp.Status, bytes.TrimSpace(msg))
}

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

// rssSampler records a process's peak VmRSS until stopped.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			if v, err := worker.ReadRSS(pid); err == nil && v > s.peak {
				s.peak = v
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

func (s *rssSampler) end() int64 {
	close(s.stop)
	<-s.done
	return s.peak
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
}

// settle waits until every accepted publish is delivered or counted as dropped, or
// nothing has arrived for 5 s (or -drain passed), and returns the time the last
// delivery arrived (as seen by polling every 10 ms) and the totals.
func (r *runner) settle(ctx context.Context, t *target, want int64, d0 int64, c0 counters) (last time.Time, delivered int64, c counters, err error) {
	deadline := time.Now().Add(r.o.drain)
	prev := int64(-1)
	last = time.Now()
	for {
		d, err := t.delivered(ctx)
		if err != nil {
			return last, 0, c, err
		}
		delivered = d - d0
		if c, err = t.counters(ctx); err != nil {
			return last, 0, c, err
		}
		if delivered != prev {
			prev, last = delivered, time.Now()
		}
		dropped := int64(c.droppedDeliveries - c0.droppedDeliveries)
		if delivered+dropped >= want || time.Since(last) > 5*time.Second || time.Now().After(deadline) {
			return last, delivered, c, nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return last, delivered, c, err
		}
	}
}

// rate offers rate publishes per second for -duration, sequentially.
func (r *runner) rate(ctx context.Context, t *target, rate float64) (*figures, error) {
	f := &figures{}
	st0, d0, c0, err := r.before(ctx, t)
	if err != nil {
		return nil, err
	}
	rss := sampleRSS(t.node.PID())
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= r.o.duration {
			break
		}
		if err := sleep(ctx, time.Until(at)); err != nil {
			return nil, err
		}
		_, ok, err := t.publish(ctx)
		if err != nil {
			return nil, err
		}
		f.Offered++
		if ok {
			f.Accepted++
		} else {
			f.Refused++
		}
	}
	last, delivered, c, err := r.settle(ctx, t, int64(f.Accepted)*int64(r.o.conns), d0, c0)
	f.PeakRSS = rss.end()
	if err != nil {
		return nil, err
	}
	return f, r.after(ctx, t, f, st0, c0, c, delivered, last.Sub(start))
}

// burst sends -burst publishes back to back and waits for their deliveries.
func (r *runner) burst(ctx context.Context, t *target) (*figures, error) {
	f := &figures{}
	st0, d0, c0, err := r.before(ctx, t)
	if err != nil {
		return nil, err
	}
	rss := sampleRSS(t.node.PID())
	start := time.Now()
	var lastSeq uint64
	for range r.o.burst {
		seq, ok, err := t.publish(ctx)
		if err != nil {
			return nil, err
		}
		f.Offered++
		if ok {
			f.Accepted++
			lastSeq = seq
		} else {
			f.Refused++
		}
	}
	want := int64(f.Accepted) * int64(r.o.conns)
	if f.Accepted == 0 {
		_ = rss.end()
		return nil, errors.New("every publish of the burst was refused")
	}
	lastNS, werr := t.lastReceive(ctx, lastSeq, r.o.drain)
	_, delivered, c, err := r.settle(ctx, t, want, d0, c0)
	f.PeakRSS = rss.end()
	if err != nil {
		return nil, err
	}
	span := time.Unix(0, lastNS).Sub(start)
	if werr != nil || lastNS == 0 {
		span = 0 // not every subscriber got the last publish: no rate
	}
	return f, r.after(ctx, t, f, st0, c0, c, delivered, span)
}

func (r *runner) before(ctx context.Context, t *target) (*loadgen.Stats, int64, counters, error) {
	st, err := t.stats(ctx)
	if err != nil {
		return nil, 0, counters{}, err
	}
	d, err := t.delivered(ctx)
	if err != nil {
		return nil, 0, counters{}, err
	}
	c, err := t.counters(ctx)
	return st, d, c, err
}

// after fills the figures of a scenario that ran for span (first publish to last
// delivery).
func (r *runner) after(ctx context.Context, t *target, f *figures, st0 *loadgen.Stats, c0, c counters, delivered int64, span time.Duration) error {
	st, err := t.stats(ctx)
	if err != nil {
		return err
	}
	d, err := st.Sub(st0)
	if err != nil {
		return err
	}
	ms := func(v time.Duration) float64 { return float64(v) / float64(time.Millisecond) }
	f.Deliveries = delivered
	if span > 0 {
		f.Span = ms(span)
		f.DeliveriesPerS = float64(delivered) / span.Seconds()
	}
	if d.Latency.Count() > 0 {
		f.P50, f.P99, f.Max = ms(d.Latency.Quantile(0.5)), ms(d.Latency.Quantile(0.99)), ms(d.Latency.Max())
	}
	f.Dropped = int64(c.droppedDeliveries - c0.droppedDeliveries)
	f.FanoutDropped = int64(c.fanoutDropped - c0.fanoutDropped)
	f.SentCounted = int64(c.sent - c0.sent)
	f.Unaccounted = int64(f.Accepted)*int64(r.o.conns) - delivered - f.Dropped
	return nil
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
