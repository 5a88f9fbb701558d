package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// Memory planned per connection and per process, from the runs recorded in
// BENCH-1M.md, rounded up. The kernel's share covers both ends of a loopback
// connection: two TCP sockets, their socket inodes, dentries, files and epoll
// entries (about 7.7 KB), plus a /proc inode and dentry per socket that the machine's
// process supervisor makes by listing /proc/<pid>/fd (about 1.8 KB, reclaimable).
// Process memory is private memory (RssAnon): the binaries' pages are shared.
const (
	planKernelPerConn = 10240   // bytes, both ends
	planHeraldPerConn = 512     // bytes of herald private memory
	planClientPerConn = 512     // bytes of worker private memory
	planPerProcess    = 4 << 20 // bytes of private memory per process before any connection
	procFiles         = 64      // files a process holds besides its sockets, with margin
)

// check is one line of the OS report.
type check struct {
	name  string
	value string
	need  string
	ok    bool
	fatal bool   // a failure stops the run unless --force
	fix   string // what to do when it fails
}

func sysctlPath(name string) string {
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
}

// readSysctl returns the whitespace-separated integers of a sysctl.
func readSysctl(name string) ([]int64, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return nil, err
	}
	return parseInts(string(b))
}

func parseInts(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Fields(s) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bench1m: %q: %w", s, err)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench1m: no number in %q", s)
	}
	return out, nil
}

// meminfo holds the /proc/meminfo fields the run watches, in bytes.
type meminfo struct {
	Total, Free, Available, Slab, SUnreclaim int64
}

func readMeminfo() (meminfo, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return meminfo{}, err
	}
	return parseMeminfo(string(b))
}

func parseMeminfo(s string) (meminfo, error) {
	var m meminfo
	found := 0
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "MemTotal":
			dst = &m.Total
		case "MemFree":
			dst = &m.Free
		case "MemAvailable":
			dst = &m.Available
		case "Slab":
			dst = &m.Slab
		case "SUnreclaim":
			dst = &m.SUnreclaim
		default:
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("bench1m: meminfo: %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("bench1m: meminfo: %w", err)
		}
		*dst = n << 10
		found++
	}
	if found != 5 {
		return m, fmt.Errorf("bench1m: meminfo: %d of 5 fields (MemTotal, MemFree, MemAvailable, Slab, SUnreclaim)", found)
	}
	return m, nil
}

// readSlabinfo returns the bytes of every slab cache (objects allocated times their
// size), or nil if /proc/slabinfo cannot be read (it needs root).
func readSlabinfo() map[string]int64 {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return nil
	}
	return parseSlabinfo(string(b))
}

func parseSlabinfo(s string) map[string]int64 {
	out := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "slabinfo") {
			continue
		}
		n, err1 := strconv.ParseInt(f[2], 10, 64)
		size, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 == nil && err2 == nil {
			out[f[0]] += n * size
		}
	}
	return out
}

// slabGrowth is one slab cache's growth.
type slabGrowth struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// topSlabs returns the n caches that grew most from base to peak.
func topSlabs(base, peak map[string]int64, n int) []slabGrowth {
	var out []slabGrowth
	for k, v := range peak {
		if d := v - base[k]; d > 0 {
			out = append(out, slabGrowth{k, d})
		}
	}
	slices.SortFunc(out, func(a, b slabGrowth) int {
		if a.Bytes != b.Bytes {
			return cmp.Compare(b.Bytes, a.Bytes)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out[:min(n, len(out))]
}

// readRSS returns VmRSS and RssAnon of process pid in bytes, from
// /proc/<pid>/status.
func readRSS(pid int) (rss, anon int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("bench1m: rss: %w", err)
	}
	return parseRSS(string(b))
}

func parseRSS(s string) (rss, anon int64, err error) {
	found := 0
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "RssAnon") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("bench1m: status: %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bench1m: status: %w", err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			anon = n << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("bench1m: status: no VmRSS or RssAnon")
	}
	return rss, anon, nil
}

// cpuTimes is the first line of /proc/stat, in clock ticks.
type cpuTimes struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ, Steal int64
}

func (c cpuTimes) busy() int64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
}

func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCPUTimes(string(b))
}

