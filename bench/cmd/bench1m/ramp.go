package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	settlePoll = 200 * time.Millisecond // counts polled while a step settles
	memPoll    = 250 * time.Millisecond // MemAvailable polled during the ramp
	callLimit  = 20 * time.Second       // a quick worker or admin call
)

type runner struct {
	o       options
	dir     string
	out     io.Writer // progress and the report
	log     io.Writer // what goes wrong
	started time.Time
	fleet   fleet
}

// sample is the machine's and the processes' memory at one moment.
type sample struct {
	at         time.Time
	mem        meminfo
	sock       sockstat
	heraldRSS  int64 // VmRSS, sum over hubs
	clientRSS  int64 // VmRSS, sum over workers
	heraldAnon int64 // RssAnon (private memory; VmRSS also counts the shared binary)
	clientAnon int64
	hubRSSMin  int64
	hubRSSMax  int64
	heraldCPU  time.Duration // user + system, sum over hubs (exited ones no longer count)
	clientCPU  time.Duration
	redisRSS   int64 // VmRSS, sum over the redis-servers
	redisCPU   time.Duration
	cpu        cpuTimes // the whole machine
}

func (r *runner) sample() (sample, error) {
	s := sample{at: time.Now(), hubRSSMin: -1}
	var err error
	if s.mem, err = readMeminfo(); err != nil {
		return s, err
	}
	if s.sock, err = readSockstat(); err != nil {
		return s, err
	}
	if s.cpu, err = readCPUTimes(); err != nil {
		return s, err
	}
	workers := r.fleet.workerPids()
	for _, h := range r.fleet.hubs {
		if h.exited() { // reported by hubConns
			continue
		}
		rss, anon, err := readRSS(h.pid())
		if err != nil {
			return s, err
		}
		s.heraldRSS += rss
		s.heraldAnon += anon
		if d, err := readCPU(h.pid()); err == nil {
			s.heraldCPU += d
		}
		if s.hubRSSMin < 0 || rss < s.hubRSSMin {
			s.hubRSSMin = rss
		}
		s.hubRSSMax = max(s.hubRSSMax, rss)
	}
	for _, pid := range workers {
		rss, anon, err := readRSS(pid)
		if err != nil { // a loadgen worker that has just exited
			continue
		}
		s.clientRSS += rss
		s.clientAnon += anon
		if d, err := readCPU(pid); err == nil {
			s.clientCPU += d
		}
	}
	for _, pid := range r.fleet.redis.pids() {
		if rss, _, err := readRSS(pid); err == nil {
			s.redisRSS += rss
		}
		if d, err := readCPU(pid); err == nil {
			s.redisCPU += d
		}
	}
	return s, nil
}

// cpuShare says where the machine's CPU went between a and b, in percent of all
// cores: hubs, workers, everything else (the kernel's softirq work for loopback
// is charged to whichever process was running), and the kernel's share of the total.
type cpuShare struct {
	Herald float64 `json:"herald_pct"`
	Client float64 `json:"client_pct"`
	Redis  float64 `json:"redis_pct"`
	Other  float64 `json:"other_pct"`
	Idle   float64 `json:"idle_pct"`
	Sys    float64 `json:"sys_pct"` // system + irq + softirq, of all cores
}

func cpuBetween(a, b sample) cpuShare {
	total := (b.cpu.busy() + b.cpu.Idle + b.cpu.IOWait) - (a.cpu.busy() + a.cpu.Idle + a.cpu.IOWait)
	if total <= 0 {
		return cpuShare{}
	}
	tick := time.Second / clockTicks
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(time.Duration(total)*tick) }
	ticks := func(n int64) float64 { return 100 * float64(n) / float64(total) }
	c := cpuShare{
		Herald: pct(b.heraldCPU - a.heraldCPU),
		Client: pct(b.clientCPU - a.clientCPU),
		Redis:  pct(b.redisCPU - a.redisCPU),
		Idle:   ticks((b.cpu.Idle + b.cpu.IOWait) - (a.cpu.Idle + a.cpu.IOWait)),
		Sys:    ticks((b.cpu.System + b.cpu.IRQ + b.cpu.SoftIRQ) - (a.cpu.System + a.cpu.IRQ + a.cpu.SoftIRQ)),
	}
	c.Other = max(100-c.Idle-c.Herald-c.Client-c.Redis, 0)
	return c
}

