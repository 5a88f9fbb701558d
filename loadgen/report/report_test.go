package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

var update = flag.Bool("update", false, "rewrite testdata/report.json and the golden HTML")

const (
	fixturePath = "testdata/report.json"
	goldenPath  = "testdata/report.golden.html"
)

// syntheticReport is a realistic broadcast run: 10,000 connections over two workers,
// the second lost at 41 s (its connections drop, close errors jump), 60 one-second
// samples, HDR-like buckets with three significant digits, and three thresholds of
// which one failed. It is the source of testdata/report.json, which the tests read
// back so that they also go through the JSON contract (params decode as float64).
func syntheticReport() *loadgen.Report {
	start := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	r := &loadgen.Report{
		Version: 1,
		Tool:    "herald-loadgen",
		Started: start,
		Ended:   start.Add(60*time.Second + 412*time.Millisecond),
		Seconds: 60.412,
		Target:  "ws://127.0.0.1:6001/app/app-key",
		Scenario: loadgen.Scenario{Name: "broadcast", Params: map[string]any{
			"connections": 10000, "ramp": "10s", "channels": 100, "distribution": "uniform",
			"publish_rate": 50, "payload_bytes": 256, "duration": "60s", "workers": 2,
		}},
		Stopped: "duration",
		Workers: []loadgen.WorkerSummary{
			{ID: 1, Addr: "127.0.1.1:50412", Source: "10.0.1.11", Connections: 5000, State: "ok",
				PID: 41877, Host: "load-1", Connected: 5000, Delivered: 130494, HeapBytes: 301 << 20, RSSBytes: 412 << 20},
			{ID: 2, Addr: "127.0.1.2:50877", Source: "", Connections: 5000, State: "lost",
				PID: 9112, Host: "load-2", Connected: 5000, Delivered: 71275, HeapBytes: 296 << 20, RSSBytes: 405 << 20,
				Error: "control connection closed: read tcp 127.0.0.1:7000->127.0.1.2:50877: connection reset by peer"},
		},
		Thresholds: []loadgen.ThresholdResult{
			{Expr: "p99<250ms", Value: 87.4, OK: true},
			{Expr: "missing==0", Value: 151250, OK: false},
			{Expr: "error_rate<0.01", Value: 0.0021, OK: true},
		},
	}
	var errs uint64
	var published, delivered float64
	for i := range 60 {
		t := float64(i + 1)
		conns := int64(math.Min(t/10, 1) * 10000)
		if t > 41 {
			conns = 5000 // worker 2 lost
		}
		if t == 42 {
			errs += 4980
		}
		errs += uint64(i % 7 / 5) // a trickle of dial errors
		pps := 0.0
		if t > 10 {
			pps = 50 + 2*math.Sin(t/3)
		}
		dps := pps * float64(conns) / 100
		p50 := 3.1 + 0.6*math.Sin(t/5) + float64(conns)/20000
		p99 := 4*p50 + 18*math.Abs(math.Sin(t/7)) + 5
		if t <= 10 {
			p50, p99 = 0, 0 // nothing published during the ramp
		}
		published += pps
		delivered += dps
		r.Series = append(r.Series, loadgen.Sample{T: t, Connections: conns, DeliveriesPerSec: dps,
			PublishesPerSec: pps, P50Ms: round3(p50), P99Ms: round3(p99), Errors: errs})
	}
	r.Totals = loadgen.Totals{
		ConnectionsTarget: 10000, ConnectionsPeak: 10000, Connected: 10000, ConnectErrors: 15, Subscribed: 10000,
		Published: uint64(published), Delivered: uint64(delivered), Expected: uint64(delivered) + 151250,
		Missing: 151250, Duplicated: 3,
		Errors:           map[string]uint64{"close_1006": 4980, "dial": 12, "handshake": 3, "publish_http_500": 2},
		ErrorRate:        0.0021,
		DeliveriesPerSec: delivered / 60.412, PublishesPerSec: published / 60.412,
	}
	r.Reordered, r.RampSeconds, r.ConnectRate = 17, 9.84, 1016.3
	for i := range 100 {
		c := loadgen.ChannelSummary{Name: "broadcast-" + strconv.Itoa(i), Expected: r.Totals.Expected / 100}
		if i%2 == 1 { // the lost worker's subscribers were on the odd channels
			c.Missing = r.Totals.Missing / 50
		}
		if i == 7 || i == 42 || i == 99 {
			c.Duplicated = 1
		}
		c.Delivered = c.Expected - c.Missing + c.Duplicated
		r.Channels = append(r.Channels, c)
	}
	r.Latency = lognormal(3.4, 0.55, 0.25, 300, uint64(delivered))
	r.Connect = lognormal(14, 0.7, 1, 400, 10000)
	return r
}

