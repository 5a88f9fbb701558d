package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the coordinator in-process with in-process workers (RunWorker)
// against a real Herald binary on loopback, at small scale.

var (
	heraldOnce sync.Once
	heraldPath string
	heraldErr  error
	testTmp    string // removed by TestMain
)

func heraldBinary(t *testing.T) string {
	t.Helper()
	heraldOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			heraldErr = err
			return
		}
		heraldPath = filepath.Join(testTmp, "herald")
		out, err := exec.Command(gobin, "build", "-o", heraldPath, "../cmd/herald").CombinedOutput()
		if err != nil {
			heraldErr = fmt.Errorf("go build ../cmd/herald: %v\n%s", err, out)
		}
	})
	if heraldErr != nil {
		t.Fatal(heraldErr)
	}
	return heraldPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

const testAppID, testKey, testSecret = "1", "lgkey", "lgsecret"

// startHerald runs Herald with the test app and returns its address. It is stopped
// (SIGTERM, then SIGKILL by PID) in t.Cleanup.
func startHerald(t *testing.T, extra ...string) string {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"--addr", addr, "--admin-addr", freeAddr(t), "--app-id", testAppID,
		"--app-key", testKey, "--app-secret", testSecret, "--log-level", "warn"}, extra...)
	cmd := exec.Command(heraldBinary(t), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "serving") {
				once = true
				close(serving)
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	select {
	case <-serving:
	case <-exited:
		t.Fatal("herald exited before serving")
	case <-time.After(20 * time.Second):
		t.Fatal("herald did not start")
	}
	return addr
}

// tWriter logs through t, so that a failing test shows the coordinator's log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func testSpec(addr string) Spec {
	return Spec{Target: "ws://" + addr, AppID: testAppID, Key: testKey, Secret: testSecret,
		Duration: Duration(4 * time.Second), Drain: Duration(time.Second), Ramp: 2000}
}

// runCoordinator runs spec with n in-process workers and returns the report. The
// run must end within its duration plus a bound.
func runCoordinator(t *testing.T, spec Spec, n int, tweak func(*CoordinatorConfig), hooks ...func(*Coordinator)) *Report {
	t.Helper()
	cfg := CoordinatorConfig{Spec: spec, Expect: n, JoinTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if tweak != nil {
		tweak(&cfg)
	}
	c, err := NewCoordinator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		h(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := RunWorker(ctx, WorkerConfig{Join: c.Addr(), JoinTimeout: 10 * time.Second}); err != nil {
				t.Errorf("worker: %v", err)
			}
		}()
	}
	start := time.Now()
	rep, err := c.Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if took, bound := time.Since(start), spec.Duration.D()+10*time.Second; took > bound {
		t.Errorf("run took %v, more than %v", took, bound)
	}
	wg.Wait()
	return rep
}

// checkReport checks what every quiet run must satisfy.
func checkReport(t *testing.T, rep *Report, conns int) {
	t.Helper()
	tot := rep.Totals
	if tot.Connected < uint64(conns) || tot.ConnectionsPeak < int64(conns)*9/10 {
		t.Errorf("connected %d, peak %d; want %d", tot.Connected, tot.ConnectionsPeak, conns)
	}
	if len(tot.Errors) != 0 {
		t.Errorf("errors: %v", tot.Errors)
	}
	if rep.Stopped != "duration" {
		t.Errorf("stopped %q", rep.Stopped)
	}
	var connected, delivered uint64
	for _, w := range rep.Workers {
		if w.State != stateOK {
			t.Errorf("worker %d: %s %s", w.ID, w.State, w.Error)
		}
		connected += w.Connected
		delivered += w.Delivered
	}
	if connected != tot.Connected || delivered != tot.Delivered {
		t.Errorf("workers add up to connected %d delivered %d; totals %d %d", connected, delivered, tot.Connected, tot.Delivered)
	}
	for _, d := range []Distribution{rep.Latency, rep.Connect} {
		if d.Count == 0 {
			continue
		}
		if !(d.MinMs > 0 && d.MinMs <= d.P50Ms && d.P50Ms <= d.P90Ms && d.P90Ms <= d.P99Ms && d.P99Ms <= d.P999Ms &&
			d.P999Ms <= d.MaxMs && d.MaxMs <= rep.Seconds*1000) {
			t.Errorf("distribution not monotonic or out of (0, duration]: %+v", d)
		}
		var n uint64
		for _, b := range d.Buckets {
			n += b.Count
		}
		if n != d.Count {
			t.Errorf("buckets hold %d values, count %d", n, d.Count)
		}
	}
	if rep.Connect.Count != tot.Connected {
		t.Errorf("connect histogram has %d values, %d connected", rep.Connect.Count, tot.Connected)
	}
	if len(rep.Series) < 2 {
		t.Errorf("series: %d samples", len(rep.Series))
	}
	if rep.Seconds <= 0 || rep.Ended.Before(rep.Started) {
		t.Errorf("times: %v..%v (%v s)", rep.Started, rep.Ended, rep.Seconds)
	}
}

