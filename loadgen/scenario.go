package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Scenario names.
const (
	ScenarioHold          = "connect-and-hold"
	ScenarioBroadcast     = "broadcast"
	ScenarioChurn         = "churn"
	ScenarioPresenceStorm = "presence-storm"
	ScenarioClientEvents  = "client-events"
)

// Channel spreads: how a connection's K channels are chosen among M.
const (
	SpreadOne     = "one"     // every connection on channel 0
	SpreadUniform = "uniform" // K distinct channels uniform over M
	SpreadZipf    = "zipf"    // K distinct channels, Zipf(s) over M (channel 0 hottest)
)

// Channel kinds.
const (
	KindPublic   = "public"
	KindPrivate  = "private"
	KindPresence = "presence"
)

// Spec is a run: what the coordinator plans and every worker executes its share of.
// It is read from flags or a JSON scenario file (same names as the JSON tags); the
// zero value of a field means its default, filled in by Normalize.
type Spec struct {
	// Scenario is one of connect-and-hold (default), broadcast, churn,
	// presence-storm, client-events. It sets defaults (kind, rates) the other fields
	// override.
	Scenario string `json:"scenario"`
	// Target is the server: "ws://host:port" (the path /app/{key} is added),
	// "host:port", or an http:// URL. Required. A comma-separated list names several
	// servers (the nodes of a cluster, without a load balancer): each worker sends
	// its connections round-robin over them, connection i of a worker to server
	// i mod n, so that every server gets an equal share.
	Target string `json:"target"`
	// PublishTarget is where HTTP API publishes go: "http://host:port" (or
	// "host:port"). Default: the first server of Target.
	PublishTarget string `json:"publish_target,omitempty"`
	// AppID, Key and Secret are the app's credentials. Key is required; Secret for
	// private and presence channels; AppID for publishing.
	AppID  string `json:"app_id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`

	// Connections to hold (across all workers). Default 100.
	Connections int `json:"connections"`
	// Ramp is the connection rate, per second, across all workers. Default 1000.
	Ramp float64 `json:"ramp"`
	// ChannelsPerConn (K) is how many channels each connection subscribes to.
	// Default 1; 0 subscriptions is "-1".
	ChannelsPerConn int `json:"channels_per_conn"`
	// Channels (M) is how many distinct channels exist. Default 1 for spread one,
	// else max(K, 10); presence-storm: enough for at most 50 members each.
	Channels int `json:"channels"`
	// Spread is one, uniform (default) or zipf.
	Spread string `json:"spread"`
	// ZipfS is the Zipf exponent, > 1. Default 1.1.
	ZipfS float64 `json:"zipf_s"`
	// Kind is public, private or presence. Default public (private for
	// client-events, presence for presence-storm).
	Kind string `json:"kind"`
	// ChannelPrefix starts every channel name (after private-/presence-). Default
	// "loadgen-".
	ChannelPrefix string `json:"channel_prefix"`

	// PublishRate is API publishes (events) per second while clients hold
	// (broadcast; default 10 there, else 0). PublishRateMax (-1; the flag's "max")
	// publishes as fast as PublishConcurrency requests in flight allow, each sent as
	// soon as the previous one of its sender was answered.
	PublishRate float64 `json:"publish_rate"`
	// PublishSchedule, instead of PublishRate, publishes in groups from the start
	// of the load phase: "10x10s,10x1m" is 10 requests 10 s apart (the first at
	// once), then 10 more 1 min apart (the first 1 min after the group before); a
	// leading "+30s," delays the first request by 30 s.
	PublishSchedule string `json:"publish_schedule,omitempty"`
	// PublishBatch is how many events one HTTP request carries: 1 (default) posts
	// to /apps/{id}/events, more to /apps/{id}/batch_events, each event on the next
	// channel round-robin with its own sequence number (Pusher allows 10).
	PublishBatch int `json:"publish_batch,omitempty"`
	// PublishChannels publishes to channels 0..n-1 round-robin (the hottest for
	// zipf). Default all M.
	PublishChannels int `json:"publish_channels"`
	// PayloadSize is the size of each event's data, bytes (at least the
	// seq/timestamp prefix). Default 64.
	PayloadSize int `json:"payload_size"`
	// PublishConcurrency bounds the publishes in flight. Default 16.
	PublishConcurrency int `json:"publish_concurrency"`
	// PublishDelay is how long API publishing waits once the load phase has
	// begun (every connection up), for example for the server to settle after the
	// ramp. Default 0; it counts in Duration.
	PublishDelay Duration `json:"publish_delay,omitempty"`
	// PublishCount, if > 0, is how many events the run publishes: once they are
	// all answered the load phase ends, and the drain ends as soon as every
	// accepted one has reached all its subscribers, or none of their deliveries
	// has arrived for 5 s (the rest are lost), at most Drain later. A publish the
	// senders could not keep up with (publish_overrun) counts as done. Every
	// publish is tracked to its last delivery (Report.Completion). Default 0: no
	// limit, publishing runs until the drain.
	PublishCount int `json:"publish_count,omitempty"`
	// PublishAwait makes publishing closed-loop: each of the PublishConcurrency
	// senders, once the server accepted its event, waits until every subscriber of
	// the channel has received it (as the workers report, within about a
	// millisecond) or AwaitTimeout passes, before it sends the next. So
	// PublishConcurrency is the number of publishes in flight from request to last
	// delivery. Every publish is tracked (Report.Completion). PublishBatch must be 1.
	PublishAwait bool `json:"publish_await,omitempty"`
	// AwaitTimeout bounds the wait for one publish's deliveries with PublishAwait;
	// a publish not complete by then counts as the error "await_timeout". Default
	// 10 s.
	AwaitTimeout Duration `json:"await_timeout,omitempty"`
	// ChurnRate is connections closed and opened per second while holding about
	// Connections (churn default 10% of Connections per second, presence-storm the
	// same; else 0).
	ChurnRate float64 `json:"churn_rate"`
	// ClientEventRate is client events per second per connection (client-events
	// default 1, else 0). Herald needs --client-events for the app; Pusher allows
	// at most 10 per second per connection.
	ClientEventRate float64 `json:"client_event_rate"`

	// Duration bounds the whole run, ramp included. Default 30 s.
	Duration Duration `json:"duration"`
	// Drain is how long before the end publishing and client events stop, so that
	// what was sent can arrive. Default 2 s (bounded by a third of Duration).
	Drain Duration `json:"drain"`
	// CloseTimeout bounds the close handshakes at the end. Default 5 s.
	CloseTimeout Duration `json:"close_timeout"`
	// MaxHandshakes bounds the handshakes in flight per worker. Default 512.
	MaxHandshakes int `json:"max_handshakes"`
	// Loops is the epoll loops per worker. Default GOMAXPROCS of the worker.
	Loops int `json:"loops"`
	// ReadBatch is Config.ReadBatch of every worker: while busy, a loop reads at
	// most once per ReadBatch. Default 0 (a wake-up for every event).
	ReadBatch Duration `json:"read_batch,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "1.5s" (or a number of
// seconds).
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1m30s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%w: duration %q", ErrScenario, s)
		}
		*d = Duration(v)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%w: duration %s", ErrScenario, b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// LoadSpec reads a JSON scenario file. Unknown fields are an error, so that a typo
// does not silently run the defaults.
func LoadSpec(path string) (Spec, error) {
	var s Spec
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: %s: %w", ErrScenario, path, err)
	}
	return s, nil
}

// Normalize fills defaults and checks s.
func (s *Spec) Normalize() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrScenario}, a...)...)
	}
	if s.Scenario == "" {
		s.Scenario = ScenarioHold
	}
	switch s.Scenario {
	case ScenarioHold, ScenarioBroadcast, ScenarioChurn, ScenarioPresenceStorm, ScenarioClientEvents:
	default:
		return bad("unknown scenario %q (connect-and-hold, broadcast, churn, presence-storm, client-events)", s.Scenario)
	}
	if s.Target == "" {
		return bad("target is required")
	}
	if _, err := s.wsAddrs(); err != nil {
		return err
	}
	if _, err := s.publishBase(); err != nil {
		return err
	}
	if s.Key == "" {
		return bad("key is required")
	}
	if s.Connections == 0 {
		s.Connections = 100
	}
	if s.Connections < 0 {
		return bad("connections %d < 0", s.Connections)
	}
	if s.Ramp == 0 {
		s.Ramp = 1000
	}
	if s.Ramp < 0 {
		return bad("ramp %v < 0", s.Ramp)
	}
	switch {
	case s.ChannelsPerConn == 0:
		s.ChannelsPerConn = 1
	case s.ChannelsPerConn == -1:
		s.ChannelsPerConn = 0
	case s.ChannelsPerConn < 0 || s.ChannelsPerConn > 100:
		return bad("channels_per_conn %d: want 1..100 (-1 for none)", s.ChannelsPerConn)
	}
	if s.Spread == "" {
		s.Spread = SpreadUniform
	}
	if s.Kind == "" {
		switch s.Scenario {
		case ScenarioClientEvents:
			s.Kind = KindPrivate
		case ScenarioPresenceStorm:
			s.Kind = KindPresence
		default:
			s.Kind = KindPublic
		}
	}
	switch s.Kind {
	case KindPublic, KindPrivate, KindPresence:
	default:
		return bad("kind %q: want public, private or presence", s.Kind)
	}
	if s.Kind != KindPublic && s.Secret == "" {
		return bad("%s channels need the app secret", s.Kind)
	}
	switch s.Spread {
	case SpreadOne:
		if s.Channels == 0 {
			s.Channels = 1
		}
		if s.ChannelsPerConn > 1 {
			return bad("spread one puts every connection on one channel: channels_per_conn must be 1")
		}
	case SpreadUniform, SpreadZipf:
		if s.Channels == 0 {
			s.Channels = max(s.ChannelsPerConn, 10)
			if s.Kind == KindPresence {
				s.Channels = max(s.Channels, (s.Connections*s.ChannelsPerConn+49)/50)
			}
		}
	default:
		return bad("spread %q: want one, uniform or zipf", s.Spread)
	}
	if s.Channels < s.ChannelsPerConn {
		return bad("channels %d < channels_per_conn %d", s.Channels, s.ChannelsPerConn)
	}
	if s.ZipfS == 0 {
		s.ZipfS = 1.1
	}
	if s.Spread == SpreadZipf && !(s.ZipfS > 1) {
		return bad("zipf_s %v: want > 1", s.ZipfS)
	}
	if s.ChannelPrefix == "" {
		s.ChannelPrefix = "loadgen-"
	}
	if s.PublishSchedule != "" {
		if _, err := parseSchedule(s.PublishSchedule); err != nil {
			return bad("publish_schedule: %v", err)
		}
		if s.PublishRate != 0 {
			return bad("publish_schedule and publish_rate exclude each other")
		}
	}
	if s.PublishRate == 0 && s.Scenario == ScenarioBroadcast && s.PublishSchedule == "" {
		s.PublishRate = 10
	}
	if s.PublishRate < 0 && s.PublishRate != PublishRateMax {
		return bad("publish_rate %v < 0 (-1, or max on the command line, publishes as fast as the server answers)", s.PublishRate)
	}
	if s.publishing() && (s.AppID == "" || s.Secret == "") {
		return bad("publishing needs app_id and secret")
	}
	if s.publishing() && s.ChannelsPerConn == 0 {
		return bad("publishing needs subscribed connections (channels_per_conn >= 1)")
	}
	if s.PublishBatch == 0 {
		s.PublishBatch = 1
	}
	if s.PublishBatch < 1 || s.PublishBatch > 100 {
		return bad("publish_batch %d: want 1..100", s.PublishBatch)
	}
	if s.PublishChannels <= 0 || s.PublishChannels > s.Channels {
		s.PublishChannels = s.Channels
	}
	if s.PayloadSize == 0 {
		s.PayloadSize = 64
	}
	if s.PayloadSize < 0 || s.PayloadSize > 1<<20 {
		return bad("payload_size %d: want 0..1MiB", s.PayloadSize)
	}
	if s.PublishConcurrency <= 0 {
		s.PublishConcurrency = 16
	}
	if err := s.normalizeTracking(); err != nil {
		return err
	}
	if s.ChurnRate == 0 && (s.Scenario == ScenarioChurn || s.Scenario == ScenarioPresenceStorm) {
		s.ChurnRate = math.Max(1, float64(s.Connections)/10)
	}
	if s.ChurnRate < 0 {
		return bad("churn_rate %v < 0", s.ChurnRate)
	}
	if s.ClientEventRate == 0 && s.Scenario == ScenarioClientEvents {
		s.ClientEventRate = 1
	}
	if s.ClientEventRate < 0 {
		return bad("client_event_rate %v < 0", s.ClientEventRate)
	}
	if s.ClientEventRate > 0 && (s.Kind == KindPublic || s.ChannelsPerConn == 0) {
		return bad("client events need private or presence channels (kind private or presence)")
	}
	if s.Duration == 0 {
		s.Duration = Duration(30 * time.Second)
	}
	if s.Duration < 0 {
		return bad("duration %v < 0", s.Duration.D())
	}
	if s.Drain == 0 {
		s.Drain = Duration(2 * time.Second)
	}
	if s.Drain > s.Duration/3 {
		s.Drain = s.Duration / 3
	}
	if s.CloseTimeout <= 0 {
		s.CloseTimeout = Duration(5 * time.Second)
	}
	if s.MaxHandshakes <= 0 {
		s.MaxHandshakes = 512
	}
	return nil
}

// PublishRateMax as Spec.PublishRate publishes as fast as the server answers.
const PublishRateMax = -1

// publishing reports whether the run publishes through the HTTP API.
func (s *Spec) publishing() bool {
	return s.PublishRate > 0 || s.PublishRate == PublishRateMax || s.PublishSchedule != ""
}

// scheduleStep is a group of a PublishSchedule: N requests, Every apart.
type scheduleStep struct {
	N     int
	Every time.Duration
}

// parseSchedule parses "[+DELAY,]NxDURATION[,NxDURATION...]"; a delay is a step
// with N 0.
func parseSchedule(v string) ([]scheduleStep, error) {
	var out []scheduleStep
	for i, part := range strings.Split(v, ",") {
		if d, ok := strings.CutPrefix(strings.TrimSpace(part), "+"); ok && i == 0 {
			delay, err := time.ParseDuration(d)
			if err != nil || delay < 0 {
				return nil, fmt.Errorf("%q: want +DURATION, e.g. +30s", part)
			}
			out = append(out, scheduleStep{N: 0, Every: delay})
			continue
		}
		ns, ds, ok := strings.Cut(strings.TrimSpace(part), "x")
		n, err := strconv.Atoi(ns)
		if !ok || err != nil || n < 1 || n > 1_000_000 {
			return nil, fmt.Errorf("%q: want NxDURATION, e.g. 10x10s", part)
		}
		d, err := time.ParseDuration(ds)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q: want NxDURATION, e.g. 10x10s", part)
		}
		out = append(out, scheduleStep{N: n, Every: d})
	}
	return out, nil
}

// scheduleOffsets lists the offsets of a schedule's requests from its start.
func scheduleOffsets(steps []scheduleStep) []time.Duration {
	var out []time.Duration
	var at time.Duration
	for _, st := range steps {
		if st.N == 0 { // the initial delay
			at += st.Every
			continue
		}
		for j := 0; j < st.N; j++ {
			if len(out) > 0 {
				at += st.Every
			}
			out = append(out, at)
		}
	}
	return out
}

// targetList splits Target into its servers.
func (s *Spec) targetList() []string {
	var out []string
	for _, t := range strings.Split(s.Target, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// wsAddrs returns the WebSocket address (IPv4 ip:port, resolved once) of every
// server of Target, in order.
func (s *Spec) wsAddrs() ([]string, error) {
	list := s.targetList()
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: target %q: want ws://host:port[,ws://host:port…]", ErrScenario, s.Target)
	}
	out := make([]string, 0, len(list))
	for _, t := range list {
		a, err := resolveTarget(t)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// publishBase is the HTTP API base URL: PublishTarget, or the first server.
func (s *Spec) publishBase() (string, error) {
	t := s.PublishTarget
	if t == "" {
		list := s.targetList()
		if len(list) == 0 {
			return "", fmt.Errorf("%w: target %q: want ws://host:port", ErrScenario, s.Target)
		}
		t = list[0]
	}
	a, err := resolveTarget(t)
	if err != nil {
		return "", err
	}
	return "http://" + a, nil
}

// resolveTarget turns one server ("ws://host:port", "host:port", "http://…") into
// an IPv4 ip:port.
func resolveTarget(target string) (string, error) {
	t := target
	if !strings.Contains(t, "://") {
		t = "ws://" + t
	}
	u, err := url.Parse(t)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: target %q: want ws://host:port", ErrScenario, target)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		return "", fmt.Errorf("%w: target %q has no port", ErrScenario, target)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.LookupIP(host)
		if lerr != nil {
			return "", fmt.Errorf("%w: target %q: %w", ErrScenario, target, lerr)
		}
		for _, a := range ips {
			if a4 := a.To4(); a4 != nil {
				ip = netip.AddrFrom4([4]byte(a4))
				break
			}
		}
	}
	if !ip.Is4() {
		return "", fmt.Errorf("%w: target %q: want an IPv4 address", ErrScenario, target)
	}
	return ip.String() + ":" + port, nil
}

// TargetURL is the WebSocket URL the connections open (the first server's when
// there are several), for reports.
func (s *Spec) TargetURL() string {
	urls := s.TargetURLs()
	if len(urls) == 0 {
		return s.Target
	}
	return urls[0]
}

// TargetURLs are the WebSocket URLs of every server, in order.
func (s *Spec) TargetURLs() []string {
	addrs, err := s.wsAddrs()
	if err != nil {
		return nil
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = "ws://" + a + "/app/" + s.Key
	}
	return out
}

// TargetIsLoopback reports whether every server is in 127.0.0.0/8, where workers
// can bind distinct source addresses.
func (s *Spec) TargetIsLoopback() bool {
	addrs, err := s.wsAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

// Params lists the effective options, for Report.Scenario.
func (s *Spec) Params() map[string]any {
	b, _ := json.Marshal(s)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	delete(m, "secret")
	delete(m, "scenario")
	return m
}

// ChannelName is the name of channel i.
func (s *Spec) ChannelName(i int) string {
	name := s.ChannelPrefix + strconv.Itoa(i)
	switch s.Kind {
	case KindPrivate:
		return "private-" + name
	case KindPresence:
		return "presence-" + name
	}
	return name
}

// ChannelNames returns the names of channels 0..Channels-1.
func (s *Spec) ChannelNames() []string {
	out := make([]string, s.Channels)
	for i := range out {
		out[i] = s.ChannelName(i)
	}
	return out
}

// channelsOf appends the indices of the channels global connection gid subscribes
// to. The choice is a pure function of gid and the spec, so that a worker can
// recompute it when the connection closes and runs are repeatable.
func (s *Spec) channelsOf(dst []int, gid uint64) []int {
	k := s.ChannelsPerConn
	switch {
	case k == 0:
		return dst
	case s.Spread == SpreadOne:
		return append(dst, 0)
	case k == s.Channels:
		for i := 0; i < k; i++ {
			dst = append(dst, i)
		}
		return dst
	}
	r := rand.New(rand.NewPCG(gid*0x9e3779b97f4a7c15+1, gid))
	var z *rand.Zipf
	if s.Spread == SpreadZipf {
		z = rand.NewZipf(r, s.ZipfS, 1, uint64(s.Channels-1))
	}
	start := len(dst)
	for tries := 0; len(dst)-start < k; tries++ {
		var c int
		if z != nil && tries < 64*k {
			c = int(z.Uint64())
		} else {
			c = r.IntN(s.Channels)
		}
		dup := false
		for _, x := range dst[start:] {
			if x == c {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, c)
		}
	}
	return dst
}
