package main

// The hubs form one cluster through Redis: one redis-server (--redis single) or a
// 3-master Redis Cluster (--redis cluster), started by the run on free loopback
// ports, with nothing kept on disk, and stopped by PID at the end.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/bench/proc"
)

// redisFleet is the redis-server processes of a run (none with --redis none).
type redisFleet struct {
	mode  string
	procs []*proc.Process
	addrs []string // host:port of each
}

// clusterMasters is the size of the Redis Cluster of --redis cluster.
const clusterMasters = 3

// startRedis starts what mode needs and, for a cluster, joins it and waits until
// its state is ok (bounded).
func startRedis(ctx context.Context, mode, dir string) (*redisFleet, error) {
	f := &redisFleet{mode: mode}
	if mode == redisNone {
		return f, nil
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return f, fmt.Errorf("bench1m: redis-server is not on PATH (apt-get install redis-server): %w", err)
	}
	n := 1
	if mode == redisCluster {
		n = clusterMasters
	}
	for i := range n {
		port, err := freePort("127.0.0.1")
		if err != nil {
			return f, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--protected-mode", "no", "--daemonize", "no", "--dir", dir, "--logfile", ""}
		if mode == redisCluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-node-timeout", "5000",
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("redis-nodes-%d.conf", port)))
		}
		name := fmt.Sprintf("redis-%d", i)
		p, err := proc.Start(ctx, name, bin, args, filepath.Join(dir, name+".log"), "Ready to accept connections", startTimeout)
		if err != nil {
			return f, err
		}
		f.procs = append(f.procs, p)
		f.addrs = append(f.addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	if mode == redisCluster {
		if err := f.joinCluster(ctx); err != nil {
			return f, err
		}
	}
	return f, nil
}

// joinCluster runs redis-cli --cluster create over the servers (no replicas) and
// waits up to 30 s for cluster_state:ok on every one.
func (f *redisFleet) joinCluster(ctx context.Context) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("bench1m: redis-cli is not on PATH (apt-get install redis-tools): %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, f.addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("bench1m: redis-cli --cluster create: %w\n%s", err, out)
	}
	for {
		ok := 0
		for _, a := range f.addrs {
			host, port, _ := strings.Cut(a, ":")
			out, err := exec.CommandContext(cctx, cli, "-h", host, "-p", port, "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				ok++
			}
		}
		if ok == len(f.addrs) {
			return nil
		}
		if err := sleep(cctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("bench1m: the Redis Cluster did not reach cluster_state:ok within 30 s")
		}
	}
}

// heraldArgs are the flags that join a hub to the cluster.
func (f *redisFleet) heraldArgs() []string {
	switch {
	case f == nil || len(f.addrs) == 0:
		return nil
	case f.mode == redisCluster:
		return []string{"--redis-cluster", strings.Join(f.addrs, ","), "--redis-prefix", "bench1m"}
	}
	return []string{"--redis", "redis://" + f.addrs[0], "--redis-prefix", "bench1m"}
}

// pids are the live redis-servers' PIDs.
func (f *redisFleet) pids() []int {
	if f == nil {
		return nil
	}
	var out []int
	for _, p := range f.procs {
		if !p.Exited() {
			out = append(out, p.PID())
		}
	}
	return out
}

// exited names a redis-server that has died, "" if none has.
func (f *redisFleet) exited() string {
	if f == nil {
		return ""
	}
	for _, p := range f.procs {
		if p.Exited() {
			return fmt.Sprintf("%s exited: %v (log %s)", p.Name, p.Err(), p.Log)
		}
	}
	return ""
}

// usedMemory is the sum of INFO memory's used_memory over the servers (Redis's own
// allocation, without the allocator's overhead), 0 if unknown.
func (f *redisFleet) usedMemory(ctx context.Context) int64 {
	if f == nil || len(f.addrs) == 0 {
		return 0
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return 0
	}
	var sum int64
	for _, a := range f.addrs {
		host, port, _ := strings.Cut(a, ":")
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, cli, "-h", host, "-p", port, "info", "memory").Output()
		cancel()
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// stop ends every redis-server (SIGTERM, SIGKILL after 5 s).
func (f *redisFleet) stop() {
	if f == nil {
		return
	}
	for _, p := range f.procs {
		p.Stop(5 * time.Second)
	}
}
