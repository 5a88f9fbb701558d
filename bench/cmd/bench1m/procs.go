package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/herald-rt/herald/bench/proc"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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

// build compiles herald and loadgen into dir.
func build(ctx context.Context, goBin, dir string) error {
	root, err := proc.ModuleRoot(ctx, goBin)
	if err != nil {
		return err
	}
	if err := proc.Build(ctx, goBin, root, dir, "herald", "./cmd/herald"); err != nil {
		return err
	}
	return proc.Build(ctx, goBin, root, dir, "loadgen", "./cmd/loadgen")
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

// fleet is every process of a run.
type fleet struct {
	hubs  []*hub
	lg    *lgProc
	redis *redisFleet
}

// workerPids returns the loadgen coordinator's and its worker processes' PIDs.
func (f *fleet) workerPids() []int {
	if f.lg != nil {
		return f.lg.pids()
	}
	return nil
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
			args = append(args, r.fleet.redis.heraldArgs()...)
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

// stopHubs ends the hubs (SIGTERM: herald drains what is left with 4200 and
// leaves the cluster; SIGKILL after stopGrace, 2 s when interrupted).
func (r *runner) stopHubs(ctx context.Context) {
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
}