func TestRunBroadcast(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.ChannelsPerConn, spec.Channels = ScenarioBroadcast, 200, 2, 5
	spec.PublishRate, spec.PayloadSize = 40, 200
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 200)
	tot := rep.Totals
	if tot.Subscribed != 200 || tot.Published == 0 || tot.Expected == 0 {
		t.Fatalf("subscribed %d published %d expected %d", tot.Subscribed, tot.Published, tot.Expected)
	}
	if tot.Delivered != tot.Expected || tot.Missing != 0 || tot.Duplicated != 0 {
		t.Errorf("delivered %d expected %d missing %d duplicated %d", tot.Delivered, tot.Expected, tot.Missing, tot.Duplicated)
	}
	if rep.Latency.Count != tot.Delivered || tot.DeliveriesPerSec <= 0 || tot.PublishesPerSec <= 0 {
		t.Errorf("latency count %d, delivered %d, rates %v %v", rep.Latency.Count, tot.Delivered, tot.DeliveriesPerSec, tot.PublishesPerSec)
	}
	// Each of 5 channels has on average 200*2/5 subscribers.
	var chExpected uint64
	for _, c := range rep.Channels {
		chExpected += c.Expected
		if c.Missing != 0 || c.Duplicated != 0 || c.Delivered != c.Expected {
			t.Errorf("channel %+v", c)
		}
	}
	if chExpected != tot.Expected || len(rep.Channels) != 5 {
		t.Errorf("channels: %+v", rep.Channels)
	}
	checkBroadcasts(t, rep)
	if rep.Workers[0].Source == rep.Workers[1].Source || rep.Workers[0].Source == "" {
		t.Errorf("sources %q %q: want distinct loopback addresses", rep.Workers[0].Source, rep.Workers[1].Source)
	}
}

func TestRunClientEvents(t *testing.T) {
	addr := startHerald(t, "--client-events")
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.Channels, spec.ClientEventRate = ScenarioClientEvents, 100, 5, 2
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 100)
	tot := rep.Totals
	if tot.Published == 0 || tot.Expected == 0 || tot.Delivered != tot.Expected || tot.Missing != 0 || tot.Duplicated != 0 {
		t.Errorf("published %d delivered %d expected %d missing %d duplicated %d",
			tot.Published, tot.Delivered, tot.Expected, tot.Missing, tot.Duplicated)
	}
}

func TestRunChurn(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.ChurnRate = ScenarioChurn, 150, 60
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 150)
	if rep.Totals.Connected < 150+30 {
		t.Errorf("connected %d: churn reopened too few", rep.Totals.Connected)
	}
}

func TestRunPresenceStorm(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.ChurnRate = ScenarioPresenceStorm, 100, 40
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 100)
	if rep.Members == 0 || rep.Totals.Connected < 100+20 || rep.Totals.Subscribed < 100 {
		t.Errorf("members %d connected %d subscribed %d", rep.Members, rep.Totals.Connected, rep.Totals.Subscribed)
	}
	ps := rep.Presence
	if ps == nil {
		t.Fatal("no presence summary")
	}
	if ps.Joins == 0 || ps.Leaves == 0 || ps.JoinsPerSec <= 0 || ps.MemberAdded == 0 || ps.MemberRemoved == 0 ||
		ps.MemberAdded+ps.MemberRemoved != rep.Members {
		t.Errorf("presence %+v, members %d", ps, rep.Members)
	}
	// Every member_added carries its join time, so each one is a latency sample.
	if d := ps.MemberLatency; d.Count != ps.MemberAdded || d.P50Ms <= 0 || d.MaxMs > rep.Seconds*1000 {
		t.Errorf("member latency %+v, member_added %d", d, ps.MemberAdded)
	}
}

func TestRunHoldZipf(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Connections, spec.ChannelsPerConn, spec.Channels, spec.Spread, spec.Kind = 200, 2, 20, SpreadZipf, KindPrivate
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 200)
	if rep.Totals.Subscribed != 200 || rep.Latency.Count != 0 || rep.Totals.Published != 0 || rep.RampSeconds <= 0 {
		t.Errorf("totals %+v ramp %v", rep.Totals, rep.RampSeconds)
	}
}

