package report

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/herald-rt/herald/loadgen"
)

// ErrNilReport is returned by WriteHTML for a nil report.
var ErrNilReport = errors.New("report: nil report")

//go:embed report.html.tmpl
var pageSource string

// page is parsed once; html/template escapes every value by its context.
var page = template.Must(template.New("report").Parse(pageSource))

// WriteHTML renders r as one self-contained HTML document to w. It reads r and does
// not keep it. The output depends only on r (no clock, no locale, sorted maps), so the
// same Report always gives the same bytes. The page is built in memory first so that
// a template error never leaves half a document in w.
func WriteHTML(w io.Writer, r *loadgen.Report) error {
	if r == nil {
		return ErrNilReport
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, build(r)); err != nil {
		return fmt.Errorf("report: render: %w", err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("report: write: %w", err)
	}
	return nil
}

// view is what the template reads: strings already formatted, and CSS classes only
// from the fixed set below (never from the report's strings).
type view struct {
	Title      string
	Tool       string
	Version    int
	Scenario   string
	Target     string
	Params     []keyValue
	Started    string
	Ended      string
	Duration   string
	Stopped    string
	StoppedBad bool // the run did not end by running its duration
	Passed     bool
	Verdict    string // why it passed or failed, in a few words
	KPIs       []kpi
	Summary    []summaryGroup
	Thresholds []thresholdRow
	Errors     []errorRow
	ErrorTotal string
	Workers    []workerRow
	Lost       int // workers not "ok"
	Channels   channelView
	Timeline   []chart
	Histograms []chart
	Percentile []percentileRow
}

type keyValue struct{ Key, Value string }

// Classes for values that deserve attention. "bad" is red, "warn" amber, "good" green.
const (
	clsBad  = "bad"
	clsWarn = "warn"
	clsGood = "good"
)

type kpi struct {
	Label, Value, Sub, Class string
}

type summaryGroup struct {
	Title string
	Rows  []summaryRow
}

type summaryRow struct {
	Label, Value, Note, Class string
}

type thresholdRow struct {
	Expr, Value string
	OK          bool
}

type errorRow struct {
	Kind, Count, Share string
}

type workerRow struct {
	ID, Addr, Source, Host, Connections, Connected, Delivered, RSS, State, Error string
	Class                                                                        string // row highlight
}

// channelView lists the channels that lost or doubled events, worst first: a run can
// have thousands of channels, and the clean ones say nothing the totals do not.
type channelView struct {
	Total, WithLoss int
	Rows            []channelRow
	More            int // lossy channels not listed
}

type channelRow struct {
	Name, Expected, Delivered, Missing, Duplicated string
}

// maxChannelRows bounds the channels table.
const maxChannelRows = 15

type percentileRow struct {
	Label, Latency, Connect string
}

func build(r *loadgen.Report) view {
	t := r.Totals
	v := view{
		Tool:     nonEmpty(r.Tool, "herald-loadgen"),
		Version:  r.Version,
		Scenario: nonEmpty(r.Scenario.Name, "unnamed scenario"),
		Target:   targetText(r),
		Started:  fmtTime(r.Started),
		Ended:    fmtTime(r.Ended),
		Duration: fmtSeconds(r.Seconds),
		Stopped:  nonEmpty(r.Stopped, dash),
		Passed:   r.Passed,
	}
	v.Title = v.Scenario + " — " + v.Tool + " report"
	v.StoppedBad = r.Stopped != "" && r.Stopped != "duration"
	for _, k := range slices.Sorted(maps.Keys(r.Scenario.Params)) {
		v.Params = append(v.Params, keyValue{k, fmtParam(r.Scenario.Params[k])})
	}

	failed := 0
	for _, th := range r.Thresholds {
		v.Thresholds = append(v.Thresholds, thresholdRow{Expr: th.Expr, Value: fmtNum(th.Value), OK: th.OK})
		if !th.OK {
			failed++
		}
	}
	switch {
	case len(r.Thresholds) == 0:
		v.Verdict = "no thresholds set"
	case failed == 0:
		v.Verdict = fmt.Sprintf("all %d thresholds held", len(r.Thresholds))
	default:
		v.Verdict = fmt.Sprintf("%d of %d thresholds failed", failed, len(r.Thresholds))
	}

	// Received share: what fraction of the expected deliveries arrived. Delivered may
	// count duplicates, so it is derived from Missing instead.
	received, receivedCls := dash, ""
	if t.Expected > 0 {
		got := t.Expected - min(t.Missing, t.Expected)
		received = fmtPct(float64(got) / float64(t.Expected))
		receivedCls = clsGood
		if t.Missing > 0 {
			receivedCls = clsBad
		}
	}
	errTotal := uint64(0)
	for _, n := range t.Errors {
		errTotal += n
	}

	v.KPIs = []kpi{
		{Label: "Peak connections", Value: fmtInt(t.ConnectionsPeak), Sub: "target " + fmtInt(t.ConnectionsTarget),
			Class: cond(t.ConnectionsTarget > 0 && t.ConnectionsPeak < int64(t.ConnectionsTarget), clsWarn, "")},
		{Label: "Delivered", Value: fmtInt(t.Delivered), Sub: received + " of expected", Class: receivedCls},
		{Label: "Missing", Value: fmtInt(t.Missing), Sub: "duplicated " + fmtInt(t.Duplicated),
			Class: cond(t.Missing > 0, clsBad, cond(t.Duplicated > 0, clsWarn, clsGood))},
		{Label: "Deliveries/s", Value: fmtFloat(t.DeliveriesPerSec, 0), Sub: "publishes/s " + fmtFloat(t.PublishesPerSec, 1)},
		{Label: "Latency p50", Value: distMs(r.Latency, r.Latency.P50Ms), Sub: "p99 " + distMs(r.Latency, r.Latency.P99Ms)},
		{Label: "Connect p99", Value: distMs(r.Connect, r.Connect.P99Ms), Sub: "p50 " + distMs(r.Connect, r.Connect.P50Ms)},
		{Label: "Error rate", Value: fmtPct(t.ErrorRate), Sub: fmtInt(errTotal) + " errors",
			Class: cond(errTotal > 0, clsBad, clsGood)},
	}

	v.Summary = []summaryGroup{
		{Title: "Connections", Rows: []summaryRow{
			{Label: "Target", Value: fmtInt(t.ConnectionsTarget)},
			{Label: "Peak open", Value: fmtInt(t.ConnectionsPeak)},
			{Label: "Connected", Value: fmtInt(t.Connected), Note: "successful handshakes"},
			{Label: "Connect errors", Value: fmtInt(t.ConnectErrors), Note: "failed dials and handshakes",
				Class: cond(t.ConnectErrors > 0, clsBad, "")},
			{Label: "Subscribed", Value: fmtInt(t.Subscribed)},
			{Label: "Ramp", Value: rampValue(r.RampSeconds), Note: rampNote(r.ConnectRate)},
		}},
		{Title: "Messages", Rows: []summaryRow{
			{Label: "Published", Value: fmtInt(t.Published), Note: "API publishes and client events"},
			{Label: "Delivered", Value: fmtInt(t.Delivered), Note: "all connections"},
			{Label: "Expected", Value: fmtInt(t.Expected), Note: "deliveries the subscriptions called for"},
			{Label: "Missing", Value: fmtInt(t.Missing), Note: received + " of expected received",
				Class: cond(t.Missing > 0, clsBad, "")},
			{Label: "Duplicated", Value: fmtInt(t.Duplicated), Class: cond(t.Duplicated > 0, clsWarn, "")},
			{Label: "Reordered", Value: fmtInt(r.Reordered), Note: "arrived after a later event",
				Class: cond(r.Reordered > 0, clsWarn, "")},
		}},
		{Title: "Rates", Rows: []summaryRow{
			{Label: "Deliveries/s", Value: fmtRate(t.DeliveriesPerSec)},
			{Label: "Publishes/s", Value: fmtRate(t.PublishesPerSec)},
			{Label: "Error rate", Value: fmtPct(t.ErrorRate), Note: "errors / (connections attempted + publishes)",
				Class: cond(t.ErrorRate > 0, clsBad, "")},
		}},
	}

	// Errors: most frequent first, then by name, so the order is stable.
	kinds := slices.Collect(maps.Keys(t.Errors))
	slices.SortFunc(kinds, func(a, b string) int {
		if t.Errors[a] != t.Errors[b] {
			return cond3(t.Errors[a] > t.Errors[b])
		}
		return strings.Compare(a, b)
	})
	for _, k := range kinds {
		n := t.Errors[k]
		v.Errors = append(v.Errors, errorRow{Kind: k, Count: fmtInt(n), Share: fmtPct(float64(n) / float64(errTotal))})
	}
	v.ErrorTotal = fmtInt(errTotal)
	if r.Members > 0 { // presence scenarios only; elsewhere the row would be noise
		v.Summary[1].Rows = append(v.Summary[1].Rows, summaryRow{Label: "Presence member events",
			Value: fmtInt(r.Members), Note: "member_added and member_removed received"})
	}
	if len(r.Targets) > 1 { // a cluster without a load balancer: the share of each node
		for i, ts := range r.Targets {
			v.Summary[0].Rows = append(v.Summary[0].Rows, summaryRow{Label: "Server " + strconv.Itoa(i+1),
				Value: fmtInt(ts.Connected), Note: ts.URL, Class: cond(ts.Connected == 0, clsBad, "")})
		}
	}
	if r.PublishTarget != "" {
		v.Summary[1].Rows = append(v.Summary[1].Rows, summaryRow{Label: "Published to", Value: r.PublishTarget})
	}
	if ps := r.Presence; ps != nil {
		l := ps.MemberLatencyLoad
		v.Summary = append(v.Summary, summaryGroup{Title: "Presence", Rows: []summaryRow{
			{Label: "Joins/s", Value: fmtRate(ps.JoinsPerSec), Note: fmtInt(ps.Joins) + " over the load phase"},
			{Label: "Leaves/s", Value: fmtRate(ps.LeavesPerSec), Note: fmtInt(ps.Leaves) + " over the load phase"},
			{Label: "member_added", Value: fmtInt(ps.MemberAdded), Note: "received, whole run"},
			{Label: "member_removed", Value: fmtInt(ps.MemberRemoved), Note: "received, whole run"},
			{Label: "Join → member_added p50", Value: distMs(l, l.P50Ms), Note: "load phase; p99 " + distMs(l, l.P99Ms)},
			{Label: "  whole run p50", Value: distMs(ps.MemberLatency, ps.MemberLatency.P50Ms),
				Note: "ramp included; p99 " + distMs(ps.MemberLatency, ps.MemberLatency.P99Ms)},
		}})
	}
	if bs := r.Broadcasts; bs != nil {
		c := bs.Completion
		var expected uint64
		for _, it := range bs.Items {
			expected += it.Expected
		}
		v.Summary = append(v.Summary, summaryGroup{Title: "Broadcasts", Rows: []summaryRow{
			{Label: "Followed", Value: fmtInt(bs.Count), Note: "API publishes, each to its last delivery"},
			{Label: "Complete", Value: fmtInt(bs.Complete), Note: "every subscriber received it"},
			{Label: "Incomplete", Value: fmtInt(bs.Incomplete), Class: cond(bs.Incomplete > 0, clsBad, "")},
			{Label: "Publish → last delivery p50", Value: distMs(c, c.P50Ms),
				Note: "max " + distMs(c, c.MaxMs) + "; " + fmtInt(expected/uint64(max(len(bs.Items), 1))) + " subscribers on average"},
		}})
	}
	if t.LostConnections > 0 {
		v.Summary[0].Rows = append(v.Summary[0].Rows, summaryRow{Label: "Lost", Value: fmtInt(t.LostConnections),
			Note: "closed before the end, not by loadgen", Class: clsBad})
	}
	v.Channels = channels(r.Channels)

	for _, w := range r.Workers {
		row := workerRow{
			ID: fmtInt(w.ID), Addr: nonEmpty(w.Addr, dash), Source: nonEmpty(w.Source, "any"),
			Host: nonEmpty(w.Host, dash), Connections: fmtInt(w.Connections), Connected: fmtInt(w.Connected),
			Delivered: fmtInt(w.Delivered), RSS: fmtBytes(w.RSSBytes), State: nonEmpty(w.State, "unknown"),
			Error: w.Error,
		}
		if w.PID > 0 {
			row.Host += " · pid " + strconv.Itoa(w.PID)
		}
		if w.State != "ok" {
			row.Class = clsBad
			v.Lost++
		}
		v.Workers = append(v.Workers, row)
	}

	v.Timeline = timeline(r)
	v.Histograms = []chart{
		histogramChart("hist-latency", "Publish-to-receive latency", "deliveries", buckets(r.Latency.Buckets),
			r.Latency.Count, distMarkers(r.Latency)),
		histogramChart("hist-connect", "Connect time (socket to connection_established)", "connections",
			buckets(r.Connect.Buckets), r.Connect.Count, distMarkers(r.Connect)),
	}
	v.Percentile = percentiles(r.Latency, r.Connect)
	return v
}

func timeline(r *loadgen.Report) []chart {
	const noSamples = "the run recorded no time series samples"
	ids := []string{"ts-connections", "ts-throughput", "ts-latency", "ts-errors"}
	titles := []string{"Open connections", "Throughput (events/s)", "Latency per interval (ms)", "Errors (cumulative)"}
	if len(r.Series) == 0 {
		out := make([]chart, len(ids))
		for i := range ids {
			out[i] = placeholder(ids[i], titles[i], noSamples)
		}
		return out
	}
	n := len(r.Series)
	t := make([]float64, n)
	conns, dps, pps, p50, p99, errs := make([]float64, n), make([]float64, n), make([]float64, n),
		make([]float64, n), make([]float64, n), make([]float64, n)
	for i, s := range r.Series {
		t[i] = s.T
		conns[i] = float64(s.Connections)
		dps[i], pps[i] = s.DeliveriesPerSec, s.PublishesPerSec
		p50[i], p99[i] = s.P50Ms, s.P99Ms
		// An interval without deliveries has no latency, not a latency of zero: leave
		// a gap rather than draw the line down to the axis.
		if s.P50Ms == 0 && s.P99Ms == 0 {
			p50[i], p99[i] = math.NaN(), math.NaN()
		}
		errs[i] = float64(s.Errors)
	}
	const xTitle = "seconds since start"
	var target *refLine
	if ct := r.Totals.ConnectionsTarget; ct > 0 {
		target = &refLine{Label: "target " + fmtInt(ct), Value: float64(ct)}
	}
	return []chart{
		lineChart(ids[0], titles[0], xTitle, t, []series{{Label: "open", Color: colorBlue, Values: conns, Area: true}}, target),
		lineChart(ids[1], titles[1], xTitle, t, []series{
			{Label: "deliveries/s", Color: colorBlue, Values: dps},
			{Label: "publishes/s", Color: colorOrange, Values: pps, Right: true},
		}, nil),
		lineChart(ids[2], titles[2], xTitle, t, []series{
			{Label: "p50", Color: colorBlue, Values: p50},
			{Label: "p99", Color: colorOrange, Values: p99},
		}, nil),
		lineChart(ids[3], titles[3], xTitle, t, []series{{Label: "errors", Color: colorRed, Values: errs, Area: true}}, nil),
	}
}

func channels(cs []loadgen.ChannelSummary) channelView {
	v := channelView{Total: len(cs)}
	var lossy []loadgen.ChannelSummary
	for _, c := range cs {
		if c.Missing > 0 || c.Duplicated > 0 {
			lossy = append(lossy, c)
		}
	}
	v.WithLoss = len(lossy)
	slices.SortFunc(lossy, func(a, b loadgen.ChannelSummary) int {
		switch {
		case a.Missing != b.Missing:
			return cond3(a.Missing > b.Missing)
		case a.Duplicated != b.Duplicated:
			return cond3(a.Duplicated > b.Duplicated)
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i, c := range lossy {
		if i == maxChannelRows {
			v.More = len(lossy) - i
			break
		}
		v.Rows = append(v.Rows, channelRow{Name: c.Name, Expected: fmtInt(c.Expected), Delivered: fmtInt(c.Delivered),
			Missing: fmtInt(c.Missing), Duplicated: fmtInt(c.Duplicated)})
	}
	return v
}

// cond3 orders descending: -1 when a sorts first.
func cond3(aFirst bool) int {
	if aFirst {
		return -1
	}
	return 1
}

func rampValue(s float64) string {
	if s <= 0 {
		return dash
	}
	return fmtSeconds(s)
}

func rampNote(rate float64) string {
	if rate <= 0 || !finite(rate) {
		return "slowest worker to establish its share"
	}
	return fmtRate(rate) + " connections established"
}

func buckets(bs []loadgen.Bucket) []bucketIn {
	out := make([]bucketIn, len(bs))
	for i, b := range bs {
		out[i] = bucketIn{UpToMs: b.UpToMs, Count: b.Count}
	}
	return out
}

func distMarkers(d loadgen.Distribution) []marker {
	return []marker{{Label: "p50", Ms: d.P50Ms, Color: colorRef}, {Label: "p99", Ms: d.P99Ms, Color: colorOrange}}
}

// distMs formats one statistic of d, or a dash when d holds no values (its zeros
// would otherwise read as "instant").
// targetText is the target, or the first of several with their count.
func targetText(r *loadgen.Report) string {
	if n := len(r.Targets); n > 1 {
		return nonEmpty(r.Target, r.Targets[0].URL) + " and " + strconv.Itoa(n-1) + " more"
	}
	return nonEmpty(r.Target, dash)
}

func distMs(d loadgen.Distribution, ms float64) string {
	if d.Count == 0 {
		return dash
	}
	return fmtMs(ms)
}

func percentiles(lat, conn loadgen.Distribution) []percentileRow {
	row := func(label string, f func(loadgen.Distribution) float64) percentileRow {
		return percentileRow{Label: label, Latency: distMs(lat, f(lat)), Connect: distMs(conn, f(conn))}
	}
	return []percentileRow{
		{Label: "count", Latency: fmtInt(lat.Count), Connect: fmtInt(conn.Count)},
		row("min", func(d loadgen.Distribution) float64 { return d.MinMs }),
		row("mean", func(d loadgen.Distribution) float64 { return d.MeanMs }),
		row("p50", func(d loadgen.Distribution) float64 { return d.P50Ms }),
		row("p90", func(d loadgen.Distribution) float64 { return d.P90Ms }),
		row("p95", func(d loadgen.Distribution) float64 { return d.P95Ms }),
		row("p99", func(d loadgen.Distribution) float64 { return d.P99Ms }),
		row("p99.9", func(d loadgen.Distribution) float64 { return d.P999Ms }),
		row("max", func(d loadgen.Distribution) float64 { return d.MaxMs }),
	}
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cond(ok bool, a, b string) string {
	if ok {
		return a
	}
	return b
}
