// Command benchcluster measures a Herald cluster under load through the product's
// load generator (`make bench-cluster`, part of `make bench`): 3 herald nodes joined
// through one redis-server, with `loadgen run` spreading its connections over the
// three nodes (--target a,b,c: connection i of each worker to node i mod 3) and
// publishing through node 1's HTTP API. Two scenarios:
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
//
// The redis-server's and the nodes' CPU (from /proc/<pid>/stat) and the nodes'
// counters (/metrics) are sampled every 500 ms while loadgen runs, and the figures
// are taken over the load phase (from loadgen's per-second series), away from the
// ramp and the final close.
//
// It builds herald and loadgen into a temporary directory. Every process it starts
// (redis-server, nodes, loadgen and, through loadgen, its workers) is stopped by PID
// on success, failure and Ctrl-C; every wait is bounded; everything listens on
// 127.0.0.1. It prints a table and a JSON line, writes loadgen's JSON and HTML
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
	fs.StringVar(&scenarios, "scenarios", "throughput,presence", "scenarios to run, comma-separated: throughput, presence")
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
	fs.StringVar(&o.outDir, "out-dir", "", "write loadgen's reports here (bench-cluster-<scenario>.json and .html); default: the temporary directory")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs, reports)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if s != scThroughput && s != scPresence {
				return fmt.Errorf("unknown scenario %q (throughput, presence)", s)
			}
			o.scenarios = append(o.scenarios, s)
		}
	}
	if o.nodes < 1 || o.channels < 1 || o.subscribers < 1 || o.presConns < 1 || o.batch < 1 || o.duration < 6*time.Second {
		return errors.New("need nodes, channels, subscribers, presence-connections, batch >= 1 and duration >= 6s")
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
