// Package cluster starts Herald clusters for the benchmarks: one redis-server on a
// free loopback port (nothing kept on disk) and N herald nodes joined through it,
// each on its own public and admin port on 127.0.0.1. It also reads what the
// benchmarks report about them: the nodes' CPU and RSS from /proc, their metrics
// from the admin port (summed over labels and nodes), and the redis-server's CPU
// and command counts.
//
// Entry points: Start (a cluster, waiting until every node counts every other),
// StartRedis and StartHerald (one process), Cluster.Stop, Scrape (metrics summed by
// name), ScrapeSeries, Cluster.SumBy and Cluster.Histogram (metrics by label, and
// histograms with their quantiles), RedisCommandCalls.
//
// Concurrency: a Cluster's methods may be called from any goroutine; Stop must be
// called once, after which the others fail. Every wait is bounded, and the processes
// die with their parent (bench/proc sets Pdeathsig), so a benchmark never leaves a
// cluster behind.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-rt/herald/bench/proc"
)

// ErrNotFormed: the nodes did not all see each other in time.
var ErrNotFormed = errors.New("cluster: did not form")

// startTimeout bounds a process's start and the cluster's forming.
const startTimeout = 20 * time.Second

// Node is one herald process.
type Node struct {
	*proc.Process
	Addr  string // public 127.0.0.1:port (WebSocket and HTTP API)
	Admin string // admin 127.0.0.1:port
}

// App is the app every node serves.
type App struct{ ID, Key, Secret string }

// Config describes a cluster. Herald, Dir and App (or AppsFile) are required.
type Config struct {
	// Herald is the herald binary.
	Herald string
	// Dir receives the processes' logs (<Name>-redis.log, <Name>-node<i>.log).
	Dir string
	// Name prefixes the logs. Default "cluster".
	Name string
	// Nodes is the number of herald nodes. Default 3.
	Nodes int
	// App is served by every node, given by flags (--app-id, --app-key, --app-secret).
	App App
	// AppsFile, when set, is the --config file every node serves instead of App: the
	// apps with their options (webhooks, limits).
	AppsFile string
	// NodeLease is each node's --node-lease. Default 15 s.
	NodeLease time.Duration
	// Extra are more herald flags, given to every node.
	Extra []string
}

// Cluster is a running redis-server and its herald nodes.
type Cluster struct {
	Nodes     []*Node
	Redis     *proc.Process
	RedisAddr string // 127.0.0.1:port
}

