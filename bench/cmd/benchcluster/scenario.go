package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

// Scenarios.
const (
	scThroughput = "throughput"
	scPresence   = "presence"
	scWebhooks   = "webhooks"
)

// sampleEvery is how often the processes' CPU and the nodes' counters are read while
// loadgen runs.
const sampleEvery = 500 * time.Millisecond

type runner struct {
	o   options
	dir string
	log io.Writer
}

// result is one scenario's figures. Rates and CPU are over the load phase (window).
type result struct {
	Scenario string   `json:"scenario"`
	Error    string   `json:"error,omitempty"`
	Failed   []string `json:"failed_checks,omitempty"`
	Report   string   `json:"loadgen_report,omitempty"`
	Command  string   `json:"loadgen_command,omitempty"`

	// From loadgen's report (whole run).
	Connections      int               `json:"connections"`
	NodeConns        []uint64          `json:"node_conns,omitempty"` // connections established per node
	Channels         int               `json:"channels"`
	Published        uint64            `json:"published"`
	PublishesPerSec  float64           `json:"publishes_per_s"`
	Delivered        uint64            `json:"delivered"`
	DeliveriesPerSec float64           `json:"deliveries_per_s"`
	Expected         uint64            `json:"expected"`
	Missing          uint64            `json:"missing"`
	Duplicated       uint64            `json:"duplicated"`
	Errors           map[string]uint64 `json:"errors,omitempty"`
	LatencyP50       float64           `json:"latency_p50_ms"`
	LatencyP99       float64           `json:"latency_p99_ms"`
	LatencyMax       float64           `json:"latency_max_ms"`

	// Sampled over the load phase.
	WindowSeconds         float64 `json:"window_s"`
	NodeDeliveriesPerSec  float64 `json:"node_deliveries_per_s"` // herald_messages_sent_total
	BrokerPublishedPerSec float64 `json:"broker_published_per_s"`
	BrokerReceivedPerSec  float64 `json:"broker_received_per_s"`
	RedisPublishPerSec    float64 `json:"redis_publish_cmds_per_s"`
	RedisCommandsPerSec   float64 `json:"redis_cmds_per_s"`
	// RedisCommands is commands per second by command (INFO commandstats).
	RedisCommands       map[string]float64 `json:"redis_cmds_by_name_per_s,omitempty"`
	RedisCPUPercent     float64            `json:"redis_cpu_percent"` // of one core
	NodesCPUPercent     float64            `json:"nodes_cpu_percent"` // all nodes, of one core
	RedisCPUPerMessage  float64            `json:"redis_cpu_us_per_message"`
	RedisCPUPerDelivery float64            `json:"redis_cpu_us_per_delivery"`
	NodesCPUPerDelivery float64            `json:"nodes_cpu_us_per_delivery"`
	Dropped             float64            `json:"dropped"` // herald_dropped_total + fanout_dropped + broker_errors, whole run

	// Presence.
	Joins         uint64  `json:"joins,omitempty"`
	Leaves        uint64  `json:"leaves,omitempty"`
	JoinsPerSec   float64 `json:"joins_per_s,omitempty"`
	LeavesPerSec  float64 `json:"leaves_per_s,omitempty"`
	MemberAdded   uint64  `json:"member_added,omitempty"`
	MemberRemoved uint64  `json:"member_removed,omitempty"`
	MemberP50     float64 `json:"member_p50_ms,omitempty"`
	MemberP99     float64 `json:"member_p99_ms,omitempty"`
	MemberMax     float64 `json:"member_max_ms,omitempty"`
	// MemberWhole* include the ramp's burst of joins (MemberP* are the load phase).
	MemberWholeP50    float64 `json:"member_whole_run_p50_ms,omitempty"`
	MemberWholeP99    float64 `json:"member_whole_run_p99_ms,omitempty"`
	RedisCPUPerChange float64 `json:"redis_cpu_us_per_join_or_leave,omitempty"`
	// OccupiedAfter is the number of presence channels still occupied, asked of
	// the last node, EmptySeconds after loadgen ended (every client gone).
	OccupiedAfter int     `json:"occupied_after,omitempty"`
	EmptySeconds  float64 `json:"empty_after_s,omitempty"`

	// Webhooks: the webhooks scenario's figures (webhooks.go).
	Webhooks *webhookFigures `json:"webhooks,omitempty"`
}

