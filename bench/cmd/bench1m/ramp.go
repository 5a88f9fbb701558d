package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-rt/herald/bench/worker"
)

// refusedReason is how a worker counts a connection a full hub refused (herald
// sends pusher:error 4100, counted as pusher_error_4100 too, then closes with 4100).
const refusedReason = "close_4100"

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
		if d, err := worker.ReadCPU(h.pid()); err == nil {
			s.heraldCPU += d
		}
		if s.hubRSSMin < 0 || rss < s.hubRSSMin {
			s.hubRSSMin = rss
		}
		s.hubRSSMax = max(s.hubRSSMax, rss)
	}
	for _, pid := range workers {
		rss, anon, err := readRSS(pid)
		if err != nil {
			if r.fleet.lg != nil { // a loadgen worker that has just exited
				continue
			}
			return s, err
		}
		s.clientRSS += rss
		s.clientAnon += anon
		if d, err := worker.ReadCPU(pid); err == nil {
			s.clientCPU += d
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
		Idle:   ticks((b.cpu.Idle + b.cpu.IOWait) - (a.cpu.Idle + a.cpu.IOWait)),
		Sys:    ticks((b.cpu.System + b.cpu.IRQ + b.cpu.SoftIRQ) - (a.cpu.System + a.cpu.IRQ + a.cpu.SoftIRQ)),
	}
	c.Other = max(100-c.Idle-c.Herald-c.Client, 0)
	return c
}

