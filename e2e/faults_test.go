package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis sick rather than down (issue 9, "Faults"): what publishers and subscribers see,
// and how long until normal. Two instances, each three nodes reaching their own Redis
// through toxiproxy (faults_client_test.go), run in parallel with the rest:
//
//	TestFaultsToxics  100 ms of latency; a 64 KB/s bandwidth limit under a steady
//	                  publish load; connections reset in the middle of a publish
//	                  burst; a blackhole (toxiproxy's timeout toxic)
//	TestFaultsStops   a node frozen (SIGSTOP) for 20 s with clients on it; then
//	                  SIGTERM of a node whose Redis is blackholed, and of one whose
//	                  Redis is frozen (SIGSTOP)
//
// Each test prints what it measured ("measured: …" lines in the test log, -v) and
// asserts bounds wide enough for a shared 2-core machine.

// Bounds.
const (
	faultNormalAPI     = 250 * time.Millisecond // an API publish answers within this when all is well
	faultNormalDeliver = 250 * time.Millisecond // and reaches every subscriber within this
	faultRecover       = 5 * time.Second        // back to normal within this of the fault's end
	fault503Within     = 2 * time.Second        // a refused publish answers within this
	// A SIGTERM'd node logs "stopped" within --shutdown-timeout plus faultStopMargin,
	// and its process has exited faultExitMargin after the deadline: the race detector
	// sleeps 1 s before a race-built binary exits (GORACE atexit_sleep_ms).
	faultStopMargin = time.Second
	faultExitMargin = 2 * time.Second
)

// TestFaultsToxics puts toxics between three nodes and their Redis, one after another.
func TestFaultsToxics(t *testing.T) {
	t.Parallel()
	c := startFaultCluster(t, "tox")
	t.Run("latency", func(t *testing.T) { testFaultLatency(t, c) })
	t.Run("bandwidth", func(t *testing.T) { testFaultBandwidth(t, c) })
	t.Run("reset", func(t *testing.T) { testFaultReset(t, c) })
	t.Run("blackhole", func(t *testing.T) { testFaultBlackhole(t, c) })
	c.stop(t)
}

// TestFaultsStops freezes a node, then stops two nodes while their Redis is away.
func TestFaultsStops(t *testing.T) {
	t.Parallel()
	c := startFaultCluster(t, "stops")
	t.Run("node_frozen", func(t *testing.T) { testFaultNodeFrozen(t, c) })
	t.Run("shutdown_blackholed", func(t *testing.T) { testFaultShutdown(t, c, 3, "blackholed") })
	t.Run("shutdown_redis_frozen", func(t *testing.T) { testFaultShutdown(t, c, 2, "redis frozen") })
	c.stop(t)
}

// --- latency -------------------------------------------------------------------------------

// testFaultLatency: 100 ms on everything Redis sends to every node, for 3 s, under a
// steady publish on three channels (one through each node). Publishes succeed, slower;
// every event reaches every node once and in order; the broker stays up; when the
// latency goes, everything is back to normal within seconds.
func testFaultLatency(t *testing.T, c *faultCluster) {
	const latency = 100 * time.Millisecond
	defer c.clearToxics(t, 1, 2, 3)
	x := c.cross(t, "latency", 64)
	w := c.watch(t)
	begin := time.Now()
	x.start(100 * time.Millisecond)
	defer x.stop()
	time.Sleep(1500 * time.Millisecond)

	addAt := time.Now()
	c.addToxic(t, "latency", map[string]any{"latency": latency.Milliseconds()}, []string{"downstream"}, 1, 2, 3)
	time.Sleep(3 * time.Second)
	removeAt := time.Now()
	c.clearToxics(t, 1, 2, 3)
	// Normal: faster than the latency that was there.
	rec := x.waitNormal(t, removeAt, latency*9/10, latency*9/10, time.Second, 2*faultRecover)
	x.stop()
	x.settle(t, 5*time.Second)
	end := time.Now()
	w.end()

	before := x.check(begin, addAt)
	during := x.check(addAt.Add(200*time.Millisecond), removeAt.Add(-200*time.Millisecond))
	after := x.check(removeAt.Add(rec), end)
	all := x.check(begin, end)
	slow, _ := x.firstAnswer(addAt, func(p fpub) bool { return p.took >= latency })
	t.Logf("measured: latency: before: %v", before)
	t.Logf("measured: latency: with %v on every node's Redis replies and messages: %v", latency, during)
	t.Logf("measured: latency: detect (first answer that took >= %v): %s after the toxic; recover (publishes and deliveries under %v from then on, for 1 s): %s after its removal",
		latency, sinceOr(slow, !slow.IsZero(), addAt), latency*9/10, fms(rec))
	t.Logf("measured: latency: after: %v", after)

	if all.ok != all.published || all.lost+all.phantom+all.dups+all.disorder > 0 {
		t.Errorf("with %v of latency every publish must succeed and reach every node once, in order: %v\n%s", latency, all, all.problems("lost", "phantom", "order"))
	}
	if p50 := fpercentile(during.apiOK, 0.5); p50 < latency || p50 > time.Second {
		t.Errorf("API publish p50 %v with the latency, want between %v and 1 s (the toxic was not in the path, or it costs more than a round trip)", p50, latency)
	}
	if p50 := fpercentile(during.delays, 0.5); p50 < latency {
		t.Errorf("cross-node delivery p50 %v with the latency, want >= %v", p50, latency)
	}
	for n := 1; n <= clusterNodes; n++ {
		if w.troubled(n, begin, end) {
			t.Errorf("node %d: the broker went down or reconnected under %v of latency", n, latency)
		}
	}
	if rec > faultRecover {
		t.Errorf("back to normal %v after the latency went, want < %v", rec, faultRecover)
	}
}