func (r *runner) scenario(ctx context.Context, res *result) error {
	o := r.o
	cfg := cluster.Config{Herald: filepath.Join(r.dir, "herald"), Dir: r.dir, Name: res.Scenario, Nodes: o.nodes, App: app}
	var rcv *receiver
	if res.Scenario == scWebhooks {
		var err error
		if rcv, err = startReceiver(appKey, appSecret); err != nil {
			return fmt.Errorf("benchcluster: webhook receiver: %w", err)
		}
		defer rcv.Close() // after the nodes stopped (defers run last first)
		if cfg.AppsFile, err = writeAppsFile(r.dir, rcv.URL()); err != nil {
			return err
		}
		res.Webhooks = &webhookFigures{URL: rcv.URL()}
	}
	fmt.Fprintf(r.log, "benchcluster: %s: starting redis-server and %d herald nodes\n", res.Scenario, o.nodes)
	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Stop()
	m0, err := c.Counters(ctx)
	if err != nil {
		return err
	}

	target := ""
	for i, a := range c.Addrs() {
		if i > 0 {
			target += ","
		}
		target += "ws://" + a
	}
	res.Report = reportPath(o.outDir, res.Scenario, "json")
	args := []string{"run", "--target", target, "--publish-target", "http://" + c.Nodes[0].Addr,
		"--app-id", appID, "--app-key", appKey, "--app-secret", appSecret,
		"--duration", o.duration.String(), "--workers", strconv.Itoa(o.workers),
		"--progress", "lines", "--progress-every", "5s",
		"--out", res.Report, "--html", reportPath(o.outDir, res.Scenario, "html")}
	switch res.Scenario {
	case scThroughput:
		res.Connections, res.Channels = o.channels*o.subscribers, o.channels
		args = append(args, "--scenario", "broadcast", "--connections", strconv.Itoa(res.Connections), "--ramp", "20000",
			"--channels", strconv.Itoa(o.channels), "--publish-rate", "max",
			"--publish-batch", strconv.Itoa(o.batch), "--publish-concurrency", strconv.Itoa(o.concurrency),
			"--payload-size", strconv.Itoa(o.payload), "--drain", "3s")
	case scPresence:
		res.Connections = o.presConns
		// A gentler ramp than the throughput's: every join is announced to the
		// members already there, and the storm, not the ramp, is the subject.
		args = append(args, "--scenario", "presence-storm", "--connections", strconv.Itoa(o.presConns),
			"--ramp", strconv.FormatFloat(o.presRamp, 'f', -1, 64),
			"--churn-rate", strconv.FormatFloat(o.presChurn, 'f', -1, 64), "--drain", "3s")
		if o.presChans > 0 {
			args = append(args, "--channels", strconv.Itoa(o.presChans))
		}
	case scWebhooks:
		res.Connections, res.Channels = o.hookConns, o.hookChans
		args = append(args, "--scenario", "presence-storm", "--connections", strconv.Itoa(o.hookConns),
			"--ramp", strconv.FormatFloat(o.hookRamp, 'f', -1, 64),
			"--churn-rate", strconv.FormatFloat(o.hookChurn, 'f', -1, 64), "--drain", "3s",
			"--channels", strconv.Itoa(o.hookChans))
	}
	res.Command = "loadgen" + proc.QuoteArgs(args)

	smp := startSampler(ctx, c, rcv)
	lgErr := r.loadgen(ctx, args, o.duration+90*time.Second)
	samples := smp.stop()
	if rcv != nil {
		// loadgen ended: every client has left. Wait out the grace for the last
		// member_removed and channel_vacated.
		fmt.Fprintf(r.log, "benchcluster: %s: every client left; waiting for the last webhooks (at most %v)\n", res.Scenario, settleMax)
		d, ok := settleWebhooks(ctx, c, rcv, time.Now())
		res.Webhooks.SettleSeconds, res.Webhooks.Settled = d.Seconds(), ok
	}

	rep, err := readReport(res.Report)
	if err != nil {
		return errors.Join(lgErr, err)
	}
	if lgErr != nil {
		fmt.Fprintf(r.log, "benchcluster: %s: loadgen: %v (figures from its report)\n", res.Scenario, lgErr)
		res.Failed = append(res.Failed, "loadgen: "+lgErr.Error())
	}
	res.fromReport(rep)
	if err := res.fromSamples(samples, rep); err != nil {
		return err
	}
	if m1, err := c.Counters(ctx); err == nil {
		res.Dropped = m1.Dropped() - m0.Dropped()
	}
	if res.Scenario == scPresence {
		r.checkPresenceEmpty(ctx, c, res)
	}
	if rcv != nil {
		res.Webhooks.Subscribed = rep.Totals.Subscribed
		if err := res.webhookFigures(ctx, c, rcv); err != nil {
			return err
		}
	}
	res.check(rep)
	return nil
}

// loadgen runs the loadgen binary with args, its output going to the log, bounded by
// timeout: at the end of it, or on Ctrl-C, it gets SIGINT (it then stops its workers
// and writes its reports) and, 30 s later, SIGKILL.
func (r *runner) loadgen(ctx context.Context, args []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(r.dir, "loadgen"), args...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 99 {
		return errors.New("a loadgen threshold was breached (exit 99)")
	}
	return err
}

