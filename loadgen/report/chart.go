package report

import (
	"math"
	"slices"
	"strconv"
)

// Chart colours. The series colours appear nowhere else on the page (no text, border
// or badge uses them), so the browser test can tell rendered charts from a page that
// shows only text by counting pixels of these colours.
const (
	colorBlue   = "#2563eb" // primary series: connections, deliveries/s, p50, histogram bars
	colorOrange = "#ea580c" // secondary series: publishes/s, p99
	colorRed    = "#dc2626" // cumulative errors
	colorRef    = "#64748b" // reference lines: the connections target, the p50 marker
	colorEmpty  = "#eef2ff" // fill of the "no data" placeholder
)

// Chart geometry, in SVG user units. The SVG scales to its card's width; at the
// two-column layout of a laptop screen a unit is about a CSS pixel, so the font sizes
// in the stylesheet hold.
const (
	chartW     = 640
	chartH     = 300
	plotLeft   = 64
	plotRight  = 24 // without a right axis
	plotRightA = 64 // with a right axis
	plotTop    = 58 // title and legend above
	plotBottom = 44 // tick labels and the x axis title below
	charWidth  = 5.9
)

// chart is an SVG drawing as a flat list of primitives, rendered by the "chart"
// template so that every string in it goes through html/template's escaping.
type chart struct {
	ID       string
	Title    string
	Subtitle string
	W, H     int
	Empty    string // non-empty: draw a placeholder with this message instead of data
	Elems    []elem
}

