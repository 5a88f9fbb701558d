package cluster

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/herald-rt/herald/bench/proc"
)

func TestParseMetrics(t *testing.T) {
	m := parseMetrics(`# HELP herald_cluster_nodes Live nodes.
# TYPE herald_cluster_nodes gauge
herald_cluster_nodes 3
herald_connections{app="1"} 5000
herald_connections{app="2"} 7
herald_dropped_total{app="1",reason="a b}"} 2 1700000000000
go_memstats_heap_inuse_bytes 1.5e+06
garbage
`)
	want := Metrics{"herald_cluster_nodes": 3, "herald_connections": 5007, "herald_dropped_total": 2,
		"go_memstats_heap_inuse_bytes": 1.5e6}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if len(m) != len(want) || m.Dropped() != 2 {
		t.Errorf("got %v, dropped %v", m, m.Dropped())
	}
}

func TestParseCommandStats(t *testing.T) {
	got := parseCommandStats("# Commandstats\r\ncmdstat_publish:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|list:calls=3,usec=1\r\ncmdstat_bad:usec=1\r\n")
	if len(got) != 2 || got["publish"] != 12 || got["client|list"] != 3 {
		t.Errorf("got %v", got)
	}
}

// A real cluster of two nodes forms, answers, and is gone after Stop.
func TestStartStop(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root, err := proc.ModuleRoot(ctx, "go")
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Build(ctx, "go", root, dir, "herald", "./cmd/herald"); err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Config{Herald: filepath.Join(dir, "herald"), Dir: dir, Name: "t", Nodes: 2,
		App: App{ID: "1", Key: "k", Secret: "s"}, NodeLease: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop()
		}
	}()
	if len(c.Addrs()) != 2 || c.Addrs()[0] == c.Addrs()[1] {
		t.Errorf("addrs %v", c.Addrs())
	}
	live, err := c.PerNode(ctx, "herald_cluster_nodes")
	if err != nil || live[0] != 2 || live[1] != 2 {
		t.Errorf("herald_cluster_nodes %v, %v", live, err)
	}
	m, err := c.Counters(ctx)
	if err != nil || m["herald_broker_up"] != 2 {
		t.Errorf("broker_up summed over 2 nodes: %v, %v", m["herald_broker_up"], err)
	}
	calls, err := RedisCommandCalls(ctx, c.RedisAddr)
	if err != nil || len(calls) == 0 {
		t.Errorf("commandstats %v, %v", calls, err)
	}
	if _, err := c.CPU(); err != nil {
		t.Error(err)
	}
	if _, err := c.RedisCPU(); err != nil {
		t.Error(err)
	}
	c.Stop()
	stopped = true
	for _, n := range c.Nodes {
		if !n.Exited() {
			t.Errorf("node %s still running", n.Name)
		}
	}
	if !c.Redis.Exited() {
		t.Error("redis-server still running")
	}
	if out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", c.RedisAddr[len("127.0.0.1:"):], "PING").CombinedOutput(); err == nil && string(out) == "PONG\n" {
		t.Error("redis-server still answers")
	}
}
