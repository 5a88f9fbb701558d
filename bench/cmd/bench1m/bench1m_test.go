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
	if o.conns != 1_000_000 || o.hubs != 55 || o.workers != 55 {
		t.Fatalf("defaults: conns %d hubs %d workers %d, want 1,000,000 55 55", o.conns, o.hubs, o.workers)
	}
	p := makePlan(o)
	if p.filesPerHub > 20000 || p.filesPerWorker > 20000 {
		t.Fatalf("default plan needs %d files per hub and %d per worker, over the 20,000 limit", p.filesPerHub, p.filesPerWorker)
	}
	if p.perHubHigh > float64(o.hubMax) {
		t.Fatalf("default plan: +4 sd per hub %.0f over --hub-max-connections %d", p.perHubHigh, o.hubMax)
	}
	if p.perSource > 28232*9/10 {
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
		{"--src-base", "127.255.255.250", "--conns", "10", "--workers", "5"}, // runs off the end of 127/8
		{"--conns", "5", "--workers", "6"},
		{"--handshakes", "10", "--workers", "20", "--conns", "100"},
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

func TestDistribute(t *testing.T) {
	for _, tc := range []struct {
		n       int64
		deficit []int64
		want    []int64
	}{
		{10, []int64{100, 100}, []int64{5, 5}},
		{11, []int64{100, 100, 100}, []int64{4, 4, 3}},
		{10, []int64{2, 100}, []int64{2, 8}},
		{10, []int64{0, 3, 3}, []int64{0, 3, 3}}, // less room than asked
		{3, []int64{5, 5, 5, 5}, []int64{1, 1, 1, 0}},
		{0, []int64{5}, []int64{0}},
	} {
		got := distribute(tc.n, tc.deficit)
		if !slices.Equal(got, tc.want) {
			t.Errorf("distribute(%d, %v) = %v, want %v", tc.n, tc.deficit, got, tc.want)
		}
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

func TestReasonsString(t *testing.T) {
	s := reasonsString(map[string]int64{"close_4100": 3, "connect_EADDRNOTAVAIL": 1200, "eof": 3})
	if !strings.HasPrefix(s, "connect_EADDRNOTAVAIL=1,200 (ephemeral ports") || !strings.Contains(s, "close_4100=3 (refused") {
		t.Fatalf("%s", s)
	}
	if reasonsString(nil) != "none" {
		t.Fatal("empty reasons")
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
	p, ok := parseLgProgress("loadgen: conns 123456/1000000 (failed 7) ramp        42s/460s | 0 deliv/s 0 pub/s | p50 - p99 - | errors 9 lost 2/55 workers")
	if !ok || p.open != 123456 || p.target != 1000000 || p.failed != 7 || p.phase != "ramp" ||
		p.elapsed != 42 || p.duration != 460 || p.errors != 9 || p.lostWorkers != 2 {
		t.Fatalf("parsed %+v, %v", p, ok)
	}
	if p, ok = parseLgProgress("loadgen: conns 5/5 (failed 0) load         3s/46s | 0 deliv/s 0 pub/s | p50 - p99 - | errors 0"); !ok || p.phase != "load" || p.lostWorkers != 0 {
		t.Fatalf("parsed %+v, %v", p, ok)
	}
	if _, ok := parseLgProgress("CONNECTIONS"); ok {
		t.Fatal("a summary line parsed as progress")
	}
}

func TestLoadgenFlags(t *testing.T) {
	o, err := parseFlags([]string{"--client", "loadgen", "--conns", "1000000", "--hold", "30s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.srcsPerWorker != 1 || o.workers != 110 || o.lgDuration != 560*time.Second {
		t.Fatalf("srcs %d workers %d duration %v", o.srcsPerWorker, o.workers, o.lgDuration)
	}
	if _, err := parseFlags([]string{"--client", "other"}, io.Discard); err == nil {
		t.Fatal("--client other accepted")
	}
}
