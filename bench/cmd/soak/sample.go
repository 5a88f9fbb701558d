package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
)

// Sample is one reading of every node.
type Sample struct {
	T     float64      `json:"t"` // seconds since the soak started
	Nodes []NodeSample `json:"nodes"`
	// RedisRSS is the redis-server's VmRSS, bytes (-1 when unread).
	RedisRSS int64 `json:"redis_rss"`
}

// NodeSample is one node's figures; -1 where a reading failed.
type NodeSample struct {
	RSS           int64   `json:"rss"` // VmRSS, bytes
	FDs           int     `json:"fds"` // entries of /proc/PID/fd
	Goroutines    float64 `json:"goroutines"`
	HeapInuse     float64 `json:"heap_inuse"` // go_memstats_heap_inuse_bytes
	Connections   float64 `json:"connections"`
	Channels      float64 `json:"channels"`
	Subscriptions float64 `json:"subscriptions"`
}

type sampler struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []Sample
}

// startSampler reads every node every `every` until stop.
func startSampler(ctx context.Context, c *cluster.Cluster, t0 time.Time, every time.Duration) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			x := readSample(ctx, c, t0)
			s.mu.Lock()
			s.samples = append(s.samples, x)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the samples (again on later calls).
func (s *sampler) stop() []Sample {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

func readSample(ctx context.Context, c *cluster.Cluster, t0 time.Time) Sample {
	x := Sample{T: time.Since(t0).Seconds(), RedisRSS: -1}
	if v, err := proc.ReadRSS(c.Redis.PID()); err == nil {
		x.RedisRSS = v
	}
	for _, n := range c.Nodes {
		ns := NodeSample{RSS: -1, FDs: -1, Goroutines: -1, HeapInuse: -1, Connections: -1, Channels: -1, Subscriptions: -1}
		if v, err := proc.ReadRSS(n.PID()); err == nil {
			ns.RSS = v
		}
		if v, err := countFDs(n.PID()); err == nil {
			ns.FDs = v
		}
		sctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		if m, err := cluster.Scrape(sctx, n.Admin); err == nil {
			ns.Goroutines, ns.HeapInuse = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
			ns.Connections, ns.Channels, ns.Subscriptions = m["herald_connections"], m["herald_channels"], m["herald_subscriptions"]
		}
		cancel()
		x.Nodes = append(x.Nodes, ns)
	}
	return x
}

// countFDs counts the open file descriptors of process pid.
func countFDs(pid int) (int, error) {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}
