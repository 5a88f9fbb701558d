// Command loadgen simulates many Pusher Channels (protocol 7) clients against Herald
// or any Pusher-compatible server, and reports what they saw: connect and
// publish-to-receive latency (exact HdrHistogram merges across processes),
// deliveries per second, messages missing and duplicated per channel, and errors by
// kind.
//
// # Running
//
//	loadgen run --target ws://127.0.0.1:6001 --app-id ID --app-key KEY --app-secret SECRET \
//	    --scenario broadcast --connections 10000 --ramp 2000 --channels 10 \
//	    --publish-rate 50 --payload-size 256 --duration 60s --workers 2 \
//	    --threshold 'p99<250ms' --threshold 'errors<0.1%' --threshold 'missing==0' \
//	    --out report.json --html report.html
//
// Scenarios (--scenario): connect-and-hold (default: N connections ramped at R/s,
// each subscribed to K channels spread one | uniform | zipf over M), broadcast
// (the same plus --publish-rate API publishes per second), churn (--churn-rate
// connections closed and reopened per second), presence-storm (churn on presence
// channels: joins and leaves, signed with channel_data; at most 50 members per
// channel by default) and client-events (--client-event-rate client events per
// second per connection on private channels; the server must allow client
// events, e.g. herald --client-events). Any scenario accepts the other rates too.
// A JSON file (--config) holds the same options (names as in the report's
// scenario.params); flags given on the command line override it. Every run is
// bounded by --duration: connections ramp, then (once all are up, or at twice the
// ramp's planned time plus 10 s) the load phase
// runs until --drain before the end, then connections close with a bounded close
// handshake.
//
// # A cluster without a load balancer
//
// --target takes a comma-separated list of servers, for example the nodes of a
// Herald cluster: every worker sends its connection i to server i mod n, so each
// node gets an equal share of every worker's connections (the summary and the
// report's "targets" list the connections established to each). API publishes go
// to the first server, or to --publish-target http://host:port:
//
//	loadgen run --target ws://127.0.0.1:6001,ws://127.0.0.1:6002,ws://127.0.0.1:6003 //	    --app-id ID --app-key KEY --app-secret SECRET --scenario broadcast //	    --connections 3000 --channels 1000 --publish-rate max --publish-batch 10
//
// --publish-rate max publishes as fast as --publish-concurrency requests in flight
// are answered, instead of at a fixed rate; --publish-batch N sends N events (each
// on the next channel) per request through /apps/{id}/batch_events.
//
// --publish-count N publishes N events and ends the run as soon as each accepted
// one has reached all its subscribers, or none of their deliveries has arrived for
// 5 s (at most --drain after the last answer);
// --publish-await makes publishing closed-loop: each of the --publish-concurrency
// senders waits for its event's last delivery before it sends the next. Both
// follow every publish to its last delivery: the summary's COMPLETION and the
// report's "completion" give publish-to-last-delivery p50/p99/max and deliveries
// per second from the first send to the last delivery. --publish-delay D starts
// publishing D after every connection is up (for the server to settle after the
// ramp).
//
// On presence channels (presence-storm, or --kind presence) each member's
// user_info carries its join time, so every member_added is a latency sample
// (join → member_added as the other members see it, across nodes); the summary and
// the report's "presence" give it, with joins and leaves per second over the load
// phase.
//
// # Workers
//
// A process may open only so many files (20,000 here), so a run is split over
// worker processes. --workers W spawns W workers on this host (this binary, "loadgen
// worker --join 127.0.0.1:PORT"), each with its own source address from
// --source-base (127.0.1.1, 127.0.1.2, …) when the target is on loopback, so that
// ephemeral ports do not run out; --sources-per-worker K gives each worker K
// consecutive addresses, its connections spread over them (connect() slows once a
// (source, destination) pair holds more than about 9,000). Fewer, fuller workers
// cost less CPU per delivery than many small ones. When the workers share the
// server's cores (everything on one machine), --read-batch 5ms makes a busy worker
// read at most every 5 ms, so it wakes once per batch of frames instead of once
// per frame (measured latencies include up to that much). To use other machines, start the coordinator with
// --listen 0.0.0.0:7000 --expect-workers N (and --workers 0 if none are local) and
// run "loadgen worker --join coordinator:7000" on each. A worker that dies or goes
// silent (nothing arrives from it for --heartbeat-timeout while the others are heard
// from) is reported as lost; the run goes on and exits 1. A coordinator that falls
// behind (a starved machine) folds the snapshots it has not merged yet into one and
// loses nobody; the report's workers[].coalesced counts them.
//
// # Output
//
// A live bar (connections established against the target, deliveries and
// publishes per second, p50/p99, errors) on a terminal, plain lines every
// --progress-every otherwise; a summary table at the end; --out writes the JSON
// Report, --html the self-contained HTML report.
//
// # Exit codes
//
//	0   the run completed and every threshold held
//	1   an error, or a worker was lost (figures are partial)
//	2   usage: a bad flag, scenario or threshold expression
//	99  a --threshold was breached (the summary and stderr say which)
//	130 interrupted (Ctrl-C or SIGTERM): connections were closed cleanly, and the
//	    summary and reports were still written
//
// Thresholds: p50 p90 p95 p99 p999 max mean min (publish-to-receive latency),
// connect_p50 … connect_min, member_p50 … member_min (presence join to
// member_added in the load phase) and broadcast_p50 … broadcast_max (an API
// publish to its last delivery over all workers, over the complete publishes) with
// units ms (default), s, us; errors (a rate: 0.1% or 0.001); error_count, missing,
// duplicated, delivered, published, connections (peak open), connected,
// deliveries_per_sec, publishes_per_sec, broadcast_incomplete (publishes that did
// not reach every subscriber), lost_connections (closed before the end, not by
// loadgen). Operators < <= > >= ==. What goes wrong while loadgen closes its own
// connections at the end (close_timeout: a close frame that came late) is listed
// apart (at_close) and counts in no threshold.
//
// Publishing on a schedule: --publish-schedule 10x10s,10x1m (instead of
// --publish-rate) sends 10 publishes 10 s apart from the start of the load phase,
// then 10 a minute apart; --publish-schedule +30s,10x10s waits 30 s first.
//
// --progress json writes a JSON object per line on stdout (type "progress" about
// once a second, fields as loadgen.ProgressLine; then one of type "end" with the
// verdict, totals and broadcasts) instead of the bar or lines and the summary.
//
// # Profiling
//
// LOADGEN_CPUPROFILE_DIR=DIR makes every worker (spawned ones inherit the
// environment) write a CPU profile to DIR/worker-<pid>.pprof when it ends, for
// `go tool pprof`. --cpuprofile FILE does the same for the coordinator (loadgen run).
package main
