package loadgen

import "time"

// Report is everything one run measured. The coordinator fills it from the merged
// worker statistics; `--out` writes it as JSON and `--html` renders it (report
// package). Durations in milliseconds are float64 so that JSON readers need no unit
// parsing. The JSON field names are a stable interface: add fields, do not rename.
type Report struct {
	Version    int               `json:"version"` // 1
	Tool       string            `json:"tool"`    // "herald-loadgen"
	Started    time.Time         `json:"started"`
	Ended      time.Time         `json:"ended"`
	Seconds    float64           `json:"seconds"` // wall time from the first dial to the end
	Target     string            `json:"target"`  // e.g. "ws://127.0.0.1:6001/app/KEY"
	Scenario   Scenario          `json:"scenario"`
	Stopped    string            `json:"stopped"` // why the run ended: "duration", "interrupted", "error: …"
	Workers    []WorkerSummary   `json:"workers"`
	Totals     Totals            `json:"totals"`
	Latency    Distribution      `json:"latency"` // publish-to-receive
	Connect    Distribution      `json:"connect"` // socket() to connection_established
	Series     []Sample          `json:"series"`  // one per reporting interval (1 s)
	Thresholds []ThresholdResult `json:"thresholds,omitempty"`
	Passed     bool              `json:"passed"` // every threshold held (true when there are none)

	// Added after version 1's first fields (additive):
	Channels  []ChannelSummary `json:"channels,omitempty"` // channels that expected or got deliveries
	Members   uint64           `json:"members"`            // presence member_added/member_removed received
	Reordered uint64           `json:"reordered"`          // deliveries that arrived after a later one
	// RampSeconds is how long the slowest worker took to establish (or fail) its
	// share; ConnectRate is connections established per second over it.
	RampSeconds float64 `json:"ramp_seconds"`
	ConnectRate float64 `json:"connect_rate"`
}

// ChannelSummary is one channel's delivery accounting (at-most-once: both missing and
// duplicated are counted, neither fails a run unless a threshold says so).
type ChannelSummary struct {
	Name       string `json:"name"`
	Expected   uint64 `json:"expected"`
	Delivered  uint64 `json:"delivered"`
	Missing    uint64 `json:"missing"`
	Duplicated uint64 `json:"duplicated"`
}

// Scenario describes what was simulated.
type Scenario struct {
	Name   string         `json:"name"`   // connect-and-hold, broadcast, churn, presence-storm, client-events
	Params map[string]any `json:"params"` // the effective options (connections, ramp, channels, distribution, rates, …)
}

// WorkerSummary is one worker process's share and fate.
type WorkerSummary struct {
	ID          int    `json:"id"`
	Addr        string `json:"addr"`        // where its control connection came from
	Source      string `json:"source"`      // source IP its sockets were bound to, "" for any
	Connections int    `json:"connections"` // connections assigned
	State       string `json:"state"`       // "ok", "lost" (died or disconnected mid-run), "failed"
	Error       string `json:"error,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Host        string `json:"host,omitempty"`
	Connected   uint64 `json:"connected"`  // successful handshakes
	Delivered   uint64 `json:"delivered"`  // sequenced events received
	HeapBytes   int64  `json:"heap_bytes"` // peak Go heap in use
	RSSBytes    int64  `json:"rss_bytes"`  // peak resident set size
}

// Totals are whole-run counts, merged exactly across workers.
type Totals struct {
	ConnectionsTarget int               `json:"connections_target"`
	ConnectionsPeak   int64             `json:"connections_peak"`
	Connected         uint64            `json:"connected"`      // successful handshakes
	ConnectErrors     uint64            `json:"connect_errors"` // failed dials and handshakes
	Subscribed        uint64            `json:"subscribed"`
	Published         uint64            `json:"published"`  // events sent (API publishes and client events)
	Delivered         uint64            `json:"delivered"`  // sequenced events received, all connections
	Expected          uint64            `json:"expected"`   // deliveries the subscriptions called for
	Missing           uint64            `json:"missing"`    // expected but never received
	Duplicated        uint64            `json:"duplicated"` // received more than once
	Errors            map[string]uint64 `json:"errors"`     // by kind: "dial", "handshake", "close_4100", "publish_http_500", …
	ErrorRate         float64           `json:"error_rate"` // errors / (connections attempted + publishes)
	DeliveriesPerSec  float64           `json:"deliveries_per_sec"`
	PublishesPerSec   float64           `json:"publishes_per_sec"`
}

// Distribution summarises a latency histogram. Buckets are enough to redraw it.
type Distribution struct {
	Count   uint64   `json:"count"`
	MinMs   float64  `json:"min_ms"`
	MeanMs  float64  `json:"mean_ms"`
	P50Ms   float64  `json:"p50_ms"`
	P90Ms   float64  `json:"p90_ms"`
	P95Ms   float64  `json:"p95_ms"`
	P99Ms   float64  `json:"p99_ms"`
	P999Ms  float64  `json:"p999_ms"`
	MaxMs   float64  `json:"max_ms"`
	Buckets []Bucket `json:"buckets"` // ascending, non-empty buckets only
}

// Bucket counts the values at most UpToMs (and above the previous bucket's bound).
type Bucket struct {
	UpToMs float64 `json:"up_to_ms"`
	Count  uint64  `json:"count"`
}

// Sample is one reporting interval.
type Sample struct {
	T                float64 `json:"t"`           // seconds since the run started
	Connections      int64   `json:"connections"` // open at the end of the interval
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	PublishesPerSec  float64 `json:"publishes_per_sec"`
	P50Ms            float64 `json:"p50_ms"` // latency within the interval
	P99Ms            float64 `json:"p99_ms"`
	Errors           uint64  `json:"errors"` // cumulative
}

// ThresholdResult is one --threshold and whether the run met it.
type ThresholdResult struct {
	Expr  string  `json:"expr"`  // as given, e.g. "p99<250ms"
	Value float64 `json:"value"` // the measured value, in the threshold's unit
	OK    bool    `json:"ok"`
}
