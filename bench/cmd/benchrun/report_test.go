package main

import (
	"strings"
	"testing"
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