// lognormal fills a Distribution the way an HdrHistogram with three significant
// digits would report it: bounds every 2 %, rounded to three digits, empty buckets
// left out, plus a thin tail so the chart has one.
func lognormal(medianMs, sigma, fromMs, toMs float64, n uint64) loadgen.Distribution {
	d := loadgen.Distribution{Count: n}
	var acc uint64
	cdf := func(x float64) float64 { return 0.5 * math.Erfc(-(math.Log(x/medianMs))/(sigma*math.Sqrt2)) }
	prev := fromMs
	for ub := fromMs * 1.02; ub <= toMs; ub *= 1.02 {
		b := round3(ub)
		c := uint64(float64(n) * (cdf(b) - cdf(prev)))
		prev = b
		if c == 0 {
			continue
		}
		d.Buckets = append(d.Buckets, loadgen.Bucket{UpToMs: b, Count: c})
		acc += c
	}
	if acc < n {
		d.Buckets = append(d.Buckets, loadgen.Bucket{UpToMs: round3(toMs * 2.1), Count: n - acc})
	}
	q := func(p float64) float64 {
		return round3(medianMs * math.Exp(sigma*math.Sqrt2*math.Erfinv(2*p-1)))
	}
	d.MinMs, d.MeanMs = d.Buckets[0].UpToMs, round3(medianMs*math.Exp(sigma*sigma/2))
	d.P50Ms, d.P90Ms, d.P95Ms, d.P99Ms, d.P999Ms = q(.5), q(.9), q(.95), q(.99), q(.999)
	d.MaxMs = d.Buckets[len(d.Buckets)-1].UpToMs
	return d
}

func round3(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 3, 64), 64)
	return f
}

var (
	fixtureOnce sync.Once
	fixtureErr  error
)

