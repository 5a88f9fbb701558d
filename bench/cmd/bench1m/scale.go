package main

// --scale runs the whole measurement once per size, smallest first, on the same
// cluster shape (the hub count of the largest size, so that every size is fanned out
// by the same processes), and writes how memory and broadcast completion grow: a
// table on stdout, and bin/bench1m-scale.{json,html} with a chart.

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// parseScale reads --scale: connection counts, comma separated, "k" and "m" allowed.
func parseScale(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		mul := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mul, f = 1_000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mul, f = 1_000_000, strings.TrimSuffix(f, "m")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > math.MaxInt/mul {
			return nil, fmt.Errorf("%w: --scale %q: want connection counts such as 100k,250k,500k,1m", errUsage, s)
		}
		out = append(out, n*mul)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// scalePoint is one size's figures, taken from its result.
type scalePoint struct {
	Conns             int64   `json:"conns"`
	Reached           int64   `json:"reached"`
	Hubs              int     `json:"hubs"`
	Workers           int     `json:"workers"`
	ConnsPerSec       float64 `json:"connections_per_s"`
	HeraldAnonPerConn float64 `json:"herald_private_per_conn"`
	HeraldHeapPerConn float64 `json:"herald_heap_per_conn"`
	ClientAnonPerConn float64 `json:"loadgen_private_per_conn"`
	KernelPerConn     float64 `json:"kernel_per_conn"` // from MemFree
	RedisUsed         int64   `json:"redis_used_memory"`
	Broadcasts        int     `json:"broadcasts"`
	Complete          int     `json:"complete"`
	CompletionP50Ms   float64 `json:"completion_p50_ms"`
	CompletionMaxMs   float64 `json:"completion_max_ms"`
	DeliveriesPerSec  float64 `json:"deliveries_per_s"`
	Passed            bool    `json:"passed"`
	Note              string  `json:"note,omitempty"`
}

func pointOf(r *result) scalePoint {
	o := r.Options
	p := scalePoint{Conns: r.Target, Reached: r.Reached, Hubs: o.Hubs, Workers: o.Workers, ConnsPerSec: r.ConnsPerSec,
		HeraldAnonPerConn: r.HeraldAnonPerConn, HeraldHeapPerConn: r.HeraldHeapPerConn, ClientAnonPerConn: r.ClientAnonPerConn,
		RedisUsed: r.RedisUsedPeak, Note: r.Stopped}
	if r.Reached > 0 {
		p.KernelPerConn = float64(r.KernelFreeBytes) / float64(r.Reached)
	}
	if g := r.Loadgen; g != nil {
		p.Passed = g.ExitCode == 0 && r.Reached >= r.Target && r.HoldNote == ""
		p.DeliveriesPerSec = g.BroadcastRate
		if b := g.Broadcasts; b != nil {
			p.Broadcasts, p.Complete = b.Count, b.Complete
			p.CompletionP50Ms, p.CompletionMaxMs = b.Completion.P50Ms, b.Completion.MaxMs
		}
		if !p.Passed && p.Note == "" {
			p.Note = fmt.Sprintf("loadgen exit %d (%s)", g.ExitCode, g.exitMeaning())
		}
	}
	return p
}

// scaleReport is what --scale writes.
type scaleReport struct {
	Command string       `json:"command"`
	Machine machineInfo  `json:"machine"`
	Redis   string       `json:"redis"`
	Points  []scalePoint `json:"points"`
	Runs    []*result    `json:"runs"`
}

func (s *scaleReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nHow cost grows, on one cluster shape (redis %s); command: %s\n", s.Redis, s.Command)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "connections\thubs\tworkers\tconn/s\therald B/conn\theap B/conn\tloadgen B/conn\tkernel B/conn\tredis used\tbroadcasts\tp50 ms\tmax ms\tdeliveries/s\tpassed\t")
	for _, p := range s.Points {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%d/%d\t%.0f\t%.0f\t%s\t%v\t\n",
			thousands(p.Reached), p.Hubs, p.Workers, thousands(int64(p.ConnsPerSec)), p.HeraldAnonPerConn, p.HeraldHeapPerConn,
			p.ClientAnonPerConn, p.KernelPerConn, size(p.RedisUsed), p.Complete, p.Broadcasts, p.CompletionP50Ms, p.CompletionMaxMs,
			thousands(int64(p.DeliveriesPerSec)), p.Passed)
	}
	tw.Flush()
	for _, p := range s.Points {
		if p.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", thousands(p.Conns), p.Note)
		}
	}
}

