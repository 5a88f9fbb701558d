package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteSummary prints the final summary table of r.
func WriteSummary(out io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
	t := &r.Totals
	p("")
	p("scenario\t%s\ttarget %s", r.Scenario.Name, r.Target)
	if len(r.Targets) > 1 {
		for i, ts := range r.Targets {
			p("  server %d\t%s\t%d connected", i+1, ts.URL, ts.Connected)
		}
	}
	if r.PublishTarget != "" {
		p("publishing to\t%s", r.PublishTarget)
	}
	p("run\t%.1fs\tstopped: %s", r.Seconds, r.Stopped)
	p("")
	p("CONNECTIONS\t")
	p("  target\t%d", t.ConnectionsTarget)
	p("  peak open\t%d", t.ConnectionsPeak)
	p("  connected\t%d", t.Connected)
	p("  subscribed\t%d", t.Subscribed)
	p("  connect errors\t%d", t.ConnectErrors)
	p("  lost before the stop\t%d", t.LostConnections)
	if r.RampSeconds > 0 {
		p("  ramp\t%.2fs\t%.0f connections/s", r.RampSeconds, r.ConnectRate)
	}
	p("")
	p("MESSAGES\t")
	p("  published\t%d\t%.1f/s", t.Published, t.PublishesPerSec)
	p("  expected\t%d", t.Expected)
	p("  delivered\t%d\t%.1f/s", t.Delivered, t.DeliveriesPerSec)
	p("  missing\t%d", t.Missing)
	p("  duplicated\t%d", t.Duplicated)
	if r.Members > 0 {
		p("  presence member events\t%d", r.Members)
	}
	if bs := r.Broadcasts; bs != nil {
		c := bs.Completion
		p("")
		p("BROADCASTS\t%d followed\t%d complete, %d incomplete", bs.Count, bs.Complete, bs.Incomplete)
		p("  publish→last delivery\tp50 %.1f ms\tmax %.1f ms", c.P50Ms, c.MaxMs)
	}
	if ps := r.Presence; ps != nil {
		p("")
		p("PRESENCE\t")
		p("  joins\t%d\t%.1f/s over the load phase (%.1fs)", ps.Joins, ps.JoinsPerSec, ps.LoadSeconds)
		p("  leaves\t%d\t%.1f/s", ps.Leaves, ps.LeavesPerSec)
		p("  member_added received\t%d", ps.MemberAdded)
		p("  member_removed received\t%d", ps.MemberRemoved)
	}
	p("")
	p("LATENCY (ms)\tcount\tmin\tmean\tp50\tp90\tp95\tp99\tp99.9\tmax")
	dists := []struct {
		name string
		d    Distribution
	}{{"  publish→receive", r.Latency}, {"  connect", r.Connect}}
	if r.Presence != nil {
		dists = append(dists, struct {
			name string
			d    Distribution
		}{"  join→member_added", r.Presence.MemberLatency}, struct {
			name string
			d    Distribution
		}{"    in the load phase", r.Presence.MemberLatencyLoad})
	}
	for _, d := range dists {
		p("%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f", d.name, d.d.Count, d.d.MinMs, d.d.MeanMs,
			d.d.P50Ms, d.d.P90Ms, d.d.P95Ms, d.d.P99Ms, d.d.P999Ms, d.d.MaxMs)
	}
	if c := r.Completion; c != nil {
		p("")
		p("COMPLETION\t(publish → last delivery, tracked publishes)")
		p("  accepted\t%d\tcomplete %d, incomplete %d", c.Accepted, c.Complete, c.Incomplete)
		p("  p50 / p99 / max\t%.2f / %.2f / %.2f ms", c.Latency.P50Ms, c.Latency.P99Ms, c.Latency.MaxMs)
		p("  deliveries\t%d\t%.1f/s, %.1f publishes/s (first send to last delivery)", c.Deliveries, c.DeliveriesPerSec, c.PublishesPerSec)
	}
	p("")
	p("ERRORS\t%d\trate %.4f%%", sumErrors(t.Errors), 100*t.ErrorRate)
	for _, k := range slices.Sorted(maps.Keys(t.Errors)) {
		p("  %s\t%d", k, t.Errors[k])
	}
	for _, k := range slices.Sorted(maps.Keys(t.AtClose)) {
		p("  (at the final close, not an error) %s\t%d", k, t.AtClose[k])
	}
	p("")
	p("WORKERS\tpid\tsource\tconns\tconnected\tdelivered\theap MiB\tstate")
	for _, w := range r.Workers {
		state := w.State
		if w.Error != "" {
			state += " (" + w.Error + ")"
		}
		p("  %d\t%d\t%s\t%d\t%d\t%d\t%.1f\t%s", w.ID, w.PID, orDash(w.Source), w.Connections, w.Connected,
			w.Delivered, float64(w.HeapBytes)/(1<<20), state)
	}
	if len(r.Thresholds) > 0 {
		p("")
		p("THRESHOLDS\t")
		for _, th := range r.Thresholds {
			mark := "✓ ok"
			if !th.OK {
				mark = "✗ FAILED"
			}
			p("  %s\t%s\tmeasured %g", th.Expr, mark, th.Value)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("loadgen: summary: %w", err)
	}
	return nil
}

func sumErrors(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
