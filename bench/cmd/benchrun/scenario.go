package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/lgrun"
	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

const (
	appID     = "1"
	appKey    = "bench-key"
	appSecret = "bench-secret"
	// The connections subscribe to loadgen's channel 0 of this prefix ("bench-0"),
	// the probe's to probePrefix's ("bench-probe-0"); probeConns of them.
	channelPrefix = "bench-"
	channel       = channelPrefix + "0"
	probePrefix   = "bench-probe-"
	probeConns    = 3
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
	o   options
	dir string
	log io.Writer
	lg  *lgrun.Runner
}

// measure runs scenarios a and b on one deployment and c on a fresh one.
func (r *runner) measure(ctx context.Context, f *figures) error {
	fmt.Fprintf(r.log, "benchrun: %s: memory and fan-out, %d connections\n", f.Target, r.o.conns)
	if err := r.fanout(ctx, f); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "benchrun: %s: upgrades, %d connections, %d handshakes in flight\n", f.Target, r.o.conns, r.o.handshakes)
	return r.upgrades(ctx, f)
}

// spec is the loadgen scenario every run of a target starts from: -conns
// connections (spread round-robin over the nodes) opened at once with at most
// -handshakes in flight over the workers, each subscribed to one channel named
// prefix+"0", held until the run is stopped. The floor never answers a close
// handshake, so its runs do not wait for one.
func (r *runner) spec(d *deployment, prefix string, conns int) loadgen.Spec {
	s := loadgen.Spec{
		Scenario: loadgen.ScenarioHold, Target: d.clientTargets(), PublishTarget: "http://" + d.publishAddr(),
		AppID: appID, Key: appKey, Secret: appSecret,
		Connections: conns, Ramp: 1e9, Spread: loadgen.SpreadOne, Channels: 1, ChannelPrefix: prefix,
		PayloadSize: r.o.payload, Duration: loadgen.Duration(runBound), CloseTimeout: loadgen.Duration(10 * time.Second),
		MaxHandshakes: max(r.o.handshakes/r.o.workers, 1), Loops: r.o.loops,
	}
	if d.isFloor() {
		s.CloseTimeout = loadgen.Duration(100 * time.Millisecond)
	}
	return s
}

// publishing turns s into closed-loop publishing: inFlight publishes in flight, each
// waiting for its last delivery (loadgen's --publish-await), count of them (0: until
// the drain), starting -idle after every connection is up (--publish-delay), as the
// connections of scenario a were idle before their memory was read.
func (r *runner) publishing(s loadgen.Spec, inFlight, count int) loadgen.Spec {
	s.Scenario = loadgen.ScenarioBroadcast
	s.PublishRate, s.PublishConcurrency, s.PublishAwait, s.PublishCount = loadgen.PublishRateMax, inFlight, true, count
	s.AwaitTimeout = loadgen.Duration(10 * time.Second)
	s.PublishDelay = loadgen.Duration(r.o.idle)
	return s
}

// settle is the hook of a publishing run's load phase: Herald collects its
// garbage (as reading its heap did before scenario b), during the publish delay.
func settle(d *deployment) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if d.isFloor() {
			return nil
		}
		_, err := d.heap(ctx)
		return err
	}
}

// runBound bounds one loadgen run; runs end well before it (a fixed count of
// publishes, or stopped by benchrun).
const runBound = 5 * time.Minute

// checkRun turns a report that does not hold every connection, or that lost
// publishes, into an error.
func checkRun(name string, rep *loadgen.Report, conns int, floor bool) error {
	t := rep.Totals
	if t.Connected < uint64(conns) {
		return fmt.Errorf("%s: %d of %d connections established (%s)", name, t.Connected, conns, reasons(rep, floor))
	}
	if c := rep.Completion; c != nil && c.Incomplete > 0 {
		return fmt.Errorf("%w: %s: %d of %d publishes did not reach every subscriber (%s)", errDelivery, name,
			c.Incomplete, c.Accepted, reasons(rep, floor))
	}
	return nil
}

// reasons lists a run's errors by kind; the floor's unanswered close handshakes
// are not errors.
func reasons(rep *loadgen.Report, floor bool) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(rep.Totals.Errors)) {
		if floor && k == "close_timeout" {
			continue
		}
		out = append(out, fmt.Sprintf("%s=%d", k, rep.Totals.Errors[k]))
	}
	return strings.Join(out, " ")
}

