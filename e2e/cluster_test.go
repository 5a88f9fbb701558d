package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/redistest"
)

// The cluster instances: three herald processes joined through a redis-server of the
// test's own, and a control server through which the JS files act on the processes the
// Go side owns (see control).
const (
	clusterNodes = 3
	// nodeLease is --node-lease: how long a dead node's presence entries and counts
	// outlive it. The failure tests measure member_removed after a kill -9 against it.
	nodeLease = 3 * time.Second
)

// TestCluster runs cluster.test.mjs (cross-node behaviour) against a cluster of its own.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "c")
	t.Run("cluster", func(t *testing.T) { runNode(t, c.nodes, clusterFile, c.env()...) })
	c.stop(t)
}

// TestClusterOnRedisCluster runs cluster.test.mjs against nodes joined through a
// 3-master Redis Cluster (sharded pub/sub, keys spread over the shards).
func TestClusterOnRedisCluster(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t)
	cfg := writeApps(t, mainApp)
	var nodes []*herald
	for i := 1; i <= clusterNodes; i++ {
		nodes = append(nodes, startHerald(t, "rc"+strconv.Itoa(i), "--config", cfg,
			"--redis-cluster", strings.Join(rc.Addrs(), ","), "--node-lease", nodeLease.String()))
	}
	env := append(appEnv("APP", mainApp), "E2E_NODE_LEASE_MS="+strconv.FormatInt(nodeLease.Milliseconds(), 10),
		"E2E_BROKER_ENGINE=redis-cluster")
	t.Run("cluster", func(t *testing.T) { runNode(t, nodes, clusterFile, env...) })
	var wg sync.WaitGroup
	for _, h := range nodes {
		wg.Go(func() { h.stop(t) })
	}
	wg.Wait()
}

// TestClusterFailures runs cluster_failures.test.mjs against a cluster of its own: it
// kills and freezes that cluster's Redis and kills -9 its third node.
func TestClusterFailures(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "f")
	t.Run("cluster_failures", func(t *testing.T) { runNode(t, c.nodes, clusterFailuresFile, c.env()...) })
	c.stop(t)
}

// cluster is a Redis, the herald nodes that share it, and the control server.
type cluster struct {
	redis   *redistest.Server
	nodes   []*herald
	apps    []app  // in the nodes' apps.json; the first is the JS files' APP_*
	control string // host:port of the control server

	mu          sync.Mutex // guards the state below, and serialises control actions
	redisDown   bool       // killed and not restarted
	redisFroze  bool       // stopped with SIGSTOP and not thawed
	frozenNodes map[int]bool
}

// startCluster starts a redis-server, clusterNodes herald nodes on it (sharing one
// apps.json with these apps, by default the main app) and the control server. name
// tells the nodes apart in the log: herald[<name>1] and so on.
func startCluster(t *testing.T, name string, apps ...app) *cluster {
	t.Helper()
	if len(apps) == 0 {
		apps = []app{mainApp}
	}
	c := &cluster{redis: redistest.Start(t), apps: apps, frozenNodes: make(map[int]bool)}
	cfg := writeApps(t, apps...)
	for i := 1; i <= clusterNodes; i++ {
		c.nodes = append(c.nodes, startHerald(t, name+strconv.Itoa(i), "--config", cfg,
			"--redis", c.redis.URL(), "--node-lease", nodeLease.String(), "--redis-prefix", "e2e-"+name))
	}
	// Cleanups run last-in first-out: this one runs before the nodes are stopped, so
	// that they shut down against a working Redis (a node that cannot give up its lease
	// exits with an error) and are not left stopped (SIGSTOP), even when a test failed in
	// the middle of an outage.
	t.Cleanup(func() { c.restore(t) })
	c.serveControl(t)
	return c
}

// env is what the JS files need besides the nodes' addresses (runNode sets those): the
// first app as APP_*.
func (c *cluster) env() []string {
	return append(appEnv("APP", c.apps[0]),
		"E2E_CONTROL="+c.control,
		"E2E_NODE_LEASE_MS="+strconv.FormatInt(nodeLease.Milliseconds(), 10))
}

// stop brings Redis and the nodes back if a test left them stopped, then stops the nodes
// that were not killed on purpose, all at once; each must exit 0 without a data race.
func (c *cluster) stop(t *testing.T) {
	t.Helper()
	c.restore(t)
	var wg sync.WaitGroup
	for _, h := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.stop(t)
		}()
	}
	wg.Wait()
}

// restore thaws the nodes that a control action left stopped, and thaws or restarts the
// Redis if one left it frozen or down.
func (c *cluster) restore(t *testing.T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.frozenNodes {
		t.Logf("control: thawing node %d, which the test left stopped", n)
		_ = c.nodes[n-1].cmd.Process.Signal(syscall.SIGCONT)
		delete(c.frozenNodes, n)
	}
	if c.redisFroze {
		t.Log("control: thawing the Redis that the test left frozen")
		c.redis.Thaw()
		c.redisFroze = false
	}
	if c.redisDown {
		t.Log("control: restarting the Redis that the test left down")
		if err := c.restartRedis(t); err != nil {
			t.Error(err)
		}
	}
}

// --- control ----------------------------------------------------------------------------

