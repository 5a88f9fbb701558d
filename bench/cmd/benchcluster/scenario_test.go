package main

import (
	"strings"
	"testing"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/loadgen"
)

// The rates come from the samples inside the load phase (its first second and last
// half second left out), not from the ramp or the close.
func TestFromSamples(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	var samples []sample
	for i := 0; i <= 40; i++ { // every 500 ms for 20 s
		at := t0.Add(time.Duration(i) * sampleEvery)
		sec := float64(i) / 2
		// During the ramp (before 4 s) and the close (after 16.5 s) the counters jump,
		// which must not show in the figures.
		jump := 0.0
		if sec < 4 || sec > 16.5 {
			jump = 1e6
		}
		samples = append(samples, sample{
			t:        at,
			nodesCPU: time.Duration(sec*0.5*float64(time.Second)) + time.Duration(jump)*time.Second,
			redisCPU: time.Duration(sec * 0.1 * float64(time.Second)),
			m: cluster.Metrics{
				"herald_messages_sent_total":             30000*sec + jump,
				"herald_broker_published_messages_total": 10000 * sec,
				"herald_broker_received_messages_total":  20000 * sec,
			},
			redisPublish: int64(10000 * sec), redisCmds: int64(12000 * sec),
			redisCalls: map[string]int64{"publish": int64(10000 * sec), "info": int64(2 * sec)},
		})
	}
	rep := &loadgen.Report{LoadStarted: t0.Add(3 * time.Second), LoadEnded: t0.Add(17 * time.Second)}
	res := &result{Scenario: scThroughput}
	if err := res.fromSamples(samples, rep); err != nil {
		t.Fatal(err)
	}
	// Window: samples from 4 s to 16.5 s.
	near := func(got, want float64) bool { return got > want*0.999 && got < want*1.001 }
	for name, c := range map[string][2]float64{
		"window":            {res.WindowSeconds, 12.5},
		"deliveries":        {res.NodeDeliveriesPerSec, 30000},
		"broker published":  {res.BrokerPublishedPerSec, 10000},
		"broker received":   {res.BrokerReceivedPerSec, 20000},
		"redis publish":     {res.RedisPublishPerSec, 10000},
		"redis commands":    {res.RedisCommandsPerSec, 12000},
		"redis cpu %":       {res.RedisCPUPercent, 10},
		"nodes cpu %":       {res.NodesCPUPercent, 50},
		"redis µs/message":  {res.RedisCPUPerMessage, 10},
		"nodes µs/delivery": {res.NodesCPUPerDelivery, 500000.0 / 30000},
	} {
		if !near(c[0], c[1]) {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if _, ok := res.RedisCommands["info"]; ok || !near(res.RedisCommands["publish"], 10000) {
		t.Errorf("commands by name %v", res.RedisCommands)
	}
	if err := (&result{}).fromSamples(samples, &loadgen.Report{}); err == nil {
		t.Error("a run without a load phase has figures")
	}
	if err := (&result{}).fromSamples(samples[:3], rep); err == nil {
		t.Error("no sample in the load phase, yet figures")
	}
}

func TestCheck(t *testing.T) {
	ok := &result{Scenario: scPresence, Joins: 10, Leaves: 10, MemberAdded: 100, NodeConns: []uint64{1, 1, 1}}
	ok.check(nil)
	if len(ok.Failed) != 0 {
		t.Errorf("clean run failed: %v", ok.Failed)
	}
	bad := &result{Scenario: scPresence, Joins: 10, Leaves: 10, MemberAdded: 100, NodeConns: []uint64{1, 0, 1},
		OccupiedAfter: 2, Missing: 3, Dropped: 1, Errors: map[string]uint64{"close_4100": 1}}
	bad.check(nil)
	got := strings.Join(bad.Failed, "; ")
	for _, want := range []string{"missing 3", "close_4100", "dropped", "node 2 got no connections", "2 presence channels still occupied"} {
		if !strings.Contains(got, want) {
			t.Errorf("checks %q lack %q", got, want)
		}
	}
}