func parseCPUTimes(s string) (cpuTimes, error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("bench1m: /proc/stat: %q", line)
	}
	var v [8]int64
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("bench1m: /proc/stat: %w", err)
		}
		v[i] = n
	}
	return cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
}

// sockstat is the TCP line of /proc/net/sockstat (this network namespace).
type sockstat struct {
	InUse, Orphan, TimeWait, Alloc, MemPages int64
}

func readSockstat() (sockstat, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return sockstat{}, err
	}
	return parseSockstat(string(b))
}

func parseSockstat(s string) (sockstat, error) {
	var st sockstat
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return st, fmt.Errorf("bench1m: sockstat: %q: %w", line, err)
			}
			switch f[i] {
			case "inuse":
				st.InUse = n
			case "orphan":
				st.Orphan = n
			case "tw":
				st.TimeWait = n
			case "alloc":
				st.Alloc = n
			case "mem":
				st.MemPages = n
			}
		}
		return st, nil
	}
	return st, fmt.Errorf("bench1m: sockstat: no TCP line")
}

// plan is what the options mean per process.
type plan struct {
	perHubMean      float64
	perHubHigh      float64 // mean + 4 standard deviations of a uniform hash
	perWorker       int     // largest worker share
	perSource       int     // connections per source address, at most
	handshakesEach  int
	filesPerHub     int
	filesPerWorker  int
	memBudget       int64 // bytes the run is planned to use at the peak
	sources         int
	firstSrc, lastS string
}

func makePlan(o options) plan {
	p := plan{
		perHubMean:     float64(o.conns) / float64(o.hubs),
		perWorker:      ceilDiv(o.conns, o.workers),
		handshakesEach: max(o.handshakes/o.workers, 1),
		sources:        o.workers * o.srcPer,
	}
	p.perHubHigh = p.perHubMean + 4*math.Sqrt(p.perHubMean)
	p.perSource = ceilDiv(p.perWorker, o.srcPer)
	p.filesPerHub = o.hubMax + procFiles
	p.filesPerWorker = p.perWorker + p.handshakesEach + procFiles
	p.memBudget = int64(o.conns)*(planKernelPerConn+planHeraldPerConn+planClientPerConn) +
		int64(o.hubs+o.workers)*planPerProcess
	if srcs, err := sourceAddrs(o.srcBase, p.sources); err == nil {
		p.firstSrc, p.lastS = srcs[0].String(), srcs[len(srcs)-1].String()
	}
	return p
}

