package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/worker"
	"github.com/herald-rt/herald/loadgen"
)

const (
	appID     = "1"
	appKey    = "bench-key"
	appSecret = "bench-secret"
	channel   = "bench"
	// probeChannel has probeConns subscribers (see runner.probe).
	probeChannel = "bench-probe"
	probeConns   = 3
	eventName    = "bench-event"
)

var errDelivery = errors.New("benchrun: deliveries incomplete")

// figures are one target's results. Durations are in milliseconds, memory in bytes.
type figures struct {
	Target string `json:"target"`
	Error  string `json:"error,omitempty"`
	Conns  int    `json:"conns"`

	// a) memory
	ServerRSSPerConn  *float64 `json:"server_rss_per_conn,omitempty"`
	ServerHeapPerConn *float64 `json:"server_heap_per_conn,omitempty"`
	ClientRSSPerConn  *float64 `json:"client_rss_per_conn,omitempty"`
	ClientHeapPerConn *float64 `json:"client_heap_per_conn,omitempty"`
	SubscribeSeconds  *float64 `json:"connect_subscribe_s,omitempty"`

	// b) fan-out
	Publishes     int      `json:"latency_publishes"`
	LastP50       *float64 `json:"last_delivery_p50_ms,omitempty"`
	LastP99       *float64 `json:"last_delivery_p99_ms,omitempty"`
	LastMax       *float64 `json:"last_delivery_max_ms,omitempty"`
	DeliveryP50   *float64 `json:"delivery_p50_ms,omitempty"`
	DeliveryP99   *float64 `json:"delivery_p99_ms,omitempty"`
	Throughput    *float64 `json:"deliveries_per_s,omitempty"`
	ServerCPU     *float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ClientCPU     *float64 `json:"client_cpu_us_per_delivery,omitempty"`
	TputPublishes int      `json:"throughput_publishes"`
	Missing       int64    `json:"missing"`
	Duplicates    int64    `json:"duplicates"`
	Reordered     int64    `json:"reordered"`

	// Publish to each delivery in latency mode only (one publish at a time, no
	// queueing behind other publishes): what a cluster adds shows here.
	LatencyModeP50 *float64 `json:"latency_mode_delivery_p50_ms,omitempty"`
	LatencyModeP99 *float64 `json:"latency_mode_delivery_p99_ms,omitempty"`
	// Publish to each delivery with probeConns subscribers (one per node for the
	// cluster), -probes publishes one at a time.
	ProbeP50 *float64 `json:"probe_delivery_p50_ms,omitempty"`
	ProbeP99 *float64 `json:"probe_delivery_p99_ms,omitempty"`
	// Throughput mode: publishes completed per second.
	PublishesPerSec *float64 `json:"publishes_per_s,omitempty"`

	// c) upgrades
	UpgradesPerSec *float64 `json:"upgrades_per_s,omitempty"`
	ConnectP50     *float64 `json:"connect_p50_ms,omitempty"`
	ConnectP99     *float64 `json:"connect_p99_ms,omitempty"`

	// herald-cluster only. Memory and server CPU above are summed over the nodes.
	Nodes int `json:"nodes,omitempty"`
	// NodeConns is each node's herald_connections after the connections are up.
	NodeConns []int64 `json:"node_conns,omitempty"`
	// RedisRSSPerConn is the redis-server's RSS growth per subscribed connection.
	RedisRSSPerConn *float64 `json:"redis_rss_per_conn,omitempty"`
	// Throughput mode: the redis-server's CPU per delivery and per API publish,
	// messages the nodes published into and received from the broker per second,
	// and PUBLISH commands per second as Redis counts them (probes and control
	// messages included).
	RedisCPUPerDelivery   *float64 `json:"redis_cpu_us_per_delivery,omitempty"`
	RedisCPUPerPublish    *float64 `json:"redis_cpu_us_per_publish,omitempty"`
	BrokerPublishedPerSec *float64 `json:"broker_published_per_s,omitempty"`
	BrokerReceivedPerSec  *float64 `json:"broker_received_per_s,omitempty"`
	RedisPublishPerSec    *float64 `json:"redis_publish_cmds_per_s,omitempty"`
	// Dropped is what the nodes counted in herald_dropped_total,
	// herald_fanout_dropped_total and herald_broker_errors_total over scenarios a
	// and b (should be 0).
	Dropped *float64 `json:"dropped,omitempty"`

	Reasons string `json:"reasons,omitempty"`
}