// --- bandwidth -----------------------------------------------------------------------------

// testFaultBandwidth: 64 KB/s each way on every Redis connection, for 8 s, while three
// channels get a 6 KB event every 100 ms each: each node's subscriber connection is
// offered about 180 KB/s, so its backlog (and every delivery's delay) grows by about
// 2 s a second until a probe, which shares that connection, is not back within the 3 s
// probe timeout (about 6 s in): the node calls its broker down, drops the connection
// with its backlog and makes a new one. Publishers get an answer within 2 s whatever
// happens (200, or 503 while a node calls its broker down); subscribers get each event
// at most once and in order, and lose events only on a node whose broker went down or
// reconnected.
func testFaultBandwidth(t *testing.T, c *faultCluster) {
	const rate = 64 // KB/s
	defer c.clearToxics(t, 1, 2, 3)
	x := c.cross(t, "bandwidth", 6000)
	w := c.watch(t)
	begin := time.Now()
	x.start(100 * time.Millisecond)
	defer x.stop()
	time.Sleep(time.Second)

	addAt := time.Now()
	c.addToxic(t, "bandwidth", map[string]any{"rate": rate}, nil, 1, 2, 3)
	time.Sleep(8 * time.Second)
	removeAt := time.Now()
	c.clearToxics(t, 1, 2, 3)
	rec := x.waitNormal(t, removeAt, faultNormalAPI, faultNormalDeliver, time.Second, 3*faultRecover)
	x.stop()
	x.settle(t, 5*time.Second)
	end := time.Now()
	w.end()

	before := x.check(begin, addAt)
	during := x.check(addAt, removeAt)
	all := x.check(begin, end)
	refused, _ := x.firstAnswer(addAt, func(p fpub) bool { return p.status != 200 })
	t.Logf("measured: bandwidth: before: %v", before)
	t.Logf("measured: bandwidth: %d KB/s each way for %s: %v", rate, fms(removeAt.Sub(addAt)), during)
	t.Logf("measured: bandwidth: by publish time, from the limit on: %s", x.series(addAt, removeAt.Add(rec+time.Second), time.Second))
	var downs []string
	for n := 1; n <= clusterNodes; n++ {
		d, dok := w.down(n, addAt)
		r, rok := w.reconnected(n, addAt)
		u, uok := w.upAgain(n, d)
		downs = append(downs, fmt.Sprintf("node %d: broker down at +%s, reconnected at +%s, up again at +%s",
			n, sinceOr(d, dok, addAt), sinceOr(r, rok, addAt), sinceOr(u, dok && uok, addAt)))
	}
	t.Logf("measured: bandwidth: %s", strings.Join(downs, "; "))
	t.Logf("measured: bandwidth: detect: the first 503 %s after the limit (the nodes' probes above); recover: publishes and deliveries normal %s after its removal",
		sinceOr(refused, !refused.IsZero(), addAt), fms(rec))
	if p := all.problems("lost", "phantom"); p != "" {
		t.Logf("bandwidth: first problems: %s", p)
	}
	for _, p := range all.phantoms {
		t.Logf("observed: bandwidth: delivered though refused: %s, published at %+.3fs from the fault", p.what, p.start.Sub(addAt).Seconds())
	}

	if all.dups+all.disorder > 0 {
		t.Errorf("an event delivered twice or out of order: %v\n%s", all, all.problems("order"))
	}
	for k := range all.answers {
		if k != "200" && k != "503" {
			t.Errorf("publishes answered %v: want 200 or 503 only", all.answers)
		}
	}
	if all.slowestAnswer > fault503Within {
		t.Errorf("a publish took %v to answer, want < %v", all.slowestAnswer, fault503Within)
	}
	for n, lost := range all.lostAt {
		if !w.troubled(n, begin, end) {
			t.Errorf("node %d's subscribers lost %d events answered 200 though its broker never went down nor reconnected", n, lost)
		}
	}
	// A publish refused because it timed out may still have reached Redis through the
	// slow link, and be delivered by it: only while the limit was there.
	for _, p := range phantomsOutside(all, addAt.Add(-fault503Within), removeAt) {
		t.Errorf("delivered though its publish was refused, with no fault under way: %s", p)
	}
	if rec > faultRecover {
		t.Errorf("back to normal %v after the limit went, want < %v", rec, faultRecover)
	}
}

