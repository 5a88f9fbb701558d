// Command benchrun produces Herald's load figures (`make bench` runs it after the Go
// benchmarks): memory per idle connection, fan-out latency and throughput, and
// WebSocket upgrades per second, each measured against Herald on one node, against
// a Herald cluster, and against the raw write floor (bench/cmd/rawfloor) in the same
// run, all on loopback.
//
// Targets (-targets, default all three):
//
//   - herald: one node with the in-memory broker.
//   - herald-cluster: 3 herald nodes joined through one redis-server that benchrun
//     starts (free loopback port, --save "" --appendonly no). Each client worker
//     spreads its connections round-robin over the 3 nodes (connection i to node
//     i mod 3, so a third each), and every publish goes through node 1's HTTP API.
//     Memory and server CPU are summed over the nodes; it adds the redis-server's
//     CPU per delivery and per publish (from /proc/<pid>/stat), and the broker
//     messages per second (the nodes' herald_broker_*_messages_total, and PUBLISH
//     commands as Redis counts them).
//   - rawfloor: the least a server can do (one pre-built frame, write(2) per socket).
//
// It builds herald, rawfloor and loadgen into a temporary directory. Every client
// connection is loadgen's: runs of the product's load generator in-process
// (package bench/lgrun: loadgen.Coordinator with -workers spawned `loadgen worker`
// processes, each on fresh source addresses in 127.0.0.0/8), whose figures come
// from loadgen's Report. For each target:
//
//  1. starts the server(s), reads their VmRSS (and, for Herald, the Go heap in use
//     from the admin port's /metrics after a GC);
//  2. hold: -conns connections subscribed to one channel, opened at once with at
//     most -handshakes in flight; once all are up, after -idle, reads the server's
//     memory again: growth per connection; the client's is the workers' own
//     reading after a GC, before their first dial and once all were up (loadgen's
//     mem_start and mem_load) (scenario a);
//  3. probe (herald targets only), while those connections stay idle: a second
//     loadgen run of 3 connections on their own channel (one per node for the
//     cluster), -probes publishes one at a time, each waiting for its 3
//     deliveries: publish-to-delivery with a small fan-out, where what the
//     cluster adds is its hop through Redis rather than 15,000 writes shared by
//     more processes than cores (the floor writes every publish to every socket);
//  4. latency mode: a loadgen run of -publishes closed-loop publishes, one in
//     flight (--publish-await, --publish-count): publish to last delivery (loadgen's
//     completion) and publish to each delivery. Publishing starts -idle after every
//     connection is up (--publish-delay), Herald's garbage collected meanwhile, as
//     the old single run did between its memory reading and its publishes;
//  5. throughput mode: a loadgen run with -window closed-loop publishes in flight
//     for about -throughput: deliveries per second from the first publish to the
//     last delivery (loadgen's completion), and the CPU the servers and the client
//     workers used over that span (/proc, sampled every 20 ms) per delivery
//     (scenario b). The floor gets a fresh process for each of these runs;
//  6. starts fresh servers and opens -conns connections with at most -handshakes
//     in flight, no channel: upgrades per second (loadgen's connect rate over its
//     ramp) and socket() to connection_established (scenario c).
//
// The table puts one node and the cluster side by side: cluster deliveries/s ÷
// one-node deliveries/s (target >= 0.9) and the publish-to-delivery p50 the cluster
// adds (target <= 1 ms), in latency mode and in the probe.
//
// Every process it starts is stopped by PID (SIGTERM, then SIGKILL) when its phase
// ends, on failure, and on Ctrl-C; every wait is bounded; everything listens on
// 127.0.0.1. It prints a table and a JSON line and exits 1 if a target could not be
// measured.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herald-rt/herald/bench/lgrun"
	"github.com/herald-rt/herald/bench/proc"
)

type options struct {
	conns      int
	workers    int
	loops      int
	handshakes int
	publishes  int
	probes     int
	window     int
	payload    int
	idle       time.Duration
	throughput time.Duration
	targets    []string
	keep       bool
	goBin      string
}

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	o := options{}
	var targets string
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.conns, "conns", 15000, "connections per scenario")
	fs.IntVar(&o.workers, "workers", 1, "loadgen worker processes (each holds conns/workers sockets; keep under ~19,000 each)")
	fs.IntVar(&o.loops, "loops", 0, "epoll loops per worker (0: one per CPU)")
	fs.IntVar(&o.handshakes, "handshakes", 512, "handshakes in flight at most, over all workers")
	fs.IntVar(&o.publishes, "publishes", 100, "latency mode: publishes, each waiting for all deliveries")
	fs.IntVar(&o.probes, "probes", 200, "probe: publishes to a channel of 3 subscribers (one per cluster node), one at a time (0: no probe)")
	fs.IntVar(&o.window, "window", 4, "throughput mode: publishes in flight")
	fs.IntVar(&o.payload, "payload", 100, "event data bytes")
	fs.DurationVar(&o.idle, "idle", 5*time.Second, "idle time before the memory reading, and before publishing in the latency and throughput runs")
	fs.DurationVar(&o.throughput, "throughput", 5*time.Second, "throughput mode duration (about: the load phase of its loadgen run)")
	fs.StringVar(&targets, "targets", "herald,herald-cluster,rawfloor", "targets to measure, comma-separated: herald (one node), herald-cluster (3 nodes and a redis-server), rawfloor")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries and server logs)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.targets = strings.Split(targets, ",")
	if o.workers < 1 || o.conns < o.workers || o.window < 1 || o.publishes < 1 {
		return errors.New("need conns >= workers >= 1, window >= 1, publishes >= 1")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "herald-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "benchrun: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	started := time.Now()
	load0 := proc.LoadAvg()
	fmt.Fprintln(stderr, "benchrun: building herald, rawfloor and loadgen")
	heraldErr, err := build(ctx, o.goBin, dir)
	if err != nil {
		return err
	}

	r := &runner{o: o, dir: dir, log: stderr,
		lg: &lgrun.Runner{Loadgen: filepath.Join(dir, "loadgen"), Log: stderr}}
	var results []*figures
	failed := false
	for _, t := range o.targets {
		f := &figures{Target: t, Conns: o.conns}
		results = append(results, f)
		if (t == targetHerald || t == targetCluster) && heraldErr != nil {
			f.Error = heraldErr.Error()
			failed = true
			continue
		}
		if t != targetHerald && t != targetCluster && t != targetRawFloor {
			f.Error = "unknown target"
			failed = true
			continue
		}
		if err := r.measure(ctx, f); err != nil {
			f.Error = err.Error()
			failed = true
			fmt.Fprintf(stderr, "benchrun: %s: %v\n", t, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep := report{
		Command: "go run ./bench/cmd/benchrun" + proc.QuoteArgs(args),
		Machine: machine(ctx, o.goBin),
		Options: o,
		Results: results,
		Elapsed: time.Since(started).Round(100 * time.Millisecond).String(),
		Load:    [2]float64{load0, proc.LoadAvg()},
	}
	rep.print(stdout)
	if failed {
		return errors.New("some figures are missing (see the table)")
	}
	return ctx.Err()
}

// machineInfo describes where the figures were taken.
type machineInfo struct {
	NProc     int    `json:"nproc"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	NoFile    uint64 `json:"nofile"`
}

func machine(ctx context.Context, goBin string) machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, goBin, "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(strings.TrimPrefix(string(out), "go version "))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		m.NoFile = rl.Cur
	}
	return m
}

// marshalLine is the JSON line of the report.
func marshalLine(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}
