// Package report renders a loadgen.Report as one self-contained HTML page: the
// document that `herald-loadgen --html` writes and that a person opens after a run.
//
// # What it shows
//
//   - A header: tool, target, scenario name and parameters, start and end (UTC),
//     duration, why the run stopped, and a PASSED/FAILED badge from Report.Passed.
//   - Key figures, then a summary table (connections, messages, rates, error rate),
//     the thresholds with their measured values, and the errors by kind.
//   - Time series from Report.Series: open connections (with the target), deliveries/s
//     and publishes/s (two aligned y axes, since deliveries are publishes times the
//     fan-out), p50/p99 latency per interval, cumulative errors.
//   - Histograms of publish-to-receive and connect latency from the distributions'
//     buckets on a log-scale x axis with p50/p99 markers, and the percentile table.
//   - The workers, with lost or failed ones highlighted.
//
// An empty series or distribution renders a "No data" placeholder of the chart's
// size; an interval without deliveries is a gap in the latency line, not a zero.
//
// # Entry point
//
// WriteHTML(w, r) renders r into w. It is safe for concurrent use (it shares only the
// parsed template) and keeps nothing of r.
//
// # Invariants
//
//   - Self-contained: inline CSS, no script, no fonts, images or styles fetched from
//     anywhere; a Content-Security-Policy of default-src 'none' enforces it in the
//     browser too. The file can be mailed, archived with CI artefacts, or opened on an
//     air-gapped machine and look the same.
//   - Every string from the report (target, parameters, error kinds, worker addresses
//     and errors, threshold expressions) goes through html/template, so hostile or
//     merely odd text stays text. CSS classes come from a fixed set, never from data.
//   - Deterministic: the same Report gives the same bytes (maps are sorted, numbers
//     are formatted by hand, nothing reads the clock), which the golden test relies on.
//
// # Why inline SVG generated in Go
//
// A charting library would have to be inlined (hundreds of kilobytes of JavaScript
// per report) or fetched from a CDN, which breaks offline viewing and the no-fetch
// rule. Charts built in Go as SVG need no script at all, print, scale with the page,
// are testable as text (the golden file) and render identically in every browser.
// The drawing code is small because the charts are few and fixed: line charts over
// time and a log-binned histogram.
package report