// --- reset ---------------------------------------------------------------------------------

// testFaultReset: in the middle of a publish burst on three channels (one publish every
// 5 ms on each, about 600 a second in all), the Redis connections are reset: toxiproxy's reset_peer, held 1.5 s (longer than the
// probe interval, so that every subscriber connection carries data meanwhile), closes
// every connection that carries data (the ones open before it with a FIN: toxiproxy
// sets SO_LINGER 0 only on connections made while it is in place, and those get an
// RST). No event is delivered twice or out of order, and none whose publish was
// refused is delivered. Redis pub/sub is at most once (pubsub/doc.go): an event
// published while a node's subscriber connection is gone is lost for that node's
// subscribers, so losses are counted, and allowed only at a node between the reset
// and the moment it is seen resubscribed. Every node reconnects.
func testFaultReset(t *testing.T, c *faultCluster) {
	const hold = 1500 * time.Millisecond
	defer c.clearToxics(t, 1, 2, 3)
	x := c.cross(t, "reset", 64)
	w := c.watch(t)
	begin := time.Now()
	x.start(5 * time.Millisecond)
	defer x.stop()
	faultWait(t, 10*time.Second, "100 publishes on every stream", func() (bool, string) {
		for _, s := range x.streams {
			if s.count() < 100 {
				return false, fmt.Sprintf("%s: %d", s.channel, s.count())
			}
		}
		return true, ""
	})
	addAt := time.Now()
	c.addToxic(t, "reset_peer", map[string]any{"timeout": 0}, nil, 1, 2, 3)
	time.Sleep(hold)
	removeAt := time.Now()
	c.clearToxics(t, 1, 2, 3)
	rec := x.waitNormal(t, removeAt, faultNormalAPI, faultNormalDeliver, time.Second, 3*faultRecover)
	for n := 1; n <= clusterNodes; n++ {
		faultWait(t, 10*time.Second, fmt.Sprintf("node %d: broker up", n), func() (bool, string) {
			s, err := c.stats(n)
			return err == nil && s.Node.Broker.Up, fmt.Sprint(err)
		})
	}
	x.stop()
	x.settle(t, 5*time.Second)
	end := time.Now()
	w.end()

	all := x.check(begin, end)
	burst := x.check(addAt.Add(-time.Second), removeAt.Add(rec))
	refused, _ := x.firstAnswer(addAt, func(p fpub) bool { return p.status != 200 })
	var detect []string
	settled := make([]time.Time, clusterNodes+1) // when node n was seen up after the toxic went
	for n := 1; n <= clusterNodes; n++ {
		d, dok := w.down(n, addAt)
		r, ok := w.reconnected(n, addAt)
		u, uok := w.upAgain(n, removeAt)
		settled[n] = u
		detect = append(detect, fmt.Sprintf("node %d: down at +%s, a reconnection counted at +%s, up at +%s",
			n, sinceOr(d, dok, addAt), sinceOr(r, ok, addAt), sinceOr(u, uok, addAt)))
		if !ok {
			t.Errorf("node %d: no reconnection counted after the reset", n)
		}
		if !uok {
			t.Errorf("node %d: broker not seen up after the reset", n)
		}
	}
	t.Logf("measured: reset: burst from 1 s before the reset to recovery: %v; lost by subscriber node %v", burst, burst.lostAt)
	t.Logf("measured: reset: by publish time: %s", x.series(addAt.Add(-time.Second), removeAt.Add(rec+time.Second), 250*time.Millisecond))
	t.Logf("measured: reset: whole run: %v", all)
	t.Logf("measured: reset: detect: first refused publish at +%s; %s", sinceOr(refused, !refused.IsZero(), addAt), strings.Join(detect, "; "))
	t.Logf("measured: reset: recover: publishes and deliveries normal %s after the toxic went (%s after it came)", fms(rec), fms(removeAt.Add(rec).Sub(addAt)))
	if p := all.problems("lost", "phantom"); p != "" {
		t.Logf("reset: first problems: %s", p)
	}
	for _, p := range all.phantoms {
		t.Logf("observed: reset: delivered though refused: %s, published at %+.3fs from the fault", p.what, p.start.Sub(addAt).Seconds())
	}

	if all.dups+all.disorder > 0 {
		t.Errorf("an event delivered twice or out of order: %v\n%s", all, all.problems("order"))
	}
	for _, l := range all.lostPairs {
		if l.start.Before(addAt.Add(-100*time.Millisecond)) || l.start.After(settled[l.node]) {
			t.Errorf("lost %s, published at +%s, outside node %d's outage (the reset to +%s)", l.what, fms(l.start.Sub(addAt)), l.node, fms(settled[l.node].Sub(addAt)))
		}
	}
	// The reset drops what it gets (nothing reaches Redis while it is there), so only a
	// publish under way when it came may have reached Redis and lost its answer.
	for _, p := range phantomsOutside(all, addAt.Add(-fault503Within), addAt.Add(100*time.Millisecond)) {
		t.Errorf("delivered though its publish was refused, and did not start before the reset: %s", p)
	}
	for k := range all.answers {
		if k != "200" && k != "503" {
			t.Errorf("publishes answered %v: want 200 or 503 only", all.answers)
		}
	}
	if rec > faultRecover {
		t.Errorf("back to normal %v after the reset, want < %v", rec, faultRecover)
	}
}

