package main

// The client side is the product load generator: one `loadgen run` process
// (cmd/loadgen, the coordinator) that spawns --workers worker processes, each
// holding its share of the connections from its own source address. bench1m does
// not drive it: it starts it with a broadcast scenario (a ramp, then a publish
// schedule: the hold, the broadcasts), thresholds, --out and --html; it follows it
// through its JSON progress stream (--progress json) and the hubs' /stats; and it
// reads its report at the end. The loadgen processes' memory and CPU are those of
// the coordinator and its children, found through /proc.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/herald-rt/herald/bench/proc"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

const (
	lgProgressEvery = 2 * time.Second  // loadgen --progress-every
	lgHeartbeat     = 60 * time.Second // loadgen --heartbeat-timeout: 110 processes share 2 cores
	lgJoin          = 60 * time.Second // loadgen --join-timeout
	lgStopGrace     = 10 * time.Second // after SIGINT, before SIGKILL by PID
)

// lgProgress is one line of `loadgen run --progress json`.
type lgProgress struct {
	at                   time.Time
	open, target, failed int64
	phase                string
	elapsed, duration    float64 // seconds
	errors               int64
	lostWorkers          int
	deliveriesPerSec     float64
	seen                 bool
}

// parseLgProgress reads one JSON line of loadgen's progress stream; other lines
// (the final verdict) are not progress.
func parseLgProgress(line string) (lgProgress, bool) {
	var pl loadgen.ProgressLine
	if json.Unmarshal([]byte(line), &pl) != nil || pl.Type != "progress" {
		return lgProgress{}, false
	}
	return lgProgress{open: pl.Open, target: int64(pl.Target), failed: pl.Failed, phase: pl.Phase,
		elapsed: pl.Elapsed, duration: pl.Duration, errors: int64(pl.Errors), lostWorkers: pl.Lost,
		deliveriesPerSec: pl.DeliveriesPerSec, seen: true}, true
}

// plannedEnd is when loadgen's --duration ends, from its last progress line.
func (p lgProgress) plannedEnd() time.Time {
	return p.at.Add(time.Duration((p.duration - p.elapsed) * float64(time.Second)))
}

// lgProc is the loadgen coordinator process and the worker processes it spawned.
type lgProc struct {
	cmd      *exec.Cmd
	pid      int
	started  time.Time
	log      string // stdout: the JSON progress stream and its verdict
	errLog   string // stderr: the coordinator's and its workers' logs
	done     chan struct{}
	err      error     // after done
	exitCode int       // after done; -1 if killed by a signal
	exitAt   time.Time // after done

	mu         sync.Mutex
	last       lgProgress
	stoppingAt time.Time      // first progress line in phase "stopping"
	peakDeliv  float64        // most deliveries/s in one progress interval
	children   map[int]uint64 // worker PID -> start time (/proc/<pid>/stat field 22)
	childSeen  int            // most worker processes seen at once
}

func (l *lgProc) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *lgProc) progress() lgProgress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// startLoadgen starts `loadgen run args`; its stdout is copied to a log and parsed.
func startLoadgen(bin string, args []string, dir string) (*lgProc, error) {
	l := &lgProc{log: filepath.Join(dir, "loadgen.out"), errLog: filepath.Join(dir, "loadgen.log"),
		done: make(chan struct{}), children: map[int]uint64{}}
	outf, err := os.Create(l.log)
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(l.errLog)
	if err != nil {
		outf.Close()
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"run"}, args...)...)
	cmd.Stderr = errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		outf.Close()
		errf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		outf.Close()
		errf.Close()
		return nil, fmt.Errorf("%w: loadgen: %w", proc.ErrStart, err)
	}
	l.cmd, l.pid, l.started = cmd, cmd.Process.Pid, time.Now()
	var copied sync.WaitGroup
	copied.Add(1)
	go func() { // copies and parses stdout until the process closes it
		defer copied.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(outf, line)
			p, ok := parseLgProgress(line)
			l.mu.Lock()
			if ok {
				p.at = time.Now()
				l.last = p
				l.peakDeliv = max(l.peakDeliv, p.deliveriesPerSec)
				if p.phase == "stopping" && l.stoppingAt.IsZero() {
					l.stoppingAt = p.at
				}
			}
			l.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { // reaps the process; stop waits for done
		copied.Wait()
		l.err = cmd.Wait()
		l.exitCode = cmd.ProcessState.ExitCode()
		l.exitAt = time.Now()
		outf.Close()
		errf.Close()
		close(l.done)
	}()
	return l, nil
}

