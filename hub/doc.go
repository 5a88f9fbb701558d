// Package hub is the Pusher Channels protocol v7 on one Herald node: connections'
// state, channel subscriptions and their authorization, presence, client events, user
// sign-in, cache channels, the local fan-out, and the Pusher HTTP API handlers.
//
// # Entry points
//
// New(Config) builds a Hub, which owns a transport.Server (the epoll loops and the
// public port), a pubsub.Broker and a presence.Store (built through Config.NewBroker
// and Config.NewPresence: the memory engines for one node, the Redis engines for a
// cluster; cmd/herald chooses). Run serves; Shutdown drains with close code 4200.
// APIHandler is the HTTP API, served on the same port as the WebSockets (the
// transport hands it every plain HTTP request). Stats feeds the admin server and the
// Prometheus collector registered through Config.Registerer.
//
// The hub is the engines' handler: pubsub.Handler (HandleMessage, HandleControl,
// HandleBrokerState) and presence.Handler (HandleDepartures, HandleReset).
//
// # Data path
//
// Every event, whatever its source (HTTP API, client event, presence change), is turned
// into its JSON once, wrapped in a WebSocket frame once, and put in a broker envelope
// (fanout.go: a version byte, the publishing node, the connection to skip, then the
// frame). The publishing node hands the envelope to the broker and, once the broker
// took it, gives the frame to its own local subscribers; the broker carries it to every
// other node subscribed to the channel, whose HandleMessage gives the very same frame
// bytes to each local subscriber's loop (transport.Server.Fanout), grouped by loop from
// a per-channel snapshot that is rebuilt only after the subscriber set changed. The copy
// the broker hands back to the publisher is dropped: each subscriber in the cluster gets
// each message once. Nothing is decoded or re-encoded on the way: publisher data is
// forwarded byte for byte.
//
// A node subscribes a channel in the broker on its first local subscriber and leaves it
// after its last (brokersubs.go, batched: one broker call per batch of channels), so
// that a cluster broker sends a message only to nodes that need it.
// subscription_succeeded is sent only once the broker subscription is in place, except
// while the broker is down: then ordinary channels are confirmed at once (the broker
// subscribes them again before it is back up, and nothing is delivered anywhere
// meanwhile), and presence channels are refused with 503.
//
// # Cluster state
//
//   - Presence members live in the presence store, under an entry per subscription
//     (socket id and a sequence number). The store decides first and last
//     atomically across nodes; member_added and member_removed are published by the
//     node whose call decided them. When a node dies, one surviving node's store
//     removes its entries and hands the departures to HandleDepartures, which
//     publishes member_removed. HandleReset (the store lost this node's share: it
//     was taken for dead, or Redis lost its data) adds the node's live members again
//     and reports its counts again.
//   - Subscription counts: counts.go reports this node's count of each changed
//     channel to the store (absolute numbers, batched, retried); the HTTP API reads
//     the cluster-wide sums from the store, after this node's own pending changes are
//     reported (read-your-writes on a node).
//   - Cache channels keep their last event in the broker (PublishKeep, Last), so a
//     subscriber on any node gets it.
//   - Node-to-node commands (terminate_connections) go over the broker's control
//     channel (control.go).
//   - Webhooks (webhooks.go, delivered by package webhook): occupied and vacated come
//     from the store's count transitions, member events from its first and last
//     decisions, each reported to exactly one node; vacancies and departures are
//     settled after a grace (Config.DepartureGrace), and a return within it cancels
//     both. Subscription counts told to subscribers (subcount.go) come from the
//     totals of each count report, throttled per channel. The watchlist
//     (watchlist.go) keeps each signed-in connection in an "#online:<user>" presence
//     channel and each watcher in a "#watchers:<user>" broker channel, both the hub's
//     own. Authorized connections (authtimeout.go) close what stays unauthorized
//     past an app's timeout with 4009.
//
// # Failures
//
// Connections never close because the broker or the store fails. While they are down,
// API publishes and queries answer 503 with Retry-After and deliver nothing, client
// events are dropped and counted (herald_dropped_total{reason="client_event_unpublished"}),
// presence subscriptions are refused with 503; member events are retried for
// memberRetryFor in their channel's order, so that a short outage leaves no ghost in
// clients' member lists.
//
// # Concurrency
//
// The transport calls the hub for a connection on that connection's owner loop; the
// client struct is owned by that loop. Other goroutines reach a connection only through
// transport.Server.Do. Work that may block on the network never runs on a loop:
//
//   - broker subscriptions go to brokerSubs, one goroutine that batches them;
//   - presence store calls, cache reads, client-event and member-event publishes go
//     to the ops shards (ops.go), one goroutine per shard, sharded by channel key so
//     that the jobs of one channel run in order; new work is refused when a shard's
//     queue is full (the client gets an error), clean-up work is always admitted;
//   - subscription counts go to countSync, one goroutine, which also announces
//     subscription_count and settles nothing itself (vacancies wait on timers whose
//     confirmations run on the ops shards);
//   - authLoop, one goroutine, closes the connections past an app's
//     user_authentication_timeout.
//
// Every broker and store call has a context from opContext (Config.OpTimeout), whose
// parent is cancelled when Shutdown's deadline passes, so queued work cannot hold the
// shutdown past it.
//
// Locks, in the order they may be taken: an index shard's mutex, then a channel's mu.
// userTable, brokerSubs, countSync and appStats have leaf locks that are never held
// while taking another (countSync's is taken under a channel's mu, by activate).
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
//     affects another connection. An envelope or control message of another version
//     is dropped and counted, never guessed at. Delivery is at-most-once, in order per
//     publisher and channel.
package hub
