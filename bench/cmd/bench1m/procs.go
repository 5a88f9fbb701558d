package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/herald-rt/herald/bench/proc"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/worker"
)

const (
	appID     = "1"
	appKey    = "bench1m-key"
	appSecret = "bench1m-secret"

	startTimeout = 20 * time.Second // a hub's "serving" line
	hubDrain     = 5 * time.Second  // herald --shutdown-timeout
	stopGrace    = hubDrain + 10*time.Second
	startWorkers = 8 // processes started at once
)

// build compiles herald and the client program (benchclient or loadgen) into dir.
func build(ctx context.Context, goBin, dir, clientOut, clientPkg string) error {
	root, err := proc.ModuleRoot(ctx, goBin)
	if err != nil {
		return err
	}
	if err := proc.Build(ctx, goBin, root, dir, "herald", "./cmd/herald"); err != nil {
		return err
	}
	return proc.Build(ctx, goBin, root, dir, clientOut, clientPkg)
}

// hub is one herald process.
type hub struct {
	*proc.Process
	idx   int
	admin string // admin ip:port
}

func (h *hub) pid() int                  { return h.PID() }
func (h *hub) exited() bool              { return h.Exited() }
func (h *hub) signal(sig syscall.Signal) { h.Signal(sig) }
func (h *hub) wait(d time.Duration)      { h.Wait(d) }
func (h *hub) get(ctx context.Context, path string) ([]byte, error) {
	return proc.Get(ctx, h.admin, path)
}

// startHub runs herald and waits (bounded) for its "serving" line.
func startHub(ctx context.Context, bin string, args []string, idx int, admin, logPath string) (*hub, error) {
	p, err := proc.Start(ctx, fmt.Sprintf("hub %d", idx), bin, args, logPath, " serving ", startTimeout)
	if err != nil {
		return nil, err
	}
	return &hub{Process: p, idx: idx, admin: admin}, nil
}

// hubStats is the part of herald's /stats document the run reads.
type hubStats struct {
	Node struct {
		Connections int64  `json:"connections"`
		ErrorCloses uint64 `json:"error_closes"`
		Transport   struct {
			Accepted        uint64 `json:"accepted"`
			Upgraded        uint64 `json:"upgraded"`
			HandshakeFailed uint64 `json:"handshake_failed"`
			Open            int64  `json:"open"`
		} `json:"transport"`
	} `json:"node"`
}

