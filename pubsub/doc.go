// Package pubsub carries published messages between the nodes of a Herald cluster.
//
// The hub talks to a Broker and receives through a Handler it implements, so that an
// engine never imports node logic and engines can be swapped by configuration. A node
// subscribes only to the channels it has local subscribers for, so a message reaches only
// the nodes that need it.
//
// Messages are opaque bytes to every engine. What Herald's nodes send each other is the
// hub's business and is documented beside the code that writes and reads it: the broker
// envelope (a version byte, the publishing node, the connection to skip, then a finished
// WebSocket frame) in hub/fanout.go, and control messages in hub/control.go. A node drops
// and counts an envelope of a version it cannot read.
//
// # Entry points
//
//   - Broker and Handler: the contract every engine meets.
//   - NewMemory: the engine of a single node, with no dependencies (what `make run` uses).
//   - MemoryBus: several in-process brokers wired together as if they were nodes, for
//     tests of multi-node behaviour without Redis.
//   - NewRedis and RedisConfig: the engine of a cluster of nodes, on one Redis server
//     (a *redis.Client) or a Redis Cluster (a *redis.ClusterClient, sharded pub/sub).
//   - pubsubtest.Run: the conformance suite; every engine runs it.
//
// # Concurrency
//
// All Broker methods are safe for concurrent use. Handlers may be called from several
// goroutines at once, and must not block for long: the memory engine calls them in the
// publisher's goroutine, a network engine in its reader, and either way a slow Handler
// delays every other delivery behind it. No engine holds a lock while a Handler runs, so
// a Handler may call back into a broker; but a Redis Handler must not wait for the
// engine's own goroutines: a Subscribe from HandleMessage waits for the confirmation that
// the receive loop running the Handler would read, and a Close from any Handler waits
// for the goroutine running it (both until their context ends).
//
// The memory engine has one lock, MemoryBus.mu (a RWMutex). Publish holds it for reading
// only long enough to fetch the subscriber list of its channel: that list is copied on
// write by Subscribe and Unsubscribe, so Publish iterates it unlocked and allocates
// nothing.
//
// # The Redis engine
//
// Redis names, with P the configured prefix:
//
//   - P:c:{<channel>} carries a hub channel (PUBLISH/SUBSCRIBE, or SPUBLISH/SSUBSCRIBE
//     on a cluster); the hub's name is the bytes between "P:c:{" and the last "}", so it
//     is recovered on receipt as a substring, and any bytes are allowed in it.
//   - P:last:{<channel>} keeps the channel's last message for PublishKeep and Last; its
//     hash tag is the channel's, so it shares its slot and PublishKeep is one MULTI/EXEC
//     (SET … PX ttl, then the publish). A channel with an empty hash tag ("", or starting
//     with "}") is hashed whole, so on a cluster its key is set, then it is published.
//   - P:ctl is the control channel, which every node subscribes to while it runs.
//   - P:probe:<node> (P:probe:<node>:{<tag>} on a cluster, with a tag chosen so that the
//     channel lives on the shard it probes) is a node's probe channel of one shard.
//
// The engine is a set of shards: one for a single server, one per master of a cluster.
// A shard has one subscriber connection and three goroutines for it: a supervisor
// (shard.run), which connects, probes, and tears down and reconnects with jittered
// exponential backoff (50 ms to 2 s); a writer, which turns the channels Subscribe and
// Unsubscribe marked dirty into SUBSCRIBE/UNSUBSCRIBE commands of up to 1,000 channels
// (of one slot, on a cluster: Redis refuses shard commands across slots), with one batch
// in flight at a time so that concurrent callers share commands; and a receiver, which
// matches confirmations with the commands in flight and calls the Handler directly. On a
// cluster a topology watcher re-reads the slot map when Redis drops a shard
// subscription (its slot moved) or refuses one with MOVED, and moves each channel to the
// shard of its slot; a supervisor re-reads it before each reconnection. Close cancels the
// engine's context and waits for all of them.
//
// Subscriber connections come from a copy of the client's options that speaks RESP2,
// whatever the client speaks: go-redis v9.17.3 drops RESP3 push frames split across two
// reads (redis/go-redis#3839). Commands (publishes, Last, probes) go through the client
// itself, which must set ContextTimeoutEnabled so that OpTimeout and ProbeTimeout bound
// them.
//
// The lock order is topoMu, then notifyMu, then mu; no lock is held while a Handler runs
// but notifyMu, which only orders HandleBrokerState calls. Redis.mu (a RWMutex) guards
// every shard's channel map, dirty list and connection state, every channel's state and
// the commands in flight; the receiver takes it for reading per message, for writing per
// confirmation. Publish, PublishKeep, PublishControl, Last and Stats take no lock.
//
// # Invariants
//
//   - At-most-once delivery: a message published while a node is not subscribed, or lost
//     with an engine connection, is not redelivered. Pusher, Redis pub/sub and Centrifugo
//     promise the same, and clients are built for it.
//   - Ordering per publisher per channel; nothing is promised across channels or across
//     publishers.
//   - After Subscribe returns nil a node misses nothing published later; after
//     Unsubscribe or Close returns, a Publish that starts later delivers nothing to it.
//     (A Publish already under way may still deliver: waiting for it would deadlock a
//     Handler that closes its own broker.)
//   - Data is never copied, reused or modified by an engine: the bytes the publisher
//     handed over are the bytes every Handler gets. (The Redis engine hands over the
//     bytes of the string go-redis read, which nothing else references.)
//
// The Redis engine adds:
//
//   - A channel is delivered only while it is confirmed: wanted, the last command sent
//     for it on the current connection subscribed it, and no command for it is in
//     flight. Counting the commands in flight is what keeps SUBSCRIBE x, UNSUBSCRIBE x,
//     SUBSCRIBE x from passing for confirmed on the first reply; Unsubscribe only clears
//     "wanted", so it never waits on the network and yet stops delivery at once.
//   - Every confirmation answers the oldest command in flight, channel by channel, in
//     order; an error reply answers it whole. A subscribe confirmation that answers
//     nothing means the connection is not what the engine thinks, and ends it.
//   - A connection subscribes exactly the wanted set when it starts, and forgets
//     everything when it ends; a channel neither wanted nor subscribed is forgotten, so
//     nothing leaks across Subscribe/Unsubscribe churn or reconnections.
//   - The engine is up while every shard is: its connection subscribed every channel
//     wanted when it connected, and its last probe, published through the command client
//     and received on the subscriber connection, came back within ProbeTimeout. Each
//     change is reported to HandleBrokerState once, in order (but for the first up, which
//     NewRedis returning reports).
//   - While the shard of a channel (or of the control channel) is down, the calls that
//     would use it fail at once with ErrUnavailable; every failure of the network or the
//     server wraps ErrUnavailable, and a caller's context error stays one.
//   - Nothing Redis sends makes the engine panic: a reply it does not know is counted and
//     skipped, one it cannot trust (go-redis's parser panicking on it included) ends the
//     connection, which is then made again.
package pubsub