// serveControl starts the control server on a free loopback port, stopped at the end of
// the test. Every action is a POST and answers JSON; the JS files call it with
// control(action) from lib.mjs:
//
//	POST /nodes/{n}/kill       kill -9 node n (1-based) and wait for it to exit; the
//	                           harness then does not check its exit status
//	POST /nodes/{n}/freeze     SIGSTOP node n (a process stall: GC, VM, debugger)
//	POST /nodes/{n}/thaw       SIGCONT
//	POST /redis/kill           SIGKILL the redis-server (its data is lost)
//	POST /redis/restart        start it again, empty, on the same port
//	POST /redis/freeze         SIGSTOP: connections stay open, nothing answers
//	POST /redis/thaw           SIGCONT
//	POST /redis/kill-pubsub    CLIENT KILL TYPE pubsub: drop every pub/sub connection
//
// Answers are {"ok":true, ...} with 200, or {"error":"..."} with 4xx/5xx.
func (c *cluster) serveControl(t *testing.T) {
	t.Helper()
	mux := http.NewServeMux()
	act := func(pattern string, f func(r *http.Request) (map[string]any, error)) {
		mux.HandleFunc("POST "+pattern, func(w http.ResponseWriter, r *http.Request) {
			c.mu.Lock()
			start := time.Now()
			res, err := f(r)
			c.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				t.Logf("control: %s: %v", r.URL.Path, err)
				w.WriteHeader(http.StatusInternalServerError)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
				return
			}
			if res == nil {
				res = map[string]any{}
			}
			res["ok"] = true
			res["ms"] = time.Since(start).Milliseconds()
			t.Logf("control: %s done in %v: %v", r.URL.Path, time.Since(start).Round(time.Millisecond), res)
			_ = json.NewEncoder(w).Encode(res)
		})
	}
	node := func(r *http.Request) (int, *herald, error) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 1 || n > len(c.nodes) {
			return 0, nil, fmt.Errorf("no node %q: want 1..%d", r.PathValue("n"), len(c.nodes))
		}
		return n, c.nodes[n-1], nil
	}
	act("/nodes/{n}/kill", func(r *http.Request) (map[string]any, error) {
		n, h, err := node(r)
		if err != nil {
			return nil, err
		}
		pid := h.cmd.Process.Pid
		delete(c.frozenNodes, n) // SIGKILL ends a stopped process too
		h.kill()
		return map[string]any{"pid": pid}, nil
	})
	act("/nodes/{n}/freeze", func(r *http.Request) (map[string]any, error) {
		n, h, err := node(r)
		if err != nil {
			return nil, err
		}
		if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return nil, err
		}
		c.frozenNodes[n] = true
		return map[string]any{"pid": h.cmd.Process.Pid}, nil
	})
	act("/nodes/{n}/thaw", func(r *http.Request) (map[string]any, error) {
		n, h, err := node(r)
		if err != nil {
			return nil, err
		}
		if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			return nil, err
		}
		delete(c.frozenNodes, n)
		return map[string]any{"pid": h.cmd.Process.Pid}, nil
	})
	act("/redis/kill", func(*http.Request) (map[string]any, error) {
		pid := c.redis.PID()
		c.redis.Kill()
		c.redisDown, c.redisFroze = true, false
		return map[string]any{"pid": pid}, nil
	})
	act("/redis/restart", func(*http.Request) (map[string]any, error) {
		if !c.redisDown {
			return nil, errors.New("redis is not down")
		}
		if err := c.restartRedis(t); err != nil {
			return nil, err
		}
		return map[string]any{"pid": c.redis.PID()}, nil
	})
	act("/redis/freeze", func(*http.Request) (map[string]any, error) {
		if c.redisDown {
			return nil, errors.New("redis is down")
		}
		c.redis.Freeze()
		c.redisFroze = true
		return nil, nil
	})
	act("/redis/thaw", func(*http.Request) (map[string]any, error) {
		c.redis.Thaw()
		c.redisFroze = false
		return nil, nil
	})
	act("/redis/kill-pubsub", func(*http.Request) (map[string]any, error) {
		reply, err := c.redis.Do("CLIENT", "KILL", "TYPE", "pubsub")
		if err != nil {
			return nil, fmt.Errorf("CLIENT KILL TYPE pubsub: %w", err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(reply))
		return map[string]any{"killed": n}, nil
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		// Shutdown waits for the actions under way, which log to t.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	})
	c.control = ln.Addr().String()
}

// restartRedis starts the killed redis-server again on its port (c.mu held). It may run
// on the control server's goroutines, where t.Fatal must not be called: Restart's
// failure comes back as an error instead.
func (c *cluster) restartRedis(t *testing.T) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(bgFatal)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("restart redis: %s", string(f))
		}
	}()
	c.redis.Restart(bgTB{t})
	c.redisDown = false
	return nil
}

// bgTB is a testing.TB whose Fatal panics with bgFatal, for helpers that take a
// testing.TB but run off the test's goroutine (FailNow may only be called on it).
type bgTB struct{ testing.TB }

type bgFatal string

func (bgTB) Helper()                           {}
func (bgTB) Fatal(args ...any)                 { panic(bgFatal(fmt.Sprint(args...))) }
func (bgTB) Fatalf(format string, args ...any) { panic(bgFatal(fmt.Sprintf(format, args...))) }
func (bgTB) FailNow()                          { panic(bgFatal("FailNow")) }