// elem is one SVG primitive. Coordinates are preformatted strings so the output is
// byte-for-byte deterministic and free of float noise.
type elem struct {
	Kind   string // line, rect, path, text, circle
	X, Y   string // line start; rect, text position; circle centre
	X2, Y2 string // line end
	W, H   string // rect size; circle radius in W
	D      string // path data
	Class  string // CSS class for the shared look (grid, axis, tick labels)
	Stroke string
	Fill   string
	Dash   string // stroke-dasharray
	Anchor string // text-anchor
	Text   string
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func (c *chart) line(x1, y1, x2, y2 float64, class, stroke, dash string) {
	c.Elems = append(c.Elems, elem{Kind: "line", X: num(x1), Y: num(y1), X2: num(x2), Y2: num(y2),
		Class: class, Stroke: stroke, Dash: dash})
}

func (c *chart) rect(x, y, w, h float64, class, fill string) {
	c.Elems = append(c.Elems, elem{Kind: "rect", X: num(x), Y: num(y), W: num(w), H: num(h), Class: class, Fill: fill})
}

func (c *chart) text(x, y float64, anchor, class, s string) {
	c.Elems = append(c.Elems, elem{Kind: "text", X: num(x), Y: num(y), Anchor: anchor, Class: class, Text: s})
}

// legendItem is one entry of the legend row under the title.
type legendItem struct {
	Label  string
	Color  string
	Dash   string
	Swatch bool // a filled square (bars) instead of a line sample
}

// header draws the title, subtitle and legend row shared by every chart.
func (c *chart) header(legend []legendItem) {
	c.text(16, 22, "start", "c-title", c.Title)
	if c.Subtitle != "" {
		c.text(float64(c.W-16), 22, "end", "c-sub", c.Subtitle)
	}
	x := 16.0
	for _, it := range legend {
		if it.Swatch {
			c.rect(x, 33, 12, 10, "", it.Color)
		} else {
			c.Elems = append(c.Elems, elem{Kind: "line", X: num(x), Y: num(38), X2: num(x + 18), Y2: num(38),
				Class: "c-legend-line", Stroke: it.Color, Dash: it.Dash})
		}
		c.text(x+24, 42, "start", "c-legend", it.Label)
		x += 24 + charWidth*float64(len([]rune(it.Label))) + 20
	}
}

// placeholder replaces the plot area with a visible "no data" box, keeping the card's
// size so an empty report keeps its layout.
func placeholder(id, title, msg string) chart {
	c := chart{ID: id, Title: title, W: chartW, H: chartH, Empty: msg}
	c.text(16, 22, "start", "c-title", title)
	c.Elems = append(c.Elems, elem{Kind: "rect", X: num(16), Y: num(40), W: num(chartW - 32), H: num(chartH - 56),
		Class: "c-empty", Fill: colorEmpty})
	c.text(chartW/2, (chartH+40)/2, "middle", "c-empty-msg", "No data")
	c.text(chartW/2, (chartH+40)/2+20, "middle", "c-empty-sub", msg)
	return c
}

// series is one line of a time-series chart. NaN values are gaps.
type series struct {
	Label  string
	Color  string
	Values []float64
	Right  bool // plotted against the right axis
	Area   bool // shade the area under the line
}

// refLine is a horizontal reference, e.g. the connections target.
type refLine struct {
	Label string
	Value float64
}

// lineChart draws series over t (seconds since the start). Left-axis and right-axis
// series get independent nice scales; a right axis exists only if a series asks.
func lineChart(id, title, xTitle string, t []float64, ss []series, ref *refLine) chart {
	c := chart{ID: id, Title: title, W: chartW, H: chartH}
	right := slices.ContainsFunc(ss, func(s series) bool { return s.Right })
	x0, x1 := float64(plotLeft), float64(chartW-plotRight)
	if right {
		x1 = chartW - plotRightA
	}
	y0, y1 := float64(chartH-plotBottom), float64(plotTop) // bottom and top of the plot

	var legend []legendItem
	for _, s := range ss {
		label := s.Label
		if right {
			if s.Right {
				label += " (right axis)"
			} else {
				label += " (left axis)"
			}
		}
		legend = append(legend, legendItem{Label: label, Color: s.Color})
	}
	if ref != nil {
		legend = append(legend, legendItem{Label: ref.Label, Color: colorRef, Dash: "5 4"})
	}
	c.header(legend)

	// The time axis starts at zero (the run's start) and ends at the last sample, so
	// the plot spends no width on padding; ticks beyond the end are dropped.
	tMax := 0.0
	for _, v := range t {
		if finite(v) && v > tMax {
			tMax = v
		}
	}
	if tMax <= 0 {
		tMax = 1
	}
	sx := func(v float64) float64 { return x0 + (v/tMax)*(x1-x0) }

	// scale fits the values of one axis. The right axis takes exactly as many
	// intervals as the left one, so both share the grid lines.
	scale := func(isRight bool, intervals int) (ticks []float64, sy func(float64) float64) {
		lo, hi := 0.0, 0.0
		for _, s := range ss {
			if s.Right != isRight {
				continue
			}
			for _, v := range s.Values {
				if finite(v) {
					lo, hi = min(lo, v), max(hi, v)
				}
			}
		}
		if ref != nil && !isRight && finite(ref.Value) {
			hi = max(hi, ref.Value)
		}
		if intervals > 0 {
			ticks = alignedTicks(lo, hi, intervals)
		} else {
			ticks = niceTicks(lo, hi, 5)
		}
		a, b := ticks[0], ticks[len(ticks)-1]
		return ticks, func(v float64) float64 { return y0 - (v-a)/(b-a)*(y0-y1) }
	}

	lTicks, lY := scale(false, 0)
	for _, v := range lTicks {
		y := lY(v)
		c.line(x0, y, x1, y, "c-grid", "", "")
		c.text(x0-8, y+4, "end", "c-tick", axisLabel(v, lTicks))
	}
	var rY func(float64) float64
	if right {
		var rTicks []float64
		rTicks, rY = scale(true, len(lTicks)-1)
		for _, v := range rTicks {
			c.text(x1+8, rY(v)+4, "start", "c-tick", axisLabel(v, rTicks))
		}
	}
	xTicks := niceTicks(0, tMax, 6)
	for _, v := range xTicks {
		if v > tMax*(1+1e-9) {
			break
		}
		x := sx(v)
		c.line(x, y0, x, y0+5, "c-axis", "", "")
		c.text(x, y0+19, "middle", "c-tick", axisLabel(v, xTicks))
	}
	c.text((x0+x1)/2, float64(chartH-8), "middle", "c-axis-title", xTitle)

	if ref != nil && finite(ref.Value) && ref.Value > 0 {
		y := lY(ref.Value)
		c.line(x0, y, x1, y, "c-ref", colorRef, "5 4")
	}

	order := timeOrder(t)
	for _, s := range ss {
		sy := lY
		if s.Right {
			sy = rY
		}
		var pts [][2]float64 // current run without gaps
		flush := func() {
			switch {
			case len(pts) == 1: // a lone point has no line; mark it
				c.Elems = append(c.Elems, elem{Kind: "circle", X: num(pts[0][0]), Y: num(pts[0][1]), W: "3",
					Fill: s.Color})
			case len(pts) > 1:
				if s.Area {
					c.Elems = append(c.Elems, elem{Kind: "path", D: areaPath(pts, y0), Class: "c-area", Fill: s.Color})
				}
				c.Elems = append(c.Elems, elem{Kind: "path", D: linePath(pts), Class: "c-series", Stroke: s.Color})
			}
			pts = pts[:0]
		}
		for _, i := range order {
			if i >= len(s.Values) || !finite(s.Values[i]) || !finite(t[i]) {
				flush()
				continue
			}
			pts = append(pts, [2]float64{sx(t[i]), sy(s.Values[i])})
		}
		flush()
	}
	c.line(x0, y0, x1, y0, "c-axis", "", "")
	return c
}

// timeOrder returns the sample indices ordered by time, so that a coordinator that
// appends late intervals out of order still draws a line that goes forward.
func timeOrder(t []float64) []int {
	order := make([]int, len(t))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmpFloat(t[a], t[b]) })
	return order
}

