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
	// Load is the host's 1-minute load average at the start and at the end.
	Load [2]float64 `json:"loadavg"`
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
	fmt.Fprintf(w, "machine: nproc=%d, %s, linux %s, open files %d; all traffic on loopback; load average %.2f at the start, %.2f at the end\n",
		r.Machine.NProc, r.Machine.GoVersion, r.Machine.Kernel, r.Machine.NoFile, r.Load[0], r.Load[1])
	fmt.Fprintf(w, "setup:   %d connections, %d client worker process(es), one channel, %d-byte data, %d handshakes in flight; run took %s\n",
		o.conns, o.workers, o.payload, o.handshakes, r.Elapsed)
	fmt.Fprintf(w, "         herald = one node, in-memory broker; herald-cluster = %d nodes joined through one redis-server, clients spread evenly over the nodes, every publish through node 1\n\n",
		clusterNodes)

	get := func(name string) *figures {
		if f := r.byTarget(name); f != nil {
			return f
		}
		return &figures{Target: name, Error: "not measured"}
	}
	h, fl, cl := get(targetHerald), get(targetRawFloor), get(targetCluster)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\therald\trawfloor\therald/floor\therald-cluster\tcluster vs herald\ttarget")
	type cmp int
	const (
		none  cmp = iota
		ratio     // percentage
		delta     // difference, in the unit
	)
	row := func(sc, metric string, val func(*figures) *float64, unit string, floor bool, vsOne cmp, target string) {
		hv, fv, cv := val(h), val(fl), val(cl)
		fs, cs := "-", "-"
		if floor && hv != nil && fv != nil && *fv != 0 {
			fs = fmt.Sprintf("%.0f%%", 100**hv / *fv)
		}
		if cv != nil && hv != nil {
			switch {
			case vsOne == ratio && *hv != 0:
				cs = fmt.Sprintf("%.0f%%", 100**cv / *hv)
			case vsOne == delta:
				cs = signed(*cv-*hv, unit)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sc, metric, num(hv, unit), num(fv, unit), fs, num(cv, unit), cs, target)
	}
	row("a) memory", "server RSS growth per idle subscribed conn", func(f *figures) *float64 { return f.ServerRSSPerConn }, "B", false, delta, "herald <= 512 B")
	row("a) memory", "server Go heap in use per conn", func(f *figures) *float64 { return f.ServerHeapPerConn }, "B", false, delta, "")
	row("a) memory", "client (loadgen) RSS per conn", func(f *figures) *float64 { return f.ClientRSSPerConn }, "B", false, none, "<= 2048 B")
	row("a) memory", "client (loadgen) Go heap per conn", func(f *figures) *float64 { return f.ClientHeapPerConn }, "B", false, none, "")
	row("a) memory", "time to connect and subscribe all", func(f *figures) *float64 { return f.SubscribeSeconds }, "s", false, delta, "")
	row("b) fan-out", fmt.Sprintf("publish to last of %d deliveries, p50", o.conns), func(f *figures) *float64 { return f.LastP50 }, "ms", false, delta, "")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.LastP99 }, "ms", false, delta, "")
	row("b) fan-out", "  max", func(f *figures) *float64 { return f.LastMax }, "ms", false, delta, "")
	row("b) fan-out", "publish to each delivery, p50 (latency mode)", func(f *figures) *float64 { return f.LatencyModeP50 }, "ms", false, delta, "cluster adds <= 1 ms")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.LatencyModeP99 }, "ms", false, delta, "")
	row("b) fan-out", fmt.Sprintf("publish to each of %d deliveries (probe), p50", probeConns), func(f *figures) *float64 { return f.ProbeP50 }, "ms", false, delta, "cluster adds <= 1 ms")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.ProbeP99 }, "ms", false, delta, "")
	row("b) fan-out", "publish to each delivery, p50 (all modes)", func(f *figures) *float64 { return f.DeliveryP50 }, "ms", false, delta, "")
	row("b) fan-out", "  p99", func(f *figures) *float64 { return f.DeliveryP99 }, "ms", false, delta, "")
	row("b) fan-out", fmt.Sprintf("throughput, %d publishes in flight", o.window), func(f *figures) *float64 { return f.Throughput }, "deliveries/s", true, ratio, "floor >= 80%, cluster >= 90%")
	row("b) fan-out", "  publishes per second", func(f *figures) *float64 { return f.PublishesPerSec }, "/s", true, ratio, "")
	row("b) fan-out", "  server CPU per delivery (cluster: all nodes)", func(f *figures) *float64 { return f.ServerCPU }, "us", true, ratio, "")
	row("b) fan-out", "  client CPU per delivery (throughput mode)", func(f *figures) *float64 { return f.ClientCPU }, "us", false, none, "")
	row("c) upgrades", fmt.Sprintf("upgrades per second (%d in flight)", o.handshakes), func(f *figures) *float64 { return f.UpgradesPerSec }, "/s", true, ratio, "")
	row("c) upgrades", "socket() to connection_established, p50", func(f *figures) *float64 { return f.ConnectP50 }, "ms", false, delta, "")
	row("c) upgrades", "  p99", func(f *figures) *float64 { return f.ConnectP99 }, "ms", false, delta, "")
	tw.Flush()

	if cl.Error == "" || cl.Throughput != nil {
		r.printCluster(w, h, cl)
	}
	fmt.Fprintln(w)
	for _, f := range []*figures{h, cl, fl} {
		fmt.Fprintf(w, "%s: latency publishes %d, throughput publishes %d, missing %d, duplicates %d, reordered %d",
			f.Target, f.Publishes, f.TputPublishes, f.Missing, f.Duplicates, f.Reordered)
		if f.Dropped != nil {
			fmt.Fprintf(w, ", dropped at the server %.0f", *f.Dropped)
		}
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

// printCluster prints what only the cluster has, and its two targets against one
// node.
func (r *report) printCluster(w io.Writer, h, cl *figures) {
	fmt.Fprintf(w, "\nherald-cluster: %d nodes, one redis-server; connections per node %s; publishes through node 1\n",
		cl.Nodes, joinInts(cl.NodeConns))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	if h.Throughput != nil && cl.Throughput != nil && *h.Throughput > 0 {
		q := *cl.Throughput / *h.Throughput
		fmt.Fprintf(tw, "  deliveries/s, cluster ÷ one node\t%.2f\t(%s ÷ %s)\ttarget >= 0.90\t%s\n", q,
			num(cl.Throughput, "deliveries/s"), num(h.Throughput, "deliveries/s"), verdict(q >= 0.9))
	}
	if h.LatencyModeP50 != nil && cl.LatencyModeP50 != nil {
		d := *cl.LatencyModeP50 - *h.LatencyModeP50
		fmt.Fprintf(tw, "  publish-to-delivery p50 the cluster adds, %d subscribers (latency mode)\t%s\t(%.2f ms vs %.2f ms)\ttarget <= 1 ms\t%s\n",
			cl.Conns, signed(d, "ms"), *cl.LatencyModeP50, *h.LatencyModeP50, verdict(d <= 1))
	}
	if h.ProbeP50 != nil && cl.ProbeP50 != nil {
		d := *cl.ProbeP50 - *h.ProbeP50
		fmt.Fprintf(tw, "  publish-to-delivery p50 the cluster adds, %d subscribers (probe)\t%s\t(%.2f ms vs %.2f ms)\ttarget <= 1 ms\t%s\n",
			probeConns, signed(d, "ms"), *cl.ProbeP50, *h.ProbeP50, verdict(d <= 1))
	}
	line := func(label string, v *float64, unit, note string) {
		if v != nil {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\t\n", label, num(v, unit), note)
		}
	}
	one := ""
	if h.ServerCPU != nil {
		one = fmt.Sprintf("(one node: %.2f µs)", *h.ServerCPU)
	}
	line("server CPU per delivery, summed over the nodes", cl.ServerCPU, "us", one)
	line("redis-server CPU per delivery", cl.RedisCPUPerDelivery, "us", "")
	line("redis-server CPU per published message", cl.RedisCPUPerPublish, "us", "")
	line("broker messages published by the nodes", cl.BrokerPublishedPerSec, "/s", "throughput mode")
	line("broker messages received by the nodes", cl.BrokerReceivedPerSec, "/s", "each publish reaches every node with subscribers")
	line("PUBLISH commands at Redis", cl.RedisPublishPerSec, "/s", "probes and control messages included")
	line("redis-server RSS growth per subscribed conn", cl.RedisRSSPerConn, "B", "")
	tw.Flush()
}

func signed(v float64, unit string) string {
	s := num(&v, unit)
	if v >= 0 {
		s = "+" + s
	}
	return s
}

func joinInts(v []int64) string {
	if len(v) == 0 {
		return "-"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = thousands(x)
	}
	return strings.Join(parts, "/")
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
