package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// The HTML report is one self-contained page: inline CSS and SVG, no script, nothing
// fetched. Each chart is the samples over the whole soak, one line per node, with the
// load phase and the two compared windows marked.

var nodeColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"}

type chartLine struct {
	name  string
	color string
	dash  bool
	pts   [][2]float64 // (t s, value)
}

func writeHTML(w io.Writer, r *report) error {
	var b strings.Builder
	esc := html.EscapeString
	verdict, vclass := "passed", "ok"
	if r.Failed() {
		verdict, vclass = "FAILED", "bad"
	}
	fmt.Fprintf(&b, `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Herald soak %s</title><style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
td:first-child,th:first-child{text-align:left}td.l{text-align:left}
.ok{color:#17803d;font-weight:600}.bad{color:#c0262d;font-weight:600}.muted{color:#777}
svg{display:block;margin:6px 0 18px}svg text{font:11px system-ui,sans-serif;fill:#444}
code{font-size:12px;background:#f4f4f4;padding:1px 4px}
</style></head><body>
`, esc(r.Duration))
	fmt.Fprintf(&b, "<h1>Herald soak: %s of load, <span class=%q>%s</span></h1>\n", esc(r.Duration), vclass, verdict)
	fmt.Fprintf(&b, `<p class="muted">%s to %s · 3 herald nodes and a redis-server · %d CPUs · load average %.1f → %.1f<br><code>%s</code><br>
Warm-up %s from the load's start; the window after it (blue band) and the last window of the load (orange band), %s each, are compared.</p>
`, r.Started.Format("2006-01-02 15:04:05"), r.Ended.Format("15:04:05"), r.NProc, r.Load0, r.Load1, esc(r.Command), esc(r.Warmup), esc(r.Window))

	b.WriteString("<h2>Checks</h2><table><tr><th>check</th><th></th><th class=l>detail</th></tr>\n")
	for _, c := range r.Checks {
		v, cl := "ok", "ok"
		if !c.OK {
			v, cl = "FAIL", "bad"
		}
		fmt.Fprintf(&b, "<tr><td>%s</td><td class=%q>%s</td><td class=l>%s</td></tr>\n", esc(c.Name), cl, v, esc(c.Detail))
	}
	b.WriteString("</table>\n")

	b.WriteString("<h2>Over time</h2>\n")
	perNode := func(title, unit string, scale float64, g func(NodeSample) float64, extra *chartLine) {
		var lines []chartLine
		for i, n := range r.Nodes {
			l := chartLine{name: n.Name, color: nodeColors[i%len(nodeColors)]}
			for _, s := range r.Samples {
				if i < len(s.Nodes) {
					if v := g(s.Nodes[i]); v >= 0 {
						l.pts = append(l.pts, [2]float64{s.T, v / scale})
					}
				}
			}
			lines = append(lines, l)
		}
		if extra != nil {
			lines = append(lines, *extra)
		}
		b.WriteString(svgChart(title, unit, lines, r))
	}
	redis := chartLine{name: "redis-server", color: "#888", dash: true}
	for _, s := range r.Samples {
		if s.RedisRSS >= 0 {
			redis.pts = append(redis.pts, [2]float64{s.T, float64(s.RedisRSS) / (1 << 20)})
		}
	}
	perNode("Resident memory (RSS)", "MiB", 1<<20, func(x NodeSample) float64 { return float64(x.RSS) }, &redis)
	perNode("Go heap in use", "MiB", 1<<20, func(x NodeSample) float64 { return x.HeapInuse }, nil)
	perNode("Goroutines", "", 1, func(x NodeSample) float64 { return x.Goroutines }, nil)
	perNode("Open file descriptors", "", 1, func(x NodeSample) float64 { return float64(x.FDs) }, nil)
	perNode("File descriptors beyond the WebSocket connections", "", 1, func(x NodeSample) float64 {
		if x.FDs < 0 || x.Connections < 0 {
			return -1
		}
		return float64(x.FDs) - x.Connections
	}, nil)
	perNode("WebSocket connections", "", 1, func(x NodeSample) float64 { return x.Connections }, nil)
	perNode("Subscriptions", "", 1, func(x NodeSample) float64 { return x.Subscriptions }, nil)

	b.WriteString("<h2>Per node: means over each phase</h2><table><tr><th>node</th><th>measure</th><th>idle before</th><th>after warm-up</th><th>at the end</th><th>idle after</th></tr>\n")
	for _, f := range r.Figures {
		row := func(what string, v [4]float64, unit func(float64) string) {
			fmt.Fprintf(&b, "<tr><td>%s</td><td class=l>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
				esc(f.Node), what, opt(v[0], unit), opt(v[1], unit), opt(v[2], unit), opt(v[3], unit))
		}
		row("RSS", f.RSS, mib)
		row("Go heap in use", f.HeapInuse, mib)
		row("goroutines", f.Goroutines, plain)
		row("open fds", f.FDs, plain)
		row("fds beyond connections", f.FDsBeyond, plain)
		row("connections", f.Connections, plain)
	}
	b.WriteString("</table>\n")
	fmt.Fprintf(&b, "<p>Node logs at the end: %s bytes.</p>\n", esc(fmt.Sprint(r.NodeLogs)))

	b.WriteString("<h2>The load</h2><table><tr><th>loadgen run</th><th class=l>what</th><th>connected</th><th>published</th><th>expected</th><th>delivered</th><th>missing</th><th>duplicated</th><th>p50</th><th>p99</th><th>report</th></tr>\n")
	for _, rr := range r.Runs {
		htmlName := strings.TrimSuffix(rr.Report, ".json") + ".html"
		fmt.Fprintf(&b, "<tr><td>%s</td><td class=l>%s%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%.1f ms</td><td>%.1f ms</td><td><a href=%q>HTML</a> <a href=%q>JSON</a></td></tr>\n",
			esc(rr.Name), esc(rr.What), errNote(rr.Error), rr.Connected, rr.Published, rr.Expected, rr.Delivered, rr.Missing, rr.Duplicated,
			rr.P50Ms, rr.P99Ms, htmlName, rr.Report)
	}
	b.WriteString("</table><p class=muted>Missing and duplicated are exact on the quiet channels only: under churn loadgen estimates the expected deliveries from 1-second gauges of the subscribers.</p>\n")
	for _, rr := range r.Runs {
		fmt.Fprintf(&b, "<p class=muted><code>%s</code></p>\n", esc(rr.Command))
	}
	if s := r.Slow; s != nil {
		fmt.Fprintf(&b, "<p>Slow consumer: %d connections that stopped reading, %d cut off by their node after %.0f to %.0f s, %d not; what the client read afterwards: %s. %d events of %d bytes published to it (%d refused).</p>\n",
			s.Cycles, s.Cut, s.CutSecondsMin, s.CutSecondsMax, s.NotCut, esc(fmt.Sprint(s.Closes)), s.Published, slowPayload, s.PubErrors)
	}
	if s := r.Reconnect; s != nil {
		fmt.Fprintf(&b, "<p>Reconnecting client: %d connect-subscribe-close cycles, %d on a presence channel, %d dropped without a close handshake, %d failed.</p>\n",
			s.Cycles, s.Presence, s.Abrupt, s.Failures)
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return ` <span class="bad">` + html.EscapeString(e) + `</span>`
}

// svgChart draws lines over the soak's time axis (minutes), with the load phase
// shaded and the compared windows banded.
func svgChart(title, unit string, lines []chartLine, r *report) string {
	const W, H, left, right, top, bottom = 960.0, 230.0, 60.0, 150.0, 24.0, 30.0
	pw, ph := W-left-right, H-top-bottom
	tMax, vMax := 1.0, 0.0
	for _, l := range lines {
		for _, p := range l.pts {
			tMax, vMax = math.Max(tMax, p[0]), math.Max(vMax, p[1])
		}
	}
	if vMax <= 0 {
		vMax = 1
	}
	yTicks := niceTicks(vMax)
	vTop := yTicks[len(yTicks)-1]
	x := func(t float64) float64 { return left + pw*t/tMax }
	y := func(v float64) float64 { return top + ph*(1-v/vTop) }
	var b strings.Builder
	label := title
	if unit != "" {
		label += " (" + unit + ")"
	}
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s">`, W, H, W, H, html.EscapeString(label))
	fmt.Fprintf(&b, `<text x="%.0f" y="14" style="font-weight:600;font-size:13px">%s</text>`, left, html.EscapeString(label))
	band := func(from, to float64, fill string) {
		if to > from {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x(from), top, x(to)-x(from), ph, fill)
		}
	}
	band(r.LoadStart, r.LoadEnd, "#f6f6f6")
	band(r.WarmFrom, r.WarmTo, "#dbe9f7")
	band(r.EndFrom, r.EndTo, "#fbe3cc")
	for _, v := range yTicks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/><text x="%.1f" y="%.1f" text-anchor="end">%s</text>`,
			left, left+pw, y(v), y(v), left-6, y(v)+4, tickLabel(v))
	}
	step := minuteStep(tMax / 60)
	for m := 0.0; m*60 <= tMax; m += step {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ccc"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`,
			x(m*60), x(m*60), top+ph, top+ph+4, x(m*60), top+ph+16, tickLabel(m)+" min")
	}
	for i, l := range lines {
		if len(l.pts) == 0 {
			continue
		}
		var d strings.Builder
		for j, p := range l.pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f", cmd, x(p[0]), y(p[1]))
		}
		dash := ""
		if l.dash {
			dash = ` stroke-dasharray="5 3"`
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"%s/>`, d.String(), l.color, dash)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/><text x="%.1f" y="%.1f">%s</text>`,
			left+pw+12, left+pw+30, top+10+16*float64(i), top+10+16*float64(i), l.color, dash, left+pw+34, top+14+16*float64(i), html.EscapeString(l.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceTicks are 4 to 6 round values from 0 covering max.
func niceTicks(max float64) []float64 {
	raw := max / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := 0.0; ; v += step {
		out = append(out, v)
		if v >= max {
			return out
		}
	}
}

// minuteStep is a round step for an axis of total minutes.
func minuteStep(total float64) float64 {
	for _, s := range []float64{0.25, 0.5, 1, 2, 5, 10, 15, 30, 60} {
		if total/s <= 12 {
			return s
		}
	}
	return 120
}

func tickLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.4gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.4gk", v/1e3)
	}
	return fmt.Sprintf("%.4g", v)
}