func readReport(path string) (*loadgen.Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("benchcluster: loadgen report: %w", err)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("benchcluster: loadgen report %s: %w", path, err)
	}
	return &rep, nil
}

func (res *result) fromReport(rep *loadgen.Report) {
	t := rep.Totals
	res.Published, res.PublishesPerSec = t.Published, t.PublishesPerSec
	res.Delivered, res.DeliveriesPerSec = t.Delivered, t.DeliveriesPerSec
	res.Expected, res.Missing, res.Duplicated = t.Expected, t.Missing, t.Duplicated
	res.Errors = t.Errors
	res.LatencyP50, res.LatencyP99, res.LatencyMax = rep.Latency.P50Ms, rep.Latency.P99Ms, rep.Latency.MaxMs
	for _, ts := range rep.Targets {
		res.NodeConns = append(res.NodeConns, ts.Connected)
	}
	if ch, ok := rep.Scenario.Params["channels"].(float64); ok {
		res.Channels = int(ch)
	}
	if ps := rep.Presence; ps != nil {
		res.Joins, res.Leaves, res.JoinsPerSec, res.LeavesPerSec = ps.Joins, ps.Leaves, ps.JoinsPerSec, ps.LeavesPerSec
		res.MemberAdded, res.MemberRemoved = ps.MemberAdded, ps.MemberRemoved
		l := ps.MemberLatencyLoad
		res.MemberP50, res.MemberP99, res.MemberMax = l.P50Ms, l.P99Ms, l.MaxMs
		w := ps.MemberLatency
		res.MemberWholeP50, res.MemberWholeP99 = w.P50Ms, w.P99Ms
	}
}

// fromSamples takes the rates and CPU over the load phase, leaving its first second
// (connections may still be settling) and its last half second out.
func (res *result) fromSamples(samples []sample, rep *loadgen.Report) error {
	if rep.LoadStarted.IsZero() {
		return errors.New("benchcluster: the run never reached its load phase (see loadgen's output)")
	}
	from, to := rep.LoadStarted.Add(time.Second), rep.LoadEnded.Add(-sampleEvery)
	var a, b *sample
	for i := range samples {
		s := &samples[i]
		if s.t.Before(from) || s.t.After(to) {
			continue
		}
		if a == nil {
			a = s
		}
		b = s
	}
	if a == nil || a == b {
		return fmt.Errorf("benchcluster: fewer than 2 samples in the load phase (%v to %v)", from, to)
	}
	sec := b.t.Sub(a.t).Seconds()
	res.WindowSeconds = sec
	rate := func(name string) float64 { return (b.m[name] - a.m[name]) / sec }
	res.NodeDeliveriesPerSec = rate("herald_messages_sent_total")
	if w := res.Webhooks; w != nil {
		w.EventsPerSec = float64(b.hookEvents-a.hookEvents) / sec
		w.RequestsPerSec = float64(b.hookRequests-a.hookRequests) / sec
		if b.hookRequests > a.hookRequests {
			w.EventsPerRequest = float64(b.hookEvents-a.hookEvents) / float64(b.hookRequests-a.hookRequests)
		}
		w.SentPerSec = rate("herald_webhooks_sent_total")
	}
	res.BrokerPublishedPerSec = rate("herald_broker_published_messages_total")
	res.BrokerReceivedPerSec = rate("herald_broker_received_messages_total")
	res.RedisPublishPerSec = float64(b.redisPublish-a.redisPublish) / sec
	res.RedisCommandsPerSec = float64(b.redisCmds-a.redisCmds) / sec
	res.RedisCommands = map[string]float64{}
	for k, v := range b.redisCalls {
		if d := v - a.redisCalls[k]; d > 0 && k != "info" {
			res.RedisCommands[k] = float64(d) / sec
		}
	}
	redisCPU, nodesCPU := b.redisCPU-a.redisCPU, b.nodesCPU-a.nodesCPU
	res.RedisCPUPercent = 100 * redisCPU.Seconds() / sec
	res.NodesCPUPercent = 100 * nodesCPU.Seconds() / sec
	us := func(d time.Duration, n float64) float64 {
		if n <= 0 {
			return 0
		}
		return float64(d) / float64(time.Microsecond) / n
	}
	res.RedisCPUPerMessage = us(redisCPU, res.BrokerPublishedPerSec*sec)
	res.RedisCPUPerDelivery = us(redisCPU, res.NodeDeliveriesPerSec*sec)
	res.NodesCPUPerDelivery = us(nodesCPU, res.NodeDeliveriesPerSec*sec)
	if res.Scenario == scPresence || res.Scenario == scWebhooks {
		res.RedisCPUPerChange = us(redisCPU, (res.JoinsPerSec+res.LeavesPerSec)*sec)
	}
	return nil
}