// fakeWorker joins, takes its plan, sends one snapshot, then either hangs up or
// goes silent, as a worker that dies or stalls mid-run.
func fakeWorker(t *testing.T, join string, hangUp bool, done chan<- struct{}) {
	defer close(done)
	conn, err := net.Dial("tcp", join)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	cd := newCodec(conn)
	if err := cd.send(&ctrlMsg{Type: msgHello, Version: ProtocolVersion, Hello: &hello{PID: -1}}, time.Second); err != nil {
		t.Error(err)
		return
	}
	m, err := cd.recv(10 * time.Second)
	if err != nil || m.Plan == nil {
		t.Errorf("fake worker: plan: %v %+v", err, m)
		return
	}
	n := m.Plan.Spec.Channels
	snap := &Snapshot{N: 1, Stats: newStats(), ChanSubs: make([]int64, n), ChanSent: make([]int64, n),
		ChanDelivered: make([]int64, n), ChanDups: make([]int64, n)}
	_ = cd.send(&ctrlMsg{Type: msgSnapshot, Snapshot: snap}, time.Second)
	if hangUp {
		time.Sleep(500 * time.Millisecond)
		return
	}
	// Silent until the coordinator gives up on it and closes the connection.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, err := cd.recv(0); err != nil {
			return
		}
	}
}

