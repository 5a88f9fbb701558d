package main

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests cover the arithmetic and parsing only; the run itself starts a hundred
// processes and is never part of `make test`.

func TestParseFlagsSizesTheFleet(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.conns != 1_000_000 || o.hubs != 55 || o.workers != 55 || o.redis != redisSingle || o.spread != "one" {
		t.Fatalf("defaults: conns %d hubs %d workers %d redis %s spread %s, want 1,000,000 55 55 single one",
			o.conns, o.hubs, o.workers, o.redis, o.spread)
	}
	p := makePlan(o)
	if p.filesPerHub > 20000 || p.filesPerWorker > 20000 {
		t.Fatalf("default plan needs %d files per hub and %d per worker, over the 20,000 limit", p.filesPerHub, p.filesPerWorker)
	}
	if p.perHubHigh > float64(o.hubMax) {
		t.Fatalf("default plan: +4 sd per hub %.0f over --hub-max-connections %d", p.perHubHigh, o.hubMax)
	}
	if p.perSource > perSourceLoadgen || p.filesPerWorker > 20000 {
		t.Fatalf("default plan: %d connections per source address, more than the default port range gives", p.perSource)
	}

	o, err = parseFlags([]string{"--conns", "20000", "--hubs", "4", "--workers", "3"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.hubs != 4 || o.workers != 3 {
		t.Fatalf("explicit sizes: hubs %d workers %d", o.hubs, o.workers)
	}
}

func TestParseFlagsKeepsToLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"--host", "10.0.0.1"},
		{"--host", "0.0.0.0"},
		{"--host", "::1"},
		{"--src-base", "192.168.1.1"},
		{"--src-base", "127.255.255.250", "--conns", "10", "--workers", "8"}, // runs off the end of 127/8
		{"--conns", "5", "--workers", "6"},
		{"--handshakes", "10", "--workers", "20", "--conns", "100"},
		{"--redis", "sentinel"},
		{"--broadcasts", "10"},
		{"--broadcasts", "0x10s"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestSourceAddrsSkipZeroAndBroadcastOctets(t *testing.T) {
	got, err := sourceAddrs(netip.MustParseAddr("127.20.0.253"), 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.20.0.253", "127.20.0.254", "127.20.1.1", "127.20.1.2"}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if !slices.Equal(s, want) {
		t.Fatalf("got %v, want %v", s, want)
	}
	if _, err := sourceAddrs(netip.MustParseAddr("127.255.255.254"), 2); err == nil {
		t.Fatal("addresses past 127.255.255.255 accepted")
	}
}

func TestParseMeminfo(t *testing.T) {
	m, err := parseMeminfo("MemTotal:       24684084 kB\nMemFree:        24000000 kB\nMemAvailable:   23000000 kB\nBuffers: 1 kB\nSlab:             150000 kB\nSReclaimable: 1 kB\nSUnreclaim:        50000 kB\n")
	if err != nil {
		t.Fatal(err)
	}
	if m.Total != 24684084<<10 || m.Free != 24000000<<10 || m.Available != 23000000<<10 || m.Slab != 150000<<10 || m.SUnreclaim != 50000<<10 {
		t.Fatalf("%+v", m)
	}
	if _, err := parseMeminfo("MemTotal: 1 kB\n"); err == nil {
		t.Fatal("missing fields accepted")
	}
}

func TestParseSockstat(t *testing.T) {
	st, err := parseSockstat("sockets: used 12\nTCP: inuse 7 orphan 1 tw 698 alloc 9 mem 135\nUDP: inuse 0 mem 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if st != (sockstat{InUse: 7, Orphan: 1, TimeWait: 698, Alloc: 9, MemPages: 135}) {
		t.Fatalf("%+v", st)
	}
}

func TestSlabGrowth(t *testing.T) {
	const head = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n"
	base := parseSlabinfo(head + "TCP 105 156 2368 13 8 : tunables 0 0 0 : slabdata 12 12 0\nfilp 607 672 192 21 1 : x\n")
	peak := parseSlabinfo(head + "TCP 2105 2156 2368 13 8 : tunables 0 0 0 : slabdata 12 12 0\nfilp 607 672 192 21 1 : x\ndentry 10 21 192 21 1 : x\n")
	got := topSlabs(base, peak, 5)
	want := []slabGrowth{{"TCP", 2000 * 2368}, {"dentry", 21 * 192}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestParseRSS(t *testing.T) {
	rss, anon, err := parseRSS("Name:\therald\nVmRSS:\t   18832 kB\nRssAnon:\t    9544 kB\nRssFile:\t    9288 kB\n")
	if err != nil {
		t.Fatal(err)
	}
	if rss != 18832<<10 || anon != 9544<<10 {
		t.Fatalf("rss %d anon %d", rss, anon)
	}
	if _, _, err := parseRSS("Name:\tx\n"); err == nil {
		t.Fatal("no VmRSS accepted")
	}
}

func TestCPUBetween(t *testing.T) {
	c, err := parseCPUTimes("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n")
	if err != nil {
		t.Fatal(err)
	}
	a := sample{cpu: c}
	b := sample{cpu: cpuTimes{User: 160, System: 110, Idle: 880, IOWait: 50}, heraldCPU: 400 * time.Millisecond, clientCPU: 300 * time.Millisecond}
	// 200 ticks in all: 120 busy (60 user, 60 system), 80 idle; hubs 40 ticks, workers 30.
	got := cpuBetween(a, b)
	want := cpuShare{Herald: 20, Client: 15, Other: 25, Idle: 40, Sys: 30}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestParseLgProgress(t *testing.T) {
	p, ok := parseLgProgress(`{"type":"progress","time":"2026-11-30T18:00:00Z","elapsed_s":42.5,"duration_s":460,"phase":"ramp",` +
		`"target":1000000,"open":123456,"established":123460,"failed":7,"deliveries_per_sec":5,"publishes_per_sec":0,` +
		`"p50_ms":0,"p99_ms":0,"errors":9,"workers":110,"lost":2}`)
	if !ok || p.open != 123456 || p.target != 1000000 || p.failed != 7 || p.phase != "ramp" ||
		p.elapsed != 42.5 || p.duration != 460 || p.errors != 9 || p.lostWorkers != 2 || p.deliveriesPerSec != 5 {
		t.Fatalf("parsed %+v, %v", p, ok)
	}
	for _, line := range []string{`{"type":"end","passed":true}`, "CONNECTIONS", ""} {
		if _, ok := parseLgProgress(line); ok {
			t.Errorf("%q parsed as progress", line)
		}
	}
}

func TestBroadcastSchedule(t *testing.T) {
	o, err := parseFlags([]string{"--conns", "1000000", "--hold", "30s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The hold, 10 broadcasts 10 s apart, then one a minute for 10 minutes.
	if got := o.schedule(); got != "+30s,10x10s,10x1m" {
		t.Errorf("schedule %q", got)
	}
	// 1.5 x 1M / 4,000/s + 30 s + (90 s + 600 s) + 15 s + 60 s.
	if o.lgDuration != 1170*time.Second {
		t.Errorf("duration %v", o.lgDuration)
	}
	o, err = parseFlags([]string{"--conns", "20000", "--broadcasts", "3x2s", "--broadcast-hold", "0", "--channels", "1000",
		"--redis", "cluster"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.schedule() != "+30s,3x2s" || o.spread != "zipf" || o.redis != redisCluster {
		t.Errorf("schedule %q spread %s redis %s", o.schedule(), o.spread, o.redis)
	}
	r := &runner{o: o}
	args := strings.Join(r.lgArgs("127.0.0.1:1", "o.json", "o.html"), " ")
	for _, want := range []string{"--scenario broadcast", "--publish-schedule +30s,3x2s", "--progress json", "--spread zipf",
		"--channels 1000", "--threshold lost_connections==0", "--threshold broadcast_incomplete==0", "--publish-concurrency 1"} {
		if !strings.Contains(args, want) {
			t.Errorf("loadgen args lack %q: %s", want, args)
		}
	}
}
