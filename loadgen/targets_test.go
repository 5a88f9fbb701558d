package loadgen

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/redistest"
)

// A pool with several servers sends connection id to server id mod n.
func TestPoolAddrs(t *testing.T) {
	fs := newFakeCluster(t, 3)
	p := startPool(t, Config{Addrs: []string{fs[0].addr(), fs[1].addr(), fs[2].addr()}, Key: fs[0].key, Loops: 2})
	dialAll(t, p, 10, false)
	if got := p.AddrCounts(); len(got) != 3 || got[0] != 4 || got[1] != 3 || got[2] != 3 {
		t.Errorf("AddrCounts = %v, want [4 3 3]", got)
	}
	for i, s := range fs {
		if n, want := s.accepted(), []int{4, 3, 3}[i]; n != want {
			t.Errorf("server %d accepted %d connections, want %d", i, n, want)
		}
	}
}

// A run against two servers without a load balancer: each gets half of every
// worker's connections, publishes go through the first (or --publish-target), and
// every subscriber, on either server, gets every event.
func TestRunTwoTargets(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pubTarget  int // index of the server publishes go to; -1: default (the first)
		batch      int
		wantPubsOn int
	}{
		{"default publish target", -1, 0, 0},
		{"publish-target second, batches of 3", 1, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeCluster(t, 2)
			spec := Spec{
				Target: "ws://" + fs[0].addr() + ", " + fs[1].addr(), AppID: "1", Key: fs[0].key, Secret: fs[0].secret,
				Scenario: ScenarioBroadcast, Connections: 200, ChannelsPerConn: 2, Channels: 5,
				PublishRate: 60, PublishBatch: tc.batch, PayloadSize: 100,
				Duration: Duration(4 * time.Second), Drain: Duration(time.Second), Ramp: 2000,
			}
			if tc.pubTarget >= 0 {
				spec.PublishTarget = "http://" + fs[tc.pubTarget].addr()
			}
			rep := runCoordinator(t, spec, 2, nil)
			checkReport(t, rep, 200)
			if len(rep.Targets) != 2 {
				t.Fatalf("targets: %+v", rep.Targets)
			}
			for i, ts := range rep.Targets {
				if ts.Connected != 100 || !strings.Contains(ts.URL, fs[i].addr()) {
					t.Errorf("target %d: %+v, want 100 connections to %s", i, ts, fs[i].addr())
				}
				if n := fs[i].accepted(); n != 100 {
					t.Errorf("server %d accepted %d connections, want 100", i, n)
				}
			}
			if want := "http://" + fs[tc.wantPubsOn].addr(); rep.PublishTarget != want {
				t.Errorf("publish target %q, want %q", rep.PublishTarget, want)
			}
			for i, s := range fs {
				got := s.apiPublished.Load()
				if (i == tc.wantPubsOn) != (got > 0) {
					t.Errorf("server %d accepted %d API events", i, got)
				}
			}
			tot := rep.Totals
			if tot.Published == 0 || tot.Expected == 0 || uint64(fs[tc.wantPubsOn].apiPublished.Load()) != tot.Published {
				t.Fatalf("published %d (servers saw %d) expected %d", tot.Published, fs[tc.wantPubsOn].apiPublished.Load(), tot.Expected)
			}
			if tot.Delivered != tot.Expected || tot.Missing != 0 || tot.Duplicated != 0 {
				t.Errorf("delivered %d expected %d missing %d duplicated %d", tot.Delivered, tot.Expected, tot.Missing, tot.Duplicated)
			}
		})
	}
}

