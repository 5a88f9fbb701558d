package loadgen

import (
	"errors"
	"testing"
)

func TestParseThreshold(t *testing.T) {
	good := []struct {
		expr, metric, op, unit string
		limit                  float64
	}{
		{"p99<250ms", "p99", "<", "ms", 250},
		{"p99 < 250", "p99", "<", "ms", 250},
		{"p50<=1.5s", "p50", "<=", "s", 1.5},
		{"max<900us", "max", "<", "us", 900},
		{"p999<900µs", "p999", "<", "us", 900},
		{"connect_p95<1s", "connect_p95", "<", "s", 1},
		{"connect_max<2000", "connect_max", "<", "ms", 2000},
		{"mean>=0.5ms", "mean", ">=", "ms", 0.5},
		{"errors<0.1%", "errors", "<", "%", 0.1},
		{"errors<0.001", "errors", "<", "", 0.001},
		{"missing==0", "missing", "==", "", 0},
		{"duplicated==0", "duplicated", "==", "", 0},
		{"error_count<=3", "error_count", "<=", "", 3},
		{"deliveries_per_sec>1000", "deliveries_per_sec", ">", "", 1000},
		{"deliveries_per_sec>1e3", "deliveries_per_sec", ">", "", 1000},
		{"connections>=15000", "connections", ">=", "", 15000},
		{"broadcast_max<12s", "broadcast_max", "<", "s", 12},
		{"broadcast_p50<5000", "broadcast_p50", "<", "ms", 5000},
		{"broadcast_incomplete==0", "broadcast_incomplete", "==", "", 0},
		{"lost_connections==0", "lost_connections", "==", "", 0},
	}
	for _, g := range good {
		th, err := ParseThreshold(g.expr)
		if err != nil {
			t.Errorf("%q: %v", g.expr, err)
			continue
		}
		if th.Metric != g.metric || th.Op != g.op || th.Unit != g.unit || th.Limit != g.limit || th.Expr != g.expr {
			t.Errorf("%q: got %+v", g.expr, th)
		}
	}
	bad := []string{
		"", "p99", "p99<", "<250ms", "p99<250 ms ms", "p99=250ms", "p99!=250", "p99<-1ms",
		"p98<250ms", "P99<250ms", "p99<250%", "p99<250m", "errors<1ms", "missing==0%",
		"deliveries_per_sec>1000/s", "broadcast_incomplete<1%", "lost_connections==0ms", "broadcast_p98<1s", "connections>1k", "p99<<250ms", "p99<250ms;rm", "p99 <250ms extra",
	}
	for _, b := range bad {
		if th, err := ParseThreshold(b); !errors.Is(err, ErrThreshold) {
			t.Errorf("%q: got %+v, %v; want ErrThreshold", b, th, err)
		}
	}
}

func TestEvaluateThresholds(t *testing.T) {
	rep := &Report{
		Latency: Distribution{Count: 10, P50Ms: 2, P99Ms: 120, MaxMs: 300, MeanMs: 5},
		Connect: Distribution{Count: 10, P95Ms: 800},
		Totals: Totals{ErrorRate: 0.0005, Missing: 0, Duplicated: 2, DeliveriesPerSec: 1500,
			ConnectionsPeak: 100, Errors: map[string]uint64{"eof": 3}},
	}
	cases := []struct {
		expr  string
		ok    bool
		value float64
	}{
		{"p99<250ms", true, 120},
		{"p99<0.1s", false, 0.12},
		{"p99<=120ms", true, 120},
		{"p50>2", false, 2},
		{"max<300000us", false, 300000},
		{"connect_p95<1s", true, 0.8},
		{"errors<0.1%", true, 0.05},
		{"errors<0.0001", false, 0.0005},
		{"missing==0", true, 0},
		{"duplicated==0", false, 2},
		{"error_count<3", false, 3},
		{"deliveries_per_sec>1000", true, 1500},
		{"connections>=100", true, 100},
	}
	for _, c := range cases {
		th, err := ParseThreshold(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		EvaluateThresholds(rep, []Threshold{th})
		got := rep.Thresholds[0]
		if got.OK != c.ok || got.Value != c.value || rep.Passed != c.ok {
			t.Errorf("%s: got %+v passed=%v; want ok=%v value=%v", c.expr, got, rep.Passed, c.ok, c.value)
		}
	}
	// A latency threshold over no values cannot hold.
	empty := &Report{}
	th, _ := ParseThreshold("p99<1s")
	EvaluateThresholds(empty, []Threshold{th})
	if empty.Passed || empty.Thresholds[0].OK {
		t.Errorf("p99 over an empty histogram passed: %+v", empty.Thresholds)
	}
	// No thresholds: passed.
	EvaluateThresholds(empty, nil)
	if !empty.Passed || len(empty.Thresholds) != 0 {
		t.Errorf("no thresholds: %+v", empty)
	}
}