// check records what a clean run must show.
func (res *result) check(rep *loadgen.Report) {
	fail := func(format string, a ...any) { res.Failed = append(res.Failed, fmt.Sprintf(format, a...)) }
	if res.Missing != 0 {
		fail("missing %d deliveries", res.Missing)
	}
	if res.Duplicated != 0 {
		fail("duplicated %d deliveries", res.Duplicated)
	}
	if len(res.Errors) != 0 {
		fail("loadgen errors %v", res.Errors)
	}
	if res.Dropped != 0 {
		fail("the nodes dropped or failed %.0f (herald_dropped_total, fanout_dropped, broker_errors)", res.Dropped)
	}
	for i, n := range res.NodeConns {
		if n == 0 {
			fail("node %d got no connections", i+1)
		}
	}
	switch res.Scenario {
	case scThroughput:
		if res.Published == 0 || res.Delivered == 0 {
			fail("nothing published or delivered")
		}
	case scPresence:
		if res.Joins == 0 || res.Leaves == 0 || res.MemberAdded == 0 {
			fail("no joins, leaves or member events")
		}
		if res.OccupiedAfter != 0 {
			fail("%d presence channels still occupied %.0f s after every client left", res.OccupiedAfter, res.EmptySeconds)
		}
	case scWebhooks:
		if res.Joins == 0 || res.Leaves == 0 {
			fail("no joins or leaves")
		}
		res.checkWebhooks()
	}
}

// checkPresenceEmpty asks the last node, until every presence channel is empty (at
// most 10 s), which presence channels are occupied: every client has left.
func (r *runner) checkPresenceEmpty(ctx context.Context, c *cluster.Cluster, res *result) {
	node := c.Nodes[len(c.Nodes)-1]
	start := time.Now()
	for {
		n, err := occupiedPresence(ctx, node.Addr)
		res.OccupiedAfter, res.EmptySeconds = n, time.Since(start).Seconds()
		if err != nil {
			res.OccupiedAfter = -1
			res.Failed = append(res.Failed, "presence query: "+err.Error())
			return
		}
		if n == 0 || time.Since(start) > 10*time.Second || ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// occupiedPresence asks GET /apps/{id}/channels?filter_by_prefix=presence- (signed)
// how many presence channels are occupied.
func occupiedPresence(ctx context.Context, addr string) (int, error) {
	path := "/apps/" + appID + "/channels"
	q := loadgen.SignQuery(http.MethodGet, path, appKey, appSecret, nil, time.Now().Unix(),
		map[string]string{"filter_by_prefix": "presence-"})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path+"?"+q, nil)
	if err != nil {
		return 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var body struct {
		Channels map[string]json.RawMessage `json:"channels"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return 0, err
	}
	return len(body.Channels), nil
}

// sample is one reading of the cluster's cumulative figures.
type sample struct {
	t                       time.Time
	nodesCPU, redisCPU      time.Duration
	m                       cluster.Metrics
	redisPublish, redisCmds int64
	redisCalls              map[string]int64
	// hookEvents and hookRequests are what the webhook receiver accepted (webhooks
	// scenario).
	hookEvents, hookRequests uint64
}

// sampler reads the cluster every sampleEvery on its own goroutine, which stop ends
// and waits for.
type sampler struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	samples []sample
}

// rcv, when not nil, is read with the cluster.
func startSampler(ctx context.Context, c *cluster.Cluster, rcv *receiver) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(sampleEvery)
		defer t.Stop()
		for {
			if x, err := read(ctx, c, rcv); err == nil {
				s.samples = append(s.samples, x)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() []sample {
	s.cancel()
	s.wg.Wait()
	return s.samples
}

func read(ctx context.Context, c *cluster.Cluster, rcv *receiver) (sample, error) {
	x := sample{t: time.Now()}
	var err error
	if x.nodesCPU, err = c.CPU(); err != nil {
		return x, err
	}
	if x.redisCPU, err = c.RedisCPU(); err != nil {
		return x, err
	}
	if x.m, err = c.Counters(ctx); err != nil {
		return x, err
	}
	calls, err := cluster.RedisCommandCalls(ctx, c.RedisAddr)
	if err != nil {
		return x, err
	}
	x.redisPublish, x.redisCalls = calls["publish"], calls
	for _, n := range calls {
		x.redisCmds += n
	}
	if rcv != nil {
		x.hookEvents, x.hookRequests = rcv.events.Load(), rcv.requests.Load()
	}
	// The figures are read one after another; the time of the middle one is closest.
	x.t = x.t.Add(time.Since(x.t) / 2)
	return x, nil
}
