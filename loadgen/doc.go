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
//     signed with Config.Secret (ChannelAuth).
//   - Pool.Counts, Pool.WaitCounts: dialed, established, subscribed, failed, closed.
//   - Pool.Delivered, Pool.SeqDeliveries(seq): cheap progress reads for a driver that
//     waits for a publish to reach everyone.
//   - Pool.Stats(ctx, first, last) → *Stats: histograms of connect time (socket() to
//     connection_established) and publish-to-receive latency; deliveries, duplicates,
//     reordered and missing sequence numbers; close and error reasons. Stats encode to
//     JSON and Merge exactly, across loops and across processes.
//   - Pool.Shutdown (close handshake, bounded) and Pool.Close (immediate).
//   - NewPublisher → Publisher.Publish(ctx, channel, event, data): POST
//     /apps/{id}/events signed as PUSHER.md 2.2 (SignQuery) over keep-alive
//     connections.
//   - AppendPayload / ParsePayload: the sequenced payload "seq:<n>:ts:<unixnano>:" and
//     'x' padding. Every channel event whose data is such a string is a delivery.
//
// # How a Pool works
//
// Config.Loops goroutines (default one per CPU) each own an epoll instance and a slab
// of connection structs; there is no goroutine, and no read or write buffer, per
// connection. Sockets are raw, non-blocking, optionally bound to a source address in
// 127.0.0.0/8 (with IP_BIND_ADDRESS_NO_PORT, so ports are unique per 4-tuple) so that
// several processes or phases use their own addresses, and registered edge-triggered.
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
