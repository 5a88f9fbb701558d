package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/bench/proc"
	"github.com/herald-rt/herald/loadgen"
)

// endMargin is how long before the load's end the final window ends: loadgen stops
// publishing and client events -drain before its end, then closes its connections.
const endMargin = 15 * time.Second

// quietRun is the run whose channels are quiet: a steady publisher, subscribers that
// never churn, so loadgen's missing and duplicated counts are exact.
const quietRun = "quiet"

// loadRun is one `loadgen run` of the mix.
type loadRun struct {
	Name string
	// What it exercises, for the report.
	What string
	Args []string
}

// loadRuns is the mix, scaled by -scale. Each run has its own channel prefix and
// source addresses (127.0.<i+1>.x), so that their channels and ephemeral ports never
// meet.
func loadRuns(o options) []loadRun {
	n := func(v float64) string { return strconv.Itoa(max(1, int(v*o.scale+0.5))) }
	r := func(v float64) string { return strconv.FormatFloat(v*o.scale, 'f', -1, 64) }
	runs := []loadRun{
		{Name: quietRun, What: "broadcast on public channels, subscribers that never churn (exact missing/duplicated)",
			Args: []string{"--scenario", "broadcast", "--kind", "public", "--connections", n(300), "--channels", "10",
				"--publish-rate", r(20), "--payload-size", "256", "--channel-prefix", "soak-quiet-", "--drain", "5s"}},
		{Name: "churn", What: "public channels, connections closed and reopened every second, broadcasts on them",
			Args: []string{"--scenario", "churn", "--kind", "public", "--connections", n(1200), "--channels", n(120),
				"--churn-rate", r(30), "--publish-rate", r(20), "--channel-prefix", "soak-churn-", "--drain", "5s"}},
		{Name: "presence", What: "presence storm (joins and leaves every second) with client events from the members",
			Args: []string{"--scenario", "presence-storm", "--connections", n(600), "--channels", n(60),
				"--churn-rate", r(10), "--client-event-rate", "0.2", "--channel-prefix", "soak-presence-", "--drain", "5s"}},
		{Name: "client-events", What: "private channels whose members send client events",
			Args: []string{"--scenario", "client-events", "--connections", n(400), "--channels", n(40),
				"--client-event-rate", "0.5", "--channel-prefix", "soak-client-", "--drain", "5s"}},
	}
	return runs
}

// RunResult is one loadgen run's outcome, from its exit and its JSON report.
type RunResult struct {
	Name       string            `json:"name"`
	What       string            `json:"what"`
	Command    string            `json:"command"`
	Error      string            `json:"error,omitempty"`
	Report     string            `json:"report"` // JSON report file name (the HTML beside it)
	Connected  uint64            `json:"connected"`
	Published  uint64            `json:"published"`
	Delivered  uint64            `json:"delivered"`
	Expected   uint64            `json:"expected"`
	Missing    uint64            `json:"missing"`
	Duplicated uint64            `json:"duplicated"`
	Errors     map[string]uint64 `json:"errors,omitempty"`
	P50Ms      float64           `json:"latency_p50_ms"`
	P99Ms      float64           `json:"latency_p99_ms"`
	MaxMs      float64           `json:"latency_max_ms"`
	Joins      uint64            `json:"joins,omitempty"`
	Leaves     uint64            `json:"leaves,omitempty"`
	Members    uint64            `json:"member_events,omitempty"`
	Stopped    string            `json:"stopped"`
}

type loadResult struct {
	runs      []*RunResult
	slow      *SlowStats
	reconnect *ReconnectStats
}

