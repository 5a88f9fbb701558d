// Package e2e is Herald's end-to-end suite: real Pusher clients drive the built herald
// binary over loopback.
//
//   - pusher-js 8.6.0 (its Node build) connects, subscribes, signs in and sends client
//     events, exactly as a browser app would;
//   - the `pusher` Node server SDK 5.3.4 publishes through the signed HTTP API and signs
//     channel authorizations and user sign-ins (its authorizeChannel/authenticateUser,
//     called from pusher-js's customHandler hooks, so no auth HTTP server is needed).
//
// The Go side (e2e_test.go) builds cmd/herald with the race detector, writes an
// apps.json, starts herald as a child process on free loopback ports (its output goes
// to the test log), waits for its "serving" line and runs each js/*.test.mjs file with
// `node --test` as one subtest. The JS side learns where herald is from the environment:
// HERALD_HOST, HERALD_PORT, HERALD_ADMIN, HERALD_PID (the first node), HERALD_NODES
// (every node: a JSON array of {host, port, admin, pid}), APP_ID/APP_KEY/APP_SECRET and
// APP2_* and APP3_* (more apps, for isolation and per-app limits), E2E_MAX_CONNECTIONS and
// E2E_ACTIVITY_TIMEOUT for the instance started with those flags, for the cluster
// instances E2E_CONTROL (the control server) and E2E_NODE_LEASE_MS (--node-lease), and
// for the webhook instances E2E_WEBHOOK_PORT (and E2E_HANG_PORT, APP_RETRY_*,
// APP_COUNTS_*, APP_AUTH_* and E2E_AUTH_TIMEOUT_MS: see below), and for the HAProxy
// instance E2E_LB_HOST, E2E_LB_PORT and E2E_LB_TLS_PORT (HAProxy's plain and TLS
// frontends), E2E_LB_STATS (its stats page), E2E_LB_TLS_FRONTEND,
// E2E_LB_PLAIN_FRONTEND and E2E_LB_BACKEND (the proxies' names in its stats),
// E2E_NODE_IDS (the nodes' --node-id, in order) and NODE_EXTRA_CA_CERTS (the test CA).
//
// Eleven instances, each with its own files or Go subtests (TestPusherJS, TestLimits,
// TestDrain, TestCluster, TestClusterOnRedisCluster, TestClusterFailures, TestWebhooks,
// TestClusterWebhooks, TestHAProxy, TestFaultsToxics and TestFaultsStops, run in
// parallel; the files and subtests of one instance run one after another):
//
//	main    apps.json with three apps: the first with client events and the default
//	        limits, the second with max_presence_members 3, the third with
//	        max_connections 2
//	        connection, channels, presence, client_events, users, rest, admin
//	limits  flags only: --app-* without --client-events, --max-connections 3,
//	        --activity-timeout 2s                                     limits
//	drain   the test sends SIGTERM itself and expects close 4200;     drain
//	        the harness then expects exit status 0
//	cluster three nodes (cluster_test.go) with the main app, joined   cluster
//	        through a redis-server of the instance's own (--redis,
//	        --node-lease 3s, --redis-prefix)
//	rcluster three nodes joined through a 3-master Redis Cluster      cluster
//	        (--redis-cluster: sharded pub/sub, keys over the shards)
//	failures three more nodes and a Redis of their own, which the     cluster_failures
//	        file freezes, kills and restarts; it kills -9 node 3 and
//	        stops node 2 (SIGSTOP) for longer than the lease
//	webhooks one node (webhooks_test.go) with four apps: APP_* sends  webhooks
//	        every event type to /all, and member events of
//	        presence-…-vip channels to /vip with a header of its own;
//	        APP_RETRY_* sends to /retry (which the file fails on
//	        purpose) and its client events also to E2E_HANG_PORT,
//	        which accepts and never answers; APP_COUNTS_* has
//	        "subscription_count": true and its webhook on /counts;
//	        APP_AUTH_* has "user_authentication_timeout": "2s"
//	cwebhook three nodes on a Redis of their own (startCluster)       cluster_webhooks
//	        sharing one app with client events, subscription
//	        counts and a webhook to /all
//	haproxy two nodes (haproxy_test.go) with the main app on a Redis  haproxy
//	        of their own, behind a real HAProxy run from
//	        deploy/haproxy/haproxy.cfg (deploy.HAProxyConfig.Localize:
//	        loopback ports, unprivileged, in the foreground, and a
//	        certificate for 127.0.0.1 from a throwaway CA that openssl
//	        makes in the test's directory). The nodes run with
//	        --proxy-protocol --trusted-proxies 127.0.0.1/32 (HAProxy's
//	        address), --max-connections-per-ip 2, --node-id 101 and
//	        102, --drain-window 3s. After the file, Go subtests drive
//	        Go clients (gobwas/ws, each bound to its own address in
//	        127.0.0.0/8): per-IP limits on the PROXY v2 addresses,
//	        PROXY headers sent to a node directly, handshakes per
//	        second with and without TLS, and a drain of 1,000 clients
//	        (SIGTERM to the node holding most; they must all come
//	        back on the other one). They print what they measure.
//	faults  three nodes (faults_*_test.go), Go subtests only, each     (Go)
//	        node reaching a Redis of the instance's own through a
//	        toxiproxy proxy of its own (github.com/Shopify/toxiproxy/v2
//	        as a library, in the test process; --node-lease 3s,
//	        --shutdown-timeout 6s). Go clients (coder/websocket), one
//	        per node, each subscribed to a channel per node, while a
//	        signed publisher sends numbered events through every node:
//	        100 ms of latency on what Redis sends; 64 KB/s each way
//	        under 180 KB/s of events (the probe times out); a
//	        reset_peer held 1.5 s in the middle of a back-to-back
//	        burst; a blackhole (the timeout toxic) for 6 s with a
//	        presence channel. Each checks every event was delivered
//	        at most once, in order, never when refused, lost only
//	        where and when a node's broker was down, and measures the
//	        time to detect and to get back to normal
//	stops   three more such nodes: node 2 frozen (SIGSTOP) for 20 s   (Go)
//	        with presence users on it (the others drop them within
//	        the lease, and all is right again after SIGCONT); then
//	        SIGTERM of node 3 with its Redis blackholed, and of node
//	        2 with the Redis frozen: each stops within
//	        --shutdown-timeout and exits 0, and node 1 cleans up
//	        after it
//
// The JS files pick a node with connect({node: n}), sdk({node: n}), stats(n) and
// admin(path, n) (nodes are numbered from 1; 1 is the default). A cluster instance also
// runs a small HTTP control server on 127.0.0.1 through which its files act on the
// processes the Go side owns (lib.mjs control()): kill -9, stop (SIGSTOP) or resume a
// node; kill, restart, freeze (SIGSTOP) or thaw the Redis; CLIENT KILL TYPE pubsub. Every
// process is started and stopped by the Go test by its PID; the Redis and the nodes are
// thawed (the Redis restarted) before the nodes are stopped, whatever state a failed
// test left them in. cluster_failures.test.mjs, the webhook files and the fault tests
// print the figures they measure ("measured: ..." lines in the test log; go test -v
// shows them). The fault instances act on their processes and proxies from Go directly,
// remove every toxic and thaw what is frozen before their nodes stop, and log the
// Redis registry of nodes, claims and counts when a test failed.
//
// The webhook files run the endpoint herald posts to (lib.mjs WebhookReceiver) on a
// loopback port that the Go side reserved and wrote into apps.json, and release just
// before the file starts. It checks every request with the `pusher` SDK's webhook()
// helper (isValid) and with an HMAC-SHA256 of its own, checks Pusher's body ({time_ms,
// events} with 1 to 20 events) and each event's fields, and keeps the events so that
// the tests can count them: exactly one of each, after a marker (on a cluster, one
// marker from every node, since each node has its own queue). channel_vacated and
// member_removed wait the 3 s departure grace, which the command line cannot shorten,
// so those tests wait it out (about 20 s per file). Both files end by waiting until
// every queue is empty and checking that herald_webhooks_sent_total adds up to what the
// receiver got, so that herald does not stop with webhooks to an endpoint that is gone.
//
// TestEveryFileRuns fails if a js/*.test.mjs file is not assigned to an instance.
//
// Every instance is stopped with SIGTERM (SIGKILL after a grace period) and must exit
// with status 0 and without a data race report on its stderr; a node a test killed on
// purpose is only checked for data races and panics.
//
// Requirements: node ≥ 20.14 on PATH (for --test-force-exit), redis-server on PATH (for
// the cluster instances), haproxy and openssl (for the HAProxy instance) and
// e2e/js/node_modules, which `make test` installs with
// `npm ci --prefix e2e/js`. Without node_modules the tests fail (they do not skip):
// a suite that silently skips is a suite that does not run. To run one file by hand
// against a herald you started yourself:
//
//	cd e2e/js && HERALD_PORT=6001 HERALD_ADMIN=127.0.0.1:9601 APP_ID=1 APP_KEY=k1 APP_SECRET=s1 \
//	    node --test --test-reporter=spec channels.test.mjs
//
// Set E2E_DEBUG=1 for pusher-js's own log. Tests wait for events with bounded timeouts;
// to assert that something did NOT arrive they first wait for a later marker event on
// the same path, so that "not received" means something.
package e2e