// checkOS compares the machine's limits with what the plan needs.
func checkOS(o options) []check {
	p := makePlan(o)
	var cs []check
	add := func(c check) { cs = append(cs, c) }
	errCheck := func(name string, err error) {
		add(check{name: name, value: "unreadable: " + err.Error(), need: "readable", fatal: true})
	}

	// Per-process files: the limit this run lives with.
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		errCheck("RLIMIT_NOFILE", err)
	} else {
		need := max(p.filesPerHub, p.filesPerWorker)
		add(check{
			name: "RLIMIT_NOFILE (hard)", value: fmt.Sprintf("%d", rl.Max),
			need: fmt.Sprintf(">= %s per process (hub %s, worker %s)", thousands(int64(need)), thousands(int64(p.filesPerHub)), thousands(int64(p.filesPerWorker))),
			ok:   rl.Max >= uint64(need), fatal: true,
			fix: "more processes: raise --hubs / --workers, or lower --hub-max-connections",
		})
	}

	// Ephemeral ports per source address towards the one destination.
	if v, err := readSysctl("net.ipv4.ip_local_port_range"); err != nil || len(v) != 2 {
		errCheck("net.ipv4.ip_local_port_range", fmt.Errorf("%v %v", v, err))
	} else {
		ports := v[1] - v[0] + 1
		add(check{
			name: "net.ipv4.ip_local_port_range", value: fmt.Sprintf("%d-%d (%s ports)", v[0], v[1], thousands(ports)),
			need: fmt.Sprintf(">= %s ports (%s connections per source address, 10%% spare)", thousands(int64(p.perSource)*10/9), thousands(int64(p.perSource))),
			ok:   int64(p.perSource) <= ports*9/10, fatal: true,
			fix: "raise --srcs-per-worker, or sysctl -w net.ipv4.ip_local_port_range='1024 65000'",
		})
	}

	// Accept queues: each hub sees about handshakes/hubs connections waiting.
	if v, err := readSysctl("net.core.somaxconn"); err != nil {
		errCheck("net.core.somaxconn", err)
	} else {
		need := max(int64(128), int64(4*ceilDiv(o.handshakes, o.hubs)))
		add(check{
			name: "net.core.somaxconn", value: fmt.Sprint(v[0]),
			need: fmt.Sprintf(">= %d (4x the handshakes in flight per hub)", need),
			ok:   v[0] >= need,
			fix:  "sysctl -w net.core.somaxconn=4096 (too low only slows the ramp: SYNs are retried after 1 s)",
		})
	}

	// Files system-wide: both ends of every connection.
	fileMax, err1 := readSysctl("fs.file-max")
	fileNr, err2 := readSysctl("fs.file-nr")
	if err1 != nil || err2 != nil {
		errCheck("fs.file-max", fmt.Errorf("%v %v", err1, err2))
	} else {
		need := (fileNr[0] + 2*int64(o.conns) + int64(o.hubs+o.workers)*procFiles) * 21 / 20
		add(check{
			name: "fs.file-max", value: fmt.Sprintf("%s (%s in use)", thousands(fileMax[0]), thousands(fileNr[0])),
			need: fmt.Sprintf(">= %s (in use + 2 per connection, 5%% spare)", thousands(need)),
			ok:   fileMax[0] >= need, fatal: true,
			fix: fmt.Sprintf("sysctl -w fs.file-max=%d", need*2),
		})
	}
	if v, err := readSysctl("fs.nr_open"); err != nil {
		errCheck("fs.nr_open", err)
	} else {
		need := int64(max(p.filesPerHub, p.filesPerWorker))
		add(check{
			name: "fs.nr_open", value: thousands(v[0]), need: fmt.Sprintf(">= %s", thousands(need)),
			ok: v[0] >= need, fatal: true, fix: fmt.Sprintf("sysctl -w fs.nr_open=%d", need*2),
		})
	}

	// TCP buffer memory. Since Linux 5.19 an idle socket keeps no forward-allocated
	// memory, so a held connection with nothing queued costs nothing here; what the
	// limit has to cover is the handshakes in flight and any burst of queued bytes.
	if v, err := readSysctl("net.ipv4.tcp_mem"); err != nil || len(v) != 3 {
		errCheck("net.ipv4.tcp_mem", fmt.Errorf("%v %v", v, err))
	} else {
		page := int64(os.Getpagesize())
		need := int64(64 << 20)
		add(check{
			name:  "net.ipv4.tcp_mem",
			value: fmt.Sprintf("%d %d %d pages (pressure at %s, max %s)", v[0], v[1], v[2], gib(v[1]*page), gib(v[2]*page)),
			need:  fmt.Sprintf("pressure >= %s (idle sockets hold no buffers; /proc/net/sockstat 'mem' is watched)", gib(need)),
			ok:    v[1]*page >= need,
			fix:   "sysctl -w net.ipv4.tcp_mem='786432 1048576 1572864'",
		})
	}

	if v, err := readSysctl("vm.max_map_count"); err != nil {
		errCheck("vm.max_map_count", err)
	} else {
		add(check{
			name: "vm.max_map_count", value: thousands(v[0]),
			need: ">= 16,384 per process (a Go process of this size maps a few hundred areas)",
			ok:   v[0] >= 16384, fix: "sysctl -w vm.max_map_count=65530",
		})
	}

	// Connection tracking, if something made the kernel track loopback flows: every
	// connection would then need an entry, and a full table drops new SYNs.
	if v, err := readSysctl("net.netfilter.nf_conntrack_max"); err == nil {
		cnt, _ := readSysctl("net.netfilter.nf_conntrack_count")
		c := check{name: "net.netfilter.nf_conntrack_max", value: thousands(v[0]), ok: true,
			fix: fmt.Sprintf("sysctl -w net.netfilter.nf_conntrack_max=%d, or stop tracking lo (iptables -t raw -A PREROUTING -i lo -j NOTRACK; -A OUTPUT -o lo -j NOTRACK)", 2*o.conns)}
		if len(cnt) == 1 && cnt[0] > 0 {
			need := (cnt[0] + int64(o.conns)) * 21 / 20
			c.value += fmt.Sprintf(" (tracking: %s entries)", thousands(cnt[0]))
			c.need = fmt.Sprintf(">= %s (one entry per connection)", thousands(need))
			c.ok, c.fatal = v[0] >= need, true
		} else {
			c.value += " (0 entries: not tracking)"
			c.need = "only if connections are tracked"
		}
		add(c)
	}

	// Memory: the planned peak plus the floor the ramp keeps free.
	if m, err := readMeminfo(); err != nil {
		errCheck("MemAvailable", err)
	} else {
		need := p.memBudget + o.memFloor
		add(check{
			name:  "MemAvailable",
			value: fmt.Sprintf("%s of %s", gib(m.Available), gib(m.Total)),
			need: fmt.Sprintf(">= %s (planned %s: per connection %d B kernel + %d B herald + %d B client, %s per process; floor %s)",
				gib(need), gib(p.memBudget), planKernelPerConn, planHeraldPerConn, planClientPerConn, mib(planPerProcess), gib(o.memFloor)),
			ok: m.Available >= need, fatal: true,
			fix: "lower --conns; the ramp also stops by itself at the floor",
		})
	}

	// The plan itself.
	add(check{
		name: "hub capacity", value: fmt.Sprintf("%d hubs x %s", o.hubs, thousands(int64(o.hubMax))),
		need: fmt.Sprintf(">= %s connections + 2%%", thousands(int64(o.conns))),
		ok:   int64(o.hubs)*int64(o.hubMax) >= int64(o.conns)*102/100, fatal: true,
		fix: "raise --hubs",
	})
	add(check{
		name: "reuseport spread", value: fmt.Sprintf("%s per hub on average, %s at +4 sd", thousands(int64(p.perHubMean)), thousands(int64(p.perHubHigh))),
		need: fmt.Sprintf("+4 sd <= --hub-max-connections %s (else expect 4100 refusals, dialed again)", thousands(int64(o.hubMax))),
		ok:   p.perHubHigh <= float64(o.hubMax),
		fix:  "raise --hubs",
	})
	return cs
}