// runLoad runs the mix for o.duration: the loadgen processes, the slow consumer and
// the reconnecting client, and returns when all have ended.
func runLoad(ctx context.Context, o options, dir string, c *cluster.Cluster, log io.Writer) loadResult {
	var target []string
	for _, a := range c.Addrs() {
		target = append(target, "ws://"+a)
	}
	runs := loadRuns(o)
	res := loadResult{}
	var wg sync.WaitGroup
	for i, lr := range runs {
		rr := &RunResult{Name: lr.Name, What: lr.What, Report: "soak-" + lr.Name + ".json"}
		res.runs = append(res.runs, rr)
		args := append([]string{"run", "--target", strings.Join(target, ","),
			"--publish-target", "http://" + c.Nodes[0].Addr,
			"--app-id", appID, "--app-key", appKey, "--app-secret", appSecret,
			"--duration", o.duration.String(), "--workers", "1",
			"--source-base", fmt.Sprintf("127.0.%d.1", i+1), "--ramp", "500",
			"--progress", "lines", "--progress-every", "60s",
			// The soak judges the server: a worker the host starves for a few seconds
			// (a shared machine) is late, not lost, and must not end its run.
			"--heartbeat-timeout", "60s",
			"--out", filepath.Join(o.outDir, rr.Report), "--html", filepath.Join(o.outDir, "soak-"+lr.Name+".html")},
			lr.Args...)
		rr.Command = "loadgen" + proc.QuoteArgs(args)
		wg.Add(1)
		go func() {
			defer wg.Done()
			logPath := filepath.Join(dir, "loadgen-"+lr.Name+".log")
			if err := runLoadgen(ctx, filepath.Join(dir, "loadgen"), args, logPath, o.duration+2*time.Minute); err != nil {
				rr.Error = fmt.Sprintf("%v (log %s)", err, logPath)
				fmt.Fprintf(log, "soak: loadgen %s: %s\n", lr.Name, rr.Error)
			}
			rr.fromReport(filepath.Join(o.outDir, rr.Report))
		}()
	}

	// The slow consumer and the reconnecting client stop with the load's publishing.
	cctx, cancel := context.WithTimeout(ctx, o.duration-5*time.Second)
	defer cancel()
	var slow SlowStats
	var rec ReconnectStats
	wg.Add(2)
	go func() {
		defer wg.Done()
		runSlowConsumer(cctx, c, &slow)
	}()
	go func() {
		defer wg.Done()
		runReconnector(cctx, c, &rec)
	}()
	wg.Wait()
	res.slow, res.reconnect = &slow, &rec
	return res
}

// runLoadgen runs loadgen with args, its output to logPath, for at most timeout
// (then SIGINT, and SIGKILL 30 s later).
func runLoadgen(ctx context.Context, bin string, args []string, logPath string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 30 * time.Second
	return cmd.Run()
}

// fromReport fills the figures from loadgen's JSON report.
func (rr *RunResult) fromReport(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		rr.Error = strings.TrimSpace(rr.Error + "; no report: " + err.Error())
		return
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		rr.Error = strings.TrimSpace(rr.Error + "; report: " + err.Error())
		return
	}
	t := rep.Totals
	rr.Connected, rr.Published, rr.Delivered, rr.Expected = t.Connected, t.Published, t.Delivered, t.Expected
	rr.Missing, rr.Duplicated, rr.Errors = t.Missing, t.Duplicated, t.Errors
	rr.P50Ms, rr.P99Ms, rr.MaxMs = rep.Latency.P50Ms, rep.Latency.P99Ms, rep.Latency.MaxMs
	rr.Stopped = rep.Stopped
	if p := rep.Presence; p != nil {
		rr.Joins, rr.Leaves, rr.Members = p.Joins, p.Leaves, p.MemberAdded+p.MemberRemoved
	}
}

// Leftover is what the nodes still held once every client had gone.
type Leftover struct {
	Seconds       float64 `json:"seconds"` // how long it took to be empty (or the bound)
	Connections   float64 `json:"connections"`
	Channels      float64 `json:"channels"`
	Subscriptions float64 `json:"subscriptions"`
	// Occupied are the channels the cluster still reports occupied (GET
	// /apps/{id}/channels on the last node): the presence store's counts.
	Occupied int    `json:"occupied"`
	Error    string `json:"error,omitempty"`
}

// waitEmpty waits (at most bound) until every node has no connection, channel or
// subscription and the cluster no occupied channel, and reports what was left.
func waitEmpty(ctx context.Context, c *cluster.Cluster, bound time.Duration) Leftover {
	start := time.Now()
	var l Leftover
	for {
		l = Leftover{}
		m, err := c.Counters(ctx)
		if err == nil {
			l.Connections, l.Channels, l.Subscriptions = m["herald_connections"], m["herald_channels"], m["herald_subscriptions"]
			l.Occupied, err = occupiedChannels(ctx, c.Nodes[len(c.Nodes)-1].Addr)
		}
		if err != nil {
			l.Error = err.Error()
		}
		l.Seconds = time.Since(start).Seconds()
		empty := err == nil && l.Connections == 0 && l.Channels == 0 && l.Subscriptions == 0 && l.Occupied == 0
		if empty || time.Since(start) > bound || ctx.Err() != nil {
			return l
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

// occupiedChannels asks GET /apps/{id}/channels (signed) how many channels the
// cluster reports occupied.
func occupiedChannels(ctx context.Context, addr string) (int, error) {
	path := "/apps/" + appID + "/channels"
	q := loadgen.SignQuery("GET", path, appKey, appSecret, nil, time.Now().Unix(), nil)
	b, err := proc.Get(ctx, addr, path+"?"+q)
	if err != nil {
		return 0, err
	}
	var body struct {
		Channels map[string]json.RawMessage `json:"channels"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return 0, errors.Join(errors.New("soak: GET /channels"), err)
	}
	return len(body.Channels), nil
}
