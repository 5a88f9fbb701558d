package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// fdSlack is how many more fds than at the warm-up a node may hold at the end beyond
// its WebSocket connections (the Redis pool and keep-alive API connections come and
// go).
const fdSlack = 10

type nodeInfo struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	Admin string `json:"admin"`
	PID   int    `json:"pid"`
}

// report is the soak's outcome: soak.json, soak.html and the table.
type report struct {
	Command  string     `json:"command"`
	NProc    int        `json:"nproc"`
	Started  time.Time  `json:"started"`
	Ended    time.Time  `json:"ended"`
	Duration string     `json:"duration"`
	Warmup   string     `json:"warmup"`
	Window   string     `json:"window"`
	Load0    float64    `json:"loadavg_start"`
	Load1    float64    `json:"loadavg_end"`
	Nodes    []nodeInfo `json:"nodes"`

	// Phases, in seconds since Started.
	LoadStart      float64 `json:"load_start"`
	LoadEnd        float64 `json:"load_end"` // every load process ended
	IdleAfterStart float64 `json:"idle_after_start"`
	// The windows whose means are compared.
	WarmFrom float64 `json:"warm_from"`
	WarmTo   float64 `json:"warm_to"`
	EndFrom  float64 `json:"end_from"`
	EndTo    float64 `json:"end_to"`

	Runs      []*RunResult    `json:"loadgen_runs"`
	Slow      *SlowStats      `json:"slow_consumer"`
	Reconnect *ReconnectStats `json:"reconnecting_client"`
	Leftover  Leftover        `json:"leftover"`
	NodeLogs  []int64         `json:"node_log_bytes"`

	Figures []NodeFigures `json:"figures"`
	Checks  []Check       `json:"checks"`
	Samples []Sample      `json:"samples"`
}

// NodeFigures are one node's means over the phases; -1 where no sample had it.
type NodeFigures struct {
	Node string `json:"node"`
	// Each is [idle before, warm-up window, final window, idle after].
	RSS         [4]float64 `json:"rss"`
	Goroutines  [4]float64 `json:"goroutines"`
	FDs         [4]float64 `json:"fds"`
	FDsBeyond   [4]float64 `json:"fds_beyond_connections"`
	HeapInuse   [4]float64 `json:"heap_inuse"`
	Connections [4]float64 `json:"connections"`
}

// Check is one pass/fail criterion.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Failed reports whether a check failed.
func (r *report) Failed() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return true
		}
	}
	return len(r.Checks) == 0
}

// mean is the mean of f over the samples with a in [from, to), ignoring negative
// (failed) readings; -1 when there is none.
func mean(ss []Sample, from, to float64, f func(Sample) float64) float64 {
	sum, n := 0.0, 0
	for _, s := range ss {
		if s.T < from || s.T >= to {
			continue
		}
		if v := f(s); v >= 0 && !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return -1
	}
	return sum / float64(n)
}