// fanout is scenarios a and b: one deployment, and on it three loadgen runs:
// hold (memory, then the probe while the connections are idle), latency mode,
// throughput mode. The floor gets a fresh process for each run: it never reads its
// sockets, so it would write to the previous run's closed ones.
func (r *runner) fanout(ctx context.Context, f *figures) error {
	d, err := r.startDeployment(ctx, f.Target, "fanout")
	if err != nil {
		return err
	}
	defer func() { d.stop() }()
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
		if redisRSS0, err = proc.ReadRSS(d.redis.Redis.PID()); err != nil {
			return err
		}
	}
	n := float64(r.o.conns)

	// a) memory, with the connections held idle; then the probe.
	hold := r.spec(d, channelPrefix, r.o.conns)
	rep, err := r.lg.Run(ctx, hold, r.o.workers, func(ctx context.Context) error {
		fmt.Fprintf(r.log, "benchrun: %s: %d connected and subscribed; idle %v\n", f.Target, r.o.conns, r.o.idle)
		if err := sleep(ctx, r.o.idle); err != nil {
			return err
		}
		rss1, err := d.rss()
		if err != nil {
			return err
		}
		f.ServerRSSPerConn = ptr(float64(rss1-rss0) / n)
		if heap0 >= 0 {
			if h, err := d.heap(ctx); err == nil {
				f.ServerHeapPerConn = ptr(float64(h-heap0) / n)
			}
		}
		if d.redis != nil {
			rr, err := proc.ReadRSS(d.redis.Redis.PID())
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
		if d.isFloor() || r.o.probes == 0 {
			return nil // the floor writes every publish to every socket
		}
		return r.probe(ctx, d, f)
	})
	if err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	if err := checkRun("hold", rep, r.o.conns, d.isFloor()); err != nil {
		return err
	}
	f.SubscribeSeconds = ptr(rep.RampSeconds)
	var crss, cheap int64
	for _, w := range rep.Workers {
		if w.MemStart == nil || w.MemLoad == nil {
			return fmt.Errorf("hold: worker %d sent no memory readings", w.ID)
		}
		crss += w.MemLoad.RSSBytes - w.MemStart.RSSBytes
		cheap += w.MemLoad.HeapBytes - w.MemStart.HeapBytes
	}
	f.ClientRSSPerConn = ptr(float64(crss) / n)
	f.ClientHeapPerConn = ptr(float64(cheap) / n)
	f.Reasons = reasons(rep, d.isFloor())

	// b) fan-out: latency mode, one publish at a time.
	if d, err = r.again(ctx, d, "latency"); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "benchrun: %s: latency mode, %d publishes\n", f.Target, r.o.publishes)
	lat, err := r.lg.RunNotify(ctx, r.publishing(r.spec(d, channelPrefix, r.o.conns), 1, r.o.publishes), r.o.workers, settle(d))
	if err != nil {
		return fmt.Errorf("latency mode: %w", err)
	}
	if err := checkRun("latency mode", lat, r.o.conns, d.isFloor()); err != nil {
		return err
	}
	c := lat.Completion
	f.Publishes = int(c.Complete)
	f.LastP50, f.LastP99, f.LastMax = ptr(c.Latency.P50Ms), ptr(c.Latency.P99Ms), ptr(c.Latency.MaxMs)
	f.LatencyModeP50, f.LatencyModeP99 = ptr(lat.Latency.P50Ms), ptr(lat.Latency.P99Ms)

	// b) fan-out: throughput mode, -window publishes in flight for about
	// -throughput (the load phase: the run's duration less its ramp and drain).
	if d, err = r.again(ctx, d, "throughput"); err != nil {
		return err
	}
	fmt.Fprintf(r.log, "benchrun: %s: throughput mode, %d in flight for %v\n", f.Target, r.o.window, r.o.throughput)
	ts := r.publishing(r.spec(d, channelPrefix, r.o.conns), r.o.window, 0)
	ts.Drain = loadgen.Duration(2 * time.Second)
	ts.Duration = loadgen.Duration(time.Duration((lat.RampSeconds+1)*float64(time.Second)) + ts.PublishDelay.D() +
		r.o.throughput + ts.Drain.D())
	ts.Duration = max(ts.Duration, 3*ts.Drain)
	var before costs
	if !d.isFloor() {
		if before.metrics, err = d.counters(ctx); err != nil {
			return err
		}
	}
	if d.redis != nil {
		calls, err := cluster.RedisCommandCalls(ctx, d.redis.RedisAddr)
		if err != nil {
			return err
		}
		before.redisPublish = calls["publish"]
	}
	smp := r.sampleCPU(d)
	tput, err := r.lg.RunNotify(ctx, ts, r.o.workers, settle(d))
	samples := smp.end()
	if err != nil {
		return fmt.Errorf("throughput mode: %w", err)
	}
	if err := checkRun("throughput mode", tput, r.o.conns, d.isFloor()); err != nil {
		return err
	}
	c = tput.Completion
	if c.Complete == 0 || !c.LastDelivery.After(c.FirstSent) {
		return fmt.Errorf("throughput mode: no publish completed (%s)", reasons(tput, d.isFloor()))
	}
	f.TputPublishes = int(c.Complete)
	f.Throughput, f.PublishesPerSec = ptr(c.DeliveriesPerSec), ptr(c.PublishesPerSec)
	from, to := cpuAt(samples, c.FirstSent, false), cpuAt(samples, c.LastDelivery, true)
	us := func(d time.Duration) *float64 {
		return ptr(float64(d) / float64(time.Microsecond) / float64(c.Deliveries))
	}
	f.ServerCPU, f.ClientCPU = us(to.server-from.server), us(to.client-from.client)
	if d.redis != nil {
		f.RedisCPUPerDelivery = us(to.redis - from.redis)
		f.RedisCPUPerPublish = ptr(float64(to.redis-from.redis) / float64(time.Microsecond) / float64(c.Complete))
		var after costs
		if after.metrics, err = d.counters(ctx); err != nil {
			return err
		}
		calls, err := cluster.RedisCommandCalls(ctx, d.redis.RedisAddr)
		if err != nil {
			return err
		}
		after.redisPublish = calls["publish"]
		// The counters move only while publishing: from the first publish to the
		// last delivery (the load phase also holds the publish delay).
		sec := c.LastDelivery.Sub(c.FirstSent).Seconds()
		f.BrokerPublishedPerSec = ptr((after.metrics["herald_broker_published_messages_total"] - before.metrics["herald_broker_published_messages_total"]) / sec)
		f.BrokerReceivedPerSec = ptr((after.metrics["herald_broker_received_messages_total"] - before.metrics["herald_broker_received_messages_total"]) / sec)
		f.RedisPublishPerSec = ptr(float64(after.redisPublish-before.redisPublish) / sec)
	}
	if !d.isFloor() {
		m, err := d.counters(ctx)
		if err != nil {
			return err
		}
		f.Dropped = ptr(m.Dropped() - dropped0)
	}
	all := mergeDistributions(lat.Latency, tput.Latency)
	f.DeliveryP50, f.DeliveryP99 = ms(all.Quantile(0.5)), ms(all.Quantile(0.99))
	f.Missing += int64(lat.Totals.Missing + tput.Totals.Missing)
	f.Duplicates = int64(lat.Totals.Duplicated + tput.Totals.Duplicated)
	f.Reordered = int64(lat.Reordered + tput.Reordered)
	for _, s := range []string{reasons(lat, d.isFloor()), reasons(tput, d.isFloor())} {
		if s != "" {
			f.Reasons = strings.TrimSpace(f.Reasons + " " + s)
		}
	}
	return nil
}

