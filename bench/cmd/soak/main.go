// Command soak runs Herald for a long time under a steady mixed load and checks that
// nothing grows without bound (`make soak`, never part of `make test`): one hour by
// default, -duration for shorter runs (`make soak ARGS="--duration 10m"`).
//
// It starts a redis-server and three herald nodes joined through it (bench/cluster),
// then, all at once for -duration:
//
//   - four `loadgen run` processes in parallel, each spreading its connections over
//     the three nodes (loadgen takes one scenario and one channel kind per run, so a
//     mix is several runs): "quiet", a broadcast on public channels whose
//     subscribers never churn, published to at a steady rate through node 1 (its
//     missing and duplicated counts are exact: the check); "churn", public channels
//     with connections closed and reopened every second and broadcasts on them;
//     "presence", a presence storm (joins and leaves every second) whose members
//     also send client events; "client-events", private channels whose members send
//     client events;
//   - a slow consumer (slow.go): a client with a small receive buffer that subscribes
//     to a channel fed with large events and stops reading, until the node cuts it
//     off (herald_connections_closed_total{reason="slow_consumer"} on its node goes
//     up); it then reads what is left to see how it was closed, and starts again on
//     the next node;
//   - a reconnecting client (slow.go): connect, subscribe (a public or a presence
//     channel, in turn), close (a close handshake or a dropped socket, in turn),
//     again, in a loop.
//
// Every -sample-every it reads each node's RSS (/proc/PID/status), open fds
// (/proc/PID/fd) and, from /metrics, go_goroutines, the Go heap, connections,
// channels and subscriptions (sample.go). Before the load it samples the idle
// cluster, and after it, once every client has gone, the idle cluster again.
//
// At the end it checks (verdict.go), per node: RSS and goroutines over the last
// -window of the load within -tolerance (±10%) of their level over the -window
// after -warmup; fds not grown (the fds beyond the WebSocket connections no more
// than 10 above their warm-up level); and, for the cluster: 0 missing and 0
// duplicated on the quiet channels; every loadgen run completed; the slow consumer
// cut off; the reconnecting client's failures under 1%; and no connection, channel
// or subscription left on any node once every client has gone. It writes soak.json
// and soak.html (the samples over the hour, with the windows marked, and the
// checks) and each loadgen run's own JSON and HTML report to -out-dir, prints a
// table, and exits 1 when a check failed.
//
// Every process it starts (redis-server, nodes, loadgen and their workers) is
// stopped by PID on success, failure and Ctrl-C, and dies with it (Pdeathsig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
)

