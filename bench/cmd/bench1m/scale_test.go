package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseScale(t *testing.T) {
	got, err := parseScale("1m, 100k,250000,500K,100k")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100_000, 250_000, 500_000, 1_000_000}; !slices.Equal(got, want) {
		t.Fatalf("parseScale = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "0", "-5", "1g", "k", "100k,,1m"} {
		if _, err := parseScale(bad); err == nil {
			t.Errorf("parseScale(%q): no error", bad)
		}
	}
}

func TestScaleFlagSizesEveryRunOnTheLargestHubs(t *testing.T) {
	o, err := parseFlags([]string{"--scale", "100k,1m", "--broadcasts", "3x20s", "--broadcast-hold", "0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.conns != 1_000_000 || o.hubs != 55 || o.workers != 55 {
		t.Fatalf("largest: conns %d hubs %d workers %d", o.conns, o.hubs, o.workers)
	}
	small, err := o.sized(100_000)
	if err != nil {
		t.Fatal(err)
	}
	if small.hubs != 55 || small.workers != 6 || small.lgDuration >= o.lgDuration {
		t.Fatalf("100k: hubs %d workers %d duration %v (largest %v)", small.hubs, small.workers, small.lgDuration, o.lgDuration)
	}
}

func TestScaleReportWritesTableAndCharts(t *testing.T) {
	rep := &scaleReport{Command: "go run ./bench/cmd/bench1m --scale 100k,1m", Redis: "single"}
	for i, n := range []int64{100_000, 1_000_000} {
		rep.Points = append(rep.Points, scalePoint{Conns: n, Reached: n, Hubs: 55, Workers: 6 + 49*i, ConnsPerSec: 4000,
			HeraldAnonPerConn: 400 + 30*float64(i), ClientAnonPerConn: 700, KernelPerConn: 10_000, Broadcasts: 5, Complete: 5,
			CompletionP50Ms: 900 + 11_000*float64(i), CompletionMaxMs: 1000 + 12_000*float64(i), DeliveriesPerSec: 90_000, Passed: true})
	}
	var out bytes.Buffer
	rep.print(&out)
	if !strings.Contains(out.String(), "1,000,000") || !strings.Contains(out.String(), "13000") {
		t.Fatalf("table:\n%s", out.String())
	}
	dir := t.TempDir()
	_, h, err := rep.write(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h != filepath.Join(dir, "bench1m-scale.html") {
		t.Fatalf("html at %s", h)
	}
	b, err := os.ReadFile(h)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if n := strings.Count(page, "<svg"); n != 3 {
		t.Errorf("%d charts, want 3", n)
	}
	if n := strings.Count(page, "<polyline"); n != 6 { // 2 + 3 + 1 series
		t.Errorf("%d series, want 6", n)
	}
	for _, want := range []string{"<td>1,000,000</td>", "<td>13.0 s</td>", "<td>5 of 5</td>", "1M</text>"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}
