package main

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

// The table puts one node and the cluster side by side, with the two targets the
// cluster is held to.
func TestReportCluster(t *testing.T) {
	h := &figures{Target: targetHerald, Conns: 15000, Throughput: ptr(200000), LatencyModeP50: ptr(40), ProbeP50: ptr(0.2),
		ServerCPU: ptr(5)}
	cl := &figures{Target: targetCluster, Conns: 15000, Nodes: 3, NodeConns: []int64{5000, 5000, 5000},
		Throughput: ptr(170000), LatencyModeP50: ptr(40.5), ProbeP50: ptr(1.5), ServerCPU: ptr(6),
		RedisCPUPerDelivery: ptr(0.01), RedisCPUPerPublish: ptr(150), BrokerPublishedPerSec: ptr(12)}
	fl := &figures{Target: targetRawFloor, Conns: 15000, Throughput: ptr(100000)}
	r := &report{Options: options{conns: 15000, workers: 1, window: 4, handshakes: 512, payload: 100},
		Results: []*figures{h, cl, fl}}
	var b strings.Builder
	r.print(&b)
	out := b.String()
	for _, want := range []string{
		"herald-cluster", "cluster vs herald", "200%", // herald/floor
		"85%",                            // cluster vs one node, throughput
		"+0.50 ms",                       // latency mode delta
		"0.85", "target >= 0.90  MISSED", // deliveries ratio
		"+0.50 ms   (40.50 ms vs 40.00 ms)", "+1.30 ms", "target <= 1 ms  ok", "target <= 1 ms  MISSED",
		"connections per node 5,000/5,000/5,000", "150.00 µs", "(one node: 5.00 µs)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// The CPU readings taken around [from, to] cover it: the last sample at or before
// from and the first at or after to.
func TestCPUAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var ss []cpuSample
	for i := range 5 {
		ss = append(ss, cpuSample{T: t0.Add(time.Duration(i) * 20 * time.Millisecond), server: time.Duration(i) * time.Second})
	}
	for _, c := range []struct {
		at    time.Duration
		after bool
		want  time.Duration
	}{
		{30 * time.Millisecond, false, 1 * time.Second}, // sample 1 at 20 ms
		{30 * time.Millisecond, true, 2 * time.Second},  // sample 2 at 40 ms
		{40 * time.Millisecond, false, 2 * time.Second}, // exact
		{40 * time.Millisecond, true, 2 * time.Second},
		{-time.Second, false, 0},             // before every sample: the first
		{time.Second, true, 4 * time.Second}, // after every sample: the last
	} {
		if got := cpuAt(ss, t0.Add(c.at), c.after).server; got != c.want {
			t.Errorf("cpuAt(%v, after=%v) = %v, want %v", c.at, c.after, got, c.want)
		}
	}
}

// Merging two report distributions through their buckets gives the quantiles of
// all their values.
func TestMergeDistributions(t *testing.T) {
	a, b := loadgen.NewHistogram(), loadgen.NewHistogram()
	for i := 1; i <= 100; i++ {
		a.Record(time.Duration(i) * time.Millisecond)     // 1..100 ms
		b.Record(time.Duration(i+100) * time.Millisecond) // 101..200 ms
	}
	h := mergeDistributions(dist(a), dist(b))
	if h.Count() != 200 {
		t.Fatalf("count %d", h.Count())
	}
	if p50 := h.Quantile(0.5); p50 < 99*time.Millisecond || p50 > 101*time.Millisecond {
		t.Errorf("p50 %v, want 100 ms", p50)
	}
	if p99 := h.Quantile(0.99); p99 < 197*time.Millisecond || p99 > 199*time.Millisecond {
		t.Errorf("p99 %v, want 198 ms", p99)
	}
}

// dist is h as a loadgen report carries it.
func dist(h *loadgen.Histogram) loadgen.Distribution {
	d := loadgen.Distribution{Count: uint64(h.Count())}
	for _, b := range h.Buckets() {
		d.Buckets = append(d.Buckets, loadgen.Bucket{UpToMs: float64(b.UpTo) / float64(time.Millisecond), Count: uint64(b.Count)})
	}
	return d
}
