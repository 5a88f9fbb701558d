// Command bench1m holds a million WebSocket connections on one machine, all on
// loopback, and reports what it reached, what it cost and where it stopped
// (`make bench-1m`; never part of `make test`). BENCH-1M.md in bench/ explains the
// set-up and records the figures.
//
// One process may open at most 20,000 files on the machines Herald is measured on, so
// a million connections need many processes on each side:
//
//   - hubs: H herald processes sharing one port with --reuseport (SO_REUSEPORT: the
//     kernel hashes each new connection's 4-tuple to one of the listeners), each with
//     its own admin port and --node-id, and --max-connections below the file limit;
//   - workers: W client worker processes (bench/cmd/benchclient, one loadgen.Pool
//     each, driven with package worker's line protocol), each with an exact share of
//     the connections and its own source addresses in 127.0.0.0/8, so that no source
//     address runs out of ephemeral ports (about 28,000 per source address to one
//     destination).
//
// It checks the OS limits first (--dry-run stops there), builds herald and
// benchclient into a temporary directory, starts the processes, then ramps: each step
// dials --step more connections spread over the workers (at most --handshakes in
// flight over all of them), waits until every one is established or has failed, and
// prints what is held, the step's rate, the RSS of all hubs and all workers
// (/proc/<pid>/status), MemAvailable and where the CPU went (/proc/<pid>/stat,
// /proc/stat). Connections a hub refused (4100 over
// capacity, when the kernel's hash sent it more than its share) are dialed again in the
// next step. The ramp stops when the target is held, or when a step fails beyond
// --max-fail, makes no progress, times out, or MemAvailable would fall under
// --mem-floor. The peak is held for --hold while the sum of the hubs' /stats
// connections is checked; then every worker closes its connections (close
// handshake, bounded), the workers and hubs are stopped, and a table is printed.
//
// With --client loadgen the hubs are the same, but the client side is one `loadgen
// run` process (cmd/loadgen: the product's coordinator, which spawns --workers
// worker processes with one source address each), started with a connect-and-hold
// scenario, thresholds and --out/--html, followed through its progress lines and the
// hubs' /stats, and read from its report (lgclient.go).
//
// Every child is started with Pdeathsig and tracked by PID; every wait is bounded;
// SIGINT and SIGTERM end the run, which kills the workers by PID at once and sends the
// hubs SIGTERM, then SIGKILL after 2 s, and still prints what was measured. Only
// loopback addresses are accepted.
//
// Every goroutine it starts (one per process or call in flight, the hubs' output
// copiers and reapers, the memory watcher) is waited for by the function that started
// it, except a hub's copier and reaper, which end with the process and are waited for
// through its done channel.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/herald-rt/herald/bench/proc"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// perProcess is the number of sockets one process is planned for when --hubs or
// --workers is 0: under the 20,000-file limit with room for the reuseport hash's
// unevenness (about ±1% at this size), the process's own files and refused
// connections in flight.
const perProcess = 18500

// perSourceLoadgen is the connections per loadgen worker (and so per source
// address) when --client loadgen and --workers is 0: as many as each of the
// benchclients' two addresses carries.
const perSourceLoadgen = 9100

type options struct {
	conns         int
	hubs          int
	workers       int
	hubMax        int
	step          int
	handshakes    int
	hold          time.Duration
	holdEvery     time.Duration
	stepTimeout   time.Duration
	closeTimeout  time.Duration
	timeout       time.Duration
	maxFail       float64
	memFloor      int64 // bytes
	host          netip.Addr
	port          int
	srcBase       netip.Addr
	srcsPerWorker int
	channel       string
	loops         int
	gomaxprocs    int
	dryRun        bool
	force         bool
	keep          bool
	goBin         string

	// --client loadgen: the client side is one `loadgen run` (cmd/loadgen).
	client     string
	lgRamp     float64
	lgDuration time.Duration
}