func (h *hub) stats(ctx context.Context) (hubStats, error) {
	var st hubStats
	b, err := h.get(ctx, "/stats")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// heapInuse asks for a GC and the heap profile's text form, whose runtime.MemStats
// section holds HeapInuse. (Not /metrics: its process collector lists /proc/self/fd,
// which makes the kernel build a proc inode and a dentry for each of 19,000 sockets.)
func (h *hub) heapInuse(ctx context.Context) (int64, error) {
	b, err := h.get(ctx, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("bench1m: hub %d: no HeapInuse in the heap profile", h.idx)
}

// client is one worker process and its share of the connections.
type client struct {
	idx   int
	w     *worker.Worker
	share int64  // connections it holds at the peak
	asked int64  // connections asked of it so far (Counts.Dialed once it has dialed them)
	log   string // its stderr
	logf  *os.File
	last  counts // latest counts read
}

// counts is loadgen.Counts with the derived values the ramp uses.
type counts struct {
	Dialed, Established, Subscribed, Failed, Closed int64
}

func (c counts) open() int64     { return c.Established - c.Closed }
func (c counts) inFlight() int64 { return c.Dialed - c.Established - c.Failed }

// fleet is every process of a run.
type fleet struct {
	hubs    []*hub
	clients []*client
	lg      *lgProc // --client loadgen
}

// workerPids returns the workers' PIDs: with --client loadgen, the loadgen
// coordinator's and its worker processes'.
func (f *fleet) workerPids() []int {
	if f.lg != nil {
		return f.lg.pids()
	}
	var out []int
	for _, c := range f.clients {
		out = append(out, c.w.Pid())
	}
	return out
}

// forEach runs fn for every index in [0, n) with at most par at once and returns
// the errors joined.
func forEach(n, par int, fn func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func freePort(host string) (int, error) { return proc.FreePort(host) }

// startHubs starts o.hubs herald processes sharing addr.
func (r *runner) startHubs(ctx context.Context, addr string) error {
	hubs := make([]*hub, r.o.hubs)
	err := forEach(r.o.hubs, startWorkers, func(i int) error {
		var lastErr error
		for range 3 { // an admin port taken between freePort and herald's bind: try another
			aport, err := freePort(r.o.host.String())
			if err != nil {
				return err
			}
			admin := net.JoinHostPort(r.o.host.String(), strconv.Itoa(aport))
			args := []string{
				"--addr", addr, "--reuseport", "--admin-addr", admin,
				"--node-id", strconv.Itoa(i + 1), "--max-connections", strconv.Itoa(r.o.hubMax),
				"--app-id", appID, "--app-key", appKey, "--app-secret", appSecret,
				"--loops", strconv.Itoa(r.o.loops), "--log-level", "warn",
				"--shutdown-timeout", hubDrain.String(),
			}
			h, err := startHub(ctx, filepath.Join(r.dir, "herald"), args, i, admin,
				filepath.Join(r.dir, fmt.Sprintf("herald-%02d.log", i)))
			if err == nil {
				hubs[i] = h
				return nil
			}
			lastErr = err
			if ctx.Err() != nil {
				break
			}
		}
		return lastErr
	})
	for _, h := range hubs {
		if h != nil {
			r.fleet.hubs = append(r.fleet.hubs, h)
		}
	}
	return err
}

// startClients starts o.workers worker processes with their source addresses and
// shares.
func (r *runner) startClients(ctx context.Context, addr string) error {
	srcs, err := sourceAddrs(r.o.srcBase, r.o.workers*r.o.srcsPerWorker)
	if err != nil {
		return err
	}
	hs := max(r.o.handshakes/r.o.workers, 1)
	clients := make([]*client, r.o.workers)
	err = forEach(r.o.workers, startWorkers, func(i int) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var src []string
		for _, a := range srcs[i*r.o.srcsPerWorker : (i+1)*r.o.srcsPerWorker] {
			src = append(src, a.String())
		}
		args := []string{"--addr", addr, "--key", appKey, "--secret", appSecret,
			"--src", strings.Join(src, ","), "--handshakes", strconv.Itoa(hs), "--loops", strconv.Itoa(r.o.loops)}
		if r.o.channel != "" {
			args = append(args, "--channel", r.o.channel)
		}
		logPath := filepath.Join(r.dir, fmt.Sprintf("worker-%02d.log", i))
		logf, err := os.Create(logPath)
		if err != nil {
			return err
		}
		w, err := worker.Start(filepath.Join(r.dir, "benchclient"), args, logf)
		if err != nil {
			logf.Close()
			return err
		}
		share := int64(r.o.conns / r.o.workers)
		if i < r.o.conns%r.o.workers {
			share++
		}
		clients[i] = &client{idx: i, w: w, share: share, log: logPath, logf: logf}
		// A worker answers once its pool runs: that bounds its start.
		cctx, cancel := context.WithTimeout(ctx, startTimeout)
		defer cancel()
		if _, err := w.Call(cctx, worker.Request{Op: "delivered"}); err != nil {
			return fmt.Errorf("%w: worker %d: %w (log %s)", proc.ErrStart, i, err, logPath)
		}
		return nil
	})
	for _, c := range clients {
		if c != nil {
			r.fleet.clients = append(r.fleet.clients, c)
		}
	}
	return err
}

// stopAll ends every process: workers first (their connections closed with a close
// handshake if handshake is set, bounded by --close-timeout), then hubs (SIGTERM:
// herald drains what is left with 4200; SIGKILL after stopGrace). It returns how long
// the close handshakes took and how many workers did not finish them in time (their
// remaining sockets are closed without one).
func (r *runner) stopAll(ctx context.Context, handshake bool) (closed time.Duration, cut int) {
	start := time.Now()
	if handshake && ctx.Err() == nil {
		var mu sync.Mutex
		_ = forEach(len(r.fleet.clients), len(r.fleet.clients)+1, func(i int) error {
			c := r.fleet.clients[i]
			sctx, cancel := context.WithTimeout(ctx, r.o.closeTimeout+10*time.Second)
			defer cancel()
			_, err := c.w.Call(sctx, worker.Request{Op: "shutdown", TimeoutMS: r.o.closeTimeout.Milliseconds()})
			if err != nil {
				mu.Lock()
				cut++
				mu.Unlock()
			}
			return err
		})
		closed = time.Since(start)
	}
	grace := 5 * time.Second
	if ctx.Err() != nil {
		grace = 0 // interrupted: SIGKILL at once
	}
	_ = forEach(len(r.fleet.clients), len(r.fleet.clients)+1, func(i int) error {
		c := r.fleet.clients[i]
		err := c.w.Close(grace)
		c.logf.Close()
		return err
	})
	for _, h := range r.fleet.hubs {
		h.signal(syscall.SIGTERM)
	}
	g := stopGrace
	if ctx.Err() != nil {
		g = 2 * time.Second
	}
	deadline := time.Now().Add(g)
	for _, h := range r.fleet.hubs {
		h.wait(max(time.Until(deadline), 0))
	}
	return closed, cut
}
