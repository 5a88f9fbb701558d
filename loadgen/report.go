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
	Target     string            `json:"target"`  // e.g. "ws://127.0.0.1:6001/app/KEY"; the first of Targets
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
	// Targets lists every server the connections were spread over (one for a
	// single target), with the connections established to each; PublishTarget is
	// the HTTP API base the publishes went to ("" when the run did not publish).
	Targets       []TargetSummary `json:"targets,omitempty"`
	PublishTarget string          `json:"publish_target,omitempty"`
	// LoadStarted and LoadEnded bound the load phase (every connection up; publishes,
	// churn and client events running), so that an outside observer (a benchmark
	// sampling the server's CPU) can take its figures over the same interval. Zero
	// when the run ended before it.
	LoadStarted time.Time `json:"load_started,omitzero"`
	LoadEnded   time.Time `json:"load_ended,omitzero"`
	// Presence is filled for runs on presence channels.
	Presence *PresenceSummary `json:"presence,omitempty"`
	// Broadcasts is filled for runs that published through the HTTP API.
	Broadcasts *BroadcastSummary `json:"broadcasts,omitempty"`
	// Completion is filled when publishes were tracked (Spec.PublishCount or
	// Spec.PublishAwait): each API publish from its send to its last delivery.
	Completion *CompletionSummary `json:"completion,omitempty"`
}

// BroadcastSummary follows each API publish the server accepted (every one with
// Spec.PublishCount or Spec.PublishAwait, the first maxTrackedBroadcasts of a run
// otherwise) to its last delivery over all workers. It is built from the tracker
// (tracking.go), as Completion is, so they agree. Expected deliveries are the
// channel's subscribers when the publish was sent, from the workers' latest
// snapshots.
type BroadcastSummary struct {
	Count      int `json:"count"`      // publishes followed
	Complete   int `json:"complete"`   // every expected delivery arrived
	Incomplete int `json:"incomplete"` // fewer unique deliveries than expected
	// Completion is publish (the payload's timestamp, just before the request) to
	// the last delivery, over the complete broadcasts that had subscribers.
	Completion Distribution    `json:"completion"`
	Items      []BroadcastItem `json:"items,omitempty"` // the first 1,000, in publish order
}

// BroadcastItem is one API publish.
type BroadcastItem struct {
	Seq          uint64    `json:"seq"`
	Channel      string    `json:"channel"`
	Published    time.Time `json:"published"`
	Expected     uint64    `json:"expected"`
	Delivered    uint64    `json:"delivered"` // unique
	Duplicated   uint64    `json:"duplicated"`
	CompletionMs float64   `json:"completion_ms"` // to the delivery that completed it (incomplete: the latest received)
	Complete     bool      `json:"complete"`
}

// CompletionSummary follows every tracked API publish from the moment it was sent
// (the timestamp in its payload) to its last delivery: the latest receive time,
// over every worker, once the publish had been received as many times as its
// channel had subscribers when it was sent.
type CompletionSummary struct {
	Accepted   uint64 `json:"accepted"`   // tracked publishes the server accepted
	Complete   uint64 `json:"complete"`   // of those, received by every subscriber
	Incomplete uint64 `json:"incomplete"` // accepted but not complete by the end
	// Latency is publish-to-last-delivery of the complete publishes.
	Latency Distribution `json:"latency"`
	// FirstSent is when the first tracked publish was sent, LastDelivery the latest
	// receive time of a complete one; Deliveries counts the unique deliveries of
	// the complete publishes (duplicates apart, in Broadcasts), and
	// DeliveriesPerSec and PublishesPerSec are them (and Complete) over that
	// span: the throughput of closed-loop publishing.
	FirstSent    time.Time `json:"first_sent,omitzero"`
	LastDelivery time.Time `json:"last_delivery,omitzero"`
	// LastReceived is the latest receive time of any accepted tracked publish,
	// complete or not.
	LastReceived     time.Time `json:"last_received,omitzero"`
	Deliveries       uint64    `json:"deliveries"`
	DeliveriesPerSec float64   `json:"deliveries_per_sec"`
	PublishesPerSec  float64   `json:"publishes_per_sec"`
}

// WorkerMem is a worker process's memory after a GC.
type WorkerMem struct {
	RSSBytes  int64 `json:"rss_bytes"`  // resident set size
	HeapBytes int64 `json:"heap_bytes"` // Go heap in use (HeapInuse)
}

// PresenceSummary is what a run on presence channels measured. Joins and leaves
// count channel memberships (a connection on K channels joins K times), over the
// load phase, from the workers' 1-second snapshots.
type PresenceSummary struct {
	Joins         uint64  `json:"joins"`  // presence subscriptions that succeeded during the load phase
	Leaves        uint64  `json:"leaves"` // memberships ended by connections closed during the load phase
	LoadSeconds   float64 `json:"load_seconds"`
	JoinsPerSec   float64 `json:"joins_per_sec"`
	LeavesPerSec  float64 `json:"leaves_per_sec"`
	MemberAdded   uint64  `json:"member_added"`   // pusher_internal:member_added received, whole run
	MemberRemoved uint64  `json:"member_removed"` // pusher_internal:member_removed received, whole run
	// MemberLatency is join-to-member_added: from the moment a connection sent its
	// presence subscription to the moment another member received member_added for
	// it (the join time travels in user_info as "lg_ts"), whole run.
	MemberLatency Distribution `json:"member_latency"`
	// MemberLatencyLoad is the same for the member_added events received during
	// the load phase only (as the workers' 1-second snapshots arrived): the steady
	// churn, without the ramp's burst of joins.
	MemberLatencyLoad Distribution `json:"member_latency_load"`
}

// TargetSummary is one server of a run's target list.
type TargetSummary struct {
	URL       string `json:"url"`       // ws://host:port/app/KEY
	Connected uint64 `json:"connected"` // connections established to it (handshakes completed)
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
	Source      string `json:"source"`      // source IPs its sockets were bound to, comma separated; "" for any
	Connections int    `json:"connections"` // connections assigned
	State       string `json:"state"`       // "ok", "lost" (died or disconnected mid-run), "failed"
	Error       string `json:"error,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Host        string `json:"host,omitempty"`
	Connected   uint64 `json:"connected"`  // successful handshakes
	Delivered   uint64 `json:"delivered"`  // sequenced events received
	HeapBytes   int64  `json:"heap_bytes"` // peak Go heap in use
	RSSBytes    int64  `json:"rss_bytes"`  // peak resident set size
	// Coalesced counts its snapshots that the coordinator folded into the next one
	// because it was behind (exact: deltas add).
	Coalesced int `json:"coalesced,omitempty"`
	// MemStart is the worker's memory once its pool ran, before the first dial;
	// MemLoad when the load phase began (every connection up, nothing published
	// yet). Their difference over Connected is its memory per connection.
	MemStart *WorkerMem `json:"mem_start,omitempty"`
	MemLoad  *WorkerMem `json:"mem_load,omitempty"`
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
	// LostConnections is established connections that ended before the stop
	// without loadgen closing them (churn excluded), plus those open on a worker
	// that was lost.
	LostConnections uint64 `json:"lost_connections"`
	// AtClose is what went wrong while loadgen closed its own connections at the
	// end (e.g. close_timeout: the server's close frame came late): not in Errors.
	AtClose          map[string]uint64 `json:"at_close,omitempty"`
	ErrorRate        float64           `json:"error_rate"` // errors / (connections attempted + publishes)
	DeliveriesPerSec float64           `json:"deliveries_per_sec"`
	PublishesPerSec  float64           `json:"publishes_per_sec"`
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
