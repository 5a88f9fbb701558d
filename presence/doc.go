// Package presence tracks who is present in the presence channels of a Herald cluster,
// and decides when the hub must send member_added and member_removed.
//
// A user may be present through several connections on several nodes. The store counts
// connections per user so that only a user's first connection in a channel (cluster-wide)
// reports first and only its last reports last; the tabs and devices in between are
// invisible to the other members, as Pusher specifies.
//
// # Entry points
//
//   - Store: the contract every engine meets; the hub holds one per node.
//   - NewMemory: the engine of a single node, with no dependencies; Memory.Node gives
//     other node ids views of the same state, for tests of a cluster without Redis, and
//     Memory.RemoveNode does what crash cleanup does for a dead node.
//   - presencetest.Run: the conformance suite; every engine runs it.
//
// # Concurrency
//
// All methods are safe for concurrent use, and each call is atomic: two connections of
// one user added at once on two nodes yield exactly one first. The memory engine guards
// all its state with one mutex, Memory.mu, never held while calling out; no other lock is
// ever taken with it. Methods may do network I/O in other engines, so the hub calls them
// off its epoll loops.
//
// # Invariants
//
//   - Count is O(1): engines keep a per-channel user count rather than reading the
//     members, because the HTTP API's channel info asks for user counts of many
//     channels at once.
//   - Every connection entry is owned by the node that added it, so that the entries of
//     a node that dies can be removed by others (and the users who thereby left are
//     reported as Departures) within a bounded time: presence never lies for long.
//   - A channel nobody is in holds no state.
//   - maxMembers refuses a new user (ErrFull) and records nothing; it never refuses
//     another connection of a present user.
//   - Member info is kept as the raw JSON bytes the app sent, never re-encoded; the store
//     keeps its own copy and Members hands out copies the caller owns.
package presence
