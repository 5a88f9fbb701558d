package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// result is everything the run reports. Memory is in bytes.
type result struct {
	Command string      `json:"command"`
	Machine machineInfo `json:"machine"`
	Options summary     `json:"options"`
	Addr    string      `json:"addr"`

	Target      int64        `json:"target"`
	Reached     int64        `json:"reached"`
	RampSeconds float64      `json:"ramp_seconds"`
	ConnsPerSec float64      `json:"connections_per_s"`
	Stopped     string       `json:"stopped,omitempty"` // "" when the target was held
	MemAbort    bool         `json:"mem_abort,omitempty"`
	Steps       []stepRecord `json:"steps"`
	RampCPU     cpuShare     `json:"ramp_cpu"`
	HoldCPU     cpuShare     `json:"hold_cpu"`

	HoldSeconds float64 `json:"hold_seconds"`
	HoldMinHubs int64   `json:"hold_min_hub_connections"`
	HoldMinHeld int64   `json:"hold_min_client_open"`
	HoldClosed  int64   `json:"hold_closed"`
	HoldNote    string  `json:"hold_note,omitempty"`

	Base              memFigures   `json:"base"` // processes started, no connection yet
	Peak              memFigures   `json:"peak"` // at the end of the hold
	HeraldRSSPerConn  float64      `json:"herald_rss_per_conn"`
	HeraldAnonPerConn float64      `json:"herald_anon_per_conn"`
	ClientAnonPerConn float64      `json:"client_anon_per_conn"`
	HeraldHeapPerConn float64      `json:"herald_heap_per_conn"`
	ClientRSSPerConn  float64      `json:"client_rss_per_conn"`
	KernelBytes       int64        `json:"kernel_bytes"`
	KernelPerConn     float64      `json:"kernel_per_conn"`
	KernelFreeBytes   int64        `json:"kernel_free_bytes"` // the same from MemFree
	SlabGrowth        int64        `json:"slab_growth"`
	SlabTop           []slabGrowth `json:"slab_top,omitempty"`
	Spread            hubSpread    `json:"hub_spread"`

	HubAcceptPauses int     `json:"hub_accept_pauses"`
	HubErrorLines   int     `json:"hub_error_lines"`
	StopSeconds     float64 `json:"stop_seconds"`
	MemAvailStart   int64   `json:"mem_available_start"`
	MemAvailEnd     int64   `json:"mem_available_end"`
	Elapsed         string  `json:"elapsed"`

	Loadgen *lgResult `json:"loadgen,omitempty"`

	RedisAddrs       []string `json:"redis_addrs,omitempty"`
	RedisUsedPeak    int64    `json:"redis_used_memory_peak"` // INFO used_memory summed, at the end of the hold
	RedisUsedEnd     int64    `json:"redis_used_memory_end"`  // the same after the broadcasts
	BroadcastCPU     cpuShare `json:"broadcast_cpu"`          // from the end of the hold to loadgen's end
	BroadcastSeconds float64  `json:"broadcast_seconds"`
}

type memFigures struct {
	MemAvailable int64 `json:"mem_available"`
	Slab         int64 `json:"slab"`
	TCPMemPages  int64 `json:"tcp_mem_pages"`
	HeraldRSS    int64 `json:"herald_rss"`
	ClientRSS    int64 `json:"client_rss"`
	HeraldAnon   int64 `json:"herald_rss_anon"`
	ClientAnon   int64 `json:"client_rss_anon"`
	RedisRSS     int64 `json:"redis_rss"`
	HubRSSMin    int64 `json:"hub_rss_min"`
	HubRSSMax    int64 `json:"hub_rss_max"`
}

func (s sample) figures() memFigures {
	return memFigures{
		MemAvailable: s.mem.Available, Slab: s.mem.Slab, TCPMemPages: s.sock.MemPages,
		HeraldRSS: s.heraldRSS, ClientRSS: s.clientRSS, HeraldAnon: s.heraldAnon, ClientAnon: s.clientAnon, HubRSSMin: s.hubRSSMin, HubRSSMax: s.hubRSSMax, RedisRSS: s.redisRSS,
	}
}

