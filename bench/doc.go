// Package bench holds Herald's load figures, the part of `make bench` that runs
// processes: it is never part of `make test`.
//
//   - cmd/benchrun: the orchestrator. It builds herald, rawfloor and loadgen, runs
//     each scenario against Herald on one node, against a 3-node Herald cluster
//     joined through a redis-server, and against the raw floor, and prints a table
//     (one node and cluster side by side) and a JSON line. Its clients are loadgen
//     runs (package lgrun); it adds the servers' memory and CPU from /proc and
//     /metrics.
//   - lgrun: runs loadgen in-process (loadgen.Coordinator with spawned `loadgen
//     worker` processes) and hands back its Report: the one way the benchmarks load
//     a server.
//   - cmd/benchcluster: the cluster under the product's load generator (make
//     bench-cluster): messages per second through one Redis with 3 nodes, a
//     presence storm across the nodes, with the redis-server's CPU per message, and
//     the webhooks a presence storm makes the nodes send, to a receiver that checks
//     their signatures and that every member and channel event came once and
//     balanced.
//   - cluster: starts a redis-server and herald nodes joined through it, and reads
//     their CPU, counters (summed, by label, histograms) and Redis command counts
//     (shared by benchrun and benchcluster).
//   - cmd/rawfloor: the raw write floor (one pre-built frame, write(2) per socket).
//   - cmd/benchburst: fan-out at 1, 10 and 100 publishes/s and in bursts, today's
//     code (built from a baseline commit) against this tree (make bench-burst).
//   - cmd/soak: an hour (or --duration) of mixed load on 3 nodes and a redis-server,
//     checking that nothing grows (make soak).
//   - cmd/bench1m: a million connections on one machine as one cluster: about 55
//     herald processes sharing a port with SO_REUSEPORT, joined through a redis-server
//     (or a 3-master Redis Cluster) it starts, with one `loadgen run` (55 workers) as
//     the client, then broadcasts through one node's API (make bench-1m; see
//     BENCH-1M.md).
//
// Nothing here imports Herald's server packages: Herald is measured as a black box,
// through its public port, its admin port (/metrics) and /proc.
package bench