func (c cpuShare) String() string {
	return fmt.Sprintf("CPU herald %.0f%%, clients %.0f%%, other %.0f%%, idle %.0f%% (kernel %.0f%%)", c.Herald, c.Client, c.Other, c.Idle, c.Sys)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// readCounts asks every worker for its counts (the cheap "delivered" call) and
// returns their sum. A worker that does not answer is an error: it has died.
func (r *runner) readCounts(ctx context.Context) (counts, error) {
	err := forEach(len(r.fleet.clients), len(r.fleet.clients)+1, func(i int) error {
		c := r.fleet.clients[i]
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		defer cancel()
		resp, err := c.w.Call(cctx, worker.Request{Op: "delivered"})
		if err != nil {
			return fmt.Errorf("worker %d (pid %d, log %s): %w", i, c.w.Pid(), c.log, err)
		}
		c.last = counts(resp.Counts)
		return nil
	})
	var t counts
	for _, c := range r.fleet.clients {
		t.Dialed += c.last.Dialed
		t.Established += c.last.Established
		t.Subscribed += c.last.Subscribed
		t.Failed += c.last.Failed
		t.Closed += c.last.Closed
	}
	return t, err
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

// reasons merges the workers' failure and close reasons.
func (r *runner) reasons(ctx context.Context) (map[string]int64, error) {
	var mu sync.Mutex
	all := map[string]int64{}
	err := forEach(len(r.fleet.clients), len(r.fleet.clients)+1, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		defer cancel()
		resp, err := r.fleet.clients[i].w.Call(cctx, worker.Request{Op: "stats"})
		if err != nil {
			return err
		}
		if resp.Stats == nil {
			return fmt.Errorf("worker %d sent no stats", i)
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range resp.Stats.Reasons {
			all[k] += v
		}
		return nil
	})
	return all, err
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

// distribute splits n over workers in proportion to nothing but their room:
// evenly, each capped at its deficit.
func distribute(n int64, deficit []int64) []int64 {
	out := make([]int64, len(deficit))
	for n > 0 {
		var k int64
		for i, d := range deficit {
			if d-out[i] > 0 {
				k++
			}
		}
		if k == 0 {
			break
		}
		each := max(n/k, 1)
		for i, d := range deficit {
			if n == 0 {
				break
			}
			if room := d - out[i]; room > 0 {
				a := min(each, room, n)
				out[i] += a
				n -= a
			}
		}
	}
	return out
}

// ramp opens connections step by step until the target is held or something stops
// it; it fills res's ramp figures and returns the counts at the end.
func (r *runner) ramp(ctx context.Context, res *result) counts {
	o := r.o
	target := int64(o.conns)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mw := watchMem(o.memFloor, cancel)
	stopped := func(why string) {
		if res.Stopped == "" {
			res.Stopped = why
		}
	}
	defer func() {
		if why := mw.close(); why != "" { // the cause; what it interrupted is noise
			res.Stopped = why
			res.MemAbort = true
		}
	}()

	start := time.Now()
	cur, err := r.readCounts(rctx)
	if err != nil {
		stopped(err.Error())
		return cur
	}
	prev, err := r.sample()
	if err != nil {
		stopped(err.Error())
		return cur
	}
	first := prev
	defer func() { res.RampCPU = cpuBetween(first, prev) }()
	prevReasons := map[string]int64{}
	var perConnMem float64 // MemAvailable drop per connection in the last step
	for step := 1; ; step++ {
		if cur.open() >= target {
			res.Stopped = ""
			break
		}
		if cur.Dialed > target*11/10+int64(o.step) {
			stopped(fmt.Sprintf("dialed %s for %s held: too many refused", thousands(cur.Dialed), thousands(cur.open())))
			break
		}
		n := min(int64(o.step), target-cur.open())
		if perConnMem > 0 {
			if need := int64(perConnMem * float64(n) * 1.2); prev.mem.Available-need < o.memFloor {
				stopped(fmt.Sprintf("the next step (about %s) would take MemAvailable (%s) under the %s floor",
					gib(need), gib(prev.mem.Available), gib(o.memFloor)))
				break
			}
		}
		deficit := make([]int64, len(r.fleet.clients))
		for i, c := range r.fleet.clients {
			deficit[i] = c.share - c.last.open() - c.last.inFlight()
		}
		alloc := distribute(n, deficit)
		before := cur
		t0 := time.Now()
		// Each worker answers its dial when all are subscribed, or at its first
		// failure (the rest go on), or at the timeout; the counts say what happened.
		_ = forEach(len(r.fleet.clients), len(r.fleet.clients)+1, func(i int) error {
			if alloc[i] == 0 {
				return nil
			}
			c := r.fleet.clients[i]
			c.asked += alloc[i]
			cctx, cancel := context.WithTimeout(rctx, o.stepTimeout+10*time.Second)
			defer cancel()
			_, err := c.w.Call(cctx, worker.Request{Op: "dial", N: int(alloc[i]), TimeoutMS: o.stepTimeout.Milliseconds()})
			return err
		})
		settled := false
		for rctx.Err() == nil {
			cur, err = r.readCounts(rctx)
			if err != nil {
				break
			}
			settled = true
			for _, c := range r.fleet.clients {
				if c.last.Dialed < c.asked || c.last.inFlight() > 0 || (o.channel != "" && c.last.Subscribed < c.last.Established-c.last.Closed) {
					settled = false
					break
				}
			}
			if settled || time.Since(t0) > o.stepTimeout {
				break
			}
			_ = sleep(rctx, settlePoll)
		}
		took := time.Since(t0)
		if err != nil {
			stopped(fmt.Sprintf("step %d: %v", step, err))
			break
		}
		if rctx.Err() != nil {
			stopped(fmt.Sprintf("step %d: %v", step, context.Cause(rctx)))
			break
		}
		s, serr := r.sample()
		sp, herr := r.hubConns(rctx)
		rec := stepRecord{
			Step: step, Dialed: cur.Dialed - before.Dialed, Opened: cur.open() - before.open(),
			Failed: cur.Failed - before.Failed, Seconds: took.Seconds(), Held: cur.open(), HubConns: sp.Sum,
			HeraldRSS: s.heraldRSS, ClientRSS: s.clientRSS, MemAvail: s.mem.Available, TCPMemPage: s.sock.MemPages,
			CPU: cpuBetween(prev, s),
		}
		res.Steps = append(res.Steps, rec)
		fmt.Fprintf(r.out, "step %2d  +%s in %.1f s = %s/s (failed %s)  held %s, hubs' /stats %s  RSS herald %s, clients %s  MemAvailable %s  TCP mem %d pages\n"+
			"         %v\n",
			step, thousands(rec.Opened), took.Seconds(), thousands(int64(float64(rec.Opened)/took.Seconds())), thousands(rec.Failed),
			thousands(rec.Held), thousands(sp.Sum), size(s.heraldRSS), size(s.clientRSS), gib(s.mem.Available), s.sock.MemPages, rec.CPU)
		// Refusals by a full hub are dialed again (the kernel hashes the next try
		// afresh); any other failure counts against --max-fail.
		hardFailed := rec.Failed
		if rec.Failed > 0 {
			if now, err := r.reasons(rctx); err == nil {
				d := diffReasons(now, prevReasons)
				fmt.Fprintf(r.out, "         failures this step: %s\n", reasonsString(d))
				prevReasons = now
				hardFailed -= min(d[refusedReason], hardFailed)
			}
		}
		if serr != nil || herr != nil {
			stopped(fmt.Sprintf("step %d: %v", step, errors.Join(serr, herr)))
			break
		}
		if rec.Opened > 0 && prev.mem.Available > s.mem.Available {
			perConnMem = float64(prev.mem.Available-s.mem.Available) / float64(rec.Opened)
		}
		prev = s
		switch {
		case !settled:
			stopped(fmt.Sprintf("step %d: not settled within %v (%s still in their handshake)", step, o.stepTimeout, thousands(cur.inFlight())))
		case float64(hardFailed) > o.maxFail*float64(rec.Dialed):
			stopped(fmt.Sprintf("step %d: %s of %s dials failed, not counting hubs' 4100 refusals (more than --max-fail %g)",
				step, thousands(hardFailed), thousands(rec.Dialed), o.maxFail))
		case rec.Opened <= 0:
			stopped(fmt.Sprintf("step %d: no progress", step))
		default:
			continue
		}
		break
	}
	res.RampSeconds = time.Since(start).Seconds()
	return cur
}

// hold keeps the peak for o.hold, checking the hubs' counts every o.holdEvery.
func (r *runner) hold(ctx context.Context, res *result, peak int64) {
	o := r.o
	start := time.Now()
	before, err := r.readCounts(ctx)
	if err != nil {
		res.HoldNote = err.Error()
		return
	}
	res.HoldMinHubs = -1
	first, err := r.sample()
	if err != nil {
		res.HoldNote = err.Error()
		return
	}
	for time.Since(start) < o.hold && ctx.Err() == nil {
		if err := sleep(ctx, min(o.holdEvery, o.hold-time.Since(start))); err != nil {
			break
		}
		cur, err := r.readCounts(ctx)
		if err != nil {
			res.HoldNote = err.Error()
			return
		}
		sp, err := r.hubConns(ctx)
		if err != nil {
			res.HoldNote = err.Error()
			return
		}
		s, err := r.sample()
		if err != nil {
			res.HoldNote = err.Error()
			return
		}
		if res.HoldMinHubs < 0 || sp.Sum < res.HoldMinHubs {
			res.HoldMinHubs = sp.Sum
		}
		res.HoldMinHeld = min(res.HoldMinHeld, cur.open())
		res.HoldClosed = cur.Closed - before.Closed
		res.HoldSeconds = time.Since(start).Seconds()
		res.HoldCPU = cpuBetween(first, s)
		fmt.Fprintf(r.out, "hold %4.0f s  held %s, hubs' /stats %s (min %s, max %s per hub), closed since the peak %s  RSS herald %s, clients %s  MemAvailable %s\n",
			res.HoldSeconds, thousands(cur.open()), thousands(sp.Sum), thousands(sp.Min), thousands(sp.Max), thousands(res.HoldClosed),
			size(s.heraldRSS), size(s.clientRSS), gib(s.mem.Available))
		if s.mem.Available < o.memFloor {
			res.HoldNote = fmt.Sprintf("hold cut short: MemAvailable %s under the %s floor", gib(s.mem.Available), gib(o.memFloor))
			res.MemAbort = true
			return
		}
	}
	if ctx.Err() != nil {
		res.HoldNote = "interrupted: " + context.Cause(ctx).Error()
	} else if res.HoldMinHubs >= 0 && (res.HoldMinHubs < peak || res.HoldClosed > 0) {
		res.HoldNote = fmt.Sprintf("connections lost during the hold: hubs' minimum %s of %s, %s closed", thousands(res.HoldMinHubs), thousands(peak), thousands(res.HoldClosed))
	}
}

// run is the whole measurement; it always stops every process before it returns.
func (r *runner) run(ctx context.Context) *result {
	o := r.o
	r.started = time.Now()
	res := &result{Target: int64(o.conns), Options: o.summary()}
	res.Machine = machine()
	m0, err := readMeminfo()
	if err != nil {
		res.Stopped = err.Error()
		return res
	}
	res.MemAvailStart = m0.Available

	port := o.port
	if port == 0 {
		if port, err = freePort(o.host.String()); err != nil {
			res.Stopped = err.Error()
			return res
		}
	}
	addr := net.JoinHostPort(o.host.String(), strconv.Itoa(port))
	res.Addr = addr
	shutdownHandshake := false
	defer func() {
		fmt.Fprintf(r.log, "bench1m: stopping %d workers and %d hubs\n", len(r.fleet.clients), len(r.fleet.hubs))
		t0 := time.Now()
		closed, cut := r.stopAll(ctx, shutdownHandshake)
		res.CloseSeconds, res.CloseCut = closed.Seconds(), cut
		res.StopSeconds = time.Since(t0).Seconds()
		res.HubAcceptPauses = countInFiles(r.hubLogs(), "accept failed")
		res.HubErrorLines = countInFiles(r.hubLogs(), "level=ERROR")
		time.Sleep(time.Second) // sockets are freed shortly after their processes
		if m, err := readMeminfo(); err == nil {
			res.MemAvailEnd = m.Available
		}
	}()

	fmt.Fprintf(r.log, "bench1m: starting %d hubs on %s\n", o.hubs, addr)
	if err := r.startHubs(ctx, addr); err != nil {
		res.Stopped = "starting hubs: " + err.Error()
		return res
	}
	fmt.Fprintf(r.log, "bench1m: starting %d workers\n", o.workers)
	if err := r.startClients(ctx, addr); err != nil {
		res.Stopped = "starting workers: " + err.Error()
		return res
	}
	if err := sleep(ctx, time.Second); err != nil { // let start-up allocations settle
		res.Stopped = err.Error()
		return res
	}
	base, err := r.sample()
	if err != nil {
		res.Stopped = err.Error()
		return res
	}
	res.Base = base.figures()
	slab0 := readSlabinfo()
	hubHeap0 := r.hubHeap(ctx)
	cliMem0 := r.clientMem(ctx)
	fmt.Fprintf(r.out, "ready: %d hubs (RSS %s), %d workers (RSS %s), MemAvailable %s; ramping\n",
		len(r.fleet.hubs), size(base.heraldRSS), len(r.fleet.clients), size(base.clientRSS), gib(base.mem.Available))

	shutdownHandshake = true
	end := r.ramp(ctx, res)
	if c, err := r.readCounts(ctx); err == nil { // the ramp's last read may be older
		end = c
	}
	res.Reached = end.open()
	if res.RampSeconds > 0 {
		res.ConnsPerSec = float64(res.Reached) / res.RampSeconds
	}
	if !res.MemAbort && res.Reached > 0 && ctx.Err() == nil {
		res.HoldMinHeld = res.Reached
		fmt.Fprintf(r.out, "holding %s connections for %v\n", thousands(res.Reached), o.hold)
		r.hold(ctx, res, res.Reached)
	}
	if ctx.Err() != nil && res.Stopped == "" {
		res.Stopped = "interrupted: " + context.Cause(ctx).Error()
	}

	// The peak's figures, after the hold.
	if ctx.Err() == nil {
		r.peakMemory(res, base, slab0)
		if h1 := r.hubHeap(ctx); hubHeap0 > 0 && h1 > 0 {
			res.HeraldHeapPerConn = float64(h1-hubHeap0) / float64(max(res.Reached, 1))
		}
		if c1 := r.clientMem(ctx); cliMem0 > 0 && c1 > 0 {
			res.ClientHeapPerConn = float64(c1-cliMem0) / float64(max(res.Reached, 1))
		}
		if sp, err := r.hubConns(ctx); err == nil {
			res.Spread = sp
		}
		if rs, err := r.reasons(ctx); err == nil {
			res.Reasons = rs
		}
	}
	return res
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

// clientMem is the sum of the workers' Go heap in use after a GC, 0 if unknown.
func (r *runner) clientMem(ctx context.Context) int64 {
	per := make([]int64, len(r.fleet.clients))
	err := forEach(len(r.fleet.clients), 8, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, callLimit)
		defer cancel()
		resp, err := r.fleet.clients[i].w.Call(cctx, worker.Request{Op: "mem"})
		if err == nil && resp.Mem != nil {
			per[i] = resp.Mem.HeapInuse
		}
		return err
	})
	if err != nil {
		fmt.Fprintln(r.log, "bench1m: no client heap figure:", err)
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

func diffReasons(now, before map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range now {
		if v -= before[k]; v != 0 {
			d[k] = v
		}
	}
	return d
}

// reasonsString lists reasons by count, largest first, with what the known ones mean.
func reasonsString(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		p := k + "=" + thousands(m[k])
		if e := explain(k); e != "" {
			p += " (" + e + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

// explain says what a loadgen reason means at this scale.
func explain(reason string) string {
	switch {
	case strings.HasSuffix(reason, "EADDRNOTAVAIL"):
		return "ephemeral ports of a source address ran out"
	case strings.HasSuffix(reason, "EMFILE"):
		return "a worker reached its open-files limit"
	case strings.HasSuffix(reason, "ENFILE"):
		return "fs.file-max reached"
	case strings.HasSuffix(reason, "ENOBUFS"), strings.HasSuffix(reason, "ENOMEM"):
		return "kernel memory"
	case reason == refusedReason:
		return "refused by a hub over --max-connections: dialed again"
	case reason == "pusher_error_4100":
		return "the pusher:error sent before close_4100"
	case reason == "handshake_timeout":
		return "no connection_established within 10 s"
	case strings.HasSuffix(reason, "ECONNREFUSED"):
		return "no hub listening"
	case strings.HasSuffix(reason, "ETIMEDOUT"):
		return "SYN not answered: accept queue or SYN backlog full"
	case reason == "close_4200":
		return "hub draining"
	case reason == "close_1000":
		return "normal close"
	}
	return ""
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
