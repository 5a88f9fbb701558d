// Command benchburst measures what gathering (transport/gather.go: one writev per
// connection per loop turn) and the overload policy (hub/overload.go) change, against
// today's code in the same run: `make bench-burst` runs it, and `make bench` calls
// that.
//
// Two targets, each one herald node (in-memory broker) on loopback:
//
//   - today: herald built from -baseline (default dc108f2, the last commit before
//     gathering), extracted with `git archive` into the temporary directory;
//   - gathered: herald built from this tree.
//
// Both are started first; then every scenario runs on one target and then on the
// other, so that both see the same machine. Each scenario is one run of loadgen,
// the product's load generator, in-process (package bench/lgrun: -workers spawned
// `loadgen worker` processes) with -conns subscribers of one channel, and its
// figures come from loadgen's report (publishes followed to their last delivery,
// --publish-count) plus the server's /metrics and /proc:
//
//  1. rate R (R in -rates, default 1, 10 and 100 publishes per second): one publisher
//     sends R × -duration publishes sequentially, one request at a time, on a
//     schedule of R per second (loadgen --publish-rate R --publish-concurrency 1
//     --publish-count); a publish answered 503 (server busy) is not retried (it is
//     what the publisher was told), one answered otherwise is an error, one the
//     schedule called for while the previous was unanswered is not sent (overrun,
//     noted). Then it waits until every accepted publish is delivered, or nothing
//     has arrived for 5 s (at most -drain). Reported: publishes accepted and
//     refused, deliveries per second (deliveries ÷ time from the first publish to
//     the last delivery), publish-to-delivery p50, p99 and max, the server's peak
//     RSS over the publishing and the drain, the deliveries the server counted as
//     dropped (herald_dropped_total{reason="delivery_*"}), and the unaccounted ones:
//     accepted × subscribers − delivered − dropped, which must be 0.
//  2. burst: -burst publishes back to back (each sent when the previous one was
//     answered: --publish-rate max), -bursts times: deliveries per second and
//     publish-to-delivery p50, p99 and max; the median burst is reported, the
//     target being gathered ≥ 1.5 × today.
//
// Every process it starts is stopped by PID when it ends, on failure, and on Ctrl-C;
// everything listens on 127.0.0.1. It prints a table and a JSON line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/lgrun"
	"github.com/herald-rt/herald/bench/proc"
)