func ptr(v float64) *float64 { return &v }

func ms(d time.Duration) *float64 { return ptr(float64(d) / float64(time.Millisecond)) }

type runner struct {
	o       options
	dir     string
	log     io.Writer
	nextSrc int // last octet of the next fresh source address 127.0.0.x
}

// measure runs scenarios a and b on one server process and c on a fresh one.
func (r *runner) measure(ctx context.Context, f *figures) error {
	fmt.Fprintf(r.log, "benchrun: %s: memory and fan-out, %d connections\n", f.Target, r.o.conns)
	if err := r.fanout(ctx, f); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "benchrun: %s: upgrades, %d connections, %d handshakes in flight\n", f.Target, r.o.conns, r.o.handshakes)
	return r.upgrades(ctx, f)
}

// clients is a set of worker processes, each with its share of the connections.
type clients struct {
	ws    []*worker.Worker
	share []int
	// closeGrace bounds the close handshake at the end: the floor never answers it.
	closeGrace time.Duration
}

func (r *runner) startClients(d *deployment, withChannel bool, profile string) (*clients, error) {
	ch := ""
	if withChannel {
		ch = channel
	}
	return r.startWorkers(d, ch, r.o.workers, r.o.conns, profile)
}

// startWorkers starts workers client processes sharing conns connections, each on a
// fresh source address, subscribed to ch ("" for none).
func (r *runner) startWorkers(d *deployment, ch string, workers, conns int, profile string) (*clients, error) {
	c := &clients{closeGrace: 10 * time.Second}
	if d.isFloor() {
		c.closeGrace = 0
	}
	for i := 0; i < workers; i++ {
		if r.nextSrc > 254 {
			c.close()
			return nil, errors.New("benchrun: out of source addresses in 127.0.0.0/24")
		}
		src := "127.0.0." + strconv.Itoa(r.nextSrc)
		r.nextSrc++
		args := []string{"--addr", d.clientAddr(), "--key", appKey, "--secret", appSecret, "--src", src,
			"--handshakes", strconv.Itoa(max(r.o.handshakes/workers, 1)), "--loops", strconv.Itoa(r.o.loops)}
		if ch != "" {
			args = append(args, "--channel", ch)
		}
		if profile != "" {
			args = append(args, "--cpuprofile", filepath.Join(r.dir, fmt.Sprintf("%s-%d.pprof", profile, i)))
		}
		w, err := worker.Start(filepath.Join(r.dir, "benchclient"), args, r.log)
		if err != nil {
			c.close()
			return nil, err
		}
		c.ws = append(c.ws, w)
		n := conns / workers
		if i < conns%workers {
			n++
		}
		c.share = append(c.share, n)
	}
	return c, nil
}

// close shuts the connections down with a close handshake (bounded) and ends the
// processes.
func (c *clients) close() {
	_ = c.all(context.Background(), func(ctx context.Context, i int, w *worker.Worker) error {
		if c.closeGrace > 0 {
			ctx, cancel := context.WithTimeout(ctx, c.closeGrace+5*time.Second)
			defer cancel()
			_, _ = w.Call(ctx, worker.Request{Op: "shutdown", TimeoutMS: c.closeGrace.Milliseconds()})
		}
		return w.Close(5 * time.Second)
	})
}

// all runs fn for every worker concurrently and returns the first error.
func (c *clients) all(ctx context.Context, fn func(ctx context.Context, i int, w *worker.Worker) error) error {
	errs := make([]error, len(c.ws))
	var wg sync.WaitGroup
	for i, w := range c.ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx, i, w)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dial opens every worker's share and returns the slowest worker's time.
func (c *clients) dial(ctx context.Context) (time.Duration, error) {
	var mu sync.Mutex
	var slowest time.Duration
	err := c.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "dial", N: c.share[i], TimeoutMS: 90000})
		mu.Lock()
		slowest = max(slowest, time.Duration(resp.ElapsedNS))
		mu.Unlock()
		return err
	})
	return slowest, err
}

