package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
)

// Targets.
const (
	targetHerald   = "herald"         // one node, in-memory broker
	targetCluster  = "herald-cluster" // clusterNodes nodes joined through one redis-server
	targetRawFloor = "rawfloor"
)

// clusterNodes is the size of the herald-cluster target.
const clusterNodes = 3

var benchApp = cluster.App{ID: appID, Key: appKey, Secret: appSecret}

// deployment is one target's server side for one phase: the processes the clients
// connect to and, for herald-cluster, the redis-server that joins them. Clients are
// spread over the nodes round-robin by connection; publishes go to node 1.
type deployment struct {
	target string
	nodes  []*cluster.Node  // Admin is "" for the floor
	redis  *cluster.Cluster // herald-cluster only
}

// clientTargets is loadgen's target: every node, comma-separated (each worker
// spreads its connections over them round-robin).
func (d *deployment) clientTargets() string {
	addrs := make([]string, len(d.nodes))
	for i, n := range d.nodes {
		addrs[i] = "ws://" + n.Addr
	}
	return strings.Join(addrs, ",")
}

// publishAddr is node 1's public address: every publish goes through it.
func (d *deployment) publishAddr() string { return d.nodes[0].Addr }

// isFloor reports whether the deployment is the raw floor (no admin port, no close
// handshake).
func (d *deployment) isFloor() bool { return d.target == targetRawFloor }

// stop ends every process by PID (SIGTERM, then SIGKILL), the redis-server last.
func (d *deployment) stop() {
	if d.redis != nil {
		d.redis.Stop()
		return
	}
	for _, n := range d.nodes {
		n.Stop(5 * time.Second)
	}
}

// cpu is the CPU time the nodes have used, summed.
func (d *deployment) cpu() (time.Duration, error) {
	var total time.Duration
	for _, n := range d.nodes {
		c, err := proc.ReadCPU(n.PID())
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}

// rss is the nodes' VmRSS, summed.
func (d *deployment) rss() (int64, error) {
	var total int64
	for _, n := range d.nodes {
		r, err := proc.ReadRSS(n.PID())
		if err != nil {
			return 0, err
		}
		total += r
	}
	return total, nil
}

// heap is the nodes' Go heap in use after a GC, summed (herald only).
func (d *deployment) heap(ctx context.Context) (int64, error) {
	var total int64
	for _, n := range d.nodes {
		h, err := heapInuse(ctx, n.Admin)
		if err != nil {
			return 0, err
		}
		total += h
	}
	return total, nil
}

// counters sums Herald's metrics over the nodes.
func (d *deployment) counters(ctx context.Context) (cluster.Metrics, error) {
	out := cluster.Metrics{}
	for _, n := range d.nodes {
		m, err := cluster.Scrape(ctx, n.Admin)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

// startDeployment starts target's processes for phase. On failure everything it
// started is stopped.
func (r *runner) startDeployment(ctx context.Context, target, phase string) (*deployment, error) {
	d := &deployment{target: target}
	switch target {
	case targetRawFloor:
		port, err := proc.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := proc.Start(ctx, targetRawFloor, filepath.Join(r.dir, "rawfloor"),
			[]string{"--addr", addr, "--channel", channel},
			filepath.Join(r.dir, targetRawFloor+"-"+phase+".log"), "rawfloor: serving", 20*time.Second)
		if err != nil {
			return nil, err
		}
		d.nodes = []*cluster.Node{{Process: p, Addr: addr}}
	case targetHerald:
		n, err := cluster.StartHerald(ctx, filepath.Join(r.dir, "herald"), r.dir, target+"-"+phase, benchApp, nil)
		if err != nil {
			return nil, err
		}
		d.nodes = []*cluster.Node{n}
	case targetCluster:
		c, err := cluster.Start(ctx, cluster.Config{
			Herald: filepath.Join(r.dir, "herald"), Dir: r.dir, Name: target + "-" + phase,
			Nodes: clusterNodes, App: benchApp,
		})
		if err != nil {
			return nil, err
		}
		d.nodes, d.redis = c.Nodes, c
	default:
		return nil, fmt.Errorf("benchrun: unknown target %q", target)
	}
	return d, nil
}