// again returns the deployment for the next run: the same one, except for the
// floor, which is started afresh (see fanout).
func (r *runner) again(ctx context.Context, d *deployment, phase string) (*deployment, error) {
	if !d.isFloor() {
		return d, nil
	}
	d.stop()
	nd, err := r.startDeployment(ctx, d.target, phase)
	if err != nil {
		return d, err // d is stopped already; stopping it again is harmless
	}
	*d = *nd
	return d, nil
}

// probe measures publish-to-delivery with a small fan-out while the -conns
// connections stay idle: a second loadgen run of probeConns connections on their
// own channel (spread over the nodes: one per node for the cluster), -probes
// publishes one at a time, each waiting for its probeConns deliveries. What a
// cluster adds here is its hop through Redis, not its fan-out.
func (r *runner) probe(ctx context.Context, d *deployment, f *figures) error {
	fmt.Fprintf(r.log, "benchrun: %s: probe, %d publishes to %d subscribers\n", f.Target, r.o.probes, probeConns)
	s := r.publishing(r.spec(d, probePrefix, probeConns), 1, r.o.probes)
	s.PublishDelay = 0 // the connections of scenario a are idle already
	s.MaxHandshakes = probeConns
	rep, err := r.lg.Run(ctx, s, 1, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if err := checkRun("probe", rep, probeConns, false); err != nil {
		return err
	}
	f.ProbeP50, f.ProbeP99 = ptr(rep.Latency.P50Ms), ptr(rep.Latency.P99Ms)
	f.Missing += int64(rep.Totals.Missing)
	return nil
}

// costs are the cumulative server figures the throughput mode takes the
// difference of.
type costs struct {
	redisPublish int64           // PUBLISH commands Redis has run
	metrics      cluster.Metrics // the nodes' metrics, summed
}

// cpuSample is the CPU time used so far by the servers (summed over the nodes),
// the client workers (summed) and the redis-server, at T.
type cpuSample struct {
	T                     time.Time
	server, client, redis time.Duration
}

// cpuSampler reads the CPU times every cpuEvery while a run goes on, so that they
// can be taken at the instants loadgen's report names (the first publish, the last
// delivery). The client workers are found as this process's children running the
// loadgen binary.
type cpuSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []cpuSample
}

