// Package hub is the Pusher Channels protocol v7 on one Herald node: connections'
// state, channel subscriptions and their authorization, presence, client events, user
// sign-in, cache channels, the local fan-out, and the Pusher HTTP API handlers.
//
// # Entry points
//
// New(Config) builds a Hub, which owns a transport.Server (the epoll loops and the
// public port), a pubsub.Broker and a presence.Store (built through Config.NewBroker
// and Config.NewPresence: the memory engines for one node, the Redis engines for a
// cluster; cmd/herald chooses). Run serves; Drain and Shutdown stop (below); Reload
// replaces the apps. APIHandler is the HTTP API, served on the same port as the
// WebSockets (the transport hands it every plain HTTP request). Stats feeds the admin
// server and the Prometheus collector registered through Config.Registerer; it reads
// counters kept where things change (channels and subscriptions per app follow the
// index and the channels' members), so it costs O(apps) at any number of channels.
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
// # Stopping
//
// A graceful stop is Drain(ctx, window) then Shutdown(ctx), both with the one
// deadline of the whole stop (cmd/herald: --drain-window, --shutdown-timeout):
//
//  1. Drain: Draining is true from its first statement (the admin server's /readyz
//     answers 503, so load balancers stop sending), then the transport closes its
//     listener (an upgrade under way is answered 503) and closes the open connections
//     with 4200 ("reconnect now") spread evenly over window, so that the other nodes
//     take them in a trickle. Drain returns when all are closed, or early when its
//     context ends: the caller cancels it to cut the drain short (a second signal).
//     It logs its start, its progress every second and its end.
//  2. Shutdown: closes what is still open with 4200 at once, lets the queued broker and
//     presence work finish (member_removed, the last subscription counts) and the
//     webhook confirmations that wait out the departure grace, closes the broker and
//     the store (the node leaves the cluster), and last the webhook sender, which
//     sends what it holds. Whatever the deadline leaves undone is abandoned: the
//     cluster cleans up after the node when its lease runs out.
//
// Shutdown alone is the immediate stop (tests, and what follows a cut drain).
//
// # Reloading the apps
//
// Reload(load) replaces the apps served while connections stay up (cmd/herald calls
// it on SIGHUP with the apps of --config and the flags). The new set is validated
// whole first; a set New would refuse, or load's error, is refused: nothing changes,
// and the refusal is logged and counted (herald_config_reloads_total{result="error"},
// Stats().Node.ConfigReloads). Otherwise it applies at once:
//
//   - added apps take connections and API calls from then on;
//   - removed apps get 4001 on connect and 404 from the API, newly disabled ones 4003
//     and 403, and the open connections of both are closed with 4003 at once (the
//     transport visits every connection on its loop, transport.Server.Each: the hub
//     keeps no list of an app's connections, which would cost memory on every one);
//   - a changed key or secret checks every signature that follows (subscriptions,
//     sign-ins, API requests), on connections already open too; changed limits apply
//     to what comes next; changed webhooks go to webhook.Sender.Reload, which keeps
//     the queues of unchanged hooks.
//
// An app is known by its id: across reloads its connections, channels, users and
// counters stay with it, whatever its key becomes. Each app's config is an immutable
// App behind an atomic pointer (appState.conf), and the set of apps an immutable
// appSet behind another (Hub.apps), both replaced whole: loops and handlers read them
// with one atomic load and no lock, and a decision that reads several fields reads
// them from one conf() (a key with its secret).
//
// # Failures
//
// Connections never close because the broker or the store fails. While they are down,
// API publishes and queries answer 503 with Retry-After and deliver nothing, client
// events are dropped and counted (herald_dropped_total{reason="client_event_unpublished"}),
// presence subscriptions are refused with 503; member events are retried for
// memberRetryFor in their channel's order, so that a short outage leaves no ghost in
// clients' member lists. The warnings that would repeat once per failed call (a
// publish, a join, a count report, a member event lost) are rate-limited per kind
// (internal/warnlimit): the first at once, then one line per 10 s carrying the number held back,
// so an outage cannot fill a disk; the counters (broker and store errors, drops by
// reason) count every one.
//
// # Overload and queues
//
// When publishers outrun this node's loops (overload.go), nothing is lost without a
// word. A local publish is refused before anything is published while a loop's
// fan-out backlog is past its high-water mark (half of transport.Config's
// MailboxDeliveries or MailboxSize; transport.Server.Congested): the HTTP API answers
// 503 "server busy" with Retry-After: 1, a client event gets pusher:error 4301
// "server busy". A broker message (another node's publish) cannot be refused, so the
// receive path waits for room, at most Config.DeliveryWait per message, which slows
// the broker's delivery to this node: that is what backpressure between nodes can be
// over pub/sub. Deliveries still refused then (delivery_timeout), or refused to a local
// publish that raced past the check (delivery_overflow), are counted per app, one per
// subscriber missed; /stats lists the worst channels per app (dropped_channels); a
// warning is logged, rate-limited. herald_messages_sent_total counts only deliveries
// handed to a loop, so for every publish taken, sent + dropped = subscribers.
//
// Every queue the hub feeds or owns, its bound, what happens when it is full, and what
// shows it (herald_ metrics; drops are herald_dropped_total{app,reason}):
//
//	queue                    bound                                 when full                                    shows it
//	loop mailboxes:          MailboxDeliveries (1,048,576) and     API publish 503 + Retry-After (from half),   dropped{publish_busy,
//	  fan-out (transport)    MailboxSize (8192) jobs per loop       client event 4301 (from half); broker        client_event_busy,
//	                                                               message waits DeliveryWait (1 s), then       delivery_timeout,
//	                                                               its deliveries there are dropped             delivery_overflow},
//	                                                                                                            fanout_dropped_total
//	loop mailboxes: Do       DoMailboxSize (65,536) per loop       the connection is closed with 4100 "server   connections_closed_total
//	  (transport)                                                  overloaded" (pusher-js backs off, then       {reason="overloaded"}
//	                                                               reconnects), instead of a lost confirmation
//	output per connection    MaxPendingBytes (1 MiB)               slow consumer: close 4100 if it fits, else   connections_closed_total
//	  (transport)                                                  a plain close                                {reason="slow_consumer"}
//	ops shards: new work     OpsQueue (4096) per shard             refused: subscribe 503 subscription_error,   dropped{ops_queue_full},
//	                                                               client event pusher:error 4100               ops_pending
//	ops shards: clean-up     8 × OpsQueue per shard (32,768)       dropped: a presence entry left behind stays  dropped{cleanup_dropped}
//	                                                               until the node leaves the cluster (its
//	                                                               lease), a member_removed is not sent
//	brokerSubs: subscribes   65,536 queued                         subscribe refused: 503 subscription_error    -
//	brokerSubs: unsubscribes 65,536 queued                         dropped: the node stays subscribed in the    dropped{broker_unsubscribe_
//	                                                               broker (traffic only) until the channel is   dropped}
//	                                                               used and left again
//	departure-grace timers   65,536 waiting (afterGrace)           the confirmation runs at once, without the   dropped{webhook_grace_
//	                                                               grace                                        skipped}
//	countSync dirty set      one entry per channel changed since   - (a set: bounded by the node's channels)    -
//	                         the last report
//	webhook queues           QueueSize events and QueueBytes per   the event is dropped (queue_full)            webhooks_dropped_total
//	  (package webhook)      hook, plus one batch in flight                                                     {reason}
//	auth queues              one entry per connection of an app    - (bounded by connections; each leaves at    -
//	                         with a timeout, until its deadline    its deadline)
//	per-IP table             entries for addresses with an open    - (swept; transport's ipLimiter)             -
//	  (transport)            connection or a refilling bucket
//	dropped_channels table   32 channels per app (Space-Saving)    the least-dropped entry is replaced          /stats
//	warnlimit.Limiter        one entry per warning kind            -                                            -
//
// The clean-up bounds are far above what a healthy node queues: there is at most one
// clean-up job per subscription that ended, and new subscriptions are refused long
// before. Reaching one means the store or the broker has stopped answering for a long
// time; the node then keeps its memory bounded and says what it gave up.
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
//     queue is full (the client gets an error), clean-up work has a larger bound of
//     its own (see Overload and queues);
//   - subscription counts go to countSync, one goroutine, which also announces
//     subscription_count and settles nothing itself (vacancies wait on timers whose
//     confirmations run on the ops shards);
//   - authLoop, one goroutine, closes the connections past an app's
//     user_authentication_timeout.
//
// Every broker and store call has a context from opContext (Config.OpTimeout), whose
// parent is cancelled when Shutdown's deadline passes, so queued work cannot hold the
// shutdown past it. Drain runs one goroutine of its own (its progress log) and waits
// for it; Reload runs on its caller's goroutine, one at a time.
//
// Locks, in the order they may be taken: Hub.reloadMu (Reload), then an index shard's
// mutex, then a channel's mu. userTable, authQueue, brokerSubs, countSync, appStats
// and the warnlimit.Limiter have leaf locks that are never held while taking another (countSync's is taken
// under a channel's mu, by activate; userTable's and authQueue's under reloadMu, by
// closeApp).
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