func (c cpuShare) String() string {
	return fmt.Sprintf("CPU herald %.0f%%, loadgen %.0f%%, redis %.1f%%, other %.0f%%, idle %.0f%% (kernel %.0f%%)", c.Herald, c.Client, c.Redis, c.Other, c.Idle, c.Sys)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// readCPU returns a process's user + system CPU time from /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; utime and stime (fields 14 and
	// 15) count from after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("bench1m: short /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench1m: short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench1m: /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// hubSpread is the hubs' /stats connections: sum, least, most.
type hubSpread struct {
	Sum    int64   `json:"sum"`
	Min    int64   `json:"min"`
	Max    int64   `json:"max"`
	PerHub []int64 `json:"-"`
}

func (r *runner) hubConns(ctx context.Context) (hubSpread, error) {
	per := make([]int64, len(r.fleet.hubs))
	err := forEach(len(r.fleet.hubs), 16, func(i int) error {
		h := r.fleet.hubs[i]
		if h.exited() {
			return fmt.Errorf("hub %d (pid %d) exited: %v (log %s)", i, h.pid(), h.Err(), h.Log)
		}
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		defer cancel()
		st, err := h.stats(cctx)
		per[i] = st.Node.Connections
		return err
	})
	sp := hubSpread{Min: -1, PerHub: per}
	for _, n := range per {
		sp.Sum += n
		if sp.Min < 0 || n < sp.Min {
			sp.Min = n
		}
		sp.Max = max(sp.Max, n)
	}
	return sp, err
}

// memWatch cancels the ramp if MemAvailable falls under the floor.
type memWatch struct {
	mu     sync.Mutex
	reason string
	stop   chan struct{}
	done   chan struct{}
}

func watchMem(floor int64, cancel context.CancelFunc) *memWatch {
	w := &memWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() { // stopped and waited for by close
		defer close(w.done)
		t := time.NewTicker(memPoll)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				m, err := readMeminfo()
				if err != nil || m.Available >= floor {
					continue
				}
				w.mu.Lock()
				w.reason = fmt.Sprintf("MemAvailable %s fell under the %s floor", gib(m.Available), gib(floor))
				w.mu.Unlock()
				cancel()
				return
			}
		}
	}()
	return w
}

func (w *memWatch) close() string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}

// stepRecord is one ramp step as printed and reported.
type stepRecord struct {
	Step       int      `json:"step"`
	Dialed     int64    `json:"dialed"`
	Opened     int64    `json:"opened"`
	Failed     int64    `json:"failed"`
	Seconds    float64  `json:"seconds"`
	Held       int64    `json:"held"`
	HubConns   int64    `json:"hub_connections"`
	HeraldRSS  int64    `json:"herald_rss"`
	ClientRSS  int64    `json:"client_rss"`
	MemAvail   int64    `json:"mem_available"`
	TCPMemPage int64    `json:"tcp_mem_pages"`
	CPU        cpuShare `json:"cpu"`
}

// hubHeap is the sum of the hubs' Go heap in use after a GC, 0 if unknown.
func (r *runner) hubHeap(ctx context.Context) int64 {
	per := make([]int64, len(r.fleet.hubs))
	err := forEach(len(r.fleet.hubs), 8, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		defer cancel()
		var err error
		per[i], err = r.fleet.hubs[i].heapInuse(cctx)
		return err
	})
	if err != nil {
		fmt.Fprintln(r.log, "bench1m: no hub heap figure:", err)
		return 0
	}
	var sum int64
	for _, n := range per {
		sum += n
	}
	return sum
}

func (r *runner) hubLogs() []string {
	var out []string
	for _, h := range r.fleet.hubs {
		out = append(out, h.Log)
	}
	return out
}

// countInFiles counts the lines of the files that contain s.
func countInFiles(paths []string, s string) int {
	n := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, s) {
				n++
			}
		}
	}
	return n
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// peakMemory reads the peak sample and fills the per-connection memory figures of
// res against base (both client modes use it).
func (r *runner) peakMemory(res *result, base sample, slab0 map[string]int64) {
	peak, err := r.sample()
	if err != nil {
		return
	}
	res.Peak = peak.figures()
	held := float64(max(res.Reached, 1))
	res.HeraldRSSPerConn = float64(peak.heraldRSS-base.heraldRSS) / held
	res.ClientRSSPerConn = float64(peak.clientRSS-base.clientRSS) / held
	res.HeraldAnonPerConn = float64(peak.heraldAnon-base.heraldAnon) / held
	res.ClientAnonPerConn = float64(peak.clientAnon-base.clientAnon) / held
	// Private memory only: the binaries' pages are shared by every process and
	// counted in each one's VmRSS.
	rssGrowth := (peak.heraldAnon + peak.clientAnon) - (base.heraldAnon + base.clientAnon)
	res.KernelBytes = (base.mem.Available - peak.mem.Available) - rssGrowth
	res.KernelPerConn = float64(res.KernelBytes) / held
	res.KernelFreeBytes = (base.mem.Free - peak.mem.Free) - rssGrowth
	res.SlabGrowth = peak.mem.Slab - base.mem.Slab
	if slab0 != nil {
		res.SlabTop = topSlabs(slab0, readSlabinfo(), 8)
	}
}