// loadFixture reads the realistic report from testdata, rewriting it first under
// -update.
func loadFixture(t *testing.T) *loadgen.Report {
	t.Helper()
	if *update {
		// Once: parallel browser subtests load the fixture too.
		fixtureOnce.Do(func() {
			b, err := json.MarshalIndent(syntheticReport(), "", "  ")
			if err == nil {
				err = os.WriteFile(fixturePath, append(b, '\n'), 0o644)
			}
			fixtureErr = err
		})
		if fixtureErr != nil {
			t.Fatal(fixtureErr)
		}
	}
	b, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	var r loadgen.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func render(t *testing.T, r *loadgen.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	r := loadFixture(t)
	if len(r.Series) != 60 || len(r.Latency.Buckets) < 200 || len(r.Workers) != 2 || len(r.Thresholds) != 3 {
		t.Fatalf("fixture is not the realistic one: %d samples, %d buckets, %d workers, %d thresholds",
			len(r.Series), len(r.Latency.Buckets), len(r.Workers), len(r.Thresholds))
	}
	got := render(t, r)
	if *update {
		if err := os.WriteFile(goldenPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("output differs from %s at line %d (run go test -update if intended):\n got: %.300s\nwant: %.300s",
					goldenPath, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("output differs from %s in length: %d lines, want %d (run go test -update if intended)",
			goldenPath, len(gl), len(wl))
	}
}

// The realistic report shows what the reader needs: the verdict, the lost worker,
// the failed threshold, every chart with data and no placeholder.
func TestContent(t *testing.T) {
	out := render(t, loadFixture(t))
	for _, want := range []string{
		`<span class="badge fail">FAILED</span>`, "1 of 3 thresholds failed",
		"ws://127.0.0.1:6001/app/app-key", "broadcast", "<b>connections</b>10000", "<b>ramp</b>10s",
		"2025-03-14 09:26:53 UTC", "1m0.4s", `<span class="pill no">FAIL</span>`, "missing==0",
		`<td class="state">lost</td>`, "connection reset by peer", "close_1006", "load-2 · pid 9112", "412.0 MiB",
		"51 of 100 with losses", "… and 36 more channels", "Reordered", "1,016/s connections established",
		`id="ts-connections"`, `id="ts-throughput"`, `id="ts-latency"`, `id="ts-errors"`,
		`id="hist-latency"`, `id="hist-connect"`, "target 10,000", "p99 ", "latency (ms, log scale)",
		`stroke="` + colorBlue + `"`, `stroke="` + colorOrange + `"`, `fill="` + colorBlue + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "No data") {
		t.Error("a chart of the full report shows the no-data placeholder")
	}
}

// Each chart of an empty report is a placeholder, nothing divides by zero, and
// distribution statistics read as absent rather than as 0 ms.
func TestEmptyReport(t *testing.T) {
	for name, r := range map[string]*loadgen.Report{
		"zero":          {},
		"passed, empty": {Version: 1, Tool: "herald-loadgen", Passed: true, Series: []loadgen.Sample{}, Totals: loadgen.Totals{Errors: map[string]uint64{}}},
	} {
		t.Run(name, func(t *testing.T) {
			out := render(t, r)
			if n := strings.Count(out, ">No data</text>"); n != 6 {
				t.Errorf("%d no-data placeholders, want 6 (4 time series, 2 histograms)", n)
			}
			for _, bad := range []string{"NaN", "Inf", "class=\"c-series\"", "class=\"c-bar\""} {
				if strings.Contains(out, bad) {
					t.Errorf("empty report contains %q", bad)
				}
			}
			if !strings.Contains(out, "No errors.") || !strings.Contains(out, "No workers reported.") ||
				!strings.Contains(out, "no per-channel accounting") {
				t.Error("empty tables are not explained")
			}
		})
	}
}

// A single sample, gaps, and non-finite values must not produce invalid SVG.
func TestDegenerateSeries(t *testing.T) {
	r := &loadgen.Report{
		Series: []loadgen.Sample{{T: 1, Connections: 5, P50Ms: math.NaN(), P99Ms: math.Inf(1), DeliveriesPerSec: math.Inf(-1)}},
		Latency: loadgen.Distribution{Count: 3, P50Ms: math.NaN(), P99Ms: 1e9, Buckets: []loadgen.Bucket{
			{UpToMs: 0, Count: 1}, {UpToMs: math.Inf(1), Count: 1}, {UpToMs: 5, Count: 1}}},
		Totals: loadgen.Totals{ErrorRate: math.NaN()},
	}
	out := render(t, r)
	svg := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(out, -1)
	if len(svg) != 6 {
		t.Fatalf("%d charts, want 6", len(svg))
	}
	for _, s := range svg {
		if strings.Contains(s, "NaN") || strings.Contains(s, "Inf") {
			t.Errorf("non-finite number in SVG: %.400s", s)
		}
	}
	if !strings.Contains(out, "<circle") {
		t.Error("a lone sample is not marked")
	}
}

// hostile puts markup in every string field a user or a remote worker controls.
func hostile() *loadgen.Report {
	const x = `<script>alert(1)</script>`
	const attr = `"><img src=https://evil.example/x.png onerror=alert(2)>`
	return &loadgen.Report{
		Tool: x, Target: "https://cdn.example/" + x, Stopped: "error: " + x,
		Scenario: loadgen.Scenario{Name: x, Params: map[string]any{x: x, "css": "</style><link rel=stylesheet href=https://evil.example/a.css>", "attr": attr}},
		Workers:  []loadgen.WorkerSummary{{ID: 1, Addr: attr, Source: x, State: attr, Error: x, Host: x}},
		Channels: []loadgen.ChannelSummary{{Name: x, Missing: 1}},
		Totals:   loadgen.Totals{Errors: map[string]uint64{x: 1, attr: 2, "@import url(https://evil.example/b.css);": 3}},
		Thresholds: []loadgen.ThresholdResult{
			{Expr: x, OK: false},
		},
	}
}

func TestEscaping(t *testing.T) {
	out := render(t, hostile())
	for _, bad := range []string{"<script", "<img", "<link rel=stylesheet", "onerror=alert(2)>"} {
		if strings.Contains(out, bad) {
			t.Errorf("hostile input reached the page unescaped: %q", bad)
		}
	}
	if n := strings.Count(out, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 8 {
		t.Errorf("escaped script text appears %d times, want it in every field (>= 8)", n)
	}
	// The state is shown as text but never chosen as a CSS class.
	if !strings.Contains(out, `<tr class="bad"><td>1</td>`) {
		t.Error("a worker in an unknown state is not highlighted")
	}
}

// markup keeps what the browser interprets as markup, tags and style sheets, and drops
// text nodes: hostile text such as "src=https://…" is harmless once escaped, and only
// the template's own tags can reference a resource (escaping keeps quotes inside
// attribute values, so no value can open a new attribute).
func markup(page string) string {
	var b strings.Builder
	for _, m := range tagOrStyle.FindAllString(page, -1) {
		b.WriteString(m)
		b.WriteByte('\n')
	}
	return b.String()
}

var tagOrStyle = regexp.MustCompile(`(?s)<style>.*?</style>|<[a-zA-Z][^>]*>`)

// resourceRef matches anything a browser would fetch from another host.
var resourceRef = regexp.MustCompile(`(?i)(\b(src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(https?:)?//)|@import|url\(\s*["']?\s*(https?:)?//`)

func TestSelfContained(t *testing.T) {
	full := render(t, loadFixture(t))
	if strings.Contains(full, "http://") || strings.Contains(full, "https://") {
		t.Error("the realistic report mentions an http(s) URL")
	}
	for name, out := range map[string]string{"fixture": full, "hostile": render(t, hostile()), "empty": render(t, &loadgen.Report{})} {
		if m := resourceRef.FindString(markup(out)); m != "" {
			t.Errorf("%s: external resource reference %q", name, m)
		}
		if !strings.Contains(out, `content="default-src 'none';`) {
			t.Errorf("%s: no content security policy", name)
		}
	}
	// The pattern itself must catch what it is for, or the test above cannot fail.
	for _, s := range []string{`<script src="https://cdn.example/x.js">`, `<link href='//fonts.example/f.css'>`,
		`<style>@import "x.css";</style>`, `<style>b{background:url( http://x/y.png)}</style>`} {
		if !resourceRef.MatchString(markup(s)) {
			t.Errorf("resourceRef misses %q", s)
		}
	}
}

// Maps (params, errors) must not make the output vary between runs.
func TestDeterministic(t *testing.T) {
	r := loadFixture(t)
	r.Totals.Errors = map[string]uint64{}
	r.Scenario.Params = map[string]any{}
	for i := range 40 {
		r.Totals.Errors["kind_"+strconv.Itoa(i)] = uint64(i % 3)
		r.Scenario.Params["p"+strconv.Itoa(i)] = map[string]any{"b": i, "a": []any{i, "x"}}
	}
	first := render(t, r)
	for range 5 {
		if render(t, r) != first {
			t.Fatal("two renderings of the same report differ")
		}
	}
}

type failingWriter struct{}

var errWrite = errors.New("disk full")

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestErrors(t *testing.T) {
	if err := WriteHTML(&bytes.Buffer{}, nil); !errors.Is(err, ErrNilReport) {
		t.Errorf("nil report: %v, want ErrNilReport", err)
	}
	if err := WriteHTML(failingWriter{}, &loadgen.Report{}); !errors.Is(err, errWrite) {
		t.Errorf("failing writer: %v, want it wrapped", err)
	}
}

func TestNiceTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		n      int
		want   []float64
	}{
		{0, 10000, 5, []float64{0, 2000, 4000, 6000, 8000, 10000}},
		{0, 60, 6, []float64{0, 10, 20, 30, 40, 50, 60}},
		{0, 0.3, 5, []float64{0, 0.1, 0.2, 0.3}},
		{0, 0, 5, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 11, 5, []float64{0, 2.5, 5, 7.5, 10, 12.5}},
		{0, math.NaN(), 5, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
	} {
		got := niceTicks(c.lo, c.hi, c.n)
		if !slicesEqual(got, c.want) {
			t.Errorf("niceTicks(%v, %v, %d) = %v, want %v", c.lo, c.hi, c.n, got, c.want)
		}
	}
}

func TestAlignedTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		n      int
		want   []float64
	}{
		{0, 52, 6, []float64{0, 10, 20, 30, 40, 50, 60}},
		{0, 52, 3, []float64{0, 20, 40, 60}},
		{0, 0, 4, []float64{0, 0.25, 0.5, 0.75, 1}},
		{0, 9.9, 4, []float64{0, 2.5, 5, 7.5, 10}},
	} {
		if got := alignedTicks(c.lo, c.hi, c.n); !slicesEqual(got, c.want) {
			t.Errorf("alignedTicks(%v, %v, %d) = %v, want %v", c.lo, c.hi, c.n, got, c.want)
		}
	}
}

func TestLogTicks(t *testing.T) {
	lo, hi, ticks, labeled := logTicks(0.3, 180)
	if lo != 0.2 || hi != 200 {
		t.Errorf("range %v..%v, want 0.2..200", lo, hi)
	}
	want := []float64{0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200}
	if !slicesEqual(ticks, want) || !labeled(0.5) {
		t.Errorf("ticks %v, want %v all labelled", ticks, want)
	}
	_, _, _, labeled = logTicks(0.002, 3000)
	if labeled(2) || !labeled(10) || !labeled(0.001) {
		t.Error("beyond three decades only powers of ten should be labelled")
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtInt(uint64(1234567)), "1,234,567"}, {fmtInt(int64(-1000)), "-1,000"}, {fmtInt(0), "0"},
		{fmtFloat(12345.678, 1), "12,345.7"}, {fmtFloat(-0.04, 1), "0.0"},
		{fmtMs(0.1234), "0.123 ms"}, {fmtMs(4.567), "4.57 ms"}, {fmtMs(87.44), "87.4 ms"}, {fmtMs(1234.6), "1,235 ms"},
		{fmtPct(0.0021), "0.210%"}, {fmtPct(0), "0%"}, {fmtPct(1e-9), "< 0.001%"}, {fmtPct(1), "100.0%"},
		{fmtSeconds(42.25), "42.2 s"}, {fmtSeconds(60.412), "1m0.4s"},
		{fmtNum(87.4), "87.4"}, {fmtNum(151250), "151,250"}, {fmtNum(0.0021), "0.0021"},
		{fmtParam(float64(10000)), "10000"}, {fmtParam("10s"), "10s"}, {fmtParam(map[string]any{"b": 1, "a": 2}), `{"a":2,"b":1}`},
		{axisLabel(6000, []float64{0, 2000, 4000, 6000}), "6,000"}, {axisLabel(0, []float64{0, 20000}), "0"}, {axisLabel(40000, []float64{0, 20000, 40000}), "40k"},
		{axisLabel(2.5, []float64{0, 2.5, 5}), "2.5"}, {axisLabel(1.5e6, []float64{0, 5e5, 1e6, 1.5e6}), "1.5M"},
		{msTick(0.5), "0.5"}, {msTick(2000), "2 s"},
		{fmtBytes(412 << 20), "412.0 MiB"}, {fmtBytes(512), "512 B"}, {fmtBytes(0), dash},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestRebin(t *testing.T) {
	// Log-uniform data: every full display bin must get the same share (no aliasing
	// zigzag) and no count may be lost. Two bucket layouts: 2 % steps, and HDR's 1 µs
	// buckets at 50-500 µs, where a bucket is 0.2-2 % wide.
	type layout struct {
		name string
		bs   []bucketIn
	}
	var pct, hdr layout
	pct.name, hdr.name = "2% buckets", "1 µs buckets"
	for v := 1.02; v < 100; v *= 1.02 {
		pct.bs = append(pct.bs, bucketIn{UpToMs: v, Count: 1000})
	}
	for us := 51; us <= 500; us++ { // count ∝ width/value keeps the density log-uniform
		hdr.bs = append(hdr.bs, bucketIn{UpToMs: float64(us) / 1000, Count: uint64(1e7 / float64(us))})
	}
	for _, l := range []layout{pct, hdr} {
		var total uint64
		for _, b := range l.bs {
			total += b.Count
		}
		counts, lo, hi := rebin(l.bs, 20)
		sum := 0.0
		for _, n := range counts {
			sum += n
		}
		if math.Abs(sum-float64(total)) > 1e-6*float64(total) {
			t.Errorf("%s: rebinned total %v, want %d", l.name, sum, total)
		}
		want := counts[(lo+hi)/2]
		for j := lo + 1; j < hi; j++ {
			if math.Abs(counts[j]-want)/want > 0.02 {
				t.Errorf("%s: bin %d holds %.0f, its neighbours %.0f (± 2%%)", l.name, j, counts[j], want)
			}
		}
	}
	if gap := bucketGap(pct.bs); math.Abs(gap-math.Log10(1.02)) > 1e-9 {
		t.Errorf("gap %v, want log10(1.02)", gap)
	}
	// A bucket after a run of empty ones spreads over one bin at most.
	counts, lo, hi := rebin([]bucketIn{{UpToMs: 1, Count: 1}, {UpToMs: 1000, Count: 1}}, 20)
	if len(counts) != 2 || lo != -1 || hi != 59 {
		t.Errorf("sparse buckets spread over %v (bins %d..%d), want bins -1 and 59 only", counts, lo, hi)
	}
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}

// writeTemp renders r into dir and returns the file's path (browser test helper).
func writeTemp(t *testing.T, dir, name string, r *loadgen.Report) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(render(t, r)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A run against several servers lists each one's connections; a presence run has its
// own group.
func TestClusterAndPresence(t *testing.T) {
	r := loadFixture(t)
	r.Targets = []loadgen.TargetSummary{
		{URL: "ws://127.0.0.1:6001/app/app-key", Connected: 5000},
		{URL: "ws://127.0.0.1:6002/app/app-key", Connected: 5000},
	}
	r.PublishTarget = "http://127.0.0.1:6001"
	r.Presence = &loadgen.PresenceSummary{Joins: 12000, Leaves: 11990, JoinsPerSec: 1000.4, LeavesPerSec: 999.2,
		MemberAdded: 580000, MemberRemoved: 570000,
		MemberLatency:     loadgen.Distribution{Count: 580000, P50Ms: 412.5, P99Ms: 1900},
		MemberLatencyLoad: loadgen.Distribution{Count: 500000, P50Ms: 5.77, P99Ms: 41.2}}
	out := render(t, r)
	for _, want := range []string{
		"ws://127.0.0.1:6001/app/app-key and 1 more", "Server 2", "ws://127.0.0.1:6002/app/app-key",
		"Published to", "http://127.0.0.1:6001", "Presence", "Joins/s", "1,000/s", "member_removed", "570,000",
		"Join → member_added p50", "5.77 ms", "41.2", "412",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// A run that published through the API has a Broadcasts group; lost connections
// are shown when there are any.
func TestBroadcasts(t *testing.T) {
	r := loadFixture(t)
	r.Totals.LostConnections = 3
	r.Broadcasts = &loadgen.BroadcastSummary{Count: 20, Complete: 19, Incomplete: 1,
		Completion: loadgen.Distribution{Count: 19, P50Ms: 4321.5, MaxMs: 9876},
		Items:      []loadgen.BroadcastItem{{Seq: 1, Expected: 1000000}, {Seq: 2, Expected: 1000000}}}
	out := render(t, r)
	for _, want := range []string{"Broadcasts", "Publish → last delivery p50", "4,322 ms", "9,876", "1,000,000 subscribers",
		"Incomplete", "Lost", "not by loadgen"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
