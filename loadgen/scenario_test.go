package loadgen

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSpecDefaults(t *testing.T) {
	s := Spec{Target: "ws://127.0.0.1:6001", Key: "k", Secret: "s", AppID: "1", Scenario: ScenarioBroadcast}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	if s.Connections != 100 || s.Ramp != 1000 || s.ChannelsPerConn != 1 || s.Channels != 10 ||
		s.Spread != SpreadUniform || s.Kind != KindPublic || s.PublishRate != 10 || s.PayloadSize != 64 ||
		s.Duration.D() != 30*time.Second || s.Drain.D() != 2*time.Second || s.PublishChannels != 10 {
		t.Errorf("defaults: %+v", s)
	}
	if got := s.TargetURL(); got != "ws://127.0.0.1:6001/app/k" {
		t.Errorf("TargetURL = %q", got)
	}
	if !s.TargetIsLoopback() {
		t.Error("127.0.0.1 is loopback")
	}
	ce := Spec{Target: "127.0.0.1:1", Key: "k", Secret: "s", Scenario: ScenarioClientEvents}
	if err := ce.Normalize(); err != nil || ce.Kind != KindPrivate || ce.ClientEventRate != 1 {
		t.Errorf("client-events defaults: %+v %v", ce, err)
	}
	ps := Spec{Target: "127.0.0.1:1", Key: "k", Secret: "s", Scenario: ScenarioPresenceStorm, Connections: 1000}
	if err := ps.Normalize(); err != nil || ps.Kind != KindPresence || ps.Channels != 20 || ps.ChurnRate != 100 {
		t.Errorf("presence-storm defaults: %+v %v", ps, err)
	}
}

func TestSpecErrors(t *testing.T) {
	base := func() Spec { return Spec{Target: "127.0.0.1:6001", Key: "k", Secret: "s", AppID: "1"} }
	cases := map[string]func(*Spec){
		"no target":          func(s *Spec) { s.Target = "" },
		"no port":            func(s *Spec) { s.Target = "ws://127.0.0.1" },
		"ipv6":               func(s *Spec) { s.Target = "[::1]:80" },
		"no key":             func(s *Spec) { s.Key = "" },
		"scenario":           func(s *Spec) { s.Scenario = "flood" },
		"spread":             func(s *Spec) { s.Spread = "gauss" },
		"kind":               func(s *Spec) { s.Kind = "secret" },
		"zipf s":             func(s *Spec) { s.Spread, s.ZipfS = SpreadZipf, 1 },
		"k > m":              func(s *Spec) { s.ChannelsPerConn, s.Channels = 5, 3 },
		"one with k":         func(s *Spec) { s.Spread, s.ChannelsPerConn = SpreadOne, 2 },
		"private no secret":  func(s *Spec) { s.Kind, s.Secret = KindPrivate, "" },
		"publish no app id":  func(s *Spec) { s.PublishRate, s.AppID = 5, "" },
		"client ev public":   func(s *Spec) { s.ClientEventRate = 1 },
		"negative conns":     func(s *Spec) { s.Connections = -1 },
		"negative duration":  func(s *Spec) { s.Duration = -1 },
		"huge payload":       func(s *Spec) { s.PayloadSize = 2 << 20 },
		"publish no channel": func(s *Spec) { s.PublishRate, s.ChannelsPerConn = 1, -1 },
	}
	for name, mut := range cases {
		s := base()
		mut(&s)
		if err := s.Normalize(); !errors.Is(err, ErrScenario) {
			t.Errorf("%s: got %v, want ErrScenario", name, err)
		}
	}
}