func linePath(pts [][2]float64) string {
	b := make([]byte, 0, len(pts)*14)
	for i, p := range pts {
		if i == 0 {
			b = append(b, 'M')
		} else {
			b = append(b, 'L')
		}
		b = strconv.AppendFloat(b, p[0], 'f', 1, 64)
		b = append(b, ',')
		b = strconv.AppendFloat(b, p[1], 'f', 1, 64)
	}
	return string(b)
}

func areaPath(pts [][2]float64, base float64) string {
	return linePath(pts) + "L" + num(pts[len(pts)-1][0]) + "," + num(base) + "L" + num(pts[0][0]) + "," + num(base) + "Z"
}

// marker is a vertical line on the histogram at a percentile.
type marker struct {
	Label string
	Ms    float64
	Color string
}

// histogramChart redraws a latency distribution on a log-scale x axis. The report's
// buckets are the histogram's own (fine, non-empty only, with gaps), so they are
// re-binned by upper bound onto an even log grid: each bar then covers the same
// ratio of latencies and its height, the share of all events, is comparable across
// the axis. The grid's resolution follows the buckets' own, capped at 20 bins a
// decade, so coarse input does not turn into a comb of empty bins.
func histogramChart(id, title, what string, buckets []bucketIn, total uint64, markers []marker) chart {
	var bs []bucketIn
	var sum uint64
	for _, b := range buckets {
		if b.Count == 0 || !finite(b.UpToMs) {
			continue
		}
		if b.UpToMs < 1e-3 { // below the histogram's 1 µs floor: clamp, do not drop
			b.UpToMs = 1e-3
		}
		bs = append(bs, b)
		sum += b.Count
	}
	if len(bs) == 0 {
		return placeholder(id, title, "no "+what+" were recorded")
	}
	if total < sum {
		total = sum
	}

	slices.SortStableFunc(bs, func(a, b bucketIn) int { return cmpFloat(a.UpToMs, b.UpToMs) })
	gap := bucketGap(bs)
	perDecade := min(20, max(4, math.Floor(1/max(gap, 1e-9))))
	counts, lo, hi := rebin(bs, perDecade)
	edge := func(i int) float64 { return math.Pow(10, float64(i)/perDecade) }
	xLo, xHi, xTicks, labeled := logTicks(edge(lo), edge(hi+1))

	c := chart{ID: id, Title: title, W: chartW, H: chartH,
		Subtitle: fmtInt(total) + " " + what}
	legend := []legendItem{{Label: "share of " + what + " per bin", Color: colorBlue, Swatch: true}}
	for _, m := range markers {
		legend = append(legend, legendItem{Label: m.Label, Color: m.Color, Dash: "4 3"})
	}
	c.header(legend)

	x0, x1 := float64(plotLeft), float64(chartW-plotRight)
	y0, y1 := float64(chartH-plotBottom), float64(plotTop)
	lx0, lx1 := math.Log10(xLo), math.Log10(xHi)
	sx := func(ms float64) float64 { return x0 + (math.Log10(ms)-lx0)/(lx1-lx0)*(x1-x0) }

	maxPct := 0.0
	for _, n := range counts {
		maxPct = max(maxPct, 100*n/float64(total))
	}
	yTicks := niceTicks(0, maxPct, 5)
	yTop := yTicks[len(yTicks)-1]
	sy := func(p float64) float64 { return y0 - p/yTop*(y0-y1) }
	for _, v := range yTicks {
		y := sy(v)
		c.line(x0, y, x1, y, "c-grid", "", "")
		c.text(x0-8, y+4, "end", "c-tick", axisLabel(v, yTicks)+"%")
	}
	for _, v := range xTicks {
		x := sx(v)
		if labeled(v) {
			c.line(x, y1, x, y0+5, "c-grid-v", "", "")
			c.text(x, y0+19, "middle", "c-tick", msTick(v))
		} else {
			c.line(x, y1, x, y0, "c-grid-minor", "", "")
		}
	}
	c.text((x0+x1)/2, float64(chartH-8), "middle", "c-axis-title", "latency (ms, log scale)")

	for i := lo; i <= hi; i++ {
		n := counts[i]
		if n == 0 {
			continue
		}
		xa, xb := sx(edge(i)), sx(edge(i+1))
		y := sy(100 * n / float64(total))
		// Keep a 1-unit gap between bars, and at least a hairline for tiny shares so
		// a sparse tail stays visible.
		h := max(y0-y, 1)
		c.rect(xa+0.5, y0-h, max(xb-xa-1, 1), h, "c-bar", colorBlue)
	}
	for k, m := range markers {
		if !finite(m.Ms) || m.Ms <= 0 {
			continue
		}
		x := sx(min(max(m.Ms, xLo), xHi))
		c.line(x, y1-4, x, y0, "c-marker", m.Color, "4 3")
		label := m.Label + " " + fmtMs(m.Ms)
		anchor, tx := "start", x+5
		if x > x1-90 { // keep the label inside the plot near the right edge
			anchor, tx = "end", x-5
		}
		c.text(tx, y1+10+float64(k)*14, anchor, "c-marker-label", label)
	}
	c.line(x0, y0, x1, y0, "c-axis", "", "")
	return c
}