const cpuEvery = 20 * time.Millisecond

func (r *runner) sampleCPU(d *deployment) *cpuSampler {
	s := &cpuSampler{stop: make(chan struct{}), done: make(chan struct{})}
	lgBin := filepath.Join(r.dir, "loadgen")
	go func() { // stopped by end
		defer close(s.done)
		tk := time.NewTicker(cpuEvery)
		defer tk.Stop()
		var workers []int
		for {
			if len(workers) < r.o.workers {
				workers = proc.Children(os.Getpid(), lgBin)
			}
			c := cpuSample{T: time.Now()}
			c.server, _ = d.cpu()
			for _, pid := range workers {
				if v, err := proc.ReadCPU(pid); err == nil {
					c.client += v
				}
			}
			if d.redis != nil {
				c.redis, _ = d.redis.RedisCPU()
			}
			s.samples = append(s.samples, c)
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *cpuSampler) end() []cpuSample {
	close(s.stop)
	<-s.done
	return s.samples
}

// cpuAt is the last sample taken at or before t (after: the first at or after t),
// so that the interval between two such samples covers [from, to]. With none on
// that side it is the nearest one.
func cpuAt(samples []cpuSample, t time.Time, after bool) cpuSample {
	if len(samples) == 0 {
		return cpuSample{}
	}
	i := sort.Search(len(samples), func(i int) bool { return !samples[i].T.Before(t) }) // first at or after t
	if !after {
		if i < len(samples) && samples[i].T.Equal(t) {
			return samples[i]
		}
		i--
	}
	return samples[min(max(i, 0), len(samples)-1)]
}

// mergeDistributions merges report distributions through their buckets (each
// bucket's values at its upper bound, as fine as loadgen's histograms: 0.1%).
func mergeDistributions(ds ...loadgen.Distribution) *loadgen.Histogram {
	h := loadgen.NewHistogram()
	for _, d := range ds {
		for _, b := range d.Buckets {
			v := time.Duration(b.UpToMs * float64(time.Millisecond))
			for range b.Count {
				h.Record(v)
			}
		}
	}
	return h
}

// upgrades is scenario c, on a fresh deployment: a loadgen run that opens -conns
// connections (no channel) with at most -handshakes in flight, stopped as soon as
// they are all up.
func (r *runner) upgrades(ctx context.Context, f *figures) error {
	d, err := r.startDeployment(ctx, f.Target, "upgrades")
	if err != nil {
		return err
	}
	defer d.stop()
	s := r.spec(d, channelPrefix, r.o.conns)
	s.ChannelsPerConn = -1
	rep, err := r.lg.Run(ctx, s, r.o.workers, func(context.Context) error { return nil })
	if err != nil {
		return fmt.Errorf("upgrades: %w", err)
	}
	if err := checkRun("upgrades", rep, r.o.conns, d.isFloor()); err != nil {
		return err
	}
	f.UpgradesPerSec = ptr(rep.ConnectRate)
	f.ConnectP50, f.ConnectP99 = ptr(rep.Connect.P50Ms), ptr(rep.Connect.P99Ms)
	if s := reasons(rep, d.isFloor()); s != "" {
		f.Reasons += " upgrades: " + s
	}
	return nil
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
