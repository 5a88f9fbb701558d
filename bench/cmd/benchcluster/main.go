// Command benchcluster measures a Herald cluster under load through the product's
// load generator (`make bench-cluster`, part of `make bench`): 3 herald nodes joined
// through one redis-server, with `loadgen run` spreading its connections over the
// three nodes (--target a,b,c: connection i of each worker to node i mod 3) and
// publishing through node 1's HTTP API. Three scenarios:
//
//   - throughput: many channels (-channels, default 1,000), a few subscribers each
//     (-subscribers, default 3, spread over the nodes), published to as fast as the
//     publishers are answered (loadgen --publish-rate max, -batch events per
//     request through /batch_events). Figures: events published and delivered per
//     second, messages through Redis per second (what the nodes published and
//     received, and PUBLISH commands as Redis counts them), the redis-server's CPU
//     per message and per delivery, the nodes' CPU per delivery, publish-to-receive
//     latency, missing and duplicated deliveries.
//   - presence: loadgen's presence-storm (connections on presence channels, a share
//     of them closed and reopened every second) against the cluster, with the
//     presence store in Redis. Figures: joins and leaves per second, join-to-
//     member_added latency as seen by the other members (on every node),
//     member events received, the redis-server's CPU per join or leave, and a
//     check that once every client has left, no presence channel is still occupied
//     when asked through another node than the one the publishes use.
//   - webhooks: the same presence storm (-webhook-connections, default 6,000, on
//     -webhook-channels, default 2,000: 3 members each on average, so that channels
//     empty and fill again under the churn and the departure grace has returns to
//     cancel; -webhook-churn, default 2,000 connections closed and reopened per
//     second, each a new user), with every node's app (an apps.json given with
//     --config) posting all its webhook types to a receiver inside benchcluster on
//     127.0.0.1 (receiver.go). The receiver checks every request's X-Pusher-Key and
//     X-Pusher-Signature, counts events by type and (channel, user), and times each
//     request from its time_ms. After loadgen ended (every client gone) the run waits
//     past the 3 s departure grace until the last member_removed and channel_vacated
//     arrived and the nodes' queues are empty (at most 23 s). Figures: webhook
//     events and requests received per second over the load phase, events per
//     request, event → 2xx latency from herald_webhook_latency_seconds summed over
//     the nodes (p50 and p99 estimated from its buckets; Herald dates vacated and
//     removed from the departure, so theirs include the grace: the events that took
//     at most 2.5 s are also given alone, and the others' mean bounded from the
//     histogram's sum), time_ms → receipt. Checks: the receiver got exactly what
//     the nodes count as sent (herald_webhooks_sent_total, in all and by type),
//     nothing failed or dropped, every signature valid, each user's member_added
//     and member_removed exactly once, each channel occupied as often as vacated,
//     and its events in turn (occupied, vacated, ...; a pair that two nodes'
//     requests swapped in flight within 1 s is counted, not failed).
//
// The redis-server's and the nodes' CPU (from /proc/<pid>/stat) and the nodes'
// counters (/metrics), and the webhook receiver's counts, are sampled every 500 ms
// while loadgen runs, and the figures are taken over the load phase (from loadgen's
// per-second series), away from the ramp and the final close.
//
// It builds herald and loadgen into a temporary directory. Every process it starts
// (redis-server, nodes, loadgen and, through loadgen, its workers) is stopped by PID
// on success, failure and Ctrl-C; every wait is bounded; everything, the webhook
// receiver included, listens on 127.0.0.1. It prints a table and a JSON line, writes loadgen's JSON and HTML
// reports to -out-dir, and exits 1 if a scenario could not be measured or a check
// failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
)

const (
	appID     = "1"
	appKey    = "bench-key"
	appSecret = "bench-secret"
)

var app = cluster.App{ID: appID, Key: appKey, Secret: appSecret}

