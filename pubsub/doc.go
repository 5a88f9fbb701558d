// Package pubsub carries published messages between the nodes of a Herald cluster.
//
// The hub talks to a Broker and receives through a Handler it implements, so that an
// engine never imports node logic and engines can be swapped by configuration. A node
// subscribes only to the channels it has local subscribers for, so a message reaches only
// the nodes that need it.
//
// # Entry points
//
//   - Broker and Handler: the contract every engine meets.
//   - NewMemory: the engine of a single node, with no dependencies (what `make run` uses).
//   - MemoryBus: several in-process brokers wired together as if they were nodes, for
//     tests of multi-node behaviour without Redis.
//   - pubsubtest.Run: the conformance suite; every engine runs it.
//
// # Concurrency
//
// All Broker methods are safe for concurrent use. Handlers may be called from several
// goroutines at once, and must not block for long: the memory engine calls them in the
// publisher's goroutine, a network engine in its reader, and either way a slow Handler
// delays every other delivery behind it. No engine holds a lock while a Handler runs, so
// a Handler may call back into a broker.
//
// The memory engine has one lock, MemoryBus.mu (a RWMutex). Publish holds it for reading
// only long enough to fetch the subscriber list of its channel: that list is copied on
// write by Subscribe and Unsubscribe, so Publish iterates it unlocked and allocates
// nothing.
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
//     handed over are the bytes every Handler gets.
package pubsub
