package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

// The load parts of the HAProxy instance (haproxy_test.go): handshakes per second
// through HAProxy with and without TLS, and a drain of 1,000 clients. The clients are
// Go (gobwas/ws, one goroutine each: 1,000 stays far below the race detector's 8,128
// goroutines), each from a source address of its own in 127.0.0.0/8, so that the
// nodes' --max-connections-per-ip does not get in the way.

const (
	handshakesEach   = 2000 // per kind (plain, TLS)
	handshakeWorkers = 32
	drainClients     = 1000
	drainChannel     = "lb-drain"
)

// srcAddr is the i-th source address of a block of 127.0.0.0/8 (block 1: 127.1.x.y,
// 2: 127.2.x.y), skipping .0 and .255.
func srcAddr(block, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(block), byte(i / 250), byte(i%250 + 1)})
}

// percentile of sorted durations (q in 0..1).
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

// --- handshakes ---------------------------------------------------------------------------

// testHandshakes opens handshakesEach WebSockets through HAProxy's plain frontend and
// as many through its TLS frontend (full handshakes: new clients, no session to
// resume), handshakeWorkers at a time, in two rounds each, interleaved, so that
// warming up favours neither. Each connects from its own address, waits for
// pusher:connection_established and closes.
func testHandshakes(t *testing.T, l *lb) {
	l.waitIdle(t)
	type result struct {
		n       int
		elapsed time.Duration
		lat     []time.Duration
		fails   map[string]int
	}
	res := map[bool]*result{false: {fails: map[string]int{}}, true: {fails: map[string]int{}}}
	cpu := map[bool]*[3]time.Duration{false: {}, true: {}} // HAProxy, the nodes, this process
	next := 0
	run := func(useTLS bool, n int) {
		before := l.cpu()
		defer func() {
			after := l.cpu()
			for i := range after {
				cpu[useTLS][i] += after[i] - before[i]
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r := res[useTLS]
		jobs := make(chan netip.Addr)
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		for range handshakeWorkers {
			wg.Go(func() {
				for src := range jobs {
					t0 := time.Now()
					hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
					p, err := l.dialVia(hctx, useTLS, src, l.tlsConf.Clone())
					hcancel()
					d := time.Since(t0)
					mu.Lock()
					if err != nil {
						r.fails[failure(err)]++
					} else {
						r.lat = append(r.lat, d)
					}
					mu.Unlock()
					if p != nil {
						p.Close()
					}
				}
			})
		}
		for range n {
			jobs <- srcAddr(2, next)
			next++
		}
		close(jobs)
		wg.Wait()
		r.elapsed += time.Since(start)
		r.n += n
	}
	for range 2 {
		run(false, handshakesEach/2)
		run(true, handshakesEach/2)
	}
	for _, useTLS := range []bool{false, true} {
		r := res[useTLS]
		if len(r.fails) > 0 {
			t.Errorf("handshakes (TLS %v): %d of %d failed: %v", useTLS, r.n-len(r.lat), r.n, r.fails)
		}
		slices.Sort(r.lat)
	}
	plain, tlsr := res[false], res[true]
	rate := func(r *result) float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }
	perHS := func(useTLS bool) string {
		c, n := cpu[useTLS], time.Duration(max(res[useTLS].n, 1))
		return fmt.Sprintf("CPU per handshake: HAProxy %v, nodes %v, the Go clients %v", (c[0] / n).Round(time.Microsecond),
			(c[1] / n).Round(time.Microsecond), (c[2] / n).Round(time.Microsecond))
	}
	t.Logf("measured: WebSocket handshakes through HAProxy to 2 race-built herald nodes, %d at a time, each from its own address "+
		"(TCP connect, [TLS 1.3 full handshake, ECDSA P-256,] HTTP upgrade, pusher:connection_established; then close): "+
		"plain %d in %v = %.0f/s (p50 %s, p99 %s; %s); TLS %d in %v = %.0f/s (p50 %s, p99 %s; %s); TLS/plain rate %.2f",
		handshakeWorkers, len(plain.lat), plain.elapsed.Round(time.Millisecond), rate(plain), ms(percentile(plain.lat, .5)), ms(percentile(plain.lat, .99)), perHS(false),
		len(tlsr.lat), tlsr.elapsed.Round(time.Millisecond), rate(tlsr), ms(percentile(tlsr.lat, .5)), ms(percentile(tlsr.lat, .99)), perHS(true),
		rate(tlsr)/rate(plain))
}

// --- drain ------------------------------------------------------------------------------

// drainRun is what the drain's clients record.
type drainRun struct {
	l       *lb
	sigterm atomic.Int64 // unix ns of the SIGTERM; 0 before
	stop    atomic.Bool  // the test is over: clients exit instead of reconnecting

	mu       sync.Mutex
	conns    map[int]*pconn // each client's live connection
	closes   []drainClose
	backs    []drainBack // re-subscriptions after the SIGTERM
	failures map[string]int
	resumed  int // reconnections whose TLS session was resumed

	subscribed atomic.Int64 // clients subscribed now
	received   atomic.Int64 // clients that got the marker event
}

type drainClose struct {
	at     time.Time
	client int
	node   int
	code   int
}

type drainBack struct {
	at     time.Time
	client int
	node   int
	closed time.Time // when its previous connection was closed
}

// client runs client i until the test stops it: connect through HAProxy's TLS
// frontend, subscribe, read; after a close 4200 reconnect at once, after a failure
// back off (100 ms doubling to 1 s, with jitter), as pusher-js does in spirit.
// onFirst runs once the client is subscribed for the first time.
func (r *drainRun) client(ctx context.Context, i int, onFirst func(), marker string) {
	src := srcAddr(1, i)
	// A session cache of its own, as a browser has: a reconnection resumes its TLS
	// session where HAProxy still has it.
	conf := r.l.tlsConf.Clone()
	conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	var closedAt time.Time
	backoff := 100 * time.Millisecond
	for !r.stop.Load() && ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := r.l.dialVia(dctx, true, src, conf)
		if err == nil {
			err = p.subscribe(dctx, drainChannel)
		}
		cancel()
		if err != nil {
			if p != nil {
				p.Close()
			}
			if r.stop.Load() || ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			r.failures[failure(err)]++
			r.mu.Unlock()
			jitter := time.Duration(int64(i*7919) % int64(backoff/2+1))
			time.Sleep(backoff/2 + jitter)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		r.mu.Lock()
		r.conns[i] = p
		if r.sigterm.Load() != 0 {
			r.backs = append(r.backs, drainBack{at: time.Now(), client: i, node: p.node, closed: closedAt})
			if p.resumed {
				r.resumed++
			}
		}
		r.mu.Unlock()
		r.subscribed.Add(1)
		if onFirst != nil {
			onFirst()
			onFirst = nil
		}
		for {
			ev, err := p.next(ctx)
			if err != nil {
				r.subscribed.Add(-1)
				closedAt = time.Now()
				r.mu.Lock()
				delete(r.conns, i)
				if ce, ok := err.(errClosed); ok {
					r.closes = append(r.closes, drainClose{at: closedAt, client: i, node: p.node, code: ce.code})
				} else if !r.stop.Load() {
					r.failures["lost: "+failure(err)]++
				}
				r.mu.Unlock()
				_ = p.conn.Close()
				break
			}
			if ev.Event == marker && ev.Channel == drainChannel {
				r.received.Add(1)
			}
		}
	}
}

// testDrain connects drainClients clients through HAProxy (TLS), sends SIGTERM to
// the node holding most of them and checks the drain: /readyz 503 at once, every
// client of that node closed with 4200, the closes spread over --drain-window, every
// client back (through HAProxy, on the other node), an event published afterwards
// reaching all of them, and the drained node exiting 0. It prints the figures.
func testDrain(t *testing.T, l *lb) {
	l.waitIdle(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &drainRun{l: l, conns: map[int]*pconn{}, failures: map[string]int{}}
	var wg sync.WaitGroup
	defer func() {
		// Stop the clients: no reconnecting, every socket closed, every goroutine gone.
		r.stop.Store(true)
		cancel()
		r.mu.Lock()
		for _, p := range r.conns {
			_ = p.conn.Close()
		}
		r.mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("the drain clients did not stop within 15 s")
		}
	}()

	rssBefore := rssKiB(l.cmd.Process.Pid)
	const ramp = 100 // connections in flight while connecting
	sem := make(chan struct{}, ramp)
	firsts := make(chan struct{}, drainClients)
	start := time.Now()
	rampEnd := time.After(30 * time.Second)
	failed := func(what string) {
		t.Helper()
		r.mu.Lock()
		failures := fmt.Sprint(r.failures)
		r.mu.Unlock()
		t.Fatalf("%s: %d of %d clients subscribed within 30 s; failures %s", what, r.subscribed.Load(), drainClients, failures)
	}
	for i := range drainClients {
		select {
		case sem <- struct{}{}:
		case <-rampEnd:
			failed("connecting")
		}
		wg.Go(func() {
			r.client(ctx, i, func() { <-sem; firsts <- struct{}{} }, "drain-done")
		})
	}
	for range drainClients {
		select {
		case <-firsts:
		case <-rampEnd:
			failed("subscribing")
		}
	}
	connected := time.Since(start)
	rssAfter := rssKiB(l.cmd.Process.Pid)
	goroutines := runtime.NumGoroutine()

	// Where they are, by the node part of their socket ids.
	per := map[int]int{}
	r.mu.Lock()
	for _, p := range r.conns {
		per[p.node]++
	}
	failsBefore := fmt.Sprint(r.failures)
	clear(r.failures)
	r.mu.Unlock()
	victim, other := 1, 2
	if per[2] > per[1] {
		victim, other = 2, 1
	}
	held := per[victim]
	t.Logf("measured: %d clients through HAProxy (wss://, %d handshakes in flight) connected and subscribed in %v (%.0f/s); "+
		"node 1 holds %d, node 2 %d; failures on the way %s; %d goroutines in the test process; "+
		"HAProxy's RSS %d → %d KiB (%.1f KiB per TLS WebSocket)",
		drainClients, ramp, connected.Round(time.Millisecond), float64(drainClients)/connected.Seconds(), per[1], per[2], failsBefore,
		goroutines, rssBefore, rssAfter, float64(rssAfter-rssBefore)/drainClients)
	if per[1]+per[2] != drainClients {
		t.Fatalf("clients by node %v, want %d on nodes 1 and 2", per, drainClients)
	}
	if goroutines > 8000 {
		t.Errorf("%d goroutines: the race detector allows 8,128", goroutines)
	}

	h := l.nodes[victim-1]
	t0 := time.Now()
	r.sigterm.Store(t0.UnixNano())
	// Watch HAProxy's view of the victim while it drains (for at most 15 s).
	var downAfter atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for end := time.Now().Add(15 * time.Second); ctx.Err() == nil && time.Now().Before(end); {
			if row, err := l.server(l.servers[victim-1]); err == nil && !strings.HasPrefix(row["status"], "UP") {
				downAfter.Store(int64(time.Since(t0)))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// /readyz answers 503 at once; /healthz stays 200 (liveness must not kill a
	// draining pod).
	readyz := pollStatus(t, h.admin+"/readyz", http.StatusServiceUnavailable, time.Second)
	if code := getStatus(h.admin + "/healthz"); code != http.StatusOK {
		t.Errorf("node %d /healthz answered %d during the drain, want 200", victim, code)
	}

	// Every client back and subscribed, on the other node.
	deadline := t0.Add(lbDrainWindow + 20*time.Second)
	for r.subscribed.Load() < drainClients || backs(r) < held {
		if time.Now().After(deadline) {
			r.mu.Lock()
			nback, failures := len(r.backs), fmt.Sprint(r.failures)
			r.mu.Unlock()
			t.Fatalf("%d of %d clients subscribed, %d of %d back, %v after SIGTERM; failures %s",
				r.subscribed.Load(), drainClients, nback, held, time.Since(t0).Round(time.Millisecond), failures)
		}
		time.Sleep(20 * time.Millisecond)
	}
	allBack := time.Since(t0)
	<-watchDone
	if downAfter.Load() == 0 {
		t.Errorf("HAProxy did not mark node %d down within 15 s of its SIGTERM (its /readyz answers 503)", victim)
	}

	// The drained node exits 0 within --shutdown-timeout.
	select {
	case <-h.exited:
	case <-time.After(lbShutdownTimeout + 5*time.Second):
		t.Errorf("node %d did not exit within %v of SIGTERM", victim, lbShutdownTimeout+5*time.Second)
	}
	exitedAfter := time.Since(t0)
	if h.waitErr != nil {
		t.Errorf("node %d exited with %v after SIGTERM, want status 0", victim, h.waitErr)
	}

	// An event published after the drain (API through HAProxy's plain frontend)
	// reaches every client.
	pub, err := loadgen.NewPublisher(loadgen.PublisherConfig{BaseURL: "http://" + l.plainAddr, AppID: l.app.ID, Key: l.app.Key, Secret: l.app.Secret})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	published := time.Now()
	err = pub.Publish(pctx, drainChannel, "drain-done", []byte(`{"after":"drain"}`))
	pcancel()
	if err != nil {
		t.Fatalf("publish after the drain: %v", err)
	}
	for r.received.Load() < drainClients {
		if time.Since(published) > 10*time.Second {
			t.Fatalf("%d of %d clients got the event published after the drain", r.received.Load(), drainClients)
		}
		time.Sleep(10 * time.Millisecond)
	}
	delivered := time.Since(published)

	// How HAProxy got the reconnects elsewhere: its connection attempts to the
	// draining node were refused (econ), retried (wretr) and redispatched (wredis).
	vrow, err := l.server(l.servers[victim-1])
	if err != nil {
		t.Fatal(err)
	}

	// What the clients saw.
	r.mu.Lock()
	closes, back, failures, resumed := slices.Clone(r.closes), slices.Clone(r.backs), fmt.Sprint(r.failures), r.resumed
	nfail := len(r.failures)
	r.mu.Unlock()
	// The draining node refuses connections (its listener is closed), and HAProxy
	// retries them on the other node (retries, option redispatch): no client may see
	// a failed attempt. deploy/haproxy/haproxy.cfg says so to the operator.
	if nfail > 0 {
		t.Errorf("failed connection attempts during the drain: %s", failures)
	}
	codes := map[int]int{}
	var first, last time.Duration = time.Hour, 0
	buckets := make([]int, int((lbDrainWindow+time.Second)/(250*time.Millisecond)))
	for _, c := range closes {
		codes[c.code]++
		if c.node != victim {
			t.Errorf("client %d on node %d (not drained) was closed with %d", c.client, c.node, c.code)
		}
		d := c.at.Sub(t0)
		first, last = min(first, d), max(last, d)
		if b := int(d / (250 * time.Millisecond)); b < len(buckets) {
			buckets[b]++
		} else {
			t.Errorf("client %d closed %v after SIGTERM, past the %v window", c.client, d, lbDrainWindow)
		}
	}
	if len(closes) != held || codes[4200] != held {
		t.Errorf("%d closes (by code %v) for the %d clients of node %d, want %d closes with 4200", len(closes), codes, held, victim, held)
	}
	var gaps []time.Duration
	for _, b := range back {
		if b.node != other {
			t.Errorf("client %d came back on node %d, want %d", b.client, b.node, other)
		}
		gaps = append(gaps, b.at.Sub(b.closed))
	}
	slices.Sort(gaps)
	// Spread: the closes span most of the window, and no 250 ms holds more than three
	// times an even share.
	even := float64(held) / float64(lbDrainWindow/(250*time.Millisecond))
	for i, n := range buckets {
		if float64(n) > 3*even+5 {
			t.Errorf("%d closes in [%v, %v) after SIGTERM: not spread over the window (an even share is %.0f)", n,
				time.Duration(i)*250*time.Millisecond, time.Duration(i+1)*250*time.Millisecond, even)
		}
	}
	if last-first < lbDrainWindow/2 {
		t.Errorf("the closes span %v to %v after SIGTERM: not spread over the %v window", first, last, lbDrainWindow)
	}
	perSecond := make([]int, (len(buckets)+3)/4)
	for i, n := range buckets {
		perSecond[i/4] += n
	}
	var curve []string
	for i, n := range buckets {
		curve = append(curve, fmt.Sprintf("%d-%dms:%d", i*250, (i+1)*250, n))
	}
	t.Logf("measured: drain of node %d (%d clients, --drain-window %v): /readyz 503 %v after SIGTERM; HAProxy marked it down %v after; "+
		"closes with 4200 from %v to %v, per second %v, per 250 ms [%s]",
		victim, held, lbDrainWindow, readyz.Round(time.Millisecond), time.Duration(downAfter.Load()).Round(time.Millisecond),
		first.Round(time.Millisecond), last.Round(time.Millisecond), perSecond, strings.Join(curve, " "))
	t.Logf("measured: every client back and subscribed %v after SIGTERM (all on node %d); close → back again p50 %s, p99 %s, max %s; "+
		"failed attempts meanwhile %s; HAProxy's connections to the draining node: %s refused, %s retried, %s redispatched; "+
		"TLS sessions resumed on %d of %d reconnections; node %d exited 0 %v after SIGTERM (the race detector's 1 s at exit included); "+
		"an event published afterwards reached all %d clients in %s",
		allBack.Round(time.Millisecond), other, ms(percentile(gaps, .5)), ms(percentile(gaps, .99)), ms(percentile(gaps, 1)),
		failures, vrow["econ"], vrow["wretr"], vrow["wredis"], resumed, len(back), victim, exitedAfter.Round(time.Millisecond), drainClients, ms(delivered))
}

func backs(r *drainRun) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.backs)
}

// getStatus GETs a URL on the admin server; 0 when it cannot.
func getStatus(hostPath string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+hostPath, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// pollStatus waits until a URL answers want and returns how long that took.
func pollStatus(t *testing.T, hostPath string, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		code := getStatus(hostPath)
		if code == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Errorf("%s answered %d, not %d, within %v", hostPath, code, want, within)
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cpu is the CPU time used so far by HAProxy, by the nodes (together) and by this
// test process.
func (l *lb) cpu() [3]time.Duration {
	var nodes time.Duration
	for _, h := range l.nodes {
		nodes += procCPU(h.cmd.Process.Pid)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return [3]time.Duration{procCPU(l.cmd.Process.Pid), nodes, self}
}

// procCPU is a process's user and system CPU time from /proc/<pid>/stat (in clock
// ticks of 10 ms, Linux's USER_HZ); 0 if unknown.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// rssKiB is a process's resident memory (VmRSS), 0 if unknown.
func rssKiB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}
