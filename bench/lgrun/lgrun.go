// Package lgrun is how Herald's benchmarks load a server: through loadgen, the
// product's load generator, run in-process (loadgen.Coordinator) with spawned
// `loadgen worker` processes, and read back through its Report, never through its
// printed lines.
//
// Runner.RunNotify runs one scenario to its end, telling the caller when its load
// phase begins. Runner.Run with a during function holds
// the connections once they are all up (the load phase) and calls during; when
// during returns, the run is stopped and its Report returned, so a benchmark can
// read the server's memory, or drive a second run, while the connections are held.
//
// Every run gets its own source addresses (127.0.N.1, … for the N-th run from
// 127.0.10.1 on), so that successive runs never meet each other's TIME_WAIT
// sockets. Worker processes are loadgen's: started, stopped and, if need be,
// killed by PID by the coordinator; their output goes to Runner.Log.
//
// Concurrency: a Runner may run several scenarios at once (each Run owns its
// coordinator and workers); during runs on its own goroutine, which Run waits for.
package lgrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/herald-rt/herald/loadgen"
)

// ErrRun: the run did not produce a report.
var ErrRun = errors.New("lgrun: run failed")

// Runner runs loadgen scenarios with the loadgen binary at Loadgen.
type Runner struct {
	// Loadgen is the loadgen executable; workers run "Loadgen worker --join …".
	Loadgen string
	// Log receives the workers' output and the coordinator's warnings.
	Log io.Writer

	mu   sync.Mutex // guards next
	next int
}

// firstSourceNet is N of the first run's source addresses 127.0.N.1.
const firstSourceNet = 10

// sourceBase returns a fresh 127.0.N.1 for a run.
func (r *Runner) sourceBase() (netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := firstSourceNet + r.next
	if n > 254 {
		return netip.Addr{}, fmt.Errorf("%w: out of source addresses in 127.0.0.0/16", ErrRun)
	}
	r.next++
	return netip.AddrFrom4([4]byte{127, 0, byte(n), 1}), nil
}

// Run runs spec with workers spawned worker processes. If during is not nil, it
// is called once the load phase begins (every connection up) and the run is
// stopped when it returns; its error is returned with the report. The report is
// returned whenever the run began; the error says what went wrong.
func (r *Runner) Run(ctx context.Context, spec loadgen.Spec, workers int, during func(ctx context.Context) error) (*loadgen.Report, error) {
	return r.run(ctx, spec, workers, during, true)
}

// RunNotify runs spec to its end, calling onLoad (if not nil) once the load phase
// begins; the run goes on whatever onLoad does, and its error is returned with the
// report.
func (r *Runner) RunNotify(ctx context.Context, spec loadgen.Spec, workers int, onLoad func(ctx context.Context) error) (*loadgen.Report, error) {
	return r.run(ctx, spec, workers, onLoad, false)
}

func (r *Runner) run(ctx context.Context, spec loadgen.Spec, workers int, during func(ctx context.Context) error, stopAfter bool) (*loadgen.Report, error) {
	base, err := r.sourceBase()
	if err != nil {
		return nil, err
	}
	log := r.Log
	if log == nil {
		log = io.Discard
	}
	loaded := make(chan struct{})
	var once sync.Once
	cfg := loadgen.CoordinatorConfig{
		Spec: spec, Spawn: workers, WorkerCommand: []string{r.Loadgen, "worker"}, WorkerOutput: log,
		SourceBase: base,
		Logger:     slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnProgress: func(p loadgen.Progress) {
			if p.Phase == "load" || p.Phase == "drain" {
				once.Do(func() { close(loaded) })
			}
		},
	}
	c, err := loadgen.NewCoordinator(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRun, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var duringErr error
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if stopAfter {
				defer stop() // the hold ends with during
			}
			select {
			case <-loaded:
				duringErr = during(runCtx)
			case <-runCtx.Done():
				duringErr = fmt.Errorf("%w: the run ended before its load phase", ErrRun)
			}
		}()
	}
	rep, err := c.Run(runCtx)
	stop()
	wg.Wait()
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrRun, err)
	}
	if rep == nil && err == nil {
		err = fmt.Errorf("%w: no report", ErrRun)
	}
	return rep, errors.Join(err, duringErr)
}