type options struct {
	conns    int
	workers  int
	rates    []float64
	duration time.Duration
	drain    time.Duration
	burst    int
	bursts   int
	payload  int
	baseline string
	targets  []string
	keep     bool
	goBin    string
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "benchburst:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	o := options{}
	var rates, targets string
	fs := flag.NewFlagSet("benchburst", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.conns, "conns", 15000, "subscribers of the one channel, per target")
	fs.IntVar(&o.workers, "workers", 2, "client worker processes per target")
	fs.StringVar(&rates, "rates", "1,10,100", "publish rates to measure, per second, comma-separated")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each rate is offered")
	fs.DurationVar(&o.drain, "drain", 3*time.Minute, "how long to wait after a scenario for its deliveries")
	fs.IntVar(&o.burst, "burst", 100, "publishes per burst")
	fs.IntVar(&o.bursts, "bursts", 3, "bursts per target (the median is reported)")
	fs.IntVar(&o.payload, "payload", 100, "event data bytes")
	fs.StringVar(&o.baseline, "baseline", "dc108f2", "git revision of today's code (built with git archive)")
	fs.StringVar(&targets, "targets", "today,gathered", "targets, comma-separated: today, gathered")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binaries and server logs)")
	fs.StringVar(&o.goBin, "go", proc.EnvOr("GO", "go"), "go command used to build")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("-rates: bad rate %q", s)
		}
		o.rates = append(o.rates, r)
	}
	o.targets = strings.Split(targets, ",")
	if o.workers < 1 || o.conns < o.workers || o.burst < 1 || o.bursts < 1 {
		return errors.New("need conns >= workers >= 1, burst >= 1, bursts >= 1")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 40*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "herald-burst-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "benchburst: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	started := time.Now()
	load0 := proc.LoadAvg()
	bins, err := build(ctx, o, dir, stderr)
	if err != nil {
		return err
	}
	r := &runner{o: o, dir: dir, log: stderr,
		lg: &lgrun.Runner{Loadgen: filepath.Join(dir, "loadgen"), Log: stderr}}
	var ts []*target
	defer func() {
		for _, t := range ts {
			t.stop()
		}
	}()
	for _, name := range o.targets {
		bin, ok := bins[name]
		if !ok {
			return fmt.Errorf("unknown target %q", name)
		}
		t, err := r.start(ctx, name, bin)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		ts = append(ts, t)
	}
	rep := &report{
		Command: "go run ./bench/cmd/benchburst" + proc.QuoteArgs(args),
		Machine: fmt.Sprintf("nproc=%d, %s, %s", runtime.NumCPU(), goVersion(ctx, o.goBin), kernel()),
		Conns:   o.conns,
		Targets: o.targets,
	}
	for _, rate := range o.rates {
		for _, t := range ts {
			fmt.Fprintf(stderr, "benchburst: %s: %g publishes/s for %v\n", t.name, rate, o.duration)
			f, err := r.rate(ctx, t, rate)
			if err != nil {
				return fmt.Errorf("%s, rate %g: %w", t.name, rate, err)
			}
			rep.add(fmt.Sprintf("rate %g/s", rate), t.name, f)
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
		}
	}
	for i := range o.bursts {
		for _, t := range ts {
			fmt.Fprintf(stderr, "benchburst: %s: burst %d of %d publishes\n", t.name, i+1, o.burst)
			f, err := r.burst(ctx, t)
			if err != nil {
				return fmt.Errorf("%s, burst %d: %w", t.name, i+1, err)
			}
			rep.addBurst(t.name, f)
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
		}
	}
	rep.Elapsed = time.Since(started).Round(100 * time.Millisecond).String()
	rep.Load = [2]float64{load0, proc.LoadAvg()}
	rep.print(stdout)
	return nil
}

// build compiles loadgen and the gathered herald from this tree, and today's
// herald from o.baseline (git archive into dir/baseline), into dir.
func build(ctx context.Context, o options, dir string, log io.Writer) (map[string]string, error) {
	root, err := proc.ModuleRoot(ctx, o.goBin)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(log, "benchburst: building loadgen and herald (this tree)")
	if err := proc.Build(ctx, o.goBin, root, dir, "loadgen", "./cmd/loadgen"); err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for _, t := range o.targets {
		switch t {
		case "gathered":
			if err := proc.Build(ctx, o.goBin, root, dir, "herald-gathered", "./cmd/herald"); err != nil {
				return nil, err
			}
			bins[t] = filepath.Join(dir, "herald-gathered")
		case "today":
			fmt.Fprintf(log, "benchburst: building herald at %s (today's code) from git archive\n", o.baseline)
			src := filepath.Join(dir, "baseline")
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, err
			}
			cmd := exec.CommandContext(ctx, "sh", "-c", `git archive "$1" | tar -x -C "$2"`, "sh", o.baseline, src)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("git archive %s: %w\n%s", o.baseline, err, out)
			}
			if err := proc.Build(ctx, o.goBin, src, dir, "herald-today", "./cmd/herald"); err != nil {
				return nil, err
			}
			bins[t] = filepath.Join(dir, "herald-today")
		}
	}
	return bins, nil
}

func goVersion(ctx context.Context, goBin string) string {
	out, err := exec.CommandContext(ctx, goBin, "version").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(strings.TrimPrefix(string(out), "go version "))
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "linux"
	}
	return "linux " + strings.TrimSpace(string(b))
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
