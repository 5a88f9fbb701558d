package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/herald-rt/herald/loadgen"
)

// Exit codes.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitThresholds  = 99 // like k6: a threshold was breached
	exitInterrupted = 130
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stdout, stderr)
	case "worker":
		return workerCmd(args[1:], stderr)
	case "help", "-h", "--help", "-help":
		if len(args) > 1 {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "loadgen: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: loadgen <command> [flags]

loadgen simulates many Pusher Channels (protocol 7) clients against Herald or any
Pusher-compatible server, and reports latency, delivery and errors.

Commands:
  run      coordinate a run: spawn --workers processes (and/or wait for
           --expect-workers remote ones), print live progress and a summary,
           write --out report.json and --html report.html, check --threshold.
  worker   join a coordinator (--join host:port) and run its share.
  help     this text; "loadgen help run" lists run's flags.

Exit codes: 0 ok, 1 error, 2 usage, 99 a threshold was breached, 130 interrupted.
Example:
  loadgen run --target ws://127.0.0.1:6001 --app-id 1 --app-key k --app-secret s \
    --scenario broadcast --connections 10000 --ramp 2000 --channels 10 \
    --publish-rate 50 --duration 60s --workers 2 \
    --threshold 'p99<250ms' --threshold 'missing==0' --out report.json --html report.html
`)
}

// runOpts are run's flags that are not part of the scenario.
type runOpts struct {
	config        string
	workers       int
	expect        int
	listen        string
	sourceBase    string
	sourcesPer    int
	noSources     bool
	joinTimeout   time.Duration
	heartbeat     time.Duration
	thresholds    multiFlag
	out, html     string
	progress      string
	progressEvery time.Duration
	logLevel      string
	workerCmd     string
	cpuProfile    string
}

// rateFlag is a rate per second, or "max" (loadgen.PublishRateMax).
type rateFlag float64

func (r *rateFlag) String() string {
	if r == nil || float64(*r) == 0 {
		return "0"
	}
	if float64(*r) == loadgen.PublishRateMax {
		return "max"
	}
	return strconv.FormatFloat(float64(*r), 'g', -1, 64)
}

func (r *rateFlag) Set(v string) error {
	if v == "max" {
		*r = loadgen.PublishRateMax
		return nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return fmt.Errorf("want a rate >= 0 or max")
	}
	*r = rateFlag(f)
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runFlags binds run's flags to spec (whose current values are the defaults shown)
// and o.
func runFlags(spec *loadgen.Spec, o *runOpts, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadgen run", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.config, "config", "", "JSON scenario file (fields as in the report's scenario.params); flags given override it")
	fs.StringVar(&spec.Scenario, "scenario", spec.Scenario, "connect-and-hold, broadcast, churn, presence-storm or client-events (empty: connect-and-hold)")
	fs.StringVar(&spec.Target, "target", spec.Target, "server: ws://host:port, host:port or http://host:port (required); a comma-separated list spreads the connections over several servers (cluster nodes without a load balancer): each worker sends its connection i to server i mod n")
	fs.StringVar(&spec.PublishTarget, "publish-target", spec.PublishTarget, "where HTTP API publishes go, http://host:port (empty: the first --target)")
	fs.StringVar(&spec.AppID, "app-id", spec.AppID, "app id, for publishing through the HTTP API")
	fs.StringVar(&spec.Key, "app-key", spec.Key, "app key: clients open /app/{key} (required)")
	fs.StringVar(&spec.Secret, "app-secret", spec.Secret, "app secret: signs private/presence subscriptions and API publishes (or env LOADGEN_APP_SECRET)")
	fs.IntVar(&spec.Connections, "connections", spec.Connections, "connections to hold across all workers (0: 100)")
	fs.Float64Var(&spec.Ramp, "ramp", spec.Ramp, "connections opened per second across all workers (0: 1000)")
	fs.IntVar(&spec.ChannelsPerConn, "channels-per-conn", spec.ChannelsPerConn, "channels each connection subscribes to, K (0: 1; -1: none)")
	fs.IntVar(&spec.Channels, "channels", spec.Channels, "distinct channels, M (0: 1 for spread one, else max(K,10); presence: at most 50 members each)")
	fs.StringVar(&spec.Spread, "spread", spec.Spread, "how a connection's K channels are chosen among M: one, uniform or zipf (empty: uniform)")
	fs.Float64Var(&spec.ZipfS, "zipf-s", spec.ZipfS, "Zipf exponent, > 1 (0: 1.1); channel 0 is the hottest")
	fs.StringVar(&spec.Kind, "kind", spec.Kind, "channel kind: public, private or presence (empty: public; private for client-events; presence for presence-storm)")
	fs.StringVar(&spec.ChannelPrefix, "channel-prefix", spec.ChannelPrefix, "channel names are [private-|presence-]<prefix><n> (empty: loadgen-)")
	fs.StringVar(&spec.PublishSchedule, "publish-schedule", spec.PublishSchedule, "instead of --publish-rate: groups of requests from the start of the load phase, NxINTERVAL,...: 10x10s,10x1m is 10 publishes 10 s apart (the first at once), then 10 more a minute apart; a leading +30s, delays the first")
	fs.Var((*rateFlag)(&spec.PublishRate), "publish-rate", "HTTP API publishes (events) per second during the load phase, or max: as fast as --publish-concurrency requests in flight are answered (0: 10 for broadcast, else none)")
	fs.IntVar(&spec.PublishBatch, "publish-batch", spec.PublishBatch, "events per HTTP request: 1 posts to /events, more to /batch_events, each event on the next channel (0: 1; Pusher allows 10)")
	fs.IntVar(&spec.PublishChannels, "publish-channels", spec.PublishChannels, "publish round-robin to channels 0..n-1 (0: all M)")
	fs.IntVar(&spec.PayloadSize, "payload-size", spec.PayloadSize, "event data size in bytes, at least the seq:…:ts:…: prefix (0: 64)")
	fs.IntVar(&spec.PublishConcurrency, "publish-concurrency", spec.PublishConcurrency, "HTTP publishes in flight (0: 16)")
	fs.DurationVar((*time.Duration)(&spec.PublishDelay), "publish-delay", spec.PublishDelay.D(), "start API publishing this long after every connection is up (0: at once)")
	fs.IntVar(&spec.PublishCount, "publish-count", spec.PublishCount, "publish this many events, then end the load phase; the drain ends once each accepted one reached all its subscribers, or nothing arrived for 5s (0: no limit)")
	fs.BoolVar(&spec.PublishAwait, "publish-await", spec.PublishAwait, "closed loop: each sender waits until its event reached every subscriber before the next, so --publish-concurrency is the publishes in flight to their last delivery")
	fs.DurationVar((*time.Duration)(&spec.AwaitTimeout), "await-timeout", spec.AwaitTimeout.D(), "with --publish-await, give up on a publish's deliveries after this long, counted as await_timeout (0: 10s)")
	fs.Float64Var(&spec.ChurnRate, "churn-rate", spec.ChurnRate, "connections closed and reopened per second during the load phase (0: 10% of --connections for churn and presence-storm, else none)")
	fs.Float64Var(&spec.ClientEventRate, "client-event-rate", spec.ClientEventRate, "client events per second per connection (0: 1 for client-events, else none; the server needs client events enabled)")
	fs.DurationVar((*time.Duration)(&spec.Duration), "duration", spec.Duration.D(), "bound on the whole run, ramp included (0: 30s)")
	fs.DurationVar((*time.Duration)(&spec.Drain), "drain", spec.Drain.D(), "stop publishing this long before the end so messages can arrive (0: 2s, at most duration/3)")
	fs.DurationVar((*time.Duration)(&spec.CloseTimeout), "close-timeout", spec.CloseTimeout.D(), "bound on the close handshakes at the end (0: 5s)")
	fs.IntVar(&spec.MaxHandshakes, "max-handshakes", spec.MaxHandshakes, "handshakes in flight per worker (0: 512)")
	fs.DurationVar((*time.Duration)(&spec.ReadBatch), "read-batch", spec.ReadBatch.D(), "while busy, each worker loop reads at most once per this long, so many worker processes sharing the server's cores wake once per batch, not once per frame; adds up to this to measured latencies (0: off)")
	fs.IntVar(&spec.Loops, "loops", spec.Loops, "epoll loops per worker (0: one per CPU)")

	fs.IntVar(&o.workers, "workers", 1, "worker processes to spawn on this host (each holds at most ~19,000 connections: 20,000 open files)")
	fs.IntVar(&o.expect, "expect-workers", 0, "remote workers to wait for (started with: loadgen worker --join <--listen address>)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "where workers join the coordinator (use host:port reachable by remote workers)")
	fs.StringVar(&o.sourceBase, "source-base", "127.0.1.1", "first source address for workers when the target is on loopback: worker i binds the next --sources-per-worker addresses from here")
	fs.IntVar(&o.sourcesPer, "sources-per-worker", 1, "source addresses per worker on loopback, taken round-robin by its connections (about 9,000 connections per address keep connect() fast)")
	fs.BoolVar(&o.noSources, "no-source-ips", false, "let the kernel choose source addresses")
	fs.DurationVar(&o.joinTimeout, "join-timeout", 30*time.Second, "bound on the wait for every worker to join")
	fs.DurationVar(&o.heartbeat, "heartbeat-timeout", 5*time.Second, "a worker from which nothing arrives this long while the others are heard from is lost (10x as long: in any case)")
	fs.Var(&o.thresholds, "threshold", "pass/fail criterion, repeatable: p99<250ms, connect_p95<1s, errors<0.1%, missing==0, deliveries_per_sec>1000 (breach: exit 99)")
	fs.StringVar(&o.out, "out", "", "write the JSON report here")
	fs.StringVar(&o.html, "html", "", "write the self-contained HTML report here")
	fs.StringVar(&o.progress, "progress", "auto", "live progress: auto (a bar on a terminal, lines otherwise), bar, lines, json (one JSON object a line, about one a second, and no summary table: stdout stays JSON lines) or none")
	fs.DurationVar(&o.progressEvery, "progress-every", 5*time.Second, "interval of plain progress lines")
	fs.StringVar(&o.logLevel, "log-level", "warn", "coordinator log on stderr: debug, info, warn or error")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the coordinator's CPU profile to this file when the run ends (for go tool pprof; workers: LOADGEN_CPUPROFILE_DIR)")
	fs.StringVar(&o.workerCmd, "worker-command", "", "program to spawn as a worker (default: this executable); \"worker --join addr\" is appended")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: loadgen run [flags]\n\nRun a scenario with spawned and/or remote workers.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	// Pass 1 finds --config (and reports bad flags); pass 2 binds the flags over the
	// file's values, so that a flag given overrides the file.
	var spec loadgen.Spec
	var o runOpts
	fs := runFlags(&spec, &o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "loadgen run: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if o.config != "" {
		var err error
		if spec, err = loadgen.LoadSpec(o.config); err != nil {
			fmt.Fprintln(stderr, "loadgen run:", err)
			return exitUsage
		}
		o = runOpts{}
		fs = runFlags(&spec, &o, stderr)
		if err := fs.Parse(args); err != nil {
			return exitUsage
		}
	}
	if spec.Secret == "" {
		spec.Secret = os.Getenv("LOADGEN_APP_SECRET")
	}
	thresholds, err := loadgen.ParseThresholds(o.thresholds)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen run:", err)
		return exitUsage
	}
	base, err := netip.ParseAddr(o.sourceBase)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen run: --source-base %q: %v\n", o.sourceBase, err)
		return exitUsage
	}
	if o.sourcesPer < 1 || spec.ReadBatch < 0 {
		fmt.Fprintf(stderr, "loadgen run: --sources-per-worker must be at least 1 and --read-batch not negative (got %d, %v)\n", o.sourcesPer, spec.ReadBatch.D())
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "loadgen run: --log-level %q: %v\n", o.logLevel, err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var pp loadgen.ProgressPrinter
	switch o.progress {
	case "auto":
		f, ok := stdout.(*os.File)
		pp = loadgen.NewProgressPrinter(stdout, ok && term.IsTerminal(int(f.Fd())), o.progressEvery)
	case "bar":
		pp = loadgen.NewProgressPrinter(stdout, true, o.progressEvery)
	case "lines":
		pp = loadgen.NewProgressPrinter(stdout, false, o.progressEvery)
	case "json":
		pp = loadgen.NewJSONProgress(stdout)
	case "none":
	default:
		fmt.Fprintf(stderr, "loadgen run: --progress %q: want auto, bar, lines, json or none\n", o.progress)
		return exitUsage
	}
	cfg := loadgen.CoordinatorConfig{
		Spec: spec, Listen: o.listen, Spawn: o.workers, Expect: o.expect,
		SourceBase: base, SourcesPerWorker: o.sourcesPer, NoSources: o.noSources,
		JoinTimeout: o.joinTimeout, HeartbeatTimeout: o.heartbeat,
		WorkerOutput: stderr, Logger: log,
	}
	if o.workerCmd != "" {
		cfg.WorkerCommand = []string{o.workerCmd, "worker"}
	}
	if pp != nil {
		cfg.OnProgress = pp.Update
	}
	coord, err := loadgen.NewCoordinator(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen run:", err)
		if errors.Is(err, loadgen.ErrScenario) || errors.Is(err, loadgen.ErrNoWorkers) {
			return exitUsage
		}
		return exitError
	}
	if n := o.workers + o.expect; n > 0 && spec.Connections/n > 19000 {
		fmt.Fprintf(stderr, "loadgen: warning: %d connections per worker; a process may hold about 19,000 (open files): add --workers\n", spec.Connections/n)
	}
	if o.expect > 0 {
		fmt.Fprintf(stderr, "loadgen: waiting for %d remote workers: loadgen worker --join %s\n", o.expect, coord.Addr())
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "loadgen run: --cpuprofile:", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "loadgen run: --cpuprofile:", err)
			return exitError
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := coord.Run(ctx)
	if pp != nil {
		pp.Finish()
	}
	if rep == nil {
		fmt.Fprintln(stderr, "loadgen run:", runErr)
		if ctx.Err() != nil {
			return exitInterrupted
		}
		return exitError
	}
	loadgen.EvaluateThresholds(rep, thresholds)
	if o.progress == "json" {
		// The stream ends with the run's verdict; the full report is --out.
		_ = json.NewEncoder(stdout).Encode(map[string]any{"type": "end", "passed": rep.Passed,
			"stopped": rep.Stopped, "thresholds": rep.Thresholds, "totals": rep.Totals, "broadcasts": rep.Broadcasts})
	} else {
		_ = loadgen.WriteSummary(stdout, rep)
	}
	code := exitOK
	if err := writeReports(rep, o.out, o.html); err != nil {
		fmt.Fprintln(stderr, "loadgen run:", err)
		code = exitError
	}
	switch {
	case !rep.Passed:
		for _, t := range rep.Thresholds {
			if !t.OK {
				fmt.Fprintf(stderr, "loadgen: threshold breached: %s (measured %g)\n", t.Expr, t.Value)
			}
		}
		return exitThresholds
	case rep.Stopped == "interrupted":
		return exitInterrupted
	case runErr != nil:
		fmt.Fprintln(stderr, "loadgen run:", runErr)
		return exitError
	}
	lost := 0
	for _, w := range rep.Workers {
		if w.State != "ok" {
			lost++
		}
	}
	if lost > 0 {
		fmt.Fprintf(stderr, "loadgen run: %d of %d workers lost or failed: the figures are partial\n", lost, len(rep.Workers))
		return exitError
	}
	return code
}

func writeReports(rep *loadgen.Report, out, html string) error {
	var errs []error
	if out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(out, append(b, '\n'), 0o644)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--out: %w", err))
		}
	}
	if html != "" {
		if err := writeHTMLFile(html, rep); err != nil {
			errs = append(errs, fmt.Errorf("--html: %w", err))
		}
	}
	return errors.Join(errs...)
}

func workerCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadgen.WorkerConfig
	var logLevel string
	fs.StringVar(&cfg.Join, "join", "", "coordinator address host:port (required)")
	fs.StringVar(&cfg.Source, "source", "", "source address to bind, whatever the coordinator plans (empty: the plan's)")
	fs.DurationVar(&cfg.JoinTimeout, "join-timeout", 60*time.Second, "bound on reaching the coordinator and receiving the plan")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: loadgen worker --join host:port [flags]\n\nJoin a coordinator (loadgen run --listen ... --expect-workers N) and run its share.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if cfg.Join == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "loadgen worker: --log-level %q: %v\n", logLevel, err)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("pid", os.Getpid())
	// LOADGEN_CPUPROFILE_DIR profiles every worker, spawned ones included (they inherit
	// the environment): each writes DIR/worker-<pid>.pprof when it ends.
	if dir := os.Getenv("LOADGEN_CPUPROFILE_DIR"); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.pprof", os.Getpid())))
		if err != nil {
			fmt.Fprintln(stderr, "loadgen worker: LOADGEN_CPUPROFILE_DIR:", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "loadgen worker: cpu profile:", err)
			return exitError
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := loadgen.RunWorker(ctx, cfg); err != nil {
		if ctx.Err() != nil {
			return exitInterrupted
		}
		fmt.Fprintln(stderr, "loadgen worker:", err)
		return exitError
	}
	return exitOK
}