const (
	appID     = "1"
	appKey    = "soak-key"
	appSecret = "soak-secret"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	window      time.Duration
	sampleEvery time.Duration
	idle        time.Duration
	tolerance   float64
	scale       float64
	outDir      string
	keep        bool
	goBin       string
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", time.Hour, "how long the load runs (the whole soak takes about a minute more)")
	fs.DurationVar(&o.warmup, "warmup", 0, "time from the load's start to the reference window (0: a tenth of -duration, from 1m to 5m)")
	fs.DurationVar(&o.window, "window", 0, "length of the reference window after the warm-up and of the final window, whose means are compared (0: a twelfth of -duration, from 1m to 5m)")
	fs.DurationVar(&o.sampleEvery, "sample-every", 5*time.Second, "how often each node's RSS, fds and metrics are read")
	fs.DurationVar(&o.idle, "idle", 15*time.Second, "how long the idle cluster is sampled before and after the load")
	fs.Float64Var(&o.tolerance, "tolerance", 0.10, "allowed relative change of RSS and goroutines between the two windows")
	fs.Float64Var(&o.scale, "scale", 1, "multiplies the connections and rates of the load (1: about 2,500 connections; the host has few CPUs)")
	fs.StringVar(&o.outDir, "out-dir", "", "write soak.json, soak.html and loadgen's reports here (default: the temporary directory, kept)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries, logs)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.warmup == 0 {
		o.warmup = min(5*time.Minute, max(time.Minute, o.duration/10))
	}
	if o.window == 0 {
		o.window = min(5*time.Minute, max(time.Minute, o.duration/12))
	}
	switch {
	case o.sampleEvery <= 0 || o.scale <= 0 || o.tolerance <= 0:
		return o, errors.New("-sample-every, -scale and -tolerance must be > 0")
	case o.window < 3*o.sampleEvery:
		return o, fmt.Errorf("-window %v holds fewer than 3 samples of -sample-every %v", o.window, o.sampleEvery)
	case o.duration < o.warmup+2*o.window+endMargin:
		return o, fmt.Errorf("-duration %v is shorter than -warmup %v, two -window %v and %v: shorten them too", o.duration, o.warmup, o.window, endMargin)
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.duration+2*o.idle+10*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "herald-soak-")
	if err != nil {
		return err
	}
	switch {
	case o.keep || o.outDir == "":
		fmt.Fprintln(stderr, "soak: keeping", dir)
	default:
		defer os.RemoveAll(dir)
	}
	if o.outDir == "" {
		o.outDir = dir
	} else if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "soak: building herald and loadgen")
	root, err := proc.ModuleRoot(ctx, o.goBin)
	if err != nil {
		return err
	}
	for _, b := range [][2]string{{"herald", "./cmd/herald"}, {"loadgen", "./cmd/loadgen"}} {
		if err := proc.Build(ctx, o.goBin, root, dir, b[0], b[1]); err != nil {
			return err
		}
	}
	fmt.Fprintln(stderr, "soak: starting redis-server and 3 herald nodes")
	c, err := cluster.Start(ctx, cluster.Config{
		Herald: filepath.Join(dir, "herald"), Dir: dir, Name: "soak", Nodes: 3,
		App:   cluster.App{ID: appID, Key: appKey, Secret: appSecret},
		Extra: []string{"--client-events"},
	})
	if err != nil {
		return err
	}
	defer c.Stop()

	rep := &report{
		Command:  "go run ./bench/cmd/soak" + proc.QuoteArgs(args),
		NProc:    runtime.NumCPU(),
		Started:  time.Now(),
		Duration: o.duration.String(),
		Warmup:   o.warmup.String(),
		Window:   o.window.String(),
		Load0:    proc.LoadAvg(),
	}
	for _, n := range c.Nodes {
		rep.Nodes = append(rep.Nodes, nodeInfo{Name: n.Name, Addr: n.Addr, Admin: n.Admin, PID: n.PID()})
	}
	smp := startSampler(ctx, c, rep.Started, o.sampleEvery)
	defer smp.stop()

	fmt.Fprintf(stderr, "soak: sampling the idle cluster for %v\n", o.idle)
	sleepCtx(ctx, o.idle)
	rep.LoadStart = time.Since(rep.Started).Seconds()
	fmt.Fprintf(stderr, "soak: load for %v: %d loadgen runs, a slow consumer and a reconnecting client\n", o.duration, len(loadRuns(o)))
	lr := runLoad(ctx, o, dir, c, stderr)
	rep.LoadEnd = time.Since(rep.Started).Seconds()
	rep.Runs, rep.Slow, rep.Reconnect = lr.runs, lr.slow, lr.reconnect

	fmt.Fprintln(stderr, "soak: load over; waiting for every client to be gone, then sampling the idle cluster")
	rep.Leftover = waitEmpty(ctx, c, 60*time.Second)
	rep.IdleAfterStart = time.Since(rep.Started).Seconds()
	sleepCtx(ctx, o.idle)
	rep.Samples = smp.stop()
	rep.Ended = time.Now()
	rep.Load1 = proc.LoadAvg()
	rep.NodeLogs = logSizes(c)

	rep.evaluate(o)
	if err := rep.write(o.outDir); err != nil {
		return err
	}
	rep.print(stdout)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if rep.Failed() {
		return errors.New("a check failed (see the table and soak.html)")
	}
	return nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// logSizes are the nodes' log sizes in bytes: warnings that repeat per event would
// show here.
func logSizes(c *cluster.Cluster) []int64 {
	out := make([]int64, len(c.Nodes))
	for i, n := range c.Nodes {
		if st, err := os.Stat(n.Log); err == nil {
			out[i] = st.Size()
		}
	}
	return out
}