// Start starts the redis-server, then the nodes, and waits (at most 20 s) until every
// node's herald_cluster_nodes counts them all. On failure what was started is stopped.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Name == "" {
		cfg.Name = "cluster"
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.NodeLease <= 0 {
		cfg.NodeLease = 15 * time.Second
	}
	c := &Cluster{}
	rp, addr, err := StartRedis(ctx, cfg.Dir, cfg.Name+"-redis")
	if err != nil {
		return nil, err
	}
	c.Redis, c.RedisAddr = rp, addr
	app, extra := cfg.App, []string{"--redis", "redis://" + addr, "--redis-prefix", "bench", "--node-lease", cfg.NodeLease.String()}
	if cfg.AppsFile != "" {
		app, extra = App{}, append(extra, "--config", cfg.AppsFile)
	}
	extra = append(extra, cfg.Extra...)
	for i := 1; i <= cfg.Nodes; i++ {
		n, err := StartHerald(ctx, cfg.Herald, cfg.Dir, fmt.Sprintf("%s-node%d", cfg.Name, i), app, extra)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	// A node learns the others when it renews its lease (every third of it).
	deadline := time.Now().Add(max(startTimeout, cfg.NodeLease))
	for {
		live, err := c.PerNode(ctx, "herald_cluster_nodes")
		ok := err == nil
		for _, v := range live {
			ok = ok && int(v) == cfg.Nodes
		}
		if ok {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Stop()
			return nil, fmt.Errorf("%w: herald_cluster_nodes per node %v, want %d each (%v); logs in %s",
				ErrNotFormed, live, cfg.Nodes, err, cfg.Dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Addrs are the nodes' public addresses, in order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Stop ends the nodes (SIGTERM, then SIGKILL by PID after 5 s), then the
// redis-server, and waits for them.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Stop(5 * time.Second)
		}()
	}
	wg.Wait()
	if c.Redis != nil {
		c.Redis.Stop(5 * time.Second)
	}
}

// CPU is the CPU time the nodes have used, summed.
func (c *Cluster) CPU() (time.Duration, error) {
	var total time.Duration
	for _, n := range c.Nodes {
		d, err := proc.ReadCPU(n.PID())
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}

// RedisCPU is the CPU time the redis-server has used.
func (c *Cluster) RedisCPU() (time.Duration, error) { return proc.ReadCPU(c.Redis.PID()) }

// Counters are the nodes' metrics, summed (see Scrape).
func (c *Cluster) Counters(ctx context.Context) (Metrics, error) {
	out := Metrics{}
	for _, n := range c.Nodes {
		m, err := Scrape(ctx, n.Admin)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out, nil
}

// PerNode reads one metric (summed over its labels) on every node.
func (c *Cluster) PerNode(ctx context.Context, name string) ([]float64, error) {
	out := make([]float64, len(c.Nodes))
	for i, n := range c.Nodes {
		m, err := Scrape(ctx, n.Admin)
		if err != nil {
			return nil, err
		}
		out[i] = m[name]
	}
	return out, nil
}

// StartRedis runs a redis-server on a free 127.0.0.1 port, with nothing kept on disk
// (--save "" --appendonly no), and waits (at most 20 s) until it is ready. Its log is
// dir/name.log.
func StartRedis(ctx context.Context, dir, name string) (*proc.Process, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", fmt.Errorf("cluster: redis-server is not on PATH (apt-get install redis-server; make test-deps installs it): %w", err)
	}
	port, err := proc.FreePort("127.0.0.1")
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := proc.Start(ctx, name, bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--dir", dir, "--logfile", "",
	}, filepath.Join(dir, name+".log"), "Ready to accept connections", startTimeout)
	if err != nil {
		return nil, "", err
	}
	return p, addr, nil
}

// StartHerald starts one herald node serving app on free 127.0.0.1 ports, with
// extra flags, and waits (at most 20 s) for its "serving" line. A zero app gives no
// app flags (extra then has --config). Its log is dir/name.log.
func StartHerald(ctx context.Context, bin, dir, name string, app App, extra []string) (*Node, error) {
	port, err := proc.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	aport, err := proc.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	admin := "127.0.0.1:" + strconv.Itoa(aport)
	args := []string{"--addr", addr, "--admin-addr", admin}
	if app != (App{}) {
		args = append(args, "--app-id", app.ID, "--app-key", app.Key, "--app-secret", app.Secret)
	}
	args = append(append(args, "--shutdown-timeout", "2s", "--log-level", "warn"), extra...)
	p, err := proc.Start(ctx, name, bin, args, filepath.Join(dir, name+".log"), "serving", startTimeout)
	if err != nil {
		return nil, err
	}
	return &Node{Process: p, Addr: addr, Admin: admin}, nil
}

// Metrics maps a Prometheus metric name to its value summed over its labels.
type Metrics map[string]float64

// Dropped is what a node refused or lost: herald_dropped_total,
// herald_fanout_dropped_total and herald_broker_errors_total.
func (m Metrics) Dropped() float64 {
	return m["herald_dropped_total"] + m["herald_fanout_dropped_total"] + m["herald_broker_errors_total"]
}

// Scrape reads a herald node's /metrics and sums every series by metric name, so
// that herald_connections{app="1"} and herald_connections{app="2"} add up.
func Scrape(ctx context.Context, admin string) (Metrics, error) {
	b, err := proc.Get(ctx, admin, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseMetrics(string(b)), nil
}

func parseMetrics(text string) Metrics {
	out := Metrics{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			continue
		}
		name, rest := line[:i], line[i:]
		if j := strings.LastIndexByte(rest, '}'); j >= 0 {
			rest = rest[j+1:]
		}
		f := strings.Fields(rest) // value [timestamp]
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// RedisCommandCalls asks the redis-server at addr for INFO commandstats (within 5 s)
// and returns the calls of each command ("publish" → 1234).
func RedisCommandCalls(ctx context.Context, addr string) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis INFO: %w", err)
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	if _, err := c.Write([]byte("*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")); err != nil {
		return nil, fmt.Errorf("cluster: redis INFO: %w", err)
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || len(head) < 2 || head[0] != '$' {
		return nil, fmt.Errorf("cluster: redis INFO: reply %q: %v", head, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil || n < 0 || n > 16<<20 {
		return nil, fmt.Errorf("cluster: redis INFO: reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("cluster: redis INFO: %w", err)
	}
	return parseCommandStats(string(body)), nil
}

// parseCommandStats reads "cmdstat_publish:calls=123,usec=456,…" lines.
func parseCommandStats(body string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(body, "\r\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				if c, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[name] = c
				}
			}
		}
	}
	return out
}
