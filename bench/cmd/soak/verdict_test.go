package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestFlagsDefaults(t *testing.T) {
	for _, c := range []struct {
		args           []string
		warmup, window time.Duration
		bad            bool
	}{
		{nil, 5 * time.Minute, 5 * time.Minute, false},
		{[]string{"--duration", "10m"}, time.Minute, time.Minute, false},
		{[]string{"--duration", "2m"}, 0, 0, true},
		{[]string{"--duration", "2m", "--warmup", "20s", "--window", "20s"}, 20 * time.Second, 20 * time.Second, false},
		{[]string{"--duration", "2m", "--warmup", "20s", "--window", "10s"}, 0, 0, true}, // fewer than 3 samples
	} {
		o, err := parseFlags(c.args, io.Discard)
		if (err != nil) != c.bad {
			t.Fatalf("%v: err %v", c.args, err)
		}
		if !c.bad && (o.warmup != c.warmup || o.window != c.window) {
			t.Fatalf("%v: warmup %v window %v", c.args, o.warmup, o.window)
		}
	}
}

// synthetic is a 10-minute soak sampled every 5 s, with rss(t), goroutines(t) and
// fds(t) for every node.
func synthetic(rss, gor func(t float64) float64, fds func(t float64) int) (*report, options) {
	o, _ := parseFlags([]string{"--duration", "10m"}, io.Discard)
	r := &report{LoadStart: 15, LoadEnd: 15 + 600 + 10, IdleAfterStart: 650,
		Nodes: []nodeInfo{{Name: "node1"}, {Name: "node2"}, {Name: "node3"}}}
	for t := 0.0; t < 670; t += 5 {
		s := Sample{T: t, RedisRSS: 8 << 20}
		conns := 0.0
		if t >= r.LoadStart && t < r.LoadEnd {
			conns = 800
		}
		for range r.Nodes {
			s.Nodes = append(s.Nodes, NodeSample{RSS: int64(rss(t)), Goroutines: gor(t), FDs: fds(t) + int(conns),
				HeapInuse: rss(t) / 2, Connections: conns, Subscriptions: conns})
		}
		r.Samples = append(r.Samples, s)
	}
	r.Runs = []*RunResult{{Name: quietRun, Connected: 300, Published: 1000, Expected: 30000, Delivered: 30000}}
	r.Slow = &SlowStats{Cycles: 5, Cut: 5, Closes: map[string]int{"close 4100": 5}}
	r.Reconnect = &ReconnectStats{Cycles: 3000}
	return r, o
}

func checkByName(r *report, name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{Name: name, Detail: "missing"}
}

func TestVerdict(t *testing.T) {
	flat := func(float64) float64 { return 100 << 20 }
	gor := func(float64) float64 { return 80 }
	fds := func(float64) int { return 40 }
	r, o := synthetic(flat, gor, fds)
	r.evaluate(o)
	if r.Failed() {
		t.Fatalf("a flat soak failed: %+v", r.Checks)
	}
	if len(r.Checks) != 3*3+5 {
		t.Fatalf("%d checks", len(r.Checks))
	}
	if f := r.Figures[0]; f.Connections[1] != 800 || f.FDsBeyond[2] != 40 || f.Connections[0] != 0 || f.Connections[3] != 0 {
		t.Fatalf("figures %+v", f)
	}

	// RSS that grows 20% over the load fails; a bump during the warm-up does not.
	r, o = synthetic(func(t float64) float64 { return (100 + 30*t/600) * (1 << 20) }, gor, fds)
	r.evaluate(o)
	if c := checkByName(r, "node1 RSS"); c.OK || !strings.Contains(c.Detail, "allowed ±10%") {
		t.Fatalf("growing RSS: %+v", c)
	}
	r, o = synthetic(func(t float64) float64 {
		if t < 60 {
			return 300 << 20
		}
		return 100 << 20
	}, gor, fds)
	r.evaluate(o)
	if r.Failed() {
		t.Fatalf("a warm-up bump failed: %+v", r.Checks)
	}

	// Goroutines that leak, fds that leak.
	r, o = synthetic(flat, func(t float64) float64 { return 80 + t/10 }, fds)
	r.evaluate(o)
	if checkByName(r, "node2 goroutines").OK {
		t.Fatal("leaking goroutines passed")
	}
	r, o = synthetic(flat, gor, func(t float64) int { return 40 + int(t/20) })
	r.evaluate(o)
	if c := checkByName(r, "node3 fds"); c.OK {
		t.Fatalf("leaking fds passed: %+v", c)
	}

	// One message missing on the quiet channels; a slow consumer never cut; leftovers.
	r, o = synthetic(flat, gor, fds)
	r.Runs[0].Delivered, r.Runs[0].Missing = 29999, 1
	r.Slow.NotCut = 1
	r.Leftover.Subscriptions = 2
	r.evaluate(o)
	for _, name := range []string{"quiet channels: 0 missing, 0 duplicated", "slow consumer cut off every time", "nothing left once every client has gone"} {
		if checkByName(r, name).OK {
			t.Fatalf("%s passed", name)
		}
	}
}

func TestHTMLReport(t *testing.T) {
	r, o := synthetic(func(t float64) float64 { return (100 + t/60) * (1 << 20) }, func(float64) float64 { return 80 }, func(float64) int { return 40 })
	r.Duration, r.Warmup, r.Window = "10m0s", "1m0s", "1m0s"
	r.Runs[0].Report = "soak-quiet.json"
	r.evaluate(o)
	var b strings.Builder
	if err := writeHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	h := b.String()
	for _, want := range []string{"<svg", "Resident memory (RSS) (MiB)", "Goroutines", "Open file descriptors", "node3",
		"redis-server", `href="soak-quiet.html"`, "quiet channels: 0 missing", "passed"} {
		if !strings.Contains(h, want) {
			t.Fatalf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"NaN", "Inf", "<script"} {
		if strings.Contains(h, bad) {
			t.Fatalf("report has %q", bad)
		}
	}
}