// evaluate sets the windows, the figures and the checks.
func (r *report) evaluate(o options) {
	r.WarmFrom = r.LoadStart + o.warmup.Seconds()
	r.WarmTo = r.WarmFrom + o.window.Seconds()
	r.EndTo = r.LoadStart + (o.duration - endMargin).Seconds()
	r.EndFrom = r.EndTo - o.window.Seconds()
	phases := [4][2]float64{{0, r.LoadStart}, {r.WarmFrom, r.WarmTo}, {r.EndFrom, r.EndTo}, {r.IdleAfterStart, math.Inf(1)}}
	r.Figures, r.Checks = nil, nil
	for i, n := range r.Nodes {
		f := NodeFigures{Node: n.Name}
		for p, ph := range phases {
			at := func(g func(NodeSample) float64) float64 {
				return mean(r.Samples, ph[0], ph[1], func(s Sample) float64 {
					if i >= len(s.Nodes) {
						return -1
					}
					return g(s.Nodes[i])
				})
			}
			f.RSS[p] = at(func(x NodeSample) float64 { return float64(x.RSS) })
			f.Goroutines[p] = at(func(x NodeSample) float64 { return x.Goroutines })
			f.FDs[p] = at(func(x NodeSample) float64 { return float64(x.FDs) })
			f.FDsBeyond[p] = at(func(x NodeSample) float64 {
				if x.FDs < 0 || x.Connections < 0 {
					return -1
				}
				return float64(x.FDs) - x.Connections
			})
			f.HeapInuse[p] = at(func(x NodeSample) float64 { return x.HeapInuse })
			f.Connections[p] = at(func(x NodeSample) float64 { return x.Connections })
		}
		r.Figures = append(r.Figures, f)
		r.Checks = append(r.Checks,
			within(n.Name+" RSS", f.RSS[1], f.RSS[2], o.tolerance, mib),
			within(n.Name+" goroutines", f.Goroutines[1], f.Goroutines[2], o.tolerance, plain),
			fdCheck(n.Name, f))
	}
	r.Checks = append(r.Checks, r.quietCheck(), r.runsCheck(), r.slowCheck(), r.reconnectCheck(), r.leftoverCheck())
}

func mib(v float64) string   { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }
func plain(v float64) string { return fmt.Sprintf("%.0f", v) }

// within checks that end is within tol of warm.
func within(name string, warm, end, tol float64, unit func(float64) string) Check {
	if warm <= 0 || end < 0 {
		return Check{Name: name, Detail: "no samples in a window"}
	}
	ch := end/warm - 1
	return Check{Name: name, OK: math.Abs(ch) <= tol,
		Detail: fmt.Sprintf("%s after warm-up, %s at the end (%+.1f%%; allowed ±%.0f%%)", unit(warm), unit(end), 100*ch, 100*tol)}
}

func fdCheck(node string, f NodeFigures) Check {
	name := node + " fds"
	if f.FDsBeyond[1] < 0 || f.FDsBeyond[2] < 0 {
		return Check{Name: name, Detail: "no samples in a window"}
	}
	d := f.FDsBeyond[2] - f.FDsBeyond[1]
	return Check{Name: name, OK: d <= fdSlack,
		Detail: fmt.Sprintf("%.0f open after warm-up, %.0f at the end; beyond the WebSocket connections %.1f then %.1f (%+.1f; allowed +%d); idle %.0f before the load, %.0f after",
			f.FDs[1], f.FDs[2], f.FDsBeyond[1], f.FDsBeyond[2], d, fdSlack, f.FDs[0], f.FDs[3])}
}

func (r *report) run(name string) *RunResult {
	for _, rr := range r.Runs {
		if rr.Name == name {
			return rr
		}
	}
	return nil
}

func (r *report) quietCheck() Check {
	c := Check{Name: "quiet channels: 0 missing, 0 duplicated"}
	q := r.run(quietRun)
	if q == nil {
		c.Detail = "no quiet run"
		return c
	}
	c.OK = q.Error == "" && q.Expected > 0 && q.Missing == 0 && q.Duplicated == 0 && q.Delivered == q.Expected
	c.Detail = fmt.Sprintf("%d published, %d deliveries expected, %d delivered, %d missing, %d duplicated", q.Published, q.Expected, q.Delivered, q.Missing, q.Duplicated)
	if q.Error != "" {
		c.Detail += "; " + q.Error
	}
	return c
}

func (r *report) runsCheck() Check {
	c := Check{Name: "every loadgen run completed", OK: len(r.Runs) > 0}
	var bad []string
	for _, rr := range r.Runs {
		if rr.Error != "" || rr.Connected == 0 {
			c.OK = false
			bad = append(bad, rr.Name+": "+nonEmpty(rr.Error, "no connection"))
		}
	}
	c.Detail = fmt.Sprintf("%d runs", len(r.Runs))
	if len(bad) > 0 {
		c.Detail += "; " + strings.Join(bad, "; ")
	}
	return c
}

