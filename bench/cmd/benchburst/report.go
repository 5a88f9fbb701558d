package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// report is everything benchburst prints.
type report struct {
	Command   string                         `json:"command"`
	Machine   string                         `json:"machine"`
	Conns     int                            `json:"conns"`
	Targets   []string                       `json:"targets"`
	Scenarios []string                       `json:"scenarios"`
	Results   map[string]map[string]*figures `json:"results"` // scenario → target → figures
	Bursts    map[string][]*figures          `json:"bursts"`  // target → every burst
	Elapsed   string                         `json:"elapsed"`
	Load      [2]float64                     `json:"loadavg"`
}

func (r *report) add(scenario, target string, f *figures) {
	if r.Results == nil {
		r.Results = map[string]map[string]*figures{}
	}
	if r.Results[scenario] == nil {
		r.Results[scenario] = map[string]*figures{}
		r.Scenarios = append(r.Scenarios, scenario)
	}
	r.Results[scenario][target] = f
}

func (r *report) addBurst(target string, f *figures) {
	if r.Bursts == nil {
		r.Bursts = map[string][]*figures{}
	}
	r.Bursts[target] = append(r.Bursts[target], f)
}

// medians adds the median burst of each target as a scenario (at print time).
func (r *report) medians() {
	for _, t := range r.Targets {
		bs := r.Bursts[t]
		if len(bs) == 0 {
			continue
		}
		r.add(fmt.Sprintf("burst of %d (median of %d)", bs[0].Offered, len(bs)), t, median(bs))
	}
}

func (r *report) print(w io.Writer) {
	r.medians()
	fmt.Fprintf(w, "\nHerald fan-out under load: today's code against gathering, same run\n")
	fmt.Fprintf(w, "command: %s\n", r.Command)
	fmt.Fprintf(w, "machine: %s; one herald node (in-memory broker) per target, %d subscribers on one channel, all on loopback; load average %.2f at the start, %.2f at the end; took %s\n\n",
		r.Machine, r.Conns, r.Load[0], r.Load[1], r.Elapsed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "scenario\ttarget\tpublishes taken\trefused (503)\tdeliveries/s\tp50 ms\tp99 ms\tmax ms\tpeak RSS MiB\tdropped (counted)\tunaccounted\t\n")
	for _, s := range r.Scenarios {
		for _, t := range r.Targets {
			f := r.Results[s][t]
			if f == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t\n", s, t, f.Accepted, f.Refused,
				f.DeliveriesPerS, f.P50, f.P99, f.Max, float64(f.PeakRSS)/(1<<20), f.Dropped, f.Unaccounted)
		}
		if a, b := r.Results[s]["today"], r.Results[s]["gathered"]; a != nil && b != nil && a.DeliveriesPerS > 0 {
			target := ""
			if len(s) > 5 && s[:5] == "burst" {
				target = " (target >= 1.50x)"
			}
			fmt.Fprintf(tw, "%s\tgathered/today\t\t\t%.2fx%s\t\t\t\t\t\t\t\n", s, b.DeliveriesPerS/a.DeliveriesPerS, target)
		}
	}
	_ = tw.Flush()
	for _, s := range r.Scenarios {
		for _, t := range r.Targets {
			if f := r.Results[s][t]; f != nil && f.Overrun > 0 {
				fmt.Fprintf(w, "%s, %s: %d publishes not sent on schedule (the previous one was unanswered)\n", s, t, f.Overrun)
			}
		}
	}
	fmt.Fprintln(w, "\ndeliveries/s: deliveries ÷ (first publish → last delivery); p50/p99/max: publish → each delivery;")
	fmt.Fprintln(w, "dropped: deliveries the server counted as dropped (herald_dropped_total{reason=delivery_*});")
	fmt.Fprintln(w, "unaccounted: taken × subscribers − delivered − dropped (a silent loss when not 0).")
	b, err := json.Marshal(r)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	fmt.Fprintf(w, "\n%s\n", b)
}
