// Command bench1m holds a million WebSocket connections on one machine, all on
// loopback, as one Herald cluster, broadcasts to all of them, and reports what it
// reached, what it cost and where it stopped (`make bench-1m`; never part of `make
// test`). BENCH-1M.md in bench/ explains the set-up and records the figures.
//
// One process may open at most 20,000 files on the machines Herald is measured on, so
// a million connections need many processes on each side:
//
//   - hubs: H herald processes sharing one port with --reuseport (SO_REUSEPORT: the
//     kernel hashes each new connection's 4-tuple to one of the listeners), each with
//     its own admin port and --node-id, and --max-connections below the file limit,
//     joined into one cluster through a redis-server the run starts on a free
//     loopback port (--redis single; --redis cluster: three redis-servers joined
//     into a 3-master Redis Cluster with redis-cli --cluster create);
//   - the client: one `loadgen run` (cmd/loadgen, the product's load generator),
//     whose coordinator spawns --workers worker processes, each with its share of
//     the connections and its own source address in 127.0.0.0/8.
//
// It checks the OS limits first (--dry-run stops there), builds herald and loadgen
// into a temporary directory, starts redis and the hubs, then loadgen with a
// broadcast scenario: a ramp at --lg-ramp to --conns connections subscribed to one
// channel (or to --channels with Zipf popularity), then a publish schedule (the
// --hold, then --broadcasts through one node's HTTP API, then one a minute for
// --broadcast-hold) and thresholds that decide loadgen's exit code (nothing lost,
// missing or duplicated, no error, every broadcast complete). It follows loadgen
// through its JSON progress stream (--progress json) and the hubs' /stats, prints a
// line every --hold-every, measures memory (/proc: RSS of every process, MemAvailable,
// slab, sockstat) at the end of the hold, samples CPU (also redis's), and at the end
// reads loadgen's JSON report (broadcast completion) and copies its HTML report.
//
// Every child is started with Pdeathsig and tracked by PID; every wait is bounded;
// SIGINT and SIGTERM end the run, which stops loadgen (SIGINT, then SIGKILL by PID
// for it and its workers), the hubs (SIGTERM, then SIGKILL) and redis, and still
// prints what was measured. Only loopback addresses are accepted.
//
// Every goroutine it starts (one per process or call in flight, the output copiers
// and reapers, the memory watcher) is waited for by the function that started it,
// except a process's copier and reaper, which end with the process and are waited for
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
	"strings"
	"syscall"
	"time"
)

// perProcess is the number of sockets one process is planned for when --hubs or
// --workers is 0: under the 20,000-file limit with room for the reuseport hash's
// unevenness (about ±1% at this size), the process's own files and refused
// connections in flight.
const perProcess = 18500

// perSourceLoadgen is the connections per source address when --workers is 0: at
// about 14,000 per (source, destination) the ramp stalled in connect(). A worker
// binds --sources-per-worker addresses, so it holds that many times as many.
const perSourceLoadgen = 9100

type options struct {
	conns        int
	hubs         int
	workers      int
	srcPer       int // source addresses per worker
	hubMax       int
	handshakes   int
	hold         time.Duration
	holdEvery    time.Duration
	stepTimeout  time.Duration
	closeTimeout time.Duration
	timeout      time.Duration
	memFloor     int64 // bytes
	host         netip.Addr
	port         int
	srcBase      netip.Addr
	channel      string
	channels     int    // 1: every connection on one channel; more: zipf
	spread       string // one or zipf
	loops        int
	gomaxprocs   int
	dryRun       bool
	force        bool
	keep         bool
	goBin        string

	redis         string        // none, single or cluster
	broadcasts    string        // the first group of broadcasts, NxINTERVAL
	broadcastHold time.Duration // then one broadcast a minute for this long

	lgRamp     float64
	readBatch  time.Duration
	lgDuration time.Duration
	lgProfile  string // loadgen run --cpuprofile: the coordinator's CPU profile

	scale  []int  // --scale: one run per size, smallest first
	outDir string // where the reports are copied
	// The sizes as given (0: derived from --conns).
	askedWorkers int
	askedLgDur   time.Duration
}