// summary is the options as reported.
type summary struct {
	Conns      int    `json:"conns"`
	Hubs       int    `json:"hubs"`
	Workers    int    `json:"workers"`
	HubMax     int    `json:"hub_max_connections"`
	Handshakes int    `json:"handshakes"`
	Hold       string `json:"hold"`
	Channel    string `json:"channel"`
	Channels   int    `json:"channels"`
	Spread     string `json:"spread"`
	Redis      string `json:"redis"`
	Schedule   string `json:"publish_schedule"`
	Loops      int    `json:"loops"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	MemFloor   int64  `json:"mem_floor"`
	SrcPer     int    `json:"sources_per_worker"`
	ReadBatch  string `json:"read_batch"`
}

func (o options) summary() summary {
	return summary{
		Conns: o.conns, Hubs: o.hubs, Workers: o.workers, HubMax: o.hubMax,
		Handshakes: o.handshakes, Hold: o.hold.String(), Channel: o.channel, Channels: o.channels,
		Spread: o.spread, Redis: o.redis, Schedule: o.schedule(),
		Loops: o.loops, GOMAXPROCS: o.gomaxprocs, MemFloor: o.memFloor,
		SrcPer: o.srcPer, ReadBatch: o.readBatch.String(),
	}
}

// machineInfo describes where the figures were taken.
type machineInfo struct {
	NProc     int    `json:"nproc"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	NoFile    uint64 `json:"nofile"`
	MemTotal  int64  `json:"mem_total"`
}

func machine() machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		m.NoFile = rl.Max
	}
	if mi, err := readMeminfo(); err == nil {
		m.MemTotal = mi.Total
	}
	return m
}

