package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMedianBurst(t *testing.T) {
	fs := []*figures{{DeliveriesPerS: 3}, {DeliveriesPerS: 1}, {DeliveriesPerS: 2}}
	if m := median(fs); m.DeliveriesPerS != 2 {
		t.Fatalf("median %v", m.DeliveriesPerS)
	}
	if fs[0].DeliveriesPerS != 3 {
		t.Fatal("median reordered its input")
	}
}

// The table has a row per target and the ratio against today, with the burst target.
func TestReportPrint(t *testing.T) {
	r := &report{Command: "go run ./bench/cmd/benchburst", Targets: []string{"today", "gathered"}, Conns: 15000}
	r.add("rate 10/s", "today", &figures{Accepted: 100, DeliveriesPerS: 100000})
	r.add("rate 10/s", "gathered", &figures{Accepted: 100, DeliveriesPerS: 150000})
	for _, v := range []float64{70000, 80000, 90000} {
		r.addBurst("today", &figures{Offered: 100, Accepted: 100, DeliveriesPerS: v})
		r.addBurst("gathered", &figures{Offered: 100, Accepted: 100, DeliveriesPerS: 2 * v})
	}
	var b bytes.Buffer
	r.print(&b)
	out := b.String()
	for _, want := range []string{"command: go run ./bench/cmd/benchburst", "rate 10/s  gathered/today", "1.50x",
		"burst of 100 (median of 3)", "2.00x (target >= 1.50x)", `"deliveries_per_s":160000`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

// The peak RSS of a scenario is taken over its load phase: the reading in force
// when it began and the later ones, not the ramp's.
func TestPeakFrom(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ss := []rssSample{{t0, 900}, {t0.Add(time.Second), 100}, {t0.Add(2 * time.Second), 300}, {t0.Add(3 * time.Second), 200}}
	for _, c := range []struct {
		from time.Duration
		want int64
	}{
		{1500 * time.Millisecond, 300}, // the ramp's 900 is left out; 100 was in force at 1.5 s
		{-time.Second, 900},            // from before every sample: all of them
		{time.Hour, 200},               // after every sample: the last one is in force
		{0, 900},
	} {
		if got := peakFrom(ss, t0.Add(c.from)); got != c.want {
			t.Errorf("peakFrom(%v) = %d, want %d", c.from, got, c.want)
		}
	}
}