type options struct {
	scenarios   []string
	nodes       int
	duration    time.Duration
	workers     int
	channels    int
	subscribers int
	batch       int
	concurrency int
	payload     int
	presConns   int
	presChurn   float64
	presChans   int
	presRamp    float64
	hookConns   int
	hookChurn   float64
	hookChans   int
	hookRamp    float64
	outDir      string
	keep        bool
	goBin       string
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "benchcluster:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	var o options
	var scenarios string
	fs := flag.NewFlagSet("benchcluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&scenarios, "scenarios", "throughput,presence,webhooks", "scenarios to run, comma-separated: throughput, presence, webhooks")
	fs.IntVar(&o.nodes, "nodes", 3, "herald nodes, joined through one redis-server")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "each loadgen run's --duration (ramp and drain included)")
	fs.IntVar(&o.workers, "workers", 1, "loadgen worker processes")
	fs.IntVar(&o.channels, "channels", 1000, "throughput: channels")
	fs.IntVar(&o.subscribers, "subscribers", 3, "throughput: subscribers per channel on average (connections = channels × subscribers, one channel each, uniform)")
	fs.IntVar(&o.batch, "batch", 10, "throughput: events per HTTP request (/batch_events; 1 posts to /events)")
	fs.IntVar(&o.concurrency, "publish-concurrency", 16, "throughput: HTTP requests in flight")
	fs.IntVar(&o.payload, "payload", 64, "throughput: event data bytes")
	fs.IntVar(&o.presConns, "presence-connections", 6000, "presence: connections (one presence channel each)")
	fs.Float64Var(&o.presChurn, "presence-churn", 1000, "presence: connections closed and reopened per second (each a leave and a join)")
	fs.Float64Var(&o.presRamp, "presence-ramp", 3000, "presence: connections opened per second before the storm")
	fs.IntVar(&o.presChans, "presence-channels", 0, "presence: channels (0: loadgen's default, at most 50 members each)")
	fs.IntVar(&o.hookConns, "webhook-connections", 6000, "webhooks: connections (one presence channel each)")
	fs.Float64Var(&o.hookChurn, "webhook-churn", 2000, "webhooks: connections closed and reopened per second (each a leave and a join of a new user)")
	fs.IntVar(&o.hookChans, "webhook-channels", 2000, "webhooks: presence channels (3 members each on average: channels empty and fill again under churn)")
	fs.Float64Var(&o.hookRamp, "webhook-ramp", 3000, "webhooks: connections opened per second before the storm")
	fs.StringVar(&o.outDir, "out-dir", "", "write loadgen's reports here (bench-cluster-<scenario>.json and .html); default: the temporary directory")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs, reports)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if s != scThroughput && s != scPresence && s != scWebhooks {
				return fmt.Errorf("unknown scenario %q (throughput, presence, webhooks)", s)
			}
			o.scenarios = append(o.scenarios, s)
		}
	}
	if o.nodes < 1 || o.channels < 1 || o.subscribers < 1 || o.presConns < 1 || o.hookConns < 1 || o.hookChans < 1 ||
		o.batch < 1 || o.duration < 6*time.Second {
		return errors.New("need nodes, channels, subscribers, presence-connections, webhook-connections, webhook-channels, batch >= 1 and duration >= 6s")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(len(o.scenarios))*(o.duration+2*time.Minute)+3*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "herald-bench-cluster-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "benchcluster: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.outDir == "" {
		o.outDir = dir
	} else if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	started := time.Now()
	load0 := proc.LoadAvg()
	fmt.Fprintln(stderr, "benchcluster: building herald and loadgen")
	root, err := proc.ModuleRoot(ctx, o.goBin)
	if err != nil {
		return err
	}
	for _, b := range [][2]string{{"herald", "./cmd/herald"}, {"loadgen", "./cmd/loadgen"}} {
		if err := proc.Build(ctx, o.goBin, root, dir, b[0], b[1]); err != nil {
			return err
		}
	}
	r := &runner{o: o, dir: dir, log: stderr}
	rep := report{
		Command: "go run ./bench/cmd/benchcluster" + proc.QuoteArgs(args),
		NProc:   runtime.NumCPU(),
		Nodes:   o.nodes,
	}
	failed := false
	for _, sc := range o.scenarios {
		res := &result{Scenario: sc}
		rep.Results = append(rep.Results, res)
		if err := r.scenario(ctx, res); err != nil {
			res.Error = err.Error()
			fmt.Fprintf(stderr, "benchcluster: %s: %v\n", sc, err)
		}
		if res.Error != "" || len(res.Failed) > 0 {
			failed = true
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Elapsed = time.Since(started).Round(100 * time.Millisecond).String()
	rep.Load = [2]float64{load0, proc.LoadAvg()}
	rep.print(stdout, o)
	if failed {
		return errors.New("a scenario failed or was not measured (see the table)")
	}
	return ctx.Err()
}

// marshalLine is the JSON line of the report.
func marshalLine(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}

func reportPath(dir, scenario, ext string) string {
	return filepath.Join(dir, "bench-cluster-"+scenario+"."+ext)
}