func (r *report) slowCheck() Check {
	c := Check{Name: "slow consumer cut off every time"}
	s := r.Slow
	if s == nil {
		c.Detail = "not run"
		return c
	}
	c.OK = s.Cut > 0 && s.NotCut == 0
	c.Detail = fmt.Sprintf("%d slow consumers, %d cut off (after %.0f to %.0f s), %d not; the client saw %v; %d events of %d bytes published to it, %d refused",
		s.Cycles, s.Cut, s.CutSecondsMin, s.CutSecondsMax, s.NotCut, s.Closes, s.Published, slowPayload, s.PubErrors)
	if len(s.Errors) > 0 {
		c.Detail += "; " + strings.Join(s.Errors, "; ")
	}
	return c
}

func (r *report) reconnectCheck() Check {
	c := Check{Name: "reconnecting client: under 1% failures"}
	s := r.Reconnect
	if s == nil {
		c.Detail = "not run"
		return c
	}
	c.OK = s.Cycles > 0 && float64(s.Failures) <= 0.01*float64(s.Cycles)
	c.Detail = fmt.Sprintf("%d connect-subscribe-close cycles (%d on presence, %d dropped without a close handshake), %d failed", s.Cycles, s.Presence, s.Abrupt, s.Failures)
	if len(s.Errors) > 0 {
		c.Detail += "; " + strings.Join(s.Errors, "; ")
	}
	return c
}

func (r *report) leftoverCheck() Check {
	l := r.Leftover
	c := Check{Name: "nothing left once every client has gone",
		OK: l.Error == "" && l.Connections == 0 && l.Channels == 0 && l.Subscriptions == 0 && l.Occupied == 0}
	c.Detail = fmt.Sprintf("after %.1f s: %.0f connections, %.0f channels, %.0f subscriptions on the nodes; %d channels occupied in the cluster",
		l.Seconds, l.Connections, l.Channels, l.Subscriptions, l.Occupied)
	if l.Error != "" {
		c.Detail += "; " + l.Error
	}
	return c
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// write writes soak.json and soak.html to dir.
func (r *report) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "soak.json"), b, 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "soak.html"))
	if err != nil {
		return err
	}
	werr := writeHTML(f, r)
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// print writes the table.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nHerald soak: %s of load on 3 nodes and a redis-server (%d CPUs, load average %.1f → %.1f); warm-up %s, windows of %s\n",
		r.Duration, r.NProc, r.Load0, r.Load1, r.Warmup, r.Window)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "node\tmeasure\tidle before\tafter warm-up\tat the end\tidle after")
	for _, f := range r.Figures {
		row := func(what string, v [4]float64, unit func(float64) string) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Node, what, opt(v[0], unit), opt(v[1], unit), opt(v[2], unit), opt(v[3], unit))
		}
		row("RSS", f.RSS, mib)
		row("Go heap in use", f.HeapInuse, mib)
		row("goroutines", f.Goroutines, plain)
		row("open fds", f.FDs, plain)
		row("fds beyond connections", f.FDsBeyond, plain)
		row("connections", f.Connections, plain)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "loadgen run\tconnected\tpublished\texpected\tdelivered\tmissing\tduplicated\tp50\tp99\terror")
	for _, rr := range r.Runs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f ms\t%.1f ms\t%s\n", rr.Name, rr.Connected, rr.Published, rr.Expected,
			rr.Delivered, rr.Missing, rr.Duplicated, rr.P50Ms, rr.P99Ms, rr.Error)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nnode logs: %v bytes\n\n", r.NodeLogs)
	for _, c := range r.Checks {
		v := "ok  "
		if !c.OK {
			v = "FAIL"
		}
		fmt.Fprintf(w, "%s %s: %s\n", v, c.Name, c.Detail)
	}
}

func opt(v float64, unit func(float64) string) string {
	if v < 0 {
		return "-"
	}
	return unit(v)
}