func TestLoadSpec(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.json")
	if err := os.WriteFile(p, []byte(`{"scenario":"broadcast","target":"127.0.0.1:1","key":"k","connections":5,"duration":"3s","drain":1.5}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Scenario != ScenarioBroadcast || s.Connections != 5 || s.Duration.D() != 3*time.Second || s.Drain.D() != 1500*time.Millisecond {
		t.Errorf("got %+v", s)
	}
	if err := os.WriteFile(p, []byte(`{"conections":5}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSpec(p); !errors.Is(err, ErrScenario) {
		t.Errorf("unknown field: %v, want ErrScenario", err)
	}
}

func TestChannelsOf(t *testing.T) {
	for _, spread := range []string{SpreadUniform, SpreadZipf} {
		s := Spec{Target: "127.0.0.1:1", Key: "k", Spread: spread, ChannelsPerConn: 3, Channels: 20, ZipfS: 1.5}
		if err := s.Normalize(); err != nil {
			t.Fatal(err)
		}
		hits := make([]int, s.Channels)
		for gid := uint64(0); gid < 2000; gid++ {
			cs := s.channelsOf(nil, gid)
			if len(cs) != 3 {
				t.Fatalf("%s: gid %d: %v", spread, gid, cs)
			}
			seen := map[int]bool{}
			for _, c := range cs {
				if c < 0 || c >= s.Channels || seen[c] {
					t.Fatalf("%s: gid %d: %v", spread, gid, cs)
				}
				seen[c] = true
				hits[c]++
			}
			if again := s.channelsOf(nil, gid); again[0] != cs[0] || again[2] != cs[2] {
				t.Fatalf("%s: not deterministic", spread)
			}
		}
		if spread == SpreadZipf && hits[0] < 3*hits[s.Channels-1] {
			t.Errorf("zipf: channel 0 has %d, last %d: not skewed", hits[0], hits[s.Channels-1])
		}
		if spread == SpreadUniform {
			for c, h := range hits {
				if h < 150 || h > 450 { // mean 300
					t.Errorf("uniform: channel %d has %d of 6000", c, h)
				}
			}
		}
	}
	one := Spec{Target: "127.0.0.1:1", Key: "k", Spread: SpreadOne}
	if err := one.Normalize(); err != nil {
		t.Fatal(err)
	}
	if cs := one.channelsOf(nil, 77); len(cs) != 1 || cs[0] != 0 {
		t.Errorf("one: %v", cs)
	}
}

func TestSourceAddrs(t *testing.T) {
	got, err := SourceAddrs(netip.MustParseAddr("127.0.1.253"), 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.1.253", "127.0.1.254", "127.0.2.1", "127.0.2.2"}
	for i, a := range got {
		if a.String() != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	if _, err := SourceAddrs(netip.MustParseAddr("10.0.0.1"), 1); !errors.Is(err, ErrConfig) {
		t.Errorf("non-loopback base: %v", err)
	}
}

func TestStatsSubIsExact(t *testing.T) {
	a := newStats()
	for i := 1; i <= 100; i++ {
		a.Latency.Record(time.Duration(i) * time.Millisecond)
	}
	a.Delivered, a.Reasons["eof"] = 100, 1
	b := newStats()
	if err := b.Merge(a); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		b.Latency.Record(time.Duration(i) * time.Second)
	}
	b.Delivered += 50
	d, err := b.Sub(a)
	if err != nil {
		t.Fatal(err)
	}
	if d.Latency.Count() != 50 || d.Delivered != 50 || d.Latency.Min() < 999*time.Millisecond || len(d.Reasons) != 0 {
		t.Errorf("delta: %v min=%v delivered=%d reasons=%v", d.Latency, d.Latency.Min(), d.Delivered, d.Reasons)
	}
	// Merging the delta back into the earlier snapshot gives the later one exactly.
	if err := a.Merge(d); err != nil {
		t.Fatal(err)
	}
	if !a.Latency.Equal(b.Latency) {
		t.Error("a + (b - a) != b")
	}
	later := newStats()
	later.Latency.Record(time.Hour)
	if _, err := a.Sub(later); !errors.Is(err, ErrHistogram) {
		t.Errorf("sub of a histogram that is not an earlier snapshot: %v", err)
	}
}

func TestParseSchedule(t *testing.T) {
	steps, err := parseSchedule("10x10s, 2x1m")
	if err != nil || len(steps) != 2 || steps[0] != (scheduleStep{10, 10 * time.Second}) || steps[1] != (scheduleStep{2, time.Minute}) {
		t.Fatalf("%+v %v", steps, err)
	}
	off := scheduleOffsets(steps)
	if len(off) != 12 || off[0] != 0 || off[9] != 90*time.Second || off[10] != 150*time.Second || off[11] != 210*time.Second {
		t.Errorf("offsets %v", off)
	}
	steps, err = parseSchedule("+30s,2x10s")
	if off := scheduleOffsets(steps); err != nil || len(off) != 2 || off[0] != 30*time.Second || off[1] != 40*time.Second {
		t.Errorf("delayed: %v %v", off, err)
	}
	for _, bad := range []string{"", "10", "x10s", "0x1s", "3x0s", "3x-1s", "3xfoo", "3x1s,", "2x1s,+5s", "+x"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	s := Spec{Target: "ws://127.0.0.1:1", Key: "k", AppID: "1", Secret: "s", PublishSchedule: "2x1s", PublishRate: 5}
	if err := s.Normalize(); !errors.Is(err, ErrScenario) {
		t.Errorf("schedule and rate: %v", err)
	}
}