// --- blackhole -----------------------------------------------------------------------------

// testFaultBlackhole: toxiproxy's timeout toxic with no timeout on every Redis
// connection, for 6 s (twice the lease): nothing gets through either way and nothing
// is closed. API publishes answer 503 within 2 s, connections stay and pings are
// answered, /readyz stays 200, herald_broker_up goes 0 within the probe timeout plus
// its interval. Removing the toxic closes the connections it held (toxiproxy does so),
// and everything recovers: cross-node delivery, presence lists, subscription counts.
func testFaultBlackhole(t *testing.T, c *faultCluster) {
	const outage = 6 * time.Second
	defer c.clearToxics(t, 1, 2, 3)
	x := c.cross(t, "blackhole", 64)
	room := "presence-" + uniqTag("blackhole")
	var ids []string
	for n, f := range x.clients {
		id := fmt.Sprintf("bh-u%d", n+1)
		ids = append(ids, id)
		if err := f.subscribe(c, room, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range x.clients {
		faultWait(t, 5*time.Second, f.name+" lists every member", func() (bool, string) {
			m := f.members(room)
			return slices.Equal(m, ids), fmt.Sprint(m)
		})
	}
	w := c.watch(t)
	begin := time.Now()
	x.start(200 * time.Millisecond)
	defer x.stop()
	time.Sleep(time.Second)

	addAt := time.Now()
	c.addToxic(t, "timeout", map[string]any{"timeout": 0}, nil, 1, 2, 3)
	var downIn []time.Duration
	for n := 1; n <= clusterNodes; n++ {
		faultWait(t, faultProbeDown+3*time.Second, fmt.Sprintf("node %d: herald_broker_up 0", n), func() (bool, string) {
			v, err := c.metric(n, "herald_broker_up")
			return err == nil && v == 0, fmt.Sprint(v, err)
		})
		downIn = append(downIn, time.Since(addAt))
	}
	for n := 1; n <= clusterNodes; n++ {
		if code, err := c.readyz(n); err != nil || code != 200 {
			t.Errorf("node %d: /readyz answered %d %v during the blackhole, want 200", n, code, err)
		}
	}
	var pings []time.Duration
	for time.Since(addAt) < outage {
		for n := 1; n <= clusterNodes; n++ {
			if code, err := c.readyz(n); err != nil || code != 200 {
				t.Errorf("node %d: /readyz answered %d %v during the blackhole, want 200", n, code, err)
			}
		}
		for _, f := range x.clients {
			start := time.Now()
			if err := f.ping(fault503Within); err != nil {
				t.Errorf("ping during the blackhole: %v", err)
			}
			pings = append(pings, time.Since(start))
		}
		time.Sleep(300 * time.Millisecond)
	}
	removeAt := time.Now()
	c.clearToxics(t, 1, 2, 3)

	var conds []fcond
	for n := 1; n <= clusterNodes; n++ {
		conds = append(conds, fcond{fmt.Sprintf("node %d: herald_broker_up 1", n), func() (bool, string) {
			v, err := c.metric(n, "herald_broker_up")
			return err == nil && v == 1, fmt.Sprint(v, err)
		}})
	}
	for n := 1; n <= clusterNodes; n++ {
		conds = append(conds, fcond{fmt.Sprintf("/users through node %d", n), func() (bool, string) {
			u, err := c.users(n, room)
			return err == nil && slices.Equal(u, ids), fmt.Sprint(u, err)
		}})
	}
	for _, f := range x.clients {
		conds = append(conds, fcond{f.name + "'s member list", func() (bool, string) {
			m := f.members(room)
			return slices.Equal(m, ids), fmt.Sprintf("%v (member events: %s)", m, f.memberEvents(room, 0))
		}})
	}
	conds = append(conds, fcond{"subscription counts", func() (bool, string) {
		for n := 1; n <= clusterNodes; n++ {
			for _, s := range x.streams {
				if v, err := c.subscriptionCount(n, s.channel); err != nil || v != clusterNodes {
					return false, fmt.Sprintf("node %d: %s: %d %v", n, s.channel, v, err)
				}
			}
		}
		return true, ""
	}})
	took := faultWaitAll(t, faultLease+faultRecover, conds...)
	upIn, usersIn, listsIn, countsIn := took[0:3], took[3:6], took[6:9], took[9]
	rec := x.waitNormal(t, removeAt, faultNormalAPI, faultNormalDeliver, time.Second, 3*faultRecover)
	x.stop()
	x.settle(t, 5*time.Second)
	end := time.Now()
	w.end()
	// Still right a while later: a node that finds itself taken for dead re-adds its
	// users after the others announced their departure.
	time.Sleep(time.Second)
	var final []fcond
	for n := 1; n <= clusterNodes; n++ {
		final = append(final, fcond{fmt.Sprintf("/users through node %d", n), func() (bool, string) {
			u, err := c.users(n, room)
			return err == nil && slices.Equal(u, ids), fmt.Sprint(u, err)
		}})
	}
	for _, f := range x.clients {
		final = append(final, fcond{f.name + "'s member list", func() (bool, string) {
			m := f.members(room)
			return slices.Equal(m, ids), fmt.Sprintf("%v (member events: %s)", m, f.memberEvents(room, 0))
		}})
	}
	faultWaitAll(t, faultRecover, final...)
	var settledLists time.Duration // the last member event after the removal
	for _, f := range x.clients {
		if at := f.lastMemberEvent(room); at.After(removeAt) {
			settledLists = max(settledLists, at.Sub(removeAt))
		}
	}

	during := x.check(addAt.Add(100*time.Millisecond), removeAt)
	all := x.check(begin, end)
	var refusedFast []time.Duration // once the node knew
	firstDown := addAt.Add(downIn[len(downIn)-1])
	for _, s := range x.streams {
		for _, p := range s.snapshot() {
			if p.start.After(firstDown) && p.start.Before(removeAt) {
				refusedFast = append(refusedFast, p.took)
			}
		}
	}
	t.Logf("measured: blackhole: %s with nothing through: %v", fms(outage), during)
	t.Logf("measured: blackhole: detect: herald_broker_up 0 on nodes 1, 2, 3 after %s, %s, %s; 503s once every node knew: p50 %s max %s",
		fms(downIn[0]), fms(downIn[1]), fms(downIn[2]), fms(fpercentile(refusedFast, 0.5)), fms(fpercentile(refusedFast, 1)))
	t.Logf("measured: blackhole: pings during it: %d, p50 %s max %s", len(pings), fms(fpercentile(pings, 0.5)), fms(fpercentile(pings, 1)))
	t.Logf("measured: blackhole: recover after removal: publishes and cross-node deliveries normal %s; herald_broker_up 1 on nodes 1, 2, 3 after %s, %s, %s; /users right through them %s, %s, %s; clients' member lists %s, %s, %s; subscription counts %s",
		fms(rec), fms(upIn[0]), fms(upIn[1]), fms(upIn[2]), fms(usersIn[0]), fms(usersIn[1]), fms(usersIn[2]), fms(listsIn[0]), fms(listsIn[1]), fms(listsIn[2]), fms(countsIn))
	t.Logf("measured: blackhole: the clients' member lists stayed right from %s after the removal (the last member event; a node the others took for dead announces its users again)", fms(max(settledLists, listsIn[0], listsIn[1], listsIn[2])))
	t.Logf("measured: blackhole: by publish time: %s", x.series(addAt.Add(-time.Second), removeAt.Add(rec+time.Second), 500*time.Millisecond))
	for _, f := range x.clients {
		t.Logf("observed: blackhole: %s got %s", f.name, f.memberEvents(room, 0))
	}
	for _, p := range all.phantoms {
		t.Logf("observed: blackhole: delivered though refused: %s, published at %+.3fs from the fault", p.what, p.start.Sub(addAt).Seconds())
	}

	if during.ok > 0 || during.answers["503"] != during.published {
		t.Errorf("publishes during the blackhole answered %v, want 503 only", during.answers)
	}
	if during.slowestAnswer > fault503Within {
		t.Errorf("a publish during the blackhole took %v to be refused, want < %v", during.slowestAnswer, fault503Within)
	}
	for n, d := range downIn {
		if d > faultProbeDown+time.Second {
			t.Errorf("node %d: herald_broker_up 0 only %v into the blackhole, want within %v (probe timeout + interval) + 1 s", n+1, d, faultProbeDown)
		}
	}
	if all.dups+all.disorder > 0 {
		t.Errorf("events delivered twice or out of order: %v\n%s", all, all.problems("order"))
	}
	// Nothing gets through the blackhole: only a publish under way when it came may
	// have reached Redis and lost its answer.
	for _, p := range phantomsOutside(all, addAt.Add(-fault503Within), addAt.Add(100*time.Millisecond)) {
		t.Errorf("delivered though its publish was refused, and did not start before the blackhole: %s", p)
	}
	// Events answered 200 are lost only around the blackhole: those on their way to a
	// subscriber when it began.
	if early := x.check(begin, addAt.Add(-time.Second)); early.lost > 0 {
		t.Errorf("events answered 200 well before the blackhole lost: %v", early)
	}
	if late := x.check(removeAt.Add(rec), end); late.lost > 0 {
		t.Errorf("events answered 200 after the recovery lost: %v", late)
	}
	for _, f := range x.clients {
		if err := f.ended(); err != nil {
			t.Errorf("%s: connection ended: %v", f.name, err)
		}
	}
	if rec > faultRecover {
		t.Errorf("cross-node delivery back to normal %v after the blackhole, want < %v", rec, faultRecover)
	}
}

// --- a node frozen --------------------------------------------------------------------------

// testFaultNodeFrozen: node 2 is stopped (SIGSTOP) for 20 s with three clients on it:
// users a and b, and one connection of user "both", whose other connection is on node 1.
// Within the lease plus a few seconds the other nodes drop a and b from presence (not
// "both") and node 2's subscribers from the counts, and keep delivering between
// themselves. After SIGCONT node 2's clients recover or reconnect (as pusher-js
// would), and presence, counts and delivery are right again on every node.
func testFaultNodeFrozen(t *testing.T, c *faultCluster) {
	const freeze = 20 * time.Second
	tag := uniqTag("frozen")
	room, pub := "presence-"+tag, tag+"-pub"
	type member struct {
		user string
		node int
		f    *fclient
	}
	members := []*member{{"fz-w1", 1, nil}, {"fz-w3", 3, nil}, {"fz-a", 2, nil}, {"fz-b", 2, nil}, {"fz-both", 1, nil}, {"fz-both", 2, nil}}
	join := func(m *member) error {
		f, err := c.dialClient(fmt.Sprintf("%s@%d", m.user, m.node), m.node)
		if err != nil {
			return err
		}
		t.Cleanup(f.close)
		m.f = f
		if err := f.subscribe(c, room, m.user); err != nil {
			return err
		}
		return f.subscribe(c, pub, "")
	}
	for _, m := range members {
		if err := join(m); err != nil {
			t.Fatal(err)
		}
	}
	all := []string{"fz-a", "fz-b", "fz-both", "fz-w1", "fz-w3"}
	without := []string{"fz-both", "fz-w1", "fz-w3"}
	listsRight := func(nodes []int, want []string, subs int) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range nodes {
				u, err := c.users(n, room)
				if err != nil || !slices.Equal(u, want) {
					return false, fmt.Sprintf("/users through node %d: %v %v", n, u, err)
				}
				v, err := c.subscriptionCount(n, pub)
				if err != nil || v != subs {
					return false, fmt.Sprintf("subscription_count through node %d: %d %v", n, v, err)
				}
			}
			return true, ""
		}
	}
	faultWait(t, 5*time.Second, "presence and counts before the freeze", listsRight([]int{1, 2, 3}, all, len(members)))
	w1, w3 := members[0].f, members[1].f
	marks := map[*fclient]int{w1: w1.mark(), w3: w3.mark()}
	seq := 0
	// crosses publishes through node `from` until every client in `to` got one.
	crosses := func(from int, to []*fclient, within time.Duration) time.Duration {
		start := time.Now()
		for {
			seq++
			id := fmt.Sprintf("probe-%d", seq)
			status, _, err := c.publish(t.Context(), from, pub, "probe", id)
			deadline := time.Now().Add(500 * time.Millisecond)
			got := 0
			for _, f := range to {
				if _, _, err := f.waitFor(time.Until(deadline), 0, func(e fevent) bool { return e.Channel == pub && e.data == id }); err == nil {
					got++
				}
			}
			if got == len(to) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("events published through node %d did not reach %d clients within %v (last publish: %d %v)", from, len(to), within, status, err)
			}
		}
	}

	if err := c.freezeNode(2); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	defer func() { _ = c.thawNode(2) }()
	removedIn := map[string]time.Duration{}
	for _, f := range []*fclient{w1, w3} {
		for _, id := range []string{"fz-a", "fz-b"} {
			if _, _, err := f.waitFor(faultLease+5*time.Second-time.Since(t0), marks[f], func(e fevent) bool {
				return e.Channel == room && e.Event == "pusher_internal:member_removed" && strings.Contains(e.data, `"`+id+`"`)
			}); err != nil {
				t.Fatalf("member_removed %s after node 2 froze: %v", id, err)
			}
			removedIn[f.name+" "+id] = time.Since(t0)
		}
	}
	faultWait(t, faultLease+5*time.Second, "nodes 1 and 3 without node 2's users and subscribers", listsRight([]int{1, 3}, without, 3))
	gone := time.Since(t0)
	cross13 := crosses(1, []*fclient{w3}, 5*time.Second)
	cross31 := crosses(3, []*fclient{w1}, 5*time.Second)
	// Events for node 2's clients published while it is frozen: counted below.
	frozenSeq := seq + 1
	for range 5 {
		crosses(1, []*fclient{w3}, 5*time.Second)
	}
	lastFrozen := seq
	for _, f := range []*fclient{w1, w3} {
		if n := strings.Count(f.memberEvents(room, marks[f]), "removed fz-both"); n > 0 {
			t.Errorf("%s: member_removed for fz-both, still connected through node 1", f.name)
		}
	}
	time.Sleep(freeze - time.Since(t0))
	if err := c.thawNode(2); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	t.Logf("faults: node 2 thawed after %s", fms(upAt.Sub(t0)))

	// Node 2's clients: still connected, or closed and connected again as pusher-js
	// would (to node 2, which pusher-js's next attempt would reach).
	var reconnected []string
	recovered := faultWait(t, faultLease+8*time.Second, "presence, counts and clients right again on every node", func() (bool, string) {
		for _, m := range members {
			if err := m.f.ended(); err != nil {
				code := m.f.closeCode()
				reconnected = append(reconnected, fmt.Sprintf("%s (closed %d: %v)", m.f.name, code, err))
				if code >= 4000 && code < 4100 {
					t.Errorf("%s closed with %d: pusher-js would not reconnect", m.f.name, code)
				}
				if err := join(m); err != nil {
					return false, err.Error()
				}
			}
		}
		if ok, why := listsRight([]int{1, 2, 3}, all, len(members))(); !ok {
			return false, why
		}
		for _, m := range members {
			if got := m.f.members(room); !slices.Equal(got, all) {
				return false, fmt.Sprintf("%s lists %v (%s)", m.f.name, got, m.f.memberEvents(room, 0))
			}
		}
		return true, ""
	})
	var everyone []*fclient
	for _, m := range members {
		everyone = append(everyone, m.f)
	}
	var crossIn []string
	for _, from := range []int{1, 2, 3} {
		crossIn = append(crossIn, fms(crosses(from, everyone, 2*faultRecover)))
	}
	back := time.Since(upAt)
	var frozenGot []string
	for _, m := range members {
		if m.node != 2 {
			continue
		}
		n := 0
		for s := frozenSeq; s <= lastFrozen; s++ {
			id := fmt.Sprintf("probe-%d", s)
			if _, _, err := m.f.waitFor(0, 0, func(e fevent) bool { return e.Channel == pub && e.data == id }); err == nil {
				n++
			}
		}
		frozenGot = append(frozenGot, fmt.Sprintf("%s %d/%d", m.f.name, n, lastFrozen-frozenSeq+1))
	}

	t.Logf("measured: node frozen: member_removed at the other nodes after %v; /users and subscription_count without node 2's share on nodes 1 and 3 after %s; nodes 1 ↔ 3 deliver while it is frozen (%s, %s)",
		removedIn, fms(gone), fms(cross13), fms(cross31))
	t.Logf("measured: node frozen %s: after SIGCONT presence, counts and every client's member list right on every node in %s; events cross from nodes 1, 2, 3 to every client (%s); all done %s after SIGCONT",
		fms(upAt.Sub(t0)), fms(recovered), strings.Join(crossIn, ", "), fms(back))
	t.Logf("observed: node frozen: events published while node 2 was frozen that its clients got after it resumed: %s; clients that had to reconnect: %v",
		strings.Join(frozenGot, ", "), reconnected)
	for _, m := range members {
		t.Logf("observed: node frozen: %s got %s", m.f.name, m.f.memberEvents(room, 0))
	}
	for k, d := range removedIn {
		if d > faultLease+3*time.Second {
			t.Errorf("member_removed %s %v after the freeze, want within the lease + 3 s", k, d)
		}
	}
	if recovered > faultLease+5*time.Second {
		t.Errorf("presence and counts right again %v after SIGCONT, want within the lease + 5 s", recovered)
	}
}

