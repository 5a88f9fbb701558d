package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// report is everything benchrun prints.
type report struct {
	Command string      `json:"command"`
	Machine machineInfo `json:"machine"`
	Options options     `json:"-"`
	Results []*figures  `json:"results"`
	Elapsed string      `json:"elapsed"`
}

func (r *report) byTarget(name string) *figures {
	for _, f := range r.Results {
		if f.Target == name {
			return f
		}
	}
	return nil
}

func (r *report) print(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "\nHerald load figures\n")
	fmt.Fprintf(w, "command: %s\n", r.Command)
	fmt.Fprintf(w, "machine: nproc=%d, %s, linux %s, open files %d; all traffic on loopback\n",
		r.Machine.NProc, r.Machine.GoVersion, r.Machine.Kernel, r.Machine.NoFile)
	fmt.Fprintf(w, "setup:   %d connections, %d client worker process(es), one channel, %d-byte data, %d handshakes in flight; run took %s\n\n",
		o.conns, o.workers, o.payload, o.handshakes, r.Elapsed)

	h, fl := r.byTarget("herald"), r.byTarget("rawfloor")
	if h == nil {
		h = &figures{Target: "herald", Error: "not measured"}
	}
	if fl == nil {
		fl = &figures{Target: "rawfloor", Error: "not measured"}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\therald\trawfloor\therald/floor\ttarget")
	row := func(sc, metric string, get func(*figures) *float64, unit string, ratio bool, target string) {
		hv, fv := get(h), get(fl)
		rs := "-"
		if ratio && hv != nil && fv != nil && *fv != 0 {
			rs = fmt.Sprintf("%.0f%%", 100**hv / *fv)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sc, metric, num(hv, unit), num(fv, unit), rs, target)
	}
	row("a) memory", "server RSS growth per idle subscribed conn", func(f *figures) *float64 { return f.ServerRSSPerConn }, "B", false, "herald <= 512 B")
	row("a) memory", "server Go heap in use per conn", func(f *figures) *float64 { return f.ServerHeapPerConn }, "B", false, "")
	row("a) memory", "client (loadgen) RSS per conn", func(f *figures) *float64 { return f.ClientRSSPerConn }, "B", false, "<= 2048 B")
	row("a) memory", "client (loadgen) Go heap per conn", func(f *figures) *float64 { return f.ClientHeapPerConn }, "B", false, "")
	row("a) memory", "time to connect and subscribe all", func(f *figures) *float64 { return f.SubscribeSeconds }, "s", false, "")
	row("b) fan-out", fmt.Sprintf("publish to last of %d deliveries, p50", o.conns), func(f *figures) *float64 { return f.LastP50 }, "ms", false, "")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.LastP99 }, "ms", false, "")
	row("b) fan-out", "  max", func(f *figures) *float64 { return f.LastMax }, "ms", false, "")
	row("b) fan-out", "publish to each delivery, p50 (all modes)", func(f *figures) *float64 { return f.DeliveryP50 }, "ms", false, "")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.DeliveryP99 }, "ms", false, "")
	row("b) fan-out", fmt.Sprintf("throughput, %d publishes in flight", o.window), func(f *figures) *float64 { return f.Throughput }, "deliveries/s", true, ">= 80%")
	row("b) fan-out", "  server CPU per delivery (throughput mode)", func(f *figures) *float64 { return f.ServerCPU }, "us", true, "")
	row("b) fan-out", "  client CPU per delivery (throughput mode)", func(f *figures) *float64 { return f.ClientCPU }, "us", false, "")
	row("c) upgrades", fmt.Sprintf("upgrades per second (%d in flight)", o.handshakes), func(f *figures) *float64 { return f.UpgradesPerSec }, "/s", true, "")
	row("c) upgrades", "socket() to connection_established, p50", func(f *figures) *float64 { return f.ConnectP50 }, "ms", false, "")
	row("c) upgrades", "  p99", func(f *figures) *float64 { return f.ConnectP99 }, "ms", false, "")
	tw.Flush()

	for _, f := range []*figures{h, fl} {
		fmt.Fprintf(w, "%s: latency publishes %d, throughput publishes %d, missing %d, duplicates %d, reordered %d",
			f.Target, f.Publishes, f.TputPublishes, f.Missing, f.Duplicates, f.Reordered)
		if s := strings.TrimSpace(f.Reasons); s != "" {
			fmt.Fprintf(w, ", reasons: %s", s)
		}
		fmt.Fprintln(w)
		if f.Error != "" {
			fmt.Fprintf(w, "%s: ERROR: %s\n", f.Target, firstLines(f.Error, 6))
		}
	}
	fmt.Fprintf(w, "JSON %s\n", marshalLine(r))
}

func num(v *float64, unit string) string {
	if v == nil {
		return "-"
	}
	switch {
	case unit == "ms":
		return fmt.Sprintf("%.2f ms", *v)
	case unit == "us":
		return fmt.Sprintf("%.2f µs", *v)
	case unit == "s":
		return fmt.Sprintf("%.2f s", *v)
	case *v >= 10000:
		return fmt.Sprintf("%s %s", thousands(int64(*v+0.5)), unit)
	}
	return fmt.Sprintf("%.0f %s", *v, unit)
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n    ")
}