// Redis modes.
const (
	redisNone    = "none"
	redisSingle  = "single"
	redisCluster = "cluster"
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
	fs.IntVar(&o.workers, "workers", 0, "loadgen worker processes (0: conns/(9,100 x sources-per-worker), and at least conns/18,500, rounded up)")
	fs.IntVar(&o.srcPer, "sources-per-worker", 2, "loadgen's --sources-per-worker: source addresses per worker, about 9,000 connections each")
	fs.IntVar(&o.hubMax, "hub-max-connections", 19400, "each herald's --max-connections (past it: 4100)")
	fs.IntVar(&o.handshakes, "handshakes", 1000, "handshakes in flight at most, over all workers")
	fs.DurationVar(&o.hold, "hold", 30*time.Second, "how long the peak is held before the first broadcast; memory is measured at its end")
	fs.DurationVar(&o.holdEvery, "hold-every", 5*time.Second, "how often the run is checked and a line printed")
	fs.DurationVar(&o.stepTimeout, "step-timeout", 2*time.Minute, "longest the ramp may go without progress")
	fs.DurationVar(&o.closeTimeout, "close-timeout", 2*time.Minute, "loadgen's --close-timeout: its close handshakes at the end")
	fs.DurationVar(&o.timeout, "timeout", 40*time.Minute, "longest the whole run may take")
	fs.Float64Var(&memFloorGiB, "mem-floor", 3, "GiB: the run stops if MemAvailable falls under this")
	fs.StringVar(&host, "host", "127.0.0.1", "loopback address the hubs listen on")
	fs.IntVar(&o.port, "port", 0, "port the hubs share (0: a free one)")
	fs.StringVar(&srcBase, "src-base", "127.20.0.1", "first source address of the workers, --sources-per-worker each in turn (last octets 0 and 255 skipped)")
	fs.StringVar(&o.channel, "channel", "bench1m", "channel name prefix: every connection subscribes to <channel>-0, or with --channels M to one of <channel>-0..M-1")
	fs.IntVar(&o.channels, "channels", 1, "channels: 1 (every connection on one) or more, chosen with Zipf popularity (--spread zipf)")
	fs.IntVar(&o.loops, "loops", 1, "epoll loops per herald and per worker")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "GOMAXPROCS of every child (0: the Go default, one per CPU)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "only check and print the OS limits and the plan")
	fs.BoolVar(&o.force, "force", false, "run even if a check fails")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries and logs)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	fs.StringVar(&o.redis, "redis", redisSingle, "how the hubs form one cluster: single (one redis-server, herald --redis), cluster (a 3-master Redis Cluster, herald --redis-cluster) or none (independent hubs: a broadcast reaches one hub's share)")
	fs.StringVar(&o.broadcasts, "broadcasts", "10x10s", "the first broadcasts after the hold, NxINTERVAL (through one node's HTTP API)")
	fs.DurationVar(&o.broadcastHold, "broadcast-hold", 10*time.Minute, "then hold this long with one broadcast a minute (0: none)")
	fs.Float64Var(&o.lgRamp, "lg-ramp", 4000, "loadgen's --ramp, connections per second over all its workers")
	fs.DurationVar(&o.readBatch, "read-batch", 5*time.Millisecond, "loadgen's --read-batch: while busy, a worker reads at most once per this long (0: a wake-up per frame)")
	fs.DurationVar(&o.lgDuration, "lg-duration", 0, "loadgen's --duration (0: 1.5 x conns/lg-ramp + hold + broadcasts + 75 s)")
	fs.StringVar(&o.lgProfile, "lg-cpuprofile", "", "write loadgen's coordinator CPU profile to this file (loadgen run --cpuprofile)")
	var scale string
	fs.StringVar(&scale, "scale", "", "run once per size, e.g. 100k,250k,500k,1m, on the hub count of the largest, and write how memory and broadcast completion grow (a table, and bin/bench1m-scale.{json,html} with charts); --conns is then the largest")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var err error
	if scale != "" {
		if o.scale, err = parseScale(scale); err != nil {
			return o, err
		}
		o.conns = o.scale[len(o.scale)-1]
	}
	o.outDir = "bin"
	if o.host, err = netip.ParseAddr(host); err != nil || !o.host.Is4() || !o.host.IsLoopback() {
		return o, fmt.Errorf("%w: --host %q: want an IPv4 loopback address (127.0.0.0/8)", errUsage, host)
	}
	if o.srcBase, err = netip.ParseAddr(srcBase); err != nil || !o.srcBase.Is4() || !o.srcBase.IsLoopback() {
		return o, fmt.Errorf("%w: --src-base %q: want an IPv4 loopback address (127.0.0.0/8)", errUsage, srcBase)
	}
	o.memFloor = int64(memFloorGiB * (1 << 30))
	switch o.redis {
	case redisNone, redisSingle, redisCluster:
	default:
		return o, fmt.Errorf("%w: --redis %q: want single, cluster or none", errUsage, o.redis)
	}
	o.spread = "one"
	if o.channels > 1 {
		o.spread = "zipf"
	}
	if o.lgRamp <= 0 || o.lgDuration < 0 || o.broadcastHold < 0 {
		return o, fmt.Errorf("%w: --lg-ramp must be positive, --lg-duration and --broadcast-hold not negative", errUsage)
	}
	if _, err := o.broadcastSpan(); err != nil {
		return o, err
	}
	if o.srcPer < 1 {
		return o, fmt.Errorf("%w: --sources-per-worker must be at least 1", errUsage)
	}
	o.askedWorkers, o.askedLgDur = o.workers, o.lgDuration
	return o.sized(o.conns)
}