// mem returns each worker's memory.
func (c *clients) mem(ctx context.Context) ([]worker.Mem, error) {
	out := make([]worker.Mem, len(c.ws))
	err := c.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "mem"})
		if err == nil && resp.Mem != nil {
			out[i] = *resp.Mem
		}
		return err
	})
	return out, err
}

// wait returns when every worker has received seq once per connection, with the
// latest receive time.
func (c *clients) wait(ctx context.Context, seq uint64, timeout time.Duration) (int64, error) {
	var mu sync.Mutex
	var last int64
	err := c.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "wait", Seq: seq, Want: int64(c.share[i]), TimeoutMS: timeout.Milliseconds()})
		mu.Lock()
		last = max(last, resp.Last)
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("%w: %w", errDelivery, err)
		}
		return nil
	})
	return last, err
}

// cpu is the CPU time used by all workers so far.
func (c *clients) cpu() (time.Duration, error) {
	var total time.Duration
	for _, w := range c.ws {
		d, err := worker.ReadCPU(w.Pid())
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

func (c *clients) delivered(ctx context.Context) (int64, error) {
	var total atomic.Int64
	err := c.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "delivered"})
		total.Add(resp.Delivered)
		return err
	})
	return total.Load(), err
}

func (c *clients) stats(ctx context.Context, first, last uint64) (*loadgen.Stats, error) {
	var mu sync.Mutex
	var merged *loadgen.Stats
	err := c.all(ctx, func(ctx context.Context, i int, w *worker.Worker) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := w.Call(ctx, worker.Request{Op: "stats", First: first, Last: last})
		if err != nil {
			return err
		}
		if resp.Stats == nil {
			return fmt.Errorf("benchrun: worker %d sent no stats", w.Pid())
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

// fanout is scenarios a and b.
func (r *runner) fanout(ctx context.Context, f *figures) error {
	d, err := r.startDeployment(ctx, f.Target, "fanout")
	if err != nil {
		return err
	}
	defer d.stop()
	if f.Target == targetCluster {
		f.Nodes = len(d.nodes)
	}
	time.Sleep(300 * time.Millisecond) // let start-up allocations settle
	var heap0 int64 = -1
	var dropped0 float64
	if !d.isFloor() {
		// The heap reading collects garbage first; the RSS baseline follows it.
		if h, err := d.heap(ctx); err == nil {
			heap0 = h
		} else {
			fmt.Fprintf(r.log, "benchrun: %s: no heap figure: %v\n", f.Target, err)
		}
		if m, err := d.counters(ctx); err == nil {
			dropped0 = m.Dropped()
		}
	}
	rss0, err := d.rss()
	if err != nil {
		return err
	}
	var redisRSS0 int64
	if d.redis != nil {
		if redisRSS0, err = worker.ReadRSS(d.redis.Redis.PID()); err != nil {
			return err
		}
	}

	profile := ""
	if r.o.clientProfile {
		profile = "client-" + f.Target
	}
	cl, err := r.startClients(d, true, profile)
	if err != nil {
		return err
	}
	defer cl.close()
	cmem0, err := cl.mem(ctx)
	if err != nil {
		return err
	}
	took, err := cl.dial(ctx)
	if err != nil {
		return err
	}
	f.SubscribeSeconds = ptr(took.Seconds())
	fmt.Fprintf(r.log, "benchrun: %s: %d connected and subscribed in %v; idle %v\n", f.Target, r.o.conns, took.Round(time.Millisecond), r.o.idle)
	if err := sleep(ctx, r.o.idle); err != nil {
		return err
	}

	// a) memory
	rss1, err := d.rss()
	if err != nil {
		return err
	}
	n := float64(r.o.conns)
	f.ServerRSSPerConn = ptr(float64(rss1-rss0) / n)
	if heap0 >= 0 {
		if h, err := d.heap(ctx); err == nil {
			f.ServerHeapPerConn = ptr(float64(h-heap0) / n)
		}
	}
	if d.redis != nil {
		rr, err := worker.ReadRSS(d.redis.Redis.PID())
		if err != nil {
			return err
		}
		f.RedisRSSPerConn = ptr(float64(rr-redisRSS0) / n)
		conns, err := d.redis.PerNode(ctx, "herald_connections")
		if err != nil {
			return err
		}
		for _, c := range conns {
			f.NodeConns = append(f.NodeConns, int64(c))
		}
	}
	cmem1, err := cl.mem(ctx)
	if err != nil {
		return err
	}
	var crss, cheap int64
	for i := range cmem1 {
		crss += cmem1[i].RSS - cmem0[i].RSS
		cheap += cmem1[i].HeapInuse - cmem0[i].HeapInuse
	}
	f.ClientRSSPerConn = ptr(float64(crss) / n)
	f.ClientHeapPerConn = ptr(float64(cheap) / n)

	// b) fan-out
	pub, err := loadgen.NewPublisher(loadgen.PublisherConfig{
		BaseURL: "http://" + d.publishAddr(), AppID: appID, Key: appKey, Secret: appSecret, MaxConns: r.o.window + 1,
	})
	if err != nil {
		return err
	}
	defer pub.Close()
	var seq atomic.Uint64
	publishAndWait := func(ctx context.Context) (time.Duration, error) {
		s := seq.Add(1)
		ts := time.Now().UnixNano()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := pub.Publish(pctx, channel, eventName, loadgen.AppendPayload(nil, s, ts, r.o.payload))
		cancel()
		if err != nil {
			return 0, err
		}
		last, err := cl.wait(ctx, s, 10*time.Second)
		return time.Duration(last - ts), err
	}

	fmt.Fprintf(r.log, "benchrun: %s: latency mode, %d publishes\n", f.Target, r.o.publishes)
	var lat []time.Duration
	for i := 0; i < r.o.publishes; i++ {
		d, err := publishAndWait(ctx)
		if err != nil {
			return fmt.Errorf("latency mode, publish %d: %w", i+1, err)
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	f.Publishes = len(lat)
	f.LastP50 = ms(quantile(lat, 0.50))
	f.LastP99 = ms(quantile(lat, 0.99))
	f.LastMax = ms(lat[len(lat)-1])
	// The histogram holds the latency mode's deliveries only, so far.
	st, err := cl.stats(ctx, 0, 0)
	if err != nil {
		return err
	}
	f.LatencyModeP50 = ms(st.Latency.Quantile(0.5))
	f.LatencyModeP99 = ms(st.Latency.Quantile(0.99))

	fmt.Fprintf(r.log, "benchrun: %s: throughput mode, %d in flight for %v\n", f.Target, r.o.window, r.o.throughput)
	before, err := r.readCosts(ctx, d, cl)
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(r.o.throughput)
	var completed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range r.o.window {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := publishAndWait(ctx); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				completed.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return fmt.Errorf("throughput mode: %w", firstErr)
	}
	after, err := r.readCosts(ctx, d, cl)
	if err != nil {
		return err
	}
	f.TputPublishes = int(completed.Load())
	delivered := after.delivered - before.delivered
	f.Throughput = ptr(float64(delivered) / elapsed.Seconds())
	f.PublishesPerSec = ptr(float64(f.TputPublishes) / elapsed.Seconds())
	if delivered > 0 {
		us := func(d time.Duration) *float64 {
			return ptr(float64(d) / float64(time.Microsecond) / float64(delivered))
		}
		f.ServerCPU = us(after.server - before.server)
		f.ClientCPU = us(after.client - before.client)
		if d.redis != nil {
			f.RedisCPUPerDelivery = us(after.redis - before.redis)
		}
	}
	if d.redis != nil {
		if f.TputPublishes > 0 {
			f.RedisCPUPerPublish = ptr(float64(after.redis-before.redis) / float64(time.Microsecond) / float64(f.TputPublishes))
		}
		sec := elapsed.Seconds()
		f.BrokerPublishedPerSec = ptr((after.metrics["herald_broker_published_messages_total"] - before.metrics["herald_broker_published_messages_total"]) / sec)
		f.BrokerReceivedPerSec = ptr((after.metrics["herald_broker_received_messages_total"] - before.metrics["herald_broker_received_messages_total"]) / sec)
		f.RedisPublishPerSec = ptr(float64(after.redisPublish-before.redisPublish) / sec)
	}
	if !d.isFloor() {
		f.Dropped = ptr(after.metrics.Dropped() - dropped0)
	}

	st, err = cl.stats(ctx, 1, seq.Load())
	if err != nil {
		return err
	}
	f.DeliveryP50 = ms(st.Latency.Quantile(0.5))
	f.DeliveryP99 = ms(st.Latency.Quantile(0.99))
	f.Missing, f.Duplicates, f.Reordered = st.Missing, st.Duplicates, st.Reordered
	f.Reasons = st.ReasonsString()
	if d.isFloor() || r.o.probes == 0 {
		return nil // the floor writes every publish to every socket
	}
	return r.probe(ctx, d, pub, &seq, f)
}

// probe measures publish-to-delivery with a small fan-out, while the -conns
// connections stay idle: probeConns connections on their own channel (spread over
// the nodes: one per node for the cluster), -probes publishes one at a time, each
// waiting for its probeConns deliveries. What a cluster adds here is its hop through
// Redis, not its fan-out.
func (r *runner) probe(ctx context.Context, d *deployment, pub *loadgen.Publisher, seq *atomic.Uint64, f *figures) error {
	fmt.Fprintf(r.log, "benchrun: %s: probe, %d publishes to %d subscribers\n", f.Target, r.o.probes, probeConns)
	pc, err := r.startWorkers(d, probeChannel, 1, probeConns, "")
	if err != nil {
		return err
	}
	defer pc.close()
	if _, err := pc.dial(ctx); err != nil {
		return err
	}
	first := seq.Load() + 1
	for i := 0; i < r.o.probes; i++ {
		s := seq.Add(1)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := pub.Publish(pctx, probeChannel, eventName, loadgen.AppendPayload(nil, s, time.Now().UnixNano(), r.o.payload))
		cancel()
		if err != nil {
			return fmt.Errorf("probe, publish %d: %w", i+1, err)
		}
		if _, err := pc.wait(ctx, s, 10*time.Second); err != nil {
			return fmt.Errorf("probe, publish %d: %w", i+1, err)
		}
	}
	st, err := pc.stats(ctx, first, seq.Load())
	if err != nil {
		return err
	}
	f.ProbeP50, f.ProbeP99 = ms(st.Latency.Quantile(0.5)), ms(st.Latency.Quantile(0.99))
	f.Missing += st.Missing
	return nil
}

// costs are the cumulative figures the throughput mode takes the difference of.
type costs struct {
	delivered    int64
	server       time.Duration   // the nodes' CPU, summed
	client       time.Duration   // the client workers' CPU, summed
	redis        time.Duration   // the redis-server's CPU
	redisPublish int64           // PUBLISH commands Redis has run
	metrics      cluster.Metrics // the nodes' metrics, summed
}

func (r *runner) readCosts(ctx context.Context, d *deployment, cl *clients) (costs, error) {
	var c costs
	var err error
	if c.delivered, err = cl.delivered(ctx); err != nil {
		return c, err
	}
	if c.server, err = d.cpu(); err != nil {
		return c, err
	}
	if c.client, err = cl.cpu(); err != nil {
		return c, err
	}
	if !d.isFloor() {
		if c.metrics, err = d.counters(ctx); err != nil {
			return c, err
		}
	}
	if d.redis != nil {
		if c.redis, err = d.redis.RedisCPU(); err != nil {
			return c, err
		}
		calls, err := cluster.RedisCommandCalls(ctx, d.redis.RedisAddr)
		if err != nil {
			return c, err
		}
		c.redisPublish = calls["publish"]
	}
	return c, nil
}

// upgrades is scenario c, on a fresh deployment.
func (r *runner) upgrades(ctx context.Context, f *figures) error {
	d, err := r.startDeployment(ctx, f.Target, "upgrades")
	if err != nil {
		return err
	}
	defer d.stop()
	cl, err := r.startClients(d, false, "")
	if err != nil {
		return err
	}
	defer cl.close()
	took, err := cl.dial(ctx)
	if err != nil {
		return err
	}
	f.UpgradesPerSec = ptr(float64(r.o.conns) / took.Seconds())
	st, err := cl.stats(ctx, 0, 0)
	if err != nil {
		return err
	}
	f.ConnectP50 = ms(st.Connect.Quantile(0.5))
	f.ConnectP99 = ms(st.Connect.Quantile(0.99))
	if st.ReasonsString() != "" {
		f.Reasons += " upgrades: " + st.ReasonsString()
	}
	return nil
}

// quantile of sorted values, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
