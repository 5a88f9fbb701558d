// Package presence holds the cluster-wide state of a Herald cluster: who is present in
// which presence channels (and so when the hub sends member_added and member_removed),
// how many connections subscribe to each channel (and so when it sends
// channel_occupied and channel_vacated), and which nodes are alive.
//
// A user may be present through several connections on several nodes. The store counts
// connections per user so that only a user's first connection in a channel (cluster-wide)
// reports first and only its last reports last; the tabs and devices in between are
// invisible to the other members, as Pusher specifies.
//
// # Entry points
//
//   - Store: the contract every engine meets; the hub holds one per node. Handler is
//     how an engine reports what it learns on its own (departures, resets).
//   - NewMemory: the engine of a single node, with no dependencies; Memory.Node gives
//     other node ids views of the same state, for tests of a cluster without Redis, and
//     Memory.RemoveNode does what crash cleanup does for a dead node.
//   - NewRedis: the engine of a cluster, over one Redis server or a Redis Cluster.
//   - presencetest.Run: the conformance suite; every engine runs it.
//
// # The Redis engine
//
// Every decision (first, last, full, a transition, which node cleans a dead one) is made
// by one Lua script on the server, never read-then-written from a node. Each script
// touches keys of one hash slot, so the same code runs on a Redis Cluster. Keys, with P
// the prefix (default "herald"), K a presence channel (the hub's "app:channel") and A
// an app:
//
//	P:{nodes}                ZSET node name → lease expiry (ms, Redis server time)
//	P:{nodes}:claims         ZSET dead node name → claim expiry, while a sweeper cleans it
//	P:{nodes}:claimers       HASH dead node name → the id of the node that claimed it
//	P:{nodes}:pch:<name>     SET  "K#<generation>": presence channels where the node may have entries
//	P:{nodes}:apps:<name>    SET  apps the node reported counts for
//	P:p:{K}:u                HASH user → info JSON ("" for none); HLEN is Count, O(1)
//	P:p:{K}:c                HASH connection → owner name + "\n" + user
//	P:p:{K}:n                HASH user → number of connections
//	P:p:{K}:d                HASH user → when its last connection left (ms): pending departures
//	P:s:{A}                  HASH channel → cluster-wide subscription count
//	P:s:{A}:<name>           HASH channel → the node's count
//	P:s:{A}:vacated          HASH channel → when its count went to zero (ms): pending vacancies
//
// Departures and vacancies are pending for the departure grace (DepartureGrace, 3 s):
// Remove and SetSubscriptions record them in the same script that decides them; a Join
// or an occupation within the grace clears the record and reports Returned; the node
// that learned of it calls ConfirmDeparture or ConfirmVacated after the grace, which
// clears the record and says whether it stood. The two pending hashes live ten graces
// past their last write, so that a record whose node died before confirming does not
// stay. A dead node's cleanup reports its departures and vacancies at once
// (HandleDepartures, HandleVacated).
//
// A node's name is "<NodeID>-<incarnation>" (the registration time in µs), new each
// time the node registers, so that a node taken for dead and back is never mistaken
// for its former self. Names and channel sets are the node's own bookkeeping: a channel
// enters the node's pch set (SADD) before its first entry there is written, and leaves
// (SREM, batched into the next renewal) after its last left. A pch member carries a
// generation, so that a late SREM never drops a newer SADD of the same channel; the set
// may hold a channel the node has no entries in (cleanup then finds nothing), never the
// reverse. Channel and app names must be non-empty and must not start with '}' (the
// hash tag would be empty); the prefix must not contain braces.
//
// The client must have go-redis's ContextTimeoutEnabled set: each call is bounded by
// min(ctx, OpTimeout) only if the client honours context deadlines. It should have
// MaxRetries -1: a command that go-redis replays after a lost reply is an Add that
// reports first=false for a user whose first connection it was.
//
// Every Redis or network failure is an error for which errors.Is(err, ErrUnavailable)
// holds (the hub answers 503), unless the caller's own context ended, whose error is
// then returned. A failed Add may have been applied: it is undone by a background
// retrier; a failed Remove is redone by it. The retrier queue holds at most one entry
// per channel and connection (so it is bounded by the node's subscriptions; nothing is
// dropped, since a dropped removal would be a ghost member), runs every second, and
// stops a pass at the first failure. A redone removal that finds the user gone from the
// channel (its last connection removed now or by an earlier attempt, or Redis lost the
// data) reports the user through Handler.HandleDepartures: a member_removed for a user
// a client does not know is harmless, a missing one is a ghost. SetSubscriptions is not
// retried: it may or may not have been applied when it fails, and its absolute numbers
// make the hub's next report put it right.
//
// # Leases and cleanup
//
// NewRedis registers the node with a lease (refusing, with ErrNodeIDInUse, an id a live
// node holds) and sweeps at once. Then, in goroutines that Close stops and waits for:
//
//   - Renewal, every Lease/3: one script call sets the lease to server time + Lease,
//     drops the pch members the node no longer needs, and returns the live nodes (what
//     Nodes returns). If the node's name is gone from the registry (it was frozen or cut
//     off past its lease and another node claimed it, or Redis lost its data), the node
//     registers a new name, forgets its bookkeeping and calls Handler.HandleReset; the
//     hub then Adds its live connections and reports its counts again. An Add takes a
//     connection's entry over from whatever name owned it, so that a sweeper still
//     cleaning the old name does not delete what the hub re-asserted.
//   - Sweep, every min(1 s, Lease/4) with jitter: one script moves the nodes whose lease
//     ran out (and claims whose sweeper died, after 30 s) into the claims, so that
//     exactly one node claims each; it also hands a node back the claims it holds
//     without knowing (its call timed out while Redis was frozen, and Redis ran it
//     when it woke up), which would otherwise wait the 30 s. The claimer runs one script per channel of the dead
//     node's pch set (its connections removed, user counts fixed, users left with none
//     collected) and one per app of its apps set (its counts taken out of the totals;
//     the channels this vacates are logged at debug level), deletes its sets and the
//     claim, and calls Handler.HandleDepartures once with all the departures. Every step
//     can run again harmlessly. A node killed with Lease 15 s is cleaned up within about
//     16 s; a node that Closes sets its lease to 0 and is cleaned up within a second.
//   - Retries of removals, every second (above).
//
// If every node was down at once, the first to start cleans up after the others. If a
// sweeper dies between cleaning a channel and handing over its departures, those are
// lost (their users are gone from the store, but clients that listed them are not told).
//
// Warnings are rate-limited: one line per kind per 10 s, with the number suppressed.
//
// # Concurrency
//
// All methods are safe for concurrent use, and each call is atomic: two connections of
// one user added at once on two nodes yield exactly one first, and of the nodes that
// report counts for a channel at once exactly one sees each transition. Handler methods
// are called from the store's goroutines, or from the goroutine of a call that found a
// queued removal to redo, never with a lock held.
//
// The memory engine guards all its state with one mutex, Memory.mu, never held while
// calling out. The Redis engine guards its bookkeeping (name, channel and app sets,
// retry queue, node list, in-flight calls) with Redis.mu, never held during network I/O
// or while calling the Handler; its warning limiter has a mutex of its own, never held
// with Redis.mu. No two locks of this package are ever held together.
//
// # Invariants
//
//   - Count is O(1): engines keep a per-channel user count rather than reading the
//     members, because the HTTP API's channel info asks for user counts of many
//     channels at once. Subscriptions is one lookup too.
//   - Every connection entry and every count is owned by the node that added it, so that
//     the share of a node that dies is removed by others (and the users who thereby
//     left are reported as Departures, once) within a bounded time: presence never lies
//     for long.
//   - No entry is written under a node name that cleanup cannot find: a name is
//     registered before use, and a channel is in the name's set before its entry.
//   - A channel nobody is in holds no state; a zero count is not stored.
//   - maxMembers refuses a new user (ErrFull) and records nothing; it never refuses
//     another connection of a present user.
//   - Member info is kept as the raw JSON bytes the app sent, never re-encoded; the store
//     keeps its own copy and Members hands out copies the caller owns.
//   - A SetSubscriptions with a negative count is refused whole.
package presence
