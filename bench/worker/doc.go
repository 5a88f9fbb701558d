// Package worker is the protocol between the bench orchestrator and its client
// worker processes, and both ends of it.
//
// A worker (Serve, run by cmd/benchclient) owns one loadgen.Pool. It reads one JSON
// Request per line on stdin and writes one JSON Response per line, with the same ID,
// on stdout; it logs only to stderr. Requests run one at a time in arrival order,
// except "wait", which is answered when its condition holds or its timeout passes, so
// that a driver can keep several publishes in flight. Operations:
//
//   - dial {n, timeout_ms}: open n connections, subscribe them to the worker's channel
//     (if it has one), answer when all are established and subscribed, or when one
//     failed, or at the timeout; elapsed_ns is the time from the dial to the last one.
//   - mem: the worker's VmRSS and Go heap in use (after a GC).
//   - wait {seq, want, timeout_ms}: answer when sequence number seq was received want
//     times (count, and the latest receive time in last).
//   - delivered: sequenced events received so far.
//   - stats {first, last}: loadgen.Stats, histograms included.
//   - shutdown {timeout_ms}: close every connection with a close handshake.
//
// The worker exits when its stdin closes. Start (the orchestrator's side) runs a
// worker process, matches answers to calls, and Close ends it: stdin closed, then
// SIGKILL by PID if it has not exited within a few seconds.
//
// # Concurrency
//
// Serve has one goroutine reading stdin into a bounded queue and handles requests on
// its own goroutine. The reading goroutine ends when its input does: Serve returns at
// the end of the input, and a caller that cancels ctx instead must close the input
// (cmd/benchclient exits, which does). A Worker is safe for concurrent Calls; its reader goroutine is
// stopped and waited for by Close.
package worker