func TestWorkerLostDoesNotHang(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Connections, spec.Duration = 60, Duration(5*time.Second)
	c, err := NewCoordinator(CoordinatorConfig{Spec: spec, Expect: 3, JoinTimeout: 10 * time.Second,
		HeartbeatTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := make(chan struct{}), make(chan struct{})
	go fakeWorker(t, c.Addr(), true, d1)
	go fakeWorker(t, c.Addr(), false, d2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := RunWorker(context.Background(), WorkerConfig{Join: c.Addr()}); err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	start := time.Now()
	rep, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > spec.Duration.D()+8*time.Second {
		t.Errorf("coordinator took %v", took)
	}
	wg.Wait()
	<-d1
	<-d2
	states := map[string]int{}
	for _, w := range rep.Workers {
		states[w.State]++
		if w.State == stateLost && !strings.Contains(w.Error, "lost") {
			t.Errorf("lost worker's error: %q", w.Error)
		}
	}
	if states[stateLost] != 2 || states[stateOK] != 1 || rep.Totals.Errors["worker_lost"] != 2 {
		t.Errorf("states %v errors %v", states, rep.Totals.Errors)
	}
	// The real worker's share was held.
	if rep.Totals.Connected != 20 {
		t.Errorf("connected %d, want the real worker's 20", rep.Totals.Connected)
	}
}

func TestCoordinatorJoinTimeout(t *testing.T) {
	spec := testSpec("127.0.0.1:1")
	c, err := NewCoordinator(CoordinatorConfig{Spec: spec, Expect: 1, JoinTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(context.Background()); !errors.Is(err, ErrNoWorkers) {
		t.Errorf("got %v, want ErrNoWorkers", err)
	}
	// A worker of another protocol version is rejected.
	c, err = NewCoordinator(CoordinatorConfig{Spec: spec, Expect: 1, JoinTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := net.Dial("tcp", c.Addr())
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		cd := newCodec(conn)
		_ = cd.send(&ctrlMsg{Type: msgHello, Version: ProtocolVersion + 1, Hello: &hello{}}, time.Second)
		m, err := cd.recv(5 * time.Second)
		if err == nil && m.Type != msgReject {
			err = fmt.Errorf("got %q, want reject", m.Type)
		}
		done <- err
	}()
	if _, err := c.Run(context.Background()); !errors.Is(err, ErrNoWorkers) {
		t.Errorf("got %v, want ErrNoWorkers", err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestCoordinatorBehindLosesNobody slows every merge of the coordinator's run
// goroutine to 250 ms for the first 6 s, as a coordinator starved of CPU on a loaded machine: with
// 6 workers sending a snapshot a second it can merge only two thirds of them. Its
// workers keep sending, so none may be lost, and what they sent is merged exactly.
// Before the readers stamped arrivals and coalesced snapshots, liveness was judged
// on the merges, the backlog grew without bound and workers were lost.
func TestCoordinatorBehindLosesNobody(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.Ramp = ScenarioBroadcast, 150, 75
	spec.PublishRate, spec.Duration = 20, Duration(8*time.Second)
	start := time.Now()
	slowed := 0 // touched by the run goroutine only, read after Run
	rep := runCoordinator(t, spec, 6, func(cfg *CoordinatorConfig) {
		cfg.HeartbeatTimeout = 2 * time.Second // workers send every second
	}, func(c *Coordinator) {
		c.mergeHook = func() {
			if time.Since(start) < 6*time.Second { // then the stop is quick again
				slowed++
				time.Sleep(250 * time.Millisecond)
			}
		}
	})
	if slowed < 8 {
		t.Fatalf("only %d merges were slowed", slowed)
	}
	checkReport(t, rep, 150)
	if tot := rep.Totals; tot.Missing != 0 || tot.Duplicated != 0 || tot.Delivered != tot.Expected {
		t.Errorf("delivered %d expected %d missing %d duplicated %d", tot.Delivered, tot.Expected, tot.Missing, tot.Duplicated)
	}
	coalesced := 0
	for _, w := range rep.Workers {
		coalesced += w.Coalesced
	}
	if coalesced == 0 {
		t.Error("no snapshot was coalesced: the coordinator was never behind")
	}
}

// checkBroadcasts checks that every API publish of a quiet run was followed to all
// of its subscribers.
func checkBroadcasts(t *testing.T, rep *Report) {
	t.Helper()
	bs := rep.Broadcasts
	if bs == nil {
		t.Fatal("no broadcast summary")
	}
	if uint64(bs.Count) != rep.Totals.Published || bs.Complete != bs.Count || bs.Incomplete != 0 ||
		bs.Completion.Count != uint64(bs.Count) || len(bs.Items) != bs.Count {
		t.Errorf("broadcasts %+v (items %d), published %d", bs, len(bs.Items), rep.Totals.Published)
	}
	var delivered uint64
	for _, it := range bs.Items {
		if !it.Complete || it.Delivered != it.Expected || it.Expected == 0 || it.Duplicated != 0 ||
			it.CompletionMs <= 0 || it.CompletionMs > bs.Completion.MaxMs*1.001 {
			t.Errorf("broadcast %+v", it)
		}
		delivered += it.Delivered
	}
	if delivered != rep.Totals.Delivered {
		t.Errorf("broadcasts delivered %d, totals %d", delivered, rep.Totals.Delivered)
	}
	if rep.Totals.LostConnections != 0 {
		t.Errorf("lost connections %d", rep.Totals.LostConnections)
	}
}

// TestRunPublishSchedule publishes on a schedule (3 at once-then-300 ms, 2 more
// 600 ms apart) to one channel that every connection holds, and follows each
// publish to its last delivery.
func TestRunPublishSchedule(t *testing.T) {
	addr := startHerald(t)
	spec := testSpec(addr)
	spec.Scenario, spec.Connections, spec.Spread, spec.Channels = ScenarioBroadcast, 120, SpreadOne, 1
	spec.PublishSchedule = "3x300ms,2x600ms"
	rep := runCoordinator(t, spec, 3, nil)
	checkReport(t, rep, 120)
	if rep.Totals.Published != 5 || rep.Totals.Delivered != 5*120 || rep.Totals.Missing != 0 {
		t.Fatalf("published %d delivered %d missing %d", rep.Totals.Published, rep.Totals.Delivered, rep.Totals.Missing)
	}
	checkBroadcasts(t, rep)
	it := rep.Broadcasts.Items
	// Each publish exactly: every connection holds the channel.
	for i, b := range it {
		if b.Expected != 120 || b.Delivered != 120 || b.Duplicated != 0 || !b.Complete || b.Channel != "loadgen-0" {
			t.Errorf("publish %d: %+v, want 120 of 120 delivered, complete", i, b)
		}
		if i > 0 && b.Seq <= it[i-1].Seq {
			t.Errorf("publish %d: seq %d after %d", i, b.Seq, it[i-1].Seq)
		}
	}
	if rep.Completion != nil {
		t.Errorf("completion %+v in a run that neither counts nor awaits its publishes", rep.Completion)
	}
	// The schedule: offsets 0, 300, 600, 1200, 1800 ms from the first (no upper
	// bound: a loaded machine only delays them; the first may be late by a tick).
	for i, ms := range []int{0, 300, 600, 1200, 1800} {
		want := time.Duration(ms)*time.Millisecond - 100*time.Millisecond
		if got := it[i].Published.Sub(it[0].Published); got < want {
			t.Errorf("publish %d at +%v, before +%v", i, got, want)
		}
	}
}