func TestSpecTargets(t *testing.T) {
	s := Spec{Target: "ws://127.0.0.1:6001, 127.0.0.1:6002,http://127.0.0.1:6003", Key: "k"}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	urls := s.TargetURLs()
	if len(urls) != 3 || urls[1] != "ws://127.0.0.1:6002/app/k" || s.TargetURL() != urls[0] {
		t.Errorf("TargetURLs = %q", urls)
	}
	if base, err := s.publishBase(); err != nil || base != "http://127.0.0.1:6001" {
		t.Errorf("publishBase = %q, %v", base, err)
	}
	s.PublishTarget = "http://127.0.0.1:7000"
	if base, err := s.publishBase(); err != nil || base != "http://127.0.0.1:7000" {
		t.Errorf("publishBase = %q, %v", base, err)
	}
	if !s.TargetIsLoopback() {
		t.Error("loopback targets")
	}
	for _, bad := range []string{",", " , ", "127.0.0.1:1,[::1]:2", "127.0.0.1:1,127.0.0.1"} {
		s := Spec{Target: bad, Key: "k"}
		if err := s.Normalize(); err == nil {
			t.Errorf("target %q accepted", bad)
		}
	}
	m := Spec{Target: "127.0.0.1:1", Key: "k", Secret: "s", AppID: "1", PublishRate: PublishRateMax}
	if err := m.Normalize(); err != nil || !m.publishing() || m.PublishBatch != 1 {
		t.Errorf("publish rate max: %v %+v", err, m)
	}
	for _, mut := range []func(*Spec){func(s *Spec) { s.PublishRate = -2 }, func(s *Spec) { s.PublishBatch = 101 }} {
		s := Spec{Target: "127.0.0.1:1", Key: "k", Secret: "s", AppID: "1", PublishRate: 5}
		mut(&s)
		if err := s.Normalize(); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}

func TestMemberTimestamp(t *testing.T) {
	for data, want := range map[string]int64{
		`"{\"user_id\":\"u1\",\"user_info\":{\"worker\":0,\"lg_ts\":1700000000123456789}}"`: 1700000000123456789,
		`{"user_id":"u1","user_info":{"lg_ts":42}}`:                                         42,
		`"{\"user_id\":\"u1\",\"user_info\":{\"worker\":0}}"`:                               0,
		`"{\"user_id\":\"lg_ts\"}"`:                                                         0,
		`"lg_ts\":"`:                                                                        0,
	} {
		got, ok := memberTimestamp([]byte(data))
		if got != want || ok != (want > 0) {
			t.Errorf("memberTimestamp(%s) = %d, %v; want %d", data, got, ok, want)
		}
	}
}

// The same against real Herald nodes joined through Redis: a broadcast published
// through node 1 reaches the subscribers of both nodes, and presence members on
// both nodes see each other join.
func TestRunHeraldCluster(t *testing.T) {
	rs := redistest.Start(t)
	prefix := fmt.Sprintf("lg%d", time.Now().UnixNano())
	a := startHerald(t, "--redis", rs.URL(), "--redis-prefix", prefix)
	b := startHerald(t, "--redis", rs.URL(), "--redis-prefix", prefix)

	spec := testSpec(a + "," + b)
	spec.Scenario, spec.Connections, spec.ChannelsPerConn, spec.Channels = ScenarioBroadcast, 200, 2, 5
	spec.PublishRate, spec.PayloadSize = 40, 200
	rep := runCoordinator(t, spec, 2, nil)
	checkReport(t, rep, 200)
	if len(rep.Targets) != 2 || rep.Targets[0].Connected != 100 || rep.Targets[1].Connected != 100 {
		t.Errorf("targets %+v, want 100 connections each", rep.Targets)
	}
	tot := rep.Totals
	if tot.Published == 0 || tot.Expected == 0 || tot.Delivered != tot.Expected || tot.Missing != 0 || tot.Duplicated != 0 {
		t.Errorf("published %d delivered %d expected %d missing %d duplicated %d",
			tot.Published, tot.Delivered, tot.Expected, tot.Missing, tot.Duplicated)
	}

	ps := testSpec(a + "," + b)
	ps.Scenario, ps.Connections, ps.ChurnRate, ps.Channels = ScenarioPresenceStorm, 100, 30, 2
	rep = runCoordinator(t, ps, 2, nil)
	checkReport(t, rep, 100)
	if rep.Presence == nil || rep.Presence.MemberAdded == 0 || rep.Presence.MemberLatency.Count == 0 || rep.Presence.Joins == 0 {
		t.Errorf("presence %+v", rep.Presence)
	}
}