func (r *result) print(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "\nHerald: %s WebSocket connections on one machine as one cluster (redis: %s), all on loopback, client: loadgen run\n",
		thousands(r.Target), o.Redis)
	fmt.Fprintf(w, "command: %s\n", r.Command)
	if g := r.Loadgen; g != nil {
		fmt.Fprintf(w, "client:  %s\n", g.Command)
	}
	fmt.Fprintf(w, "machine: nproc=%d, %s, linux %s, MemTotal %s, open files %d per process\n",
		r.Machine.NProc, r.Machine.GoVersion, r.Machine.Kernel, gib(r.Machine.MemTotal), r.Machine.NoFile)
	fmt.Fprintf(w, "setup:   %d herald processes on %s (--reuseport, --max-connections %s, --loops %d, %s); redis %v; one loadgen run with %d workers, %d source address(es) each, --read-batch %v; %d channel(s) (%s); run took %s\n\n",
		o.Hubs, r.Addr, thousands(int64(o.HubMax)), o.Loops, o.Redis, r.RedisAddrs, o.Workers, o.SrcPer, o.ReadBatch, o.Channels, o.Spread, r.Elapsed)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }
	row("target", "%s", thousands(r.Target))
	row("reached", "%s (%.2f%%)", thousands(r.Reached), 100*float64(r.Reached)/float64(r.Target))
	row("time to reach", "%.1f s (hubs' /stats and loadgen's open count, checked every --hold-every)", r.RampSeconds)
	best := 0.0
	for _, s := range r.Steps {
		if s.Seconds > 0 {
			best = max(best, float64(s.Opened)/s.Seconds)
		}
	}
	row("connections/s", "%s /s over the ramp; best interval %s /s", thousands(int64(r.ConnsPerSec)), thousands(int64(best)))
	row("CPU during the ramp", "%v", r.RampCPU)
	if r.HoldSeconds > 0 {
		row("CPU during the hold", "%v", r.HoldCPU)
		row("hold", "%.0f s: hubs' /stats sum at least %s; clients open at least %s; %s closed (checked until loadgen's --duration ran out)", r.HoldSeconds,
			thousands(r.HoldMinHubs), thousands(r.HoldMinHeld), thousands(r.HoldClosed))
	}
	if r.Peak.HeraldRSS > 0 {
		row("herald RSS total", "%s VmRSS in %d processes (%s to %s each), %s of it private (RssAnon; the rest is the shared binary); %s VmRSS before any connection",
			size(r.Peak.HeraldRSS), o.Hubs, mib(r.Peak.HubRSSMin), mib(r.Peak.HubRSSMax), size(r.Peak.HeraldAnon), size(r.Base.HeraldRSS))
		row("herald per connection", "%.0f B RSS growth (%.0f B private), %s Go heap in use", r.HeraldRSSPerConn, r.HeraldAnonPerConn, bytesOrUnknown(r.HeraldHeapPerConn))
		n := float64(max(r.Reached, 1))
		row("kernel memory", "%s = MemAvailable drop %s - private RSS growth %s: %.0f B per connection (both ends)",
			size(r.KernelBytes), size(r.Base.MemAvailable-r.Peak.MemAvailable),
			size(r.Peak.HeraldAnon+r.Peak.ClientAnon-r.Base.HeraldAnon-r.Base.ClientAnon), r.KernelPerConn)
		row("", "%s from MemFree instead: %.0f B per connection; Slab +%s: %.0f B per connection",
			size(r.KernelFreeBytes), float64(r.KernelFreeBytes)/n, size(r.SlabGrowth), float64(r.SlabGrowth)/n)
		if len(r.SlabTop) > 0 {
			var parts []string
			for _, g := range r.SlabTop {
				parts = append(parts, fmt.Sprintf("%s %.0f B", g.Name, float64(g.Bytes)/n))
			}
			row("", "slab caches per connection: %s", strings.Join(parts, ", "))
		}
		row("total per connection", "%.0f B (herald + client private growth + kernel from MemFree)",
			r.HeraldAnonPerConn+r.ClientAnonPerConn+float64(r.KernelFreeBytes)/n)
		row("TCP buffer memory", "%d pages at the peak (/proc/net/sockstat mem)", r.Peak.TCPMemPages)
		row("MemAvailable", "%s at start, %s at the peak, %s after shutdown", gib(r.MemAvailStart), gib(r.Peak.MemAvailable), gib(r.MemAvailEnd))
		if o.Redis != redisNone {
			row("redis", "RSS %s before any connection, %s at the peak; used_memory %s at the peak, %s after the broadcasts",
				size(r.Base.RedisRSS), size(r.Peak.RedisRSS), size(r.RedisUsedPeak), size(r.RedisUsedEnd))
		}
	}
	if r.Spread.Sum > 0 {
		row("hub spread (reuseport)", "%s to %s connections per hub (mean %s)", thousands(r.Spread.Min), thousands(r.Spread.Max),
			thousands(r.Spread.Sum/int64(max(len(r.Spread.PerHub), 1))))
	}
	stopped := r.Stopped
	if stopped == "" {
		stopped = "did not stop: the target was held"
	}
	row("where it stopped", "%s", stopped)
	if r.HoldNote != "" {
		row("hold note", "%s", r.HoldNote)
	}
	if r.BroadcastSeconds > 0 {
		row("CPU during the broadcasts", "%v (%.0f s, from the end of the hold to loadgen's end)", r.BroadcastCPU, r.BroadcastSeconds)
	}
	if r.Loadgen != nil {
		r.Loadgen.print(row, r)
	}
	row("herald logs", "%d accept pauses (EMFILE/ENFILE/ENOMEM), %d error lines", r.HubAcceptPauses, r.HubErrorLines)
	row("shutdown", "all processes stopped in %.1f s after loadgen's run", r.StopSeconds)
	tw.Flush()
	b, err := json.Marshal(r)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	fmt.Fprintf(w, "JSON %s\n", b)
}

func bytesOrUnknown(v float64) string {
	if v <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.0f B", v)
}