// bucketIn decouples the chart from loadgen.Bucket.
type bucketIn struct {
	UpToMs float64
	Count  uint64
}

// bucketGap is the typical width of one input bucket in decades: the median spacing
// of consecutive bounds (the median ignores the wide spacings across runs of empty
// buckets, which the report leaves out). 0 for fewer than two distinct bounds.
func bucketGap(bs []bucketIn) float64 {
	var gaps []float64
	for i := 1; i < len(bs); i++ {
		if g := math.Log10(bs[i].UpToMs) - math.Log10(bs[i-1].UpToMs); g > 0 {
			gaps = append(gaps, g)
		}
	}
	if len(gaps) == 0 {
		return 0
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

// rebin spreads each bucket's count evenly (in log space) over the display bins its
// range overlaps; bin j covers [j, j+1)/perDecade decades. Spreading instead of
// assigning by the upper bound avoids aliasing: with 1 µs HDR buckets at 100 µs and
// 12 % bins, bins would alternately get 11 and 12 buckets and the bars would zigzag.
//
// The report keeps non-empty buckets only, so a bucket's lower bound is estimated: the
// spacing to its nearer neighbour (its true width where buckets are dense), and never
// more than one display bin, so a lone bucket after a run of empty ones is not
// smeared across the gap.
func rebin(bs []bucketIn, perDecade float64) (counts map[int]float64, lo, hi int) {
	counts = map[int]float64{}
	lo, hi = math.MaxInt, math.MinInt
	add := func(j int, n float64) {
		counts[j] += n
		lo, hi = min(lo, j), max(hi, j)
	}
	pos := func(i int) float64 { return math.Log10(bs[i].UpToMs) * perDecade } // in bins
	for i, b := range bs {
		top := pos(i)
		width := 1.0
		if i > 0 {
			width = min(width, top-pos(i-1))
		}
		if i+1 < len(bs) {
			width = min(width, pos(i+1)-top)
		}
		n := float64(b.Count)
		if width < 1e-9 { // a repeated bound: no width to spread over
			add(int(math.Ceil(top-1e-9))-1, n)
			continue
		}
		bottom := top - width
		for j := int(math.Floor(bottom + 1e-9)); float64(j) < top-1e-9; j++ {
			if overlap := min(top, float64(j+1)) - max(bottom, float64(j)); overlap > 1e-12 {
				add(j, n*overlap/width)
			}
		}
	}
	return counts, lo, hi
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// logTicks widens [lo, hi] to 1-2-5 steps and returns the tick values. All of 1, 2
// and 5 are labelled over up to three decades; beyond that only the powers of ten,
// the others staying as minor grid lines so labels never collide.
func logTicks(lo, hi float64) (xLo, xHi float64, ticks []float64, labeled func(float64) bool) {
	steps := []float64{1, 2, 5}
	floor125 := func(v float64) float64 {
		p := math.Pow(10, math.Floor(math.Log10(v)+1e-9))
		for i := len(steps) - 1; i >= 0; i-- {
			if steps[i]*p <= v*(1+1e-9) {
				return steps[i] * p
			}
		}
		return p
	}
	ceil125 := func(v float64) float64 {
		p := math.Pow(10, math.Floor(math.Log10(v)-1e-9))
		for _, s := range append(steps, 10) {
			if s*p >= v*(1-1e-9) {
				return s * p
			}
		}
		return 10 * p
	}
	xLo, xHi = floor125(lo), ceil125(hi)
	if xHi <= xLo {
		xHi = ceil125(xLo * 1.5)
	}
	decades := math.Log10(xHi) - math.Log10(xLo)
	for e := math.Floor(math.Log10(xLo)) - 1; e <= math.Ceil(math.Log10(xHi)); e++ {
		for _, s := range steps {
			v := roundSig(s * math.Pow(10, e))
			if v >= xLo*(1-1e-9) && v <= xHi*(1+1e-9) {
				ticks = append(ticks, v)
			}
		}
	}
	labeled = func(v float64) bool {
		if decades <= 3 {
			return true
		}
		m := v / math.Pow(10, math.Floor(math.Log10(v)+1e-9))
		return math.Abs(m-1) < 1e-6
	}
	return xLo, xHi, ticks, labeled
}

// niceTicks returns ticks at a 1-2-2.5-5 step covering [lo, hi] with about n
// intervals; the first and last ticks are the axis bounds.
func niceTicks(lo, hi float64, n int) []float64 {
	if !finite(lo) || !finite(hi) {
		lo, hi = 0, 1
	}
	if hi-lo < 1e-12 {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * p
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*p >= raw*(1-1e-9) {
			step = m * p
			break
		}
	}
	first := math.Floor(lo/step+1e-9) * step
	var ticks []float64
	for i := 0; ; i++ {
		v := roundSig(first + float64(i)*step)
		ticks = append(ticks, v)
		if v >= hi*(1-1e-12)-1e-12 || i > 50 {
			break
		}
	}
	return ticks
}

// alignedTicks covers [lo, hi] with exactly n intervals of a 1-2-2.5-5 step.
func alignedTicks(lo, hi float64, n int) []float64 {
	if !finite(lo) || !finite(hi) {
		lo, hi = 0, 1
	}
	if hi-lo < 1e-12 {
		hi = lo + 1
	}
	p := math.Pow(10, math.Floor(math.Log10((hi-lo)/float64(n))))
	for {
		for _, m := range []float64{1, 2, 2.5, 5} {
			step := m * p
			first := math.Floor(lo/step+1e-9) * step
			if first+float64(n)*step >= hi*(1-1e-12)-1e-12 {
				ticks := make([]float64, n+1)
				for i := range ticks {
					ticks[i] = roundSig(first + float64(i)*step)
				}
				return ticks
			}
		}
		p *= 10
	}
}

// roundSig removes float noise (0.30000000000000004) from computed tick values.
func roundSig(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	return f
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