const (
	clientBench   = "bench"
	clientLoadgen = "loadgen"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench1m:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("bench1m: bad flags")

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var host, srcBase string
	var memFloorGiB float64
	fs := flag.NewFlagSet("bench1m", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.conns, "conns", 1_000_000, "connections to hold")
	fs.IntVar(&o.hubs, "hubs", 0, "herald processes sharing one port with --reuseport (0: conns/18,500 rounded up)")
	fs.IntVar(&o.workers, "workers", 0, "client worker processes (0: conns/18,500 rounded up; with --client loadgen conns/9,100, one source address each)")
	fs.IntVar(&o.hubMax, "hub-max-connections", 19400, "each herald's --max-connections (past it: 4100, and the ramp dials again)")
	fs.IntVar(&o.step, "step", 50_000, "connections dialed per ramp step, over all workers")
	fs.IntVar(&o.handshakes, "handshakes", 1000, "handshakes in flight at most, over all workers")
	fs.DurationVar(&o.hold, "hold", 30*time.Second, "how long the peak is held and checked")
	fs.DurationVar(&o.holdEvery, "hold-every", 5*time.Second, "how often the hold is checked")
	fs.DurationVar(&o.stepTimeout, "step-timeout", 2*time.Minute, "longest a ramp step may take")
	fs.DurationVar(&o.closeTimeout, "close-timeout", 2*time.Minute, "longest the workers' close handshakes may take at the end")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "longest the whole run may take")
	fs.Float64Var(&o.maxFail, "max-fail", 0.01, "the ramp stops after a step where more than this fraction of dials failed")
	fs.Float64Var(&memFloorGiB, "mem-floor", 3, "GiB: the ramp stops if MemAvailable falls (or would fall) under this")
	fs.StringVar(&host, "host", "127.0.0.1", "loopback address the hubs listen on")
	fs.IntVar(&o.port, "port", 0, "port the hubs share (0: a free one)")
	fs.StringVar(&srcBase, "src-base", "127.20.0.1", "first source address of the workers; each takes --srcs-per-worker in turn (last octets 0 and 255 skipped)")
	fs.IntVar(&o.srcsPerWorker, "srcs-per-worker", 2, "source addresses per worker")
	fs.StringVar(&o.channel, "channel", "bench1m", "public channel every connection subscribes to (\"\": none)")
	fs.IntVar(&o.loops, "loops", 1, "epoll loops per herald and per worker")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS of every child (0: the Go default, one per CPU)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "only check and print the OS limits and the plan")
	fs.BoolVar(&o.force, "force", false, "run even if a check fails")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries and logs)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	fs.StringVar(&o.client, "client", clientBench, "client side: bench (benchclient workers driven step by step) or loadgen (one `loadgen run` process with --workers workers, one source address each)")
	fs.Float64Var(&o.lgRamp, "lg-ramp", 4000, "--client loadgen: loadgen's --ramp, connections per second over all its workers")
	fs.DurationVar(&o.lgDuration, "lg-duration", 0, "--client loadgen: loadgen's --duration (0: 2 x conns/lg-ramp + hold + 30 s)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var err error
	if o.host, err = netip.ParseAddr(host); err != nil || !o.host.Is4() || !o.host.IsLoopback() {
		return o, fmt.Errorf("%w: --host %q: want an IPv4 loopback address (127.0.0.0/8)", errUsage, host)
	}
	if o.srcBase, err = netip.ParseAddr(srcBase); err != nil || !o.srcBase.Is4() || !o.srcBase.IsLoopback() {
		return o, fmt.Errorf("%w: --src-base %q: want an IPv4 loopback address (127.0.0.0/8)", errUsage, srcBase)
	}
	o.memFloor = int64(memFloorGiB * (1 << 30))
	switch o.client {
	case clientBench:
	case clientLoadgen:
		// loadgen gives each worker one source address (--source-base, in turn).
		o.srcsPerWorker = 1
		if o.lgRamp <= 0 || o.lgDuration < 0 {
			return o, fmt.Errorf("%w: --lg-ramp must be positive and --lg-duration not negative", errUsage)
		}
		if o.lgDuration == 0 {
			o.lgDuration = time.Duration(2*float64(o.conns)/o.lgRamp*float64(time.Second)) + o.hold + 30*time.Second
			o.lgDuration = o.lgDuration.Round(time.Second)
		}
	default:
		return o, fmt.Errorf("%w: --client %q: want bench or loadgen", errUsage, o.client)
	}
	if o.hubs == 0 {
		o.hubs = ceilDiv(o.conns, perProcess)
	}
	if o.workers == 0 {
		o.workers = ceilDiv(o.conns, perProcess)
		if o.client == clientLoadgen {
			// loadgen binds each worker to one source address; past about 9,000
			// connections per (source, destination) the 1M run stalled in connect().
			o.workers = ceilDiv(o.conns, perSourceLoadgen)
		}
	}
	switch {
	case o.conns < 1 || o.hubs < 1 || o.workers < 1 || o.workers > o.conns:
		return o, fmt.Errorf("%w: need conns >= workers >= 1 and hubs >= 1", errUsage)
	case o.step < 1 || o.handshakes < o.workers || o.hubMax < 1 || o.srcsPerWorker < 1 || o.loops < 1:
		return o, fmt.Errorf("%w: need step, hub-max-connections, srcs-per-worker, loops >= 1 and handshakes >= workers", errUsage)
	case o.port < 0 || o.port > 65535:
		return o, fmt.Errorf("%w: --port %d", errUsage, o.port)
	case o.hold < 0 || o.holdEvery <= 0 || o.stepTimeout <= 0 || o.closeTimeout <= 0 || o.timeout <= 0 || o.maxFail < 0:
		return o, fmt.Errorf("%w: durations and --max-fail must be positive", errUsage)
	}
	if _, err := sourceAddrs(o.srcBase, o.workers*o.srcsPerWorker); err != nil {
		return o, err
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	checks := checkOS(o)
	printChecks(stdout, o, checks)
	failed := failedChecks(checks)
	if o.dryRun {
		if failed != "" {
			return fmt.Errorf("dry run: failed checks: %s", failed)
		}
		return nil
	}
	if failed != "" && !o.force {
		return fmt.Errorf("failed checks: %s (fix them as printed, lower --conns, or run with --force)", failed)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "herald-bench1m-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "bench1m: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	clientPkg := struct{ out, pkg string }{"benchclient", "./bench/cmd/benchclient"}
	if o.client == clientLoadgen {
		clientPkg.out, clientPkg.pkg = "loadgen", "./cmd/loadgen"
	}
	fmt.Fprintf(stderr, "bench1m: building herald and %s\n", clientPkg.out)
	if err := build(ctx, o.goBin, dir, clientPkg.out, clientPkg.pkg); err != nil {
		return err
	}

	if o.gomaxprocs > 0 { // read by every child's runtime at start-up
		if err := os.Setenv("GOMAXPROCS", strconv.Itoa(o.gomaxprocs)); err != nil {
			return err
		}
	}
	r := &runner{o: o, dir: dir, out: stdout, log: stderr}
	var res *result
	if o.client == clientLoadgen {
		res = r.runLoadgen(ctx)
	} else {
		res = r.run(ctx)
	}
	res.Command = "go run ./bench/cmd/bench1m" + proc.QuoteArgs(args)
	res.Elapsed = time.Since(r.started).Round(100 * time.Millisecond).String()
	res.print(stdout)
	if res.Reached < int64(o.conns) {
		return fmt.Errorf("held %d of %d connections: %s", res.Reached, o.conns, res.Stopped)
	}
	if res.HoldNote != "" {
		return fmt.Errorf("hold: %s", res.HoldNote)
	}
	if lg := res.Loadgen; lg != nil && lg.ExitCode != 0 {
		return fmt.Errorf("loadgen run exited with code %d (%s)", lg.ExitCode, lg.exitMeaning())
	}
	return nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// sourceAddrs returns n consecutive addresses from base, skipping those whose last
// octet is 0 or 255, all inside 127.0.0.0/8.
func sourceAddrs(base netip.Addr, n int) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, n)
	a := base
	for len(out) < n {
		if !a.IsValid() || !a.Is4() || !a.IsLoopback() {
			return nil, fmt.Errorf("%w: %d source addresses from %s leave 127.0.0.0/8", errUsage, n, base)
		}
		if b := a.As4(); b[3] != 0 && b[3] != 255 {
			out = append(out, a)
		}
		a = a.Next()
	}
	return out, nil
}