// write saves the JSON and the HTML report under dir.
func (s *scaleReport) write(dir string) (jsonPath, htmlPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	jsonPath, htmlPath = filepath.Join(dir, "bench1m-scale.json"), filepath.Join(dir, "bench1m-scale.html")
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(jsonPath, b, 0o644); err != nil {
		return "", "", err
	}
	f, err := os.Create(htmlPath)
	if err != nil {
		return "", "", err
	}
	if err := scaleHTML.Execute(f, s.view()); err != nil {
		f.Close()
		return "", "", err
	}
	return jsonPath, htmlPath, f.Close()
}

// chart is one SVG line chart: x is the connection count, each series a line.
type chart struct {
	Title, YLabel string
	W, H          int
	Series        []series
	XTicks        []tick
	YTicks        []tick
}

type series struct {
	Name, Color          string
	Points               string // SVG polyline points
	Dots                 []dot
	LegendX, LegendTextX int
}

type dot struct {
	X, Y  float64
	Label string
}

type tick struct {
	Pos   float64
	Label string
}

const (
	chartW, chartH = 560, 300
	padL, padR     = 70, 20
	padT, padB     = 30, 50
)

// newChart scales the series (y values per point) onto one chart; x is linear in
// connections from 0 to the largest.
func newChart(title, ylabel string, xs []float64, names, colors []string, ys [][]float64, unit func(float64) string) chart {
	c := chart{Title: title, YLabel: ylabel, W: chartW, H: chartH}
	xmax, ymax := 0.0, 0.0
	for _, x := range xs {
		xmax = max(xmax, x)
	}
	for _, s := range ys {
		for _, y := range s {
			ymax = max(ymax, y)
		}
	}
	if xmax == 0 {
		xmax = 1
	}
	ymax = niceCeil(ymax)
	px := func(x float64) float64 { return padL + x/xmax*float64(chartW-padL-padR) }
	py := func(y float64) float64 { return float64(chartH-padB) - y/ymax*float64(chartH-padT-padB) }
	for i, name := range names {
		s := series{Name: name, Color: colors[i%len(colors)], LegendX: padL + 10 + 160*i, LegendTextX: padL + 24 + 160*i}
		var pts []string
		for j, y := range ys[i] {
			if j >= len(xs) || math.IsNaN(y) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[j]), py(y)))
			s.Dots = append(s.Dots, dot{X: px(xs[j]), Y: py(y), Label: unit(y)})
		}
		s.Points = strings.Join(pts, " ")
		c.Series = append(c.Series, s)
	}
	for _, x := range xs {
		c.XTicks = append(c.XTicks, tick{Pos: px(x), Label: shortCount(x)})
	}
	for k := 0; k <= 4; k++ {
		y := ymax * float64(k) / 4
		c.YTicks = append(c.YTicks, tick{Pos: py(y), Label: unit(y)})
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func shortCount(x float64) string {
	switch {
	case x >= 1e6:
		return strconv.FormatFloat(x/1e6, 'f', -1, 64) + "M"
	case x >= 1e3:
		return strconv.FormatFloat(x/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

type scaleView struct {
	*scaleReport
	Head   []string
	Rows   [][]string
	Charts []chart
}

func (s *scaleReport) view() scaleView {
	var xs []float64
	var p50, pmax, herald, heap, client, kernel []float64
	for _, p := range s.Points {
		xs = append(xs, float64(p.Reached))
		p50, pmax = append(p50, p.CompletionP50Ms/1000), append(pmax, p.CompletionMaxMs/1000)
		herald, heap = append(herald, p.HeraldAnonPerConn), append(heap, p.HeraldHeapPerConn)
		client, kernel = append(client, p.ClientAnonPerConn), append(kernel, p.KernelPerConn)
	}
	secs := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " s" }
	bytes := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + " B" }
	kb := func(v float64) string { return strconv.FormatFloat(v/1000, 'f', 1, 64) + " kB" }
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}
	head := []string{"connections", "hubs", "workers", "ramp conn/s", "herald B/conn (private)", "herald Go heap B/conn",
		"loadgen B/conn", "kernel B/conn", "redis used_memory", "broadcasts complete", "completion p50", "completion max", "deliveries/s", "passed"}
	var rows [][]string
	f0 := func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
	for _, p := range s.Points {
		rows = append(rows, []string{thousands(p.Reached), strconv.Itoa(p.Hubs), strconv.Itoa(p.Workers), thousands(int64(p.ConnsPerSec)),
			f0(p.HeraldAnonPerConn), f0(p.HeraldHeapPerConn), f0(p.ClientAnonPerConn), f0(p.KernelPerConn), size(p.RedisUsed),
			fmt.Sprintf("%d of %d", p.Complete, p.Broadcasts), secs(p.CompletionP50Ms / 1000), secs(p.CompletionMaxMs / 1000),
			thousands(int64(p.DeliveriesPerSec)), fmt.Sprint(p.Passed)})
	}
	return scaleView{scaleReport: s, Head: head, Rows: rows, Charts: []chart{
		newChart("Broadcast to every connection: publish to the last delivery", "seconds", xs,
			[]string{"p50 over the broadcasts", "max"}, colors, [][]float64{p50, pmax}, secs),
		newChart("Herald and loadgen memory per connection (private, growth from start)", "bytes", xs,
			[]string{"herald private", "herald Go heap in use", "loadgen private"}, colors, [][]float64{herald, heap, client}, bytes),
		newChart("Kernel memory per connection, both ends (from MemFree)", "bytes", xs,
			[]string{"kernel"}, colors, [][]float64{kernel}, kb),
	}}
}

var scaleHTML = template.Must(template.New("scale").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Herald: how cost grows with connections</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
svg{margin:1em 2em 1em 0;border:1px solid #eee}text{font-size:11px}
code{background:#f4f4f4;padding:1px 4px}
</style></head><body>
<h1>How cost grows with connections</h1>
<p>One Herald cluster (redis: {{.Redis}}) on one machine: nproc {{.Machine.NProc}}, {{.Machine.GoVersion}}, linux {{.Machine.Kernel}}.
Command: <code>{{.Command}}</code>. Each size is a separate run on the same number of hubs; memory is measured at the end of the hold, before the first broadcast; completion is from the publish to the last of the deliveries, over all connections.</p>
<table>
<tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{range .Charts}}
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
<text x="10" y="18" font-weight="bold" font-size="13">{{.Title}}</text>
{{range .YTicks}}<line x1="70" x2="540" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#eee"/><text x="64" y="{{.Pos}}" text-anchor="end" dy="4">{{.Label}}</text>{{end}}
{{range .XTicks}}<text x="{{.Pos}}" y="268" text-anchor="middle">{{.Label}}</text>{{end}}
<text x="305" y="292" text-anchor="middle">connections</text>
{{range .Series}}<polyline fill="none" stroke="{{.Color}}" stroke-width="2" points="{{.Points}}"/>
{{$c := .Color}}{{range .Dots}}<circle cx="{{.X}}" cy="{{.Y}}" r="3" fill="{{$c}}"><title>{{.Label}}</title></circle>{{end}}
<rect x="{{.LegendX}}" y="26" width="10" height="10" fill="{{.Color}}"/><text x="{{.LegendTextX}}" y="35">{{.Name}}</text>{{end}}
</svg>{{end}}
</body></html>
`))

// runScale runs the measurement once per size of --scale, smallest first, each
// with its own redis and hubs (the same number of hubs every time), prints each
// run and then the table, and writes the scale report. It stops at the first size
// that does not pass: a bigger one would not either, and what was measured is kept.
func runScale(ctx context.Context, o options, dir, command string, stdout, stderr io.Writer) error {
	rep := &scaleReport{Command: command, Machine: machine(), Redis: o.redis}
	var failed error
	for i, n := range o.scale {
		if ctx.Err() != nil {
			failed = ctx.Err()
			break
		}
		on, err := o.sized(n)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench1m: --scale %d of %d: %s connections, %d hubs, %d workers\n", i+1, len(o.scale), thousands(int64(n)), on.hubs, on.workers)
		sub := filepath.Join(dir, strconv.Itoa(n))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"herald", "loadgen"} { // built once, in dir
			if err := os.Symlink(filepath.Join(dir, f), filepath.Join(sub, f)); err != nil {
				return err
			}
		}
		r := &runner{o: on, dir: sub, out: stdout, log: stderr}
		res := r.runLoadgen(ctx)
		res.Command = command
		res.Elapsed = time.Since(r.started).Round(100 * time.Millisecond).String()
		res.print(stdout)
		rep.Points = append(rep.Points, pointOf(res))
		rep.Runs = append(rep.Runs, res)
		if failed = verdict(on, res); failed != nil {
			failed = fmt.Errorf("%s connections: %w", thousands(int64(n)), failed)
			break
		}
	}
	rep.print(stdout)
	if j, h, err := rep.write(o.outDir); err != nil {
		fmt.Fprintln(stderr, "bench1m: scale report:", err)
	} else {
		fmt.Fprintf(stdout, "scale report: %s, %s\n", j, h)
	}
	return failed
}