// sized derives what depends on the connection count for n connections (loadgen's
// duration and the worker count, unless given; the hub count once, unless given,
// so that every size of --scale runs on the same hubs), and checks the result.
func (o options) sized(n int) (options, error) {
	o.conns = n
	o.lgDuration, o.workers = o.askedLgDur, o.askedWorkers
	span, err := o.broadcastSpan()
	if err != nil {
		return o, err
	}
	if o.lgDuration == 0 {
		o.lgDuration = time.Duration(1.5*float64(o.conns)/o.lgRamp*float64(time.Second)) + o.hold + span + lgDrain + 60*time.Second
		o.lgDuration = o.lgDuration.Round(time.Second)
	}
	if o.hubs == 0 {
		o.hubs = ceilDiv(o.conns, perProcess)
	}
	if o.workers == 0 {
		// Past about 9,000 connections per (source, destination) the 1M run
		// stalled in connect(); fewer worker processes deliver a broadcast faster
		// (each wakes for more frames at once), down to the file limit.
		o.workers = max(ceilDiv(o.conns, perSourceLoadgen*o.srcPer), ceilDiv(o.conns, perProcess))
	}
	switch {
	case o.conns < 1 || o.hubs < 1 || o.workers < 1 || o.workers > o.conns:
		return o, fmt.Errorf("%w: need conns >= workers >= 1 and hubs >= 1", errUsage)
	case o.handshakes < o.workers || o.hubMax < 1 || o.loops < 1 || o.channels < 1:
		return o, fmt.Errorf("%w: need hub-max-connections, loops, channels >= 1 and handshakes >= workers", errUsage)
	case o.port < 0 || o.port > 65535:
		return o, fmt.Errorf("%w: --port %d", errUsage, o.port)
	case o.hold < 0 || o.holdEvery <= 0 || o.stepTimeout <= 0 || o.closeTimeout <= 0 || o.timeout <= 0:
		return o, fmt.Errorf("%w: durations must be positive", errUsage)
	}
	if _, err := sourceAddrs(o.srcBase, o.workers*o.srcPer); err != nil {
		return o, err
	}
	return o, nil
}

// lgDrain is loadgen's --drain: the last broadcast's deliveries arrive before the end.
const lgDrain = 15 * time.Second

// schedule is loadgen's --publish-schedule: the hold, the first broadcasts, then
// one a minute over --broadcast-hold.
func (o options) schedule() string {
	s := "+" + o.hold.String() + "," + o.broadcasts
	if n := int(o.broadcastHold / time.Minute); n > 0 {
		s += "," + strconv.Itoa(n) + "x1m"
	}
	return s
}

// broadcastSpan is how long the broadcasts take after the hold, up to the last.
func (o options) broadcastSpan() (time.Duration, error) {
	n, every, ok := strings.Cut(o.broadcasts, "x")
	k, err := strconv.Atoi(n)
	d, derr := time.ParseDuration(every)
	if !ok || err != nil || derr != nil || k < 1 || d <= 0 {
		return 0, fmt.Errorf("%w: --broadcasts %q: want NxINTERVAL, e.g. 10x10s", errUsage, o.broadcasts)
	}
	return time.Duration(k-1)*d + (o.broadcastHold/time.Minute)*time.Minute, nil
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
	fmt.Fprintln(stderr, "bench1m: building herald and loadgen")
	if err := build(ctx, o.goBin, dir); err != nil {
		return err
	}

	if o.gomaxprocs > 0 { // read by every child's runtime at start-up
		if err := os.Setenv("GOMAXPROCS", strconv.Itoa(o.gomaxprocs)); err != nil {
			return err
		}
	}
	command := "go run ./bench/cmd/bench1m" + proc.QuoteArgs(args)
	if len(o.scale) > 0 {
		return runScale(ctx, o, dir, command, stdout, stderr)
	}
	r := &runner{o: o, dir: dir, out: stdout, log: stderr}
	res := r.runLoadgen(ctx)
	res.Command = command
	res.Elapsed = time.Since(r.started).Round(100 * time.Millisecond).String()
	res.print(stdout)
	return verdict(o, res)
}

// verdict is the run's error: the target not held, a hold note, or loadgen's exit.
func verdict(o options, res *result) error {
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
