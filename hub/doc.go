// Package hub is the Pusher Channels protocol v7 on one Herald node: connections'
// state, channel subscriptions and their authorization, presence, client events, user
// sign-in, cache channels, the local fan-out, and the Pusher HTTP API handlers.
//
// # Entry points
//
// New(Config) builds a Hub, which owns a transport.Server (the epoll loops and the
// public port), a pubsub.Broker and a presence.Store. Run serves; Shutdown drains with
// close code 4200. APIHandler is the HTTP API, served on the same port as the
// WebSockets (the transport hands it every plain HTTP request). Stats feeds the admin
// server and the Prometheus collector registered through Config.Registerer.
//
// # Data path
//
// Every event, whatever its source (HTTP API, client event, presence change), is turned
// into its JSON once, wrapped in a WebSocket frame once, and put in a broker envelope
// (a 13-byte header naming the connection to skip, then the frame). The broker hands
// the envelope to every node subscribed to the channel, this one included; HandleMessage
// then gives the very same frame bytes to each local subscriber's loop
// (transport.Server.Fanout), grouped by loop from a per-channel snapshot that is
// rebuilt only after the subscriber set changed. Nothing is decoded or re-encoded on
// the way: publisher data is forwarded byte for byte.
//
// A node subscribes a channel in the broker on its first local subscriber and leaves it
// after its last, so that a cluster broker sends a message only to nodes that need it.
// subscription_succeeded is sent only once the broker subscription is in place.
//
// # Concurrency
//
// The transport calls the hub for a connection on that connection's owner loop; the
// client struct is owned by that loop. Other goroutines reach a connection only through
// transport.Server.Do. Work that may block on the network (broker subscribe, unsubscribe
// and client-event publish, every presence.Store call) never runs on a loop: it goes to
// the ops shards (ops.go), one goroutine per shard, sharded by channel key so that the
// jobs of one channel run in order. New work is refused when a shard's queue is full
// (the client gets an error); clean-up work is always admitted.
//
// Locks, in the order they may be taken: an index shard's mutex, then a channel's mu.
// userTable, the cache and appStats have leaf locks that are never held while
// taking another.
//
// # Invariants
//
//   - A client gets subscription_succeeded before any event of that channel: the
//     activation that adds it to the channel queues the confirmation on its loop while
//     holding the channel's lock, and every fan-out snapshots recipients under the same
//     lock.
//   - Every subscription that was started is ended exactly once (unsubscribe, close, or a
//     failed subscribe), releasing its channel reference and, for presence, its store
//     entry; a subscription marked dead is never added to a channel afterwards.
//   - member_added is sent for a user's first connection in a channel and member_removed
//     for the last, as the presence.Store decides (cluster-wide with a shared store).
//   - Bad input gets pusher:error, pusher:subscription_error or a close code, and never
//     affects another connection. Delivery is at-most-once, in order per publisher and
//     channel.
package hub