// --- shutdown without Redis -------------------------------------------------------------------

// testFaultShutdown: node n has four presence users, who also subscribe to a public
// channel; its Redis is made unreachable (how: "blackholed", its proxy's timeout toxic;
// "redis frozen", the redis-server stopped with SIGSTOP, which every node shares), and a
// second later it gets SIGTERM. It closes its clients with 4200, stops within
// --shutdown-timeout plus a margin and exits with status 0; node 1 removes its users and
// its subscriptions once its lease ran out and Redis is back.
//
// With Redis frozen, node 1's own lease runs out too, and a sweep that node n sent
// before it stopped (it timed out, but Redis runs it when it wakes up) claims node 1's
// old name for node n, which is gone. Node 1's next sweep takes that claim over (its
// claimer has no live name) and cleans the old name, so node 1's subscriptions count
// once again within a lease, not after the 30 s claim TTL.
func testFaultShutdown(t *testing.T, c *faultCluster, n int, how string) {
	tag := uniqTag(fmt.Sprintf("stop%d", n))
	room, pub := "presence-"+tag, tag+"-pub"
	watcher, err := c.dialClient("watcher@1", 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watcher.close)
	for _, ch := range []string{room, pub} {
		user := ""
		if ch == room {
			user = "watcher"
		}
		if err := watcher.subscribe(c, ch, user); err != nil {
			t.Fatal(err)
		}
	}
	var victims []*fclient
	var ids []string
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("v%d-%d", n, i)
		f, err := c.dialClient(id+fmt.Sprintf("@%d", n), n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.close)
		if err := f.subscribe(c, room, id); err != nil {
			t.Fatal(err)
		}
		if err := f.subscribe(c, pub, ""); err != nil {
			t.Fatal(err)
		}
		victims = append(victims, f)
		ids = append(ids, id)
	}
	everyone := append(slices.Clone(ids), "watcher")
	slices.Sort(everyone)
	faultWait(t, 5*time.Second, "presence and counts before the stop", func() (bool, string) {
		u, err := c.users(1, room)
		v, err2 := c.subscriptionCount(1, pub)
		return slices.Equal(u, everyone) && v == 5, fmt.Sprint(u, err, v, err2)
	})
	mark := watcher.mark()

	cutAt := time.Now()
	switch how {
	case "blackholed":
		c.addToxic(t, "timeout", map[string]any{"timeout": 0}, nil, n)
		defer c.clearToxics(t, n)
	case "redis frozen":
		c.freezeRedis()
		defer c.thawRedis()
	}
	time.Sleep(time.Second)
	h := c.nodes[n-1]
	termAt := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.exited:
	case <-time.After(stopTimeout):
		t.Fatalf("node %d did not exit within %v of SIGTERM", n, stopTimeout)
	}
	took := time.Since(termAt)
	h.stop(t) // exit status 0, no race report
	stopped, err := stoppedAt(h)
	if err != nil {
		t.Error(err)
	}
	var codes []int
	for _, f := range victims {
		<-f.done
		codes = append(codes, f.closeCode())
	}
	switch how {
	case "blackholed":
		c.clearToxics(t, n)
	case "redis frozen":
		c.thawRedis()
	}
	backAt := time.Now()

	var count int
	removed := faultWait(t, faultLease+5*time.Second, fmt.Sprintf("node 1 without node %d's users and subscribers", n), func() (bool, string) {
		u, err := c.users(1, room)
		v, err2 := c.subscriptionCount(1, pub)
		count = v
		return slices.Equal(u, []string{"watcher"}) && v == 1, fmt.Sprint(u, err, v, err2)
	})
	var lastRemoved time.Time // when the watcher got the last member_removed
	for _, id := range ids {
		_, ev, err := watcher.waitFor(faultRecover, mark, func(e fevent) bool {
			return e.Channel == room && e.Event == "pusher_internal:member_removed" && strings.Contains(e.data, `"`+id+`"`)
		})
		if err != nil {
			t.Errorf("watcher: member_removed %s: %v", id, err)
		}
		if ev.at.After(lastRemoved) {
			lastRemoved = ev.at
		}
	}
	lists := faultWait(t, faultRecover, "the watcher's member list", func() (bool, string) {
		m := watcher.members(room)
		return slices.Equal(m, []string{"watcher"}), fmt.Sprintf("%v (%s)", m, watcher.memberEvents(room, mark))
	})
	t.Logf("measured: shutdown, %s: SIGTERM → \"stopped\" %s, → exit %s (--shutdown-timeout %v); its clients closed with %v",
		how, fms(stopped.Sub(termAt)), fms(took), faultShutdownTimeout, codes)
	t.Logf("measured: shutdown, %s: Redis went away from node %d at 0, SIGTERM at +%s, exit at +%s, Redis back at +%s; the watcher on node 1 got the last member_removed at +%s; /users and subscription_count without node %d's share through node 1 at +%s, subscription_count %d (1 is right); the watcher's list right %s later",
		how, n, fms(termAt.Sub(cutAt)), fms(termAt.Add(took).Sub(cutAt)), fms(backAt.Sub(cutAt)), fms(lastRemoved.Sub(cutAt)), n, fms(backAt.Add(removed).Sub(cutAt)), count, fms(lists))
	t.Logf("observed: shutdown, %s: the watcher got %s", how, watcher.memberEvents(room, mark))
	if d := stopped.Sub(termAt); d > faultShutdownTimeout+faultStopMargin {
		t.Errorf("node %d logged \"stopped\" %v after SIGTERM with its Redis %s, want within --shutdown-timeout %v + %v", n, d, how, faultShutdownTimeout, faultStopMargin)
	}
	if took > faultShutdownTimeout+faultExitMargin {
		t.Errorf("node %d exited %v after SIGTERM with its Redis %s, want within --shutdown-timeout %v + %v", n, took, how, faultShutdownTimeout, faultExitMargin)
	}
	for i, code := range codes {
		if code != 4200 {
			t.Errorf("%s closed with %d, want 4200 (reconnect now)", victims[i].name, code)
		}
	}
}

// stoppedAt is the time of the "stopped" line in h's log (its last, after the stop).
func stoppedAt(h *herald) (time.Time, error) {
	for _, line := range strings.Split(h.out.String(), "\n") {
		if !strings.Contains(line, "msg=stopped") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		return time.Parse(time.RFC3339Nano, ts)
	}
	return time.Time{}, fmt.Errorf("herald[%s] logged no \"stopped\" line", h.name)
}

// phantomsOutside describes the events delivered though their publish was refused
// whose publish started outside [from, to].
func phantomsOutside(r fresult, from, to time.Time) []string {
	var out []string
	for _, p := range r.phantoms {
		if p.start.Before(from) || p.start.After(to) {
			out = append(out, p.what)
		}
	}
	return out
}