// procStat returns a process's parent PID and start time from /proc/<pid>/stat.
func procStat(pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bench1m: short /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("bench1m: short /proc/%d/stat", pid)
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, start, nil
}

// alive reports whether pid is still the process that started at start.
func alive(pid int, start uint64) bool {
	_, s, err := procStat(pid)
	return err == nil && s == start
}

// refresh records the coordinator's current children.
func (l *lgProc) refresh() {
	if l.exited() {
		return
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	n := 0
	found := map[int]uint64{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, start, err := procStat(pid); err == nil && ppid == l.pid {
			found[pid] = start
			n++
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for pid, start := range found {
		l.children[pid] = start
	}
	l.childSeen = max(l.childSeen, n)
}

// pids returns the coordinator's PID (while it runs) and its live workers' PIDs.
func (l *lgProc) pids() []int {
	l.refresh()
	var out []int
	if !l.exited() {
		out = append(out, l.pid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for pid, start := range l.children {
		if alive(pid, start) {
			out = append(out, pid)
		}
	}
	return out
}

// stop ends the loadgen run if it is still going: SIGINT (the coordinator closes
// its connections, bounded, and writes its reports), up to grace, then SIGKILL by
// PID to it and to every worker it spawned that is still alive.
func (l *lgProc) stop(grace time.Duration) {
	if !l.exited() {
		_ = l.cmd.Process.Signal(syscall.SIGINT)
		t := time.NewTimer(grace)
		select {
		case <-l.done:
		case <-t.C:
			_ = l.cmd.Process.Kill()
			<-l.done
		}
		t.Stop()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for pid, start := range l.children {
		if alive(pid, start) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// waitExit waits until d for the process to end on its own.
func (l *lgProc) waitExit(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// lgResult is the client side of a --client loadgen run, from loadgen's report and
// from /proc.
type lgResult struct {
	Command      string                    `json:"command"`
	Workers      int                       `json:"workers"`   // worker processes seen at once
	ExitCode     int                       `json:"exit_code"` // -1: killed
	Stopped      string                    `json:"stopped"`   // the report's stopped
	Seconds      float64                   `json:"seconds"`   // the report's run time
	Passed       bool                      `json:"passed"`    // every threshold held
	Thresholds   []loadgen.ThresholdResult `json:"thresholds"`
	Target       int                       `json:"target"`
	Peak         int64                     `json:"connections_peak"`
	Connected    uint64                    `json:"connected"`
	Subscribed   uint64                    `json:"subscribed"`
	ConnErrors   uint64                    `json:"connect_errors"`
	Errors       map[string]uint64         `json:"errors"`
	ErrorRate    float64                   `json:"error_rate"`
	Connect      loadgen.Distribution      `json:"connect"` // buckets dropped
	RampSeconds  float64                   `json:"ramp_seconds"`
	ConnectRate  float64                   `json:"connect_rate"`
	WorkerHeap   int64                     `json:"worker_heap_sum"` // sum of the workers' peak Go heap in use
	WorkerRSS    int64                     `json:"worker_rss_sum"`  // sum of the workers' peak RSS, as they reported it
	LostWorkers  int                       `json:"lost_workers"`
	HaveReport   bool                      `json:"have_report"`
	CloseSeconds float64                   `json:"close_seconds"` // from phase "stopping" to the coordinator's exit
	ReportJSON   string                    `json:"report_json"`
	ReportHTML   string                    `json:"report_html"`
	Log          string                    `json:"log"`

	LostConnections uint64                    `json:"lost_connections"`
	Missing         uint64                    `json:"missing"`
	Duplicated      uint64                    `json:"duplicated"`
	Delivered       uint64                    `json:"delivered"`
	AtClose         map[string]uint64         `json:"at_close,omitempty"`
	Broadcasts      *loadgen.BroadcastSummary `json:"broadcasts,omitempty"`       // completion buckets dropped
	BroadcastRate   float64                   `json:"broadcast_deliveries_per_s"` // median over the broadcasts of delivered/completion
	PeakDeliveries  float64                   `json:"peak_deliveries_per_s"`      // best 1-s interval of loadgen's series
}

func (g *lgResult) exitMeaning() string {
	switch g.ExitCode {
	case 0:
		return "ok"
	case 1:
		return "an error, or a worker lost"
	case 2:
		return "usage"
	case 99:
		return "a threshold was breached"
	case 130:
		return "interrupted"
	case -1:
		return "killed"
	}
	return "unknown"
}

// lgArgs are the arguments of `loadgen run` for this run.
func (r *runner) lgArgs(addr, out, html string) []string {
	o := r.o
	hs := max(o.handshakes/o.workers, 1)
	args := []string{
		"--target", "ws://" + addr, "--app-id", appID, "--app-key", appKey, "--app-secret", appSecret,
		"--scenario", "broadcast", "--connections", strconv.Itoa(o.conns),
		"--ramp", strconv.FormatFloat(o.lgRamp, 'f', -1, 64),
		"--duration", o.lgDuration.String(), "--drain", lgDrain.String(), "--close-timeout", o.closeTimeout.String(),
		"--max-handshakes", strconv.Itoa(hs), "--loops", strconv.Itoa(o.loops), "--read-batch", o.readBatch.String(),
		"--workers", strconv.Itoa(o.workers), "--source-base", o.srcBase.String(), "--sources-per-worker", strconv.Itoa(o.srcPer),
		"--join-timeout", lgJoin.String(), "--heartbeat-timeout", lgHeartbeat.String(),
		"--progress", "json", "--log-level", "info",
		// One API connection: every broadcast goes through one node's HTTP API.
		"--publish-schedule", o.schedule(), "--publish-concurrency", "1",
		"--channels-per-conn", "1", "--channels", strconv.Itoa(o.channels), "--spread", o.spread,
		"--channel-prefix", o.channel + "-",
		"--threshold", "connections>=" + strconv.Itoa(o.conns),
		"--threshold", "connected>=" + strconv.Itoa(o.conns),
		"--threshold", "lost_connections==0", "--threshold", "missing==0", "--threshold", "duplicated==0",
		"--threshold", "error_count==0", "--threshold", "broadcast_incomplete==0",
		"--out", out, "--html", html,
	}
	if o.lgProfile != "" {
		args = append(args, "--cpuprofile", o.lgProfile)
	}
	if o.channels > 1 {
		// Broadcasts go to the hottest channel and down the list.
		args = append(args, "--publish-channels", strconv.Itoa(o.channels))
	}
	return args
}

// runLoadgen is the whole measurement with --client loadgen; it always stops every
// process before it returns.
func (r *runner) runLoadgen(ctx context.Context) *result {
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
	addr := fmt.Sprintf("%s:%d", o.host, port)
	res.Addr = addr

	// The memory watcher runs from the start of loadgen to its end: it cancels
	// lctx, which stops loadgen (SIGINT, then SIGKILL by PID).
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	var mw *memWatch
	var lg *lgProc
	g := &lgResult{Target: o.conns}
	res.Loadgen = g
	defer func() {
		if mw != nil {
			if why := mw.close(); why != "" {
				res.Stopped, res.MemAbort = why, true
			}
		}
		fmt.Fprintf(r.log, "bench1m: stopping loadgen and %d hubs\n", len(r.fleet.hubs))
		t0 := time.Now()
		if lg != nil {
			lg.stop(lgStopGrace)
			g.ExitCode = lg.exitCode
			lg.mu.Lock()
			// Its stop begins when --duration ends (or when it was seen stopping
			// earlier); the workers' close handshakes follow.
			from := lg.last.plannedEnd()
			if !lg.stoppingAt.IsZero() && lg.stoppingAt.Before(from) {
				from = lg.stoppingAt
			}
			if lg.last.seen && !lg.exitAt.IsZero() {
				g.CloseSeconds = max(lg.exitAt.Sub(from).Seconds(), 0)
			}
			lg.mu.Unlock()
		}
		r.stopHubs(ctx)
		if m := r.fleet.redis.usedMemory(context.Background()); m > 0 {
			res.RedisUsedEnd = m
		}
		r.fleet.redis.stop()
		res.StopSeconds = time.Since(t0).Seconds()
		res.HubAcceptPauses = countInFiles(r.hubLogs(), "accept failed")
		res.HubErrorLines = countInFiles(r.hubLogs(), "level=ERROR")
		time.Sleep(time.Second)
		if m, err := readMeminfo(); err == nil {
			res.MemAvailEnd = m.Available
		}
		if lg != nil {
			r.readLgReport(g, lg)
		}
	}()

	fmt.Fprintf(r.log, "bench1m: starting redis (%s)\n", o.redis)
	r.fleet.redis, err = startRedis(ctx, o.redis, r.dir)
	if err != nil {
		res.Stopped = "starting redis: " + err.Error()
		return res
	}
	res.RedisAddrs = r.fleet.redis.addrs
	fmt.Fprintf(r.log, "bench1m: starting %d hubs on %s %v\n", o.hubs, addr, r.fleet.redis.heraldArgs())
	if err := r.startHubs(ctx, addr); err != nil {
		res.Stopped = "starting hubs: " + err.Error()
		return res
	}
	if err := sleep(ctx, time.Second); err != nil {
		res.Stopped = err.Error()
		return res
	}
	base, err := r.sample() // no loadgen process yet: the clients' base is 0
	if err != nil {
		res.Stopped = err.Error()
		return res
	}
	res.Base = base.figures()
	slab0 := readSlabinfo()
	hubHeap0 := r.hubHeap(ctx)

	args := r.lgArgs(addr, filepath.Join(r.dir, "loadgen-report.json"), filepath.Join(r.dir, "loadgen-report.html"))
	g.Command = "loadgen run" + proc.QuoteArgs(args)
	fmt.Fprintf(r.out, "ready: %d hubs (RSS %s), MemAvailable %s; starting %s\n",
		len(r.fleet.hubs), size(base.heraldRSS), gib(base.mem.Available), g.Command)
	mw = watchMem(o.memFloor, lcancel)
	if lg, err = startLoadgen(filepath.Join(r.dir, "loadgen"), args, r.dir); err != nil {
		res.Stopped = err.Error()
		return res
	}
	r.fleet.lg = lg
	g.Log = lg.errLog

	reached := r.lgRampWatch(lctx, res, lg)
	res.Reached = reached
	if res.RampSeconds > 0 {
		res.ConnsPerSec = float64(reached) / res.RampSeconds
	}
	if res.Stopped == "" && lctx.Err() == nil {
		res.HoldMinHeld = reached
		// Measured a few seconds before loadgen's first broadcast (its schedule
		// starts with the same hold, from its own ramp's end).
		hold := max(o.hold-5*time.Second, o.holdEvery)
		fmt.Fprintf(r.out, "holding %s connections for %v, then broadcasts %s and one a minute for %v\n",
			thousands(reached), hold, o.broadcasts, o.broadcastHold)
		r.lgHold(lctx, res, lg, reached, hold, true)
		if lctx.Err() == nil && res.HoldNote == "" {
			r.peakMemory(res, base, slab0)
			res.RedisUsedPeak = r.fleet.redis.usedMemory(lctx)
			if h1 := r.hubHeap(lctx); hubHeap0 > 0 && h1 > 0 {
				res.HeraldHeapPerConn = float64(h1-hubHeap0) / float64(max(res.Reached, 1))
			}
			if sp, err := r.hubConns(lctx); err == nil {
				res.Spread = sp
			}
			// Keep checking until loadgen's own --duration ends.
			if rest := time.Until(lg.progress().plannedEnd()) - 2*lgProgressEvery; rest > o.holdEvery {
				fmt.Fprintf(r.out, "measured; loadgen broadcasts and holds for %.0f s more (its --duration %v)\n", rest.Seconds(), o.lgDuration)
				b0, err0 := r.sample()
				r.lgHold(lctx, res, lg, reached, rest, false)
				if b1, err1 := r.sample(); err0 == nil && err1 == nil {
					res.BroadcastCPU = cpuBetween(b0, b1)
					res.BroadcastSeconds = b1.at.Sub(b0.at).Seconds()
				}
			}
		}
	}
	if lctx.Err() == nil && !lg.exited() && res.Stopped == "" {
		wait := time.Until(lg.progress().plannedEnd()) + o.closeTimeout + 30*time.Second
		fmt.Fprintf(r.out, "waiting for loadgen to end its run and close its connections (at most %.0f s)\n", wait.Seconds())
		if !lg.waitExit(lctx, max(wait, 5*time.Second)) && res.HoldNote == "" && lctx.Err() == nil {
			res.HoldNote = fmt.Sprintf("loadgen did not end within %.0f s of its planned end: stopped by bench1m", wait.Seconds())
		}
	}
	if ctx.Err() != nil && res.Stopped == "" {
		res.Stopped = "interrupted: " + context.Cause(ctx).Error()
	}
	return res
}

// lgRampWatch follows the ramp until the hubs and loadgen hold the target or
// something stops it, printing a line every --hold-every; it returns the
// connections held.
func (r *runner) lgRampWatch(ctx context.Context, res *result, lg *lgProc) int64 {
	o := r.o
	target := int64(o.conns)
	stopped := func(why string) {
		if res.Stopped == "" {
			res.Stopped = why
		}
	}
	start := time.Now()
	prev, err := r.sample()
	if err != nil {
		stopped(err.Error())
		return 0
	}
	first := prev
	defer func() { res.RampCPU = cpuBetween(first, prev); res.RampSeconds = time.Since(start).Seconds() }()
	var prevHubs, held int64
	lastProgress := time.Now()
	for step := 1; ; step++ {
		t0 := time.Now()
		if err := sleep(ctx, o.holdEvery); err != nil {
			stopped("ramp: " + context.Cause(ctx).Error())
			return held
		}
		sp, herr := r.hubConns(ctx)
		s, serr := r.sample()
		p := lg.progress()
		took := time.Since(t0)
		rec := stepRecord{Step: step, Opened: sp.Sum - prevHubs, Failed: p.failed, Seconds: took.Seconds(),
			Held: p.open, HubConns: sp.Sum, HeraldRSS: s.heraldRSS, ClientRSS: s.clientRSS,
			MemAvail: s.mem.Available, TCPMemPage: s.sock.MemPages, CPU: cpuBetween(prev, s)}
		res.Steps = append(res.Steps, rec)
		fmt.Fprintf(r.out, "%5.0f s  hubs' /stats %s (+%s/s)  loadgen open %s, failed %s, %s  RSS herald %s, loadgen %s (%d processes)  MemAvailable %s  TCP mem %d pages\n"+
			"         %v\n",
			time.Since(start).Seconds(), thousands(sp.Sum), thousands(int64(float64(rec.Opened)/took.Seconds())),
			thousands(p.open), thousands(p.failed), p.phase, size(s.heraldRSS), size(s.clientRSS), len(lg.pids()),
			gib(s.mem.Available), s.sock.MemPages, rec.CPU)
		if serr == nil {
			prev = s
		}
		held = min(sp.Sum, p.open)
		if sp.Sum > prevHubs {
			lastProgress = time.Now()
		}
		prevHubs = sp.Sum
		switch {
		case herr != nil || serr != nil:
			stopped(errors.Join(herr, serr).Error())
		case sp.Sum >= target && p.open >= target:
			return held
		case lg.exited():
			stopped(fmt.Sprintf("loadgen exited during the ramp (code %d; log %s)", lg.exitCode, lg.errLog))
		case p.lostWorkers > 0:
			stopped(fmt.Sprintf("loadgen lost %d workers (log %s)", p.lostWorkers, lg.errLog))
		case p.failed > 0 && p.open+p.failed >= target:
			stopped(fmt.Sprintf("every connection dialed; %s failed, and loadgen does not dial them again", thousands(p.failed)))
		case p.phase == "drain" || p.phase == "stopping" || p.phase == "done":
			stopped(fmt.Sprintf("loadgen's --duration %v ended before the target was held: raise --lg-duration or --lg-ramp", o.lgDuration))
		case time.Since(lastProgress) > o.stepTimeout:
			stopped(fmt.Sprintf("no progress for %v", o.stepTimeout))
		default:
			continue
		}
		return held
	}
}

// lgHold checks every --hold-every for d that the hubs and loadgen still hold
// peak. The first call (main) sets the hold figures and CPU; a later one extends
// the checked time while loadgen's --duration runs out.
func (r *runner) lgHold(ctx context.Context, res *result, lg *lgProc, peak int64, d time.Duration, main bool) {
	o := r.o
	start := time.Now()
	first, err := r.sample()
	if err != nil {
		res.HoldNote = err.Error()
		return
	}
	if main {
		res.HoldMinHubs = -1
	}
	for time.Since(start) < d && ctx.Err() == nil {
		if err := sleep(ctx, min(o.holdEvery, d-time.Since(start))); err != nil {
			break
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
		p := lg.progress()
		if res.HoldMinHubs < 0 || sp.Sum < res.HoldMinHubs {
			res.HoldMinHubs = sp.Sum
		}
		res.HoldMinHeld = min(res.HoldMinHeld, p.open)
		res.HoldClosed = max(res.HoldClosed, peak-p.open)
		res.HoldSeconds += s.at.Sub(first.at).Seconds()
		if main {
			res.HoldCPU = cpuBetween(first, s)
		}
		first = s
		fmt.Fprintf(r.out, "hold %4.0f s  loadgen open %s (%s, %s deliveries/s), hubs' /stats %s (min %s, max %s per hub)  RSS herald %s, loadgen %s, redis %s  MemAvailable %s\n",
			res.HoldSeconds, thousands(p.open), p.phase, thousands(int64(p.deliveriesPerSec)), thousands(sp.Sum), thousands(sp.Min), thousands(sp.Max),
			size(s.heraldRSS), size(s.clientRSS), size(s.redisRSS), gib(s.mem.Available))
		if why := r.fleet.redis.exited(); why != "" {
			res.HoldNote = why
			return
		}
		if lg.exited() || p.phase == "stopping" || p.phase == "done" {
			if main {
				res.HoldNote = fmt.Sprintf("loadgen's run ended during the hold (its --duration %v): raise --lg-duration", o.lgDuration)
			}
			return
		}
	}
	if ctx.Err() != nil {
		if res.HoldNote == "" {
			res.HoldNote = "interrupted: " + context.Cause(ctx).Error()
		}
	} else if res.HoldMinHubs >= 0 && (res.HoldMinHubs < peak || res.HoldClosed > 0) {
		res.HoldNote = fmt.Sprintf("connections lost during the hold: hubs' minimum %s of %s, loadgen's open fell by %s",
			thousands(res.HoldMinHubs), thousands(peak), thousands(res.HoldClosed))
	}
}

// readLgReport fills g from loadgen's JSON report and copies both reports to
// ./bin of the current directory.
func (r *runner) readLgReport(g *lgResult, lg *lgProc) {
	lg.mu.Lock()
	g.Workers = lg.childSeen
	g.PeakDeliveries = lg.peakDeliv
	lg.mu.Unlock()
	src := filepath.Join(r.dir, "loadgen-report.json")
	b, err := os.ReadFile(src)
	if err != nil {
		fmt.Fprintln(r.log, "bench1m: no loadgen report:", err)
		return
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		fmt.Fprintln(r.log, "bench1m: loadgen report:", err)
		return
	}
	g.HaveReport = true
	t := rep.Totals
	g.Stopped, g.Seconds, g.Passed, g.Thresholds = rep.Stopped, rep.Seconds, rep.Passed, rep.Thresholds
	g.Peak, g.Connected, g.Subscribed, g.ConnErrors = t.ConnectionsPeak, t.Connected, t.Subscribed, t.ConnectErrors
	g.Errors, g.ErrorRate = t.Errors, t.ErrorRate
	g.Connect = rep.Connect
	g.Connect.Buckets = nil
	g.RampSeconds, g.ConnectRate = rep.RampSeconds, rep.ConnectRate
	g.LostConnections, g.Missing, g.Duplicated, g.Delivered, g.AtClose = t.LostConnections, t.Missing, t.Duplicated, t.Delivered, t.AtClose
	for _, smp := range rep.Series {
		g.PeakDeliveries = max(g.PeakDeliveries, smp.DeliveriesPerSec)
	}
	if bs := rep.Broadcasts; bs != nil {
		var rates []float64
		for _, it := range bs.Items {
			if it.CompletionMs > 0 {
				rates = append(rates, float64(it.Delivered)/(it.CompletionMs/1000))
			}
		}
		if len(rates) > 0 {
			slices.Sort(rates)
			g.BroadcastRate = rates[len(rates)/2]
		}
		c := *bs
		c.Completion.Buckets = nil
		g.Broadcasts = &c
	}
	for _, w := range rep.Workers {
		g.WorkerHeap += w.HeapBytes
		g.WorkerRSS += w.RSSBytes
		if w.State != "ok" {
			g.LostWorkers++
		}
	}
	name := "bench1m-loadgen-report"
	if len(r.o.scale) > 0 { // one report per size
		name += "-" + strconv.Itoa(r.o.conns)
	}
	if bin, err := filepath.Abs(r.o.outDir); err == nil {
		if err := os.MkdirAll(bin, 0o755); err == nil {
			for _, c := range []struct {
				from, to string
				dst      *string
			}{
				{src, name + ".json", &g.ReportJSON},
				{filepath.Join(r.dir, "loadgen-report.html"), name + ".html", &g.ReportHTML},
			} {
				if data, err := os.ReadFile(c.from); err == nil {
					to := filepath.Join(bin, c.to)
					if os.WriteFile(to, data, 0o644) == nil {
						*c.dst = to
					}
				}
			}
		}
	}
}

// printLoadgen prints the client side of a --client loadgen run.
func (g *lgResult) print(row func(k, format string, a ...any), res *result) {
	if !g.HaveReport {
		row("loadgen", "exit code %d (%s); no report was written (log %s)", g.ExitCode, g.exitMeaning(), g.Log)
		if res.Peak.ClientRSS > 0 {
			row("loadgen RSS", "%s VmRSS in the coordinator and %d workers at the peak (/proc)", size(res.Peak.ClientRSS), g.Workers)
		}
		return
	}
	row("loadgen", "exit code %d (%s), stopped: %s, run %.1f s; thresholds %s", g.ExitCode, g.exitMeaning(), g.Stopped, g.Seconds, g.thresholds())
	row("loadgen connections", "peak open %s, connected %s, subscribed %s, connect errors %s, target %s",
		thousands(g.Peak), thousands(int64(g.Connected)), thousands(int64(g.Subscribed)), thousands(int64(g.ConnErrors)), thousands(int64(g.Target)))
	row("loadgen ramp", "%.1f s for the slowest worker's share, %s connections/s", g.RampSeconds, thousands(int64(g.ConnectRate)))
	c := g.Connect
	row("loadgen connect latency", "socket() to connection_established, %s samples: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms (mean %.1f ms)",
		thousands(int64(c.Count)), c.P50Ms, c.P90Ms, c.P99Ms, c.P999Ms, c.MaxMs, c.MeanMs)
	var errs []string
	for k, v := range g.Errors {
		errs = append(errs, fmt.Sprintf("%s=%s", k, thousands(int64(v))))
	}
	if len(errs) == 0 {
		errs = []string{"none"}
	}
	row("loadgen errors", "%s (rate %.4f%%); %d workers lost or failed", strings.Join(errs, ", "), 100*g.ErrorRate, g.LostWorkers)
	if res.Peak.ClientRSS > 0 {
		row("loadgen RSS", "%s VmRSS in the coordinator and %d workers at the peak (/proc), %s of it private; %.0f B per connection (%.0f B private), start-up included",
			size(res.Peak.ClientRSS), g.Workers, size(res.Peak.ClientAnon), res.ClientRSSPerConn, res.ClientAnonPerConn)
	}
	row("", "workers' own peaks: RSS %s summed, Go heap in use %s summed (%.0f B per connection)",
		size(g.WorkerRSS), size(g.WorkerHeap), float64(g.WorkerHeap)/float64(max(res.Reached, 1)))
	if bs := g.Broadcasts; bs != nil {
		c := bs.Completion
		row("broadcasts", "%d through one node's HTTP API: %d complete (every subscriber), %d incomplete", bs.Count, bs.Complete, bs.Incomplete)
		var expected uint64
		for _, it := range bs.Items {
			expected += it.Expected
		}
		row("broadcast completion", "publish to the last delivery to its channel's subscribers (%s on average): p50 %.0f ms, max %.0f ms (target: <= 12 s)",
			thousands(int64(expected/uint64(max(len(bs.Items), 1)))), c.P50Ms, c.MaxMs)
		row("deliveries/s", "%s /s per broadcast (median of delivered/completion), best 1-s interval %s /s; %s delivered in all",
			thousands(int64(g.BroadcastRate)), thousands(int64(g.PeakDeliveries)), thousands(int64(g.Delivered)))
	}
	row("loadgen losses", "lost connections %s, missing %s, duplicated %s; at the final close (not errors): %v",
		thousands(int64(g.LostConnections)), thousands(int64(g.Missing)), thousands(int64(g.Duplicated)), g.AtClose)
	row("loadgen close", "%.1f s from the end of its --duration to the coordinator's exit (close handshakes, final snapshots, reports)", g.CloseSeconds)
	if g.ReportJSON != "" || g.ReportHTML != "" {
		row("loadgen reports", "%s, %s", g.ReportJSON, g.ReportHTML)
	}
}

func (g *lgResult) thresholds() string {
	if len(g.Thresholds) == 0 {
		return "none evaluated"
	}
	var parts []string
	for _, t := range g.Thresholds {
		st := "ok"
		if !t.OK {
			st = "BREACHED"
		}
		parts = append(parts, fmt.Sprintf("%s %s (%g)", t.Expr, st, t.Value))
	}
	return strings.Join(parts, ", ")
}
