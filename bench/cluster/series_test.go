package cluster

import (
	"math"
	"testing"
)

func TestParseSeries(t *testing.T) {
	ss := parseSeries(`# HELP x
herald_webhooks_sent_total{app="1",event="member_added"} 7
herald_webhooks_sent_total{app="1",event="member_removed"} 5 1700000000000
odd{a="x\"y\\z",b="p,q}"} 2
bare 1.5
broken{a="x} 3
nolabelvalue{a=x} 4
`)
	if len(ss) != 4 {
		t.Fatalf("got %d series: %+v", len(ss), ss)
	}
	if s := ss[0]; s.Name != "herald_webhooks_sent_total" || s.Labels["event"] != "member_added" || s.Labels["app"] != "1" || s.Value != 7 {
		t.Errorf("first %+v", s)
	}
	if s := ss[1]; s.Labels["event"] != "member_removed" || s.Value != 5 {
		t.Errorf("timestamped %+v", s)
	}
	if s := ss[2]; s.Labels["a"] != `x"y\z` || s.Labels["b"] != "p,q}" || s.Value != 2 {
		t.Errorf("escaped %+v", s)
	}
	if s := ss[3]; s.Name != "bare" || len(s.Labels) != 0 || s.Value != 1.5 {
		t.Errorf("bare %+v", s)
	}
}

// Two nodes' histograms add up bucket by bucket, whatever their other labels.
func TestHistogramOf(t *testing.T) {
	node := `h_bucket{app="1",le="0.01"} 10
h_bucket{app="1",le="0.1"} 30
h_bucket{app="1",le="1"} 40
h_bucket{app="1",le="+Inf"} 40
h_sum{app="1"} 5
h_count{app="1"} 40
other_bucket{le="0.01"} 99
`
	h := histogramOf(append(parseSeries(node), parseSeries(node)...), "h")
	if h.Count != 80 || h.Sum != 10 || len(h.Bounds) != 3 || h.Cum[0] != 20 || h.Cum[1] != 60 || h.Cum[2] != 80 {
		t.Fatalf("got %+v", h)
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	for _, c := range []struct{ got, want float64 }{
		{h.Quantile(0.125), 0.005},         // rank 10 of 20 in [0, 0.01]
		{h.Quantile(0.5), 0.01 + 0.09*0.5}, // rank 40: 20 into the 40 of (0.01, 0.1]
		{h.Quantile(1), 1},
		{h.QuantileBelow(0.5, 20), 0.005},    // the 20 lowest
		{h.QuantileBelow(1, 60), 0.1},        // the 60 lowest: all by 0.1
		{h.QuantileBelow(0.99, 60), 0.09865}, // rank 59.4: 39.4 of 40 into (0.01, 0.1]
	} {
		if !near(c.got, c.want) {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
	// 20 in [0, 0.01], 40 in (0.01, 0.1].
	if lo, hi := h.SumAtMost(0.1); !near(lo, 40*0.01) || !near(hi, 20*0.01+40*0.1) {
		t.Errorf("SumAtMost(0.1) = %v, %v", lo, hi)
	}
	if h.CountAtMost(0.1) != 60 || h.CountAtMost(0.2) != -1 {
		t.Errorf("CountAtMost: %d %d", h.CountAtMost(0.1), h.CountAtMost(0.2))
	}
	if !math.IsNaN((Histogram{}).Quantile(0.5)) || !math.IsNaN(h.QuantileBelow(0.5, 81)) {
		t.Error("quantile of nothing")
	}
	// Everything in +Inf: the highest finite bound.
	inf := histogramOf(parseSeries("h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 5\nh_count 5\n"), "h")
	if inf.Quantile(0.5) != 1 {
		t.Errorf("+Inf bucket: %v", inf.Quantile(0.5))
	}
}
