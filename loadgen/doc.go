// Package loadgen is Herald's load generator as a library: a light Pusher Channels
// (protocol 7) client that holds many connections per process, a signed publisher for
// the Pusher HTTP API, and the statistics both need (latency histograms, delivery,
// duplicate and missing counts).
//
// It is a black-box client: it speaks WebSocket and Pusher over TCP and HTTP and
// imports nothing from Herald's server packages, so it can drive Herald, a raw floor,
// or any Pusher-compatible server.
//
// # Entry points
//
//   - New(Config) → *Pool, Pool.Run, Pool.Dial(ctx, n): open n connections (at most
//     Config.MaxHandshakes in flight) that subscribe to Config.Channels(id) as soon as
//     pusher:connection_established arrives. Private and presence subscriptions are
//     signed with Config.Secret (ChannelAuth). With Config.Addrs (several servers,
//     e.g. the nodes of a cluster without a load balancer) connection id goes to
//     Addrs[id mod n]; Pool.AddrCounts says how many were established to each.
//   - Pool.Counts, Pool.WaitCounts: dialed, established, subscribed, failed, closed.
//   - Pool.Delivered, Pool.SeqDeliveries(seq): cheap progress reads for a driver that
//     waits for a publish to reach everyone.
//   - Pool.Stats(ctx, first, last) → *Stats: histograms of connect time (socket() to
//     connection_established), publish-to-receive latency and presence
//     join-to-member_added latency (for members whose user_info carries their join
//     time as MemberTimestampKey, as the worker's channel_data does); deliveries,
//     duplicates, reordered and missing sequence numbers; member events; close and
//     error reasons. Stats encode to JSON and Merge exactly, across loops and across
//     processes.
//   - Pool.Send(ctx, n, msg): n subscribed connections send a message (client
//     events); Pool.Disconnect(ctx, n): n connections start their close handshake
//     (churn). Config.OnSubscribed / OnClosed let a driver keep per-channel counts.
//   - Pool.CloseConns (close handshakes, bounded, Stats still readable), Pool.Shutdown
//     (the same, then Close) and Pool.Close (immediate).
//   - NewPublisher → Publisher.Publish(ctx, channel, event, data): POST
//     /apps/{id}/events signed as PUSHER.md 2.2 (SignQuery) over keep-alive
//     connections; Publisher.PublishBatch: several events in one POST
//     /apps/{id}/batch_events.
//   - AppendPayload / ParsePayload: the sequenced payload "seq:<n>:ts:<unixnano>:" and
//     'x' padding. Every channel event whose data is such a string is a delivery.
//
// The load generator as a product (cmd/loadgen only parses flags and wires these):
//
//   - Spec (scenario.go): a run, from flags or a JSON file (LoadSpec); Normalize
//     fills defaults per scenario: connect-and-hold, broadcast, churn,
//     presence-storm, client-events. Channel spread one | uniform | zipf(s) over M
//     channels, K per connection, chosen by a pure function of the run-wide
//     connection id so that a worker can recompute it. Target may list several
//     servers (comma-separated): every worker spreads its connections over them
//     round-robin by its local connection id (connection i to server i mod n), so
//     each server gets an equal share of every worker's; the API publishes go to
//     PublishTarget, by default the first server. PublishRate PublishRateMax
//     publishes as fast as PublishConcurrency requests are answered;
//     PublishBatch > 1 sends that many events per request (/batch_events).
//     PublishCount publishes a fixed number of events and ends the run once
//     each accepted one has reached all its subscribers; PublishAwait makes
//     publishing closed-loop (each sender waits for its event's last delivery
//     before the next, so PublishConcurrency is the publishes in flight from
//     request to last delivery). Both follow every publish to its last delivery
//     (tracking.go) and fill Report.Completion: publish-to-last-delivery, and
//     deliveries per second from the first send to the last delivery. PublishDelay
//     holds API publishing back for a while once every connection is up.
//   - NewCoordinator(CoordinatorConfig) → Coordinator.Run(ctx) → *Report: spawns
//     worker processes (this binary, "worker --join addr") and/or waits for remote
//     ones, plans, drives the phases, merges snapshots exactly, and builds the
//     Report. RunWorker(ctx, WorkerConfig) is a worker.
//   - Report: besides the totals and latencies, Targets (connections established
//     per server), LoadStarted/LoadEnded (the load phase, for an outside observer
//     that samples the server) and, on presence channels, Presence: joins and
//     leaves per second over the load phase, member events received, and
//     join-to-member_added latency over the whole run and over the load phase.
//   - Broadcast completion: every run that publishes through the API tracks its
//     publishes (tracking.go; all of them with PublishCount or PublishAwait, the
//     first 10,000 otherwise): workers report, per API sequence number, unique
//     deliveries, duplicates and the latest receive time, read from the pool's
//     lock-free per-seq ring; Report.Broadcasts gives each publish's expected and
//     unique deliveries, duplicates and publish-to-last-delivery time, with the
//     distribution over the publishes, from the same tracker entries as
//     Report.Completion. Spec.PublishSchedule publishes in groups ("10x10s,10x1m")
//     instead of at a rate.
//   - ParseThresholds / EvaluateThresholds: k6-style pass/fail criteria.
//     Totals.LostConnections (closed before the stop, not by loadgen) and the
//     reasons counted during loadgen's own final close (Totals.AtClose, not
//     errors) let a run demand lost_connections==0 and error_count==0.
//   - NewJSONProgress: the progress as JSON lines (ProgressLine), for wrappers.
//   - NewProgressPrinter (live bar on a terminal via
//     github.com/schollz/progressbar/v3, pinned at v3.19.1, the version tried;
//     plain lines otherwise) and WriteSummary (the final table). progressbar was
//     chosen over vbauerster/mpb because one bar is all a run needs and, with a
//     known maximum, it renders synchronously on the caller's goroutine and starts
//     none of its own, so the coordinator's goroutine contract stays simple; it is
//     maintained, widely used and has three small dependencies.
//
// # The coordinator/worker protocol
//
// One TCP connection per worker, JSON lines (one object per line, at most 64 MiB),
// ProtocolVersion 2:
//
//	worker → coordinator  {"type":"hello","version":2,"hello":{"pid":…,"host":…,"source":…}}
//	coordinator → worker  {"type":"plan","version":2,"plan":{worker_id, workers, spec, connections, sources, start}}
//	                      or {"type":"reject","error":…} (other version, joined too late)
//	worker → coordinator  {"type":"snapshot","snapshot":{…}} every second, at once when its
//	                      share is up (ramp_seconds), and a final one ("final":true)
//	coordinator → worker  {"type":"load"}     every connection is up: start churn / client events
//	                      {"type":"quiesce"}  stop sending (drain before the end)
//	                      {"type":"stop"}     close connections (bounded), send the final snapshot
//	worker → coordinator  {"type":"failed","error":…} when the plan cannot run
//	worker → coordinator  {"type":"seqs","seqs":[[seq,unique,dups,last_ns],…]} every
//	                      millisecond with publish_await, every 100 ms otherwise, when
//	                      the run publishes through the API: the changed cumulative
//	                      delivery counts of the recent tracked API publishes (and
//	                      once more just before the final snapshot)
//
// A snapshot carries deltas since the previous one (Stats with both histograms in
// the HdrHistogram V2 encoding, obtained exactly with Stats.Sub; per-channel
// client events sent, deliveries and duplicates) and gauges (open connections,
// subscribed connections per channel, heap and RSS; once each, the memory after a GC
// before the first dial and when the load phase began, which Report.Workers
// carries as mem_start and mem_load). The coordinator adds the
// deltas, so totals and percentiles are exact merges, never averages; each
// 1-second Series sample is the merge of that interval's deltas.
//
// A coordinator that falls behind (a machine starved of CPU) thins the snapshots,
// never loses a worker for it. Each worker's reader goroutine stamps the time
// whenever bytes arrive and folds the periodic snapshots that the run goroutine
// has not merged yet into one (Snapshot.coalesce: deltas add, histograms exactly;
// WorkerSummary.Coalesced counts them), so the run goroutine merges at most one
// per worker per turn, whatever the backlog. A worker writes its snapshots from a
// goroutine of its own and skips one while the previous is still being written
// (the next carries its deltas), so a coordinator that does not read slows the
// snapshots, not the worker; a single write may take up to 2 minutes.
//
// A worker that hangs up, sends garbage, fails a write, or from which nothing has
// arrived for HeartbeatTimeout while other workers were heard from (or for ten
// times as long in any case) is lost: its state becomes "lost", the error kind
// "worker_lost" is counted, what it sent so far stays in the totals, and the run
// goes on. Silence is judged on the bytes received, relative to the other
// workers, so that a coordinator that is itself descheduled loses nobody. After "stop", workers get CloseTimeout+5 s for their final snapshot. So
// every wait of the coordinator is bounded, and spawned processes that are still
// running 3 s after the end are killed by PID (SIGKILL). Spawned workers run in
// their own process group, so a terminal's Ctrl-C reaches the coordinator only,
// which then stops them cleanly; a worker whose coordinator goes away closes its
// connections and exits.
//
// Sequence numbers are unique across a run: the coordinator's API publishes use
// n*(W+1)+1 and worker i's client events n*(W+1)+i+2 (W workers), so a
// connection's duplicate window works across publishers. Expected deliveries per
// channel are publishes accepted by the server times the channel's subscribers at
// the time (client events: subscribers minus the sender), from the 1-second
// gauges; missing = expected − unique deliveries, per channel. In quiet runs
// (everyone subscribed before the load phase, nobody leaving) this is exact; under
// churn it is an estimate.
//
// # How a Pool works
//
// Config.Loops goroutines (default one per CPU) each own an epoll instance and a slab
// of connection structs; there is no goroutine, and no read or write buffer, per
// connection. Sockets are raw, non-blocking, optionally bound to a source address in
// 127.0.0.0/8 (with IP_BIND_ADDRESS_NO_PORT, so ports are unique per 4-tuple) so that
// several processes or phases use their own addresses, and registered edge-triggered.
// With Config.ReadBatch a loop that handled fewer events than its batch holds sleeps
// that long (one nanosleep) before it waits again, so a worker among many sharing
// the server's cores wakes once per batch of frames rather than once per frame; an
// idle loop still blocks in epoll_wait.
// A loop reads into one 64 KiB buffer shared by its connections and parses in place:
// the 101 response (Sec-WebSocket-Accept checked against a key derived from a per-pool
// seed and the connection id, so nothing is stored while the handshake is in flight),
// then server frames. Only bytes that end in the middle of a frame, a fragmented
// message, or output the kernel did not take are copied to a per-connection buffer,
// and only until they are complete. An idle connection costs a 72-byte slab entry
// (about 95 bytes of Go heap per connection measured at 15,000, slab growth
// included) plus the kernel's socket, which is not process memory.
//
// Client frames are masked with keys from a per-loop ChaCha8 stream. WebSocket pings
// get pongs, pusher:ping gets pusher:pong, and, like pusher-js, a connection that heard
// nothing for min(Config.ActivityTimeout, the server's activity_timeout) sends
// pusher:ping and gives up PongTimeout later.
//
// # Histograms
//
// Latencies go to github.com/HdrHistogram/hdrhistogram-go (pinned at v1.4.0, the
// version tried and served by the module proxy): it is the reference HDR design,
// maintained, and its V2 compressed encoding is read by the Java, C and Rust
// implementations too. Every Histogram here has one geometry (1 µs to 1 h, 3
// significant digits, so at most 0.1% relative error), which makes Merge exact: a
// merged histogram is identical to one that recorded every value itself. The
// library's Merge re-records each bucket's representative value, which lands in the
// same bucket when the geometries match; Histogram.Merge refuses any other geometry
// rather than approximate.
//
// # Concurrency
//
// Coordinator: Run's goroutine owns the run state; one accept goroutine and one
// reader goroutine per worker connection feed it (periodic snapshots through the
// link's pending slot under link.mu, the rest through a bounded channel) and
// stop when Run closes the listener and connections; the API publisher has a
// pacer and PublishConcurrency senders, stopped at the drain. Worker: RunWorker's
// goroutine paces dials, churn and client events (10 ms ticks) and builds
// snapshots; one sender goroutine writes them; one reader goroutine takes the
// coordinator's commands. Both are
// stopped and waited for before Run/RunWorker return.
//
// Pool:
//
// A loop's connections, histograms and reason counts are touched only by its
// goroutine. Other goroutines reach a loop through a bounded command queue (Dial,
// Stats, Shutdown wait for room, bounded by their context) and an eventfd wake-up,
// or read atomics (Counts, Delivered, SeqDeliveries). Pool methods are safe for
// concurrent use. Run starts the loops; Close stops them and waits for them. Config
// callbacks (Channels, ChannelData, OnEvent) run on loop goroutines and must not
// block; in particular they must not call Dial, Stats or Shutdown, which queue work
// for the loops.
//
// # Invariants
//
//   - No goroutine, no buffer, and no map entry per connection; per-connection bytes
//     exist only while something is partial or unsent, bounded by MaxMessageBytes and
//     1 MiB of unsent output.
//   - Every connection ends counted exactly once, in Failed (before established) or
//     Closed (after), with a reason.
//   - A server that breaks RFC 6455 gets close 1002 (1009 for oversized messages) and
//     only its own connection is affected.
package loadgen
