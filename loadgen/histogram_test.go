package loadgen

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Merging per-loop (or per-process) histograms must give exactly the histogram that
// recorded every value itself, also through the text encoding used between processes.
func TestHistogramMergeIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all := NewHistogram()
	parts := []*Histogram{NewHistogram(), NewHistogram(), NewHistogram()}
	for i := 0; i < 100000; i++ {
		// Log-uniform from 1 µs to about 2 h, so the clamped ends are hit too.
		d := time.Duration(float64(time.Microsecond) * pow10(r.Float64()*9.9))
		all.Record(d)
		parts[i%3].Record(d)
	}
	merged := NewHistogram()
	for _, p := range parts {
		text, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Histogram
		if err := back.UnmarshalText(text); err != nil {
			t.Fatal(err)
		}
		if !back.Equal(p) {
			t.Fatal("text round trip changed the histogram")
		}
		if err := merged.Merge(&back); err != nil {
			t.Fatal(err)
		}
	}
	if !merged.Equal(all) || merged.Count() != 100000 {
		t.Fatalf("merged %v, all %v", merged, all)
	}
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		if merged.Quantile(q) != all.Quantile(q) {
			t.Fatalf("q%v: %v vs %v", q, merged.Quantile(q), all.Quantile(q))
		}
	}
	if all.Max() < time.Hour*999/1000 {
		t.Fatalf("clamped max %v", all.Max())
	}
}

func pow10(x float64) float64 {
	v := 1.0
	for ; x >= 1; x-- {
		v *= 10
	}
	// 10^frac via 1 + a few series terms is precise enough for a test distribution.
	f := x * 2.302585092994046
	return v * (1 + f + f*f/2 + f*f*f/6 + f*f*f*f/24)
}

func TestHistogramPrecision(t *testing.T) {
	h := NewHistogram()
	for _, d := range []time.Duration{1234567 * time.Microsecond, 20 * time.Millisecond, 3 * time.Microsecond} {
		h.Reset()
		h.Record(d)
		got := h.Quantile(0.5)
		if diff := (got - d).Abs(); diff > d/1000 {
			t.Fatalf("%v recorded as %v", d, got)
		}
	}
}

func TestHistogramRejectsOtherGeometry(t *testing.T) {
	other := &Histogram{h: hdrhistogram.New(1, 1000, 2)}
	if err := NewHistogram().Merge(other); !errors.Is(err, ErrHistogram) {
		t.Fatalf("err=%v", err)
	}
	_ = other.h.RecordValue(5) // an empty one encodes as "", whatever its geometry
	text, _ := other.MarshalText()
	var h Histogram
	if err := h.UnmarshalText(text); !errors.Is(err, ErrHistogram) {
		t.Fatalf("err=%v", err)
	}
	if err := h.UnmarshalText([]byte("not base64!")); !errors.Is(err, ErrHistogram) {
		t.Fatalf("err=%v", err)
	}
}

func TestStatsJSONMerge(t *testing.T) {
	a, b := newStats(), newStats()
	a.Latency.Record(time.Millisecond)
	b.Latency.Record(2 * time.Millisecond)
	a.Counts.Established, b.Counts.Established = 3, 4
	a.Reasons["eof"], b.Reasons["eof"] = 1, 2
	js, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Stats
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(&back); err != nil {
		t.Fatal(err)
	}
	if a.Latency.Count() != 2 || a.Counts.Established != 7 || a.Reasons["eof"] != 3 || a.Connect.Count() != 0 {
		t.Fatalf("%+v", a)
	}
}