func failedChecks(cs []check) string {
	var bad []string
	for _, c := range cs {
		if !c.ok && c.fatal {
			bad = append(bad, c.name)
		}
	}
	return strings.Join(bad, ", ")
}

func printChecks(w io.Writer, o options, cs []check) {
	p := makePlan(o)
	fmt.Fprintf(w, "bench1m plan: %s connections; %d hubs (herald --reuseport on %s, --max-connections %s, %s each on average), redis %s; "+
		"one loadgen run with %d workers (%s each at most, %d source address(es) each: %s-%s), --ramp %g/s, %d handshakes in flight (%d per worker), "+
		"--duration %v; %d channel(s), %s; hold %v, then broadcasts %s and one a minute for %v (--publish-schedule %s)\n",
		thousands(int64(o.conns)), o.hubs, portOrFree(o), thousands(int64(o.hubMax)), thousands(int64(p.perHubMean)), o.redis,
		o.workers, thousands(int64(p.perWorker)), o.srcPer, p.firstSrc, p.lastS, o.lgRamp, o.handshakes, p.handshakesEach,
		o.lgDuration, o.channels, o.spread, o.hold, o.broadcasts, o.broadcastHold, o.schedule())
	fmt.Fprintln(w, "OS checks:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range cs {
		st := "ok"
		switch {
		case !c.ok && c.fatal:
			st = "FAIL"
		case !c.ok:
			st = "warn"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tneed %s\n", st, c.name, c.value, c.need)
	}
	tw.Flush()
	for _, c := range cs {
		if !c.ok {
			fmt.Fprintf(w, "  fix %s: %s\n", c.name, c.fix)
		}
	}
}

func portOrFree(o options) string {
	if o.port == 0 {
		return o.host.String() + ":<free port>"
	}
	return fmt.Sprintf("%s:%d", o.host, o.port)
}

func gib(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

// size is b in MiB below 1 GiB, else in GiB.
func size(b int64) string {
	if b > -(1<<30) && b < 1<<30 {
		return mib(b)
	}
	return gib(b)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func thousands(n int64) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
