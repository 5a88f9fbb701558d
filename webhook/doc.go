// Package webhook delivers Pusher webhooks: the events a Herald node decides
// (channel_occupied, member_added, client_event, ...) POSTed to each app's
// endpoints, batched, signed, bounded in time and memory, retried, and counted.
//
// # Entry points
//
// New(Config) validates the apps' hooks (Hook.Validate) and starts a Sender. The hub
// calls Send for each event it decides, after asking Enabled whether anyone wants
// that type at all; Reload replaces the apps and hooks (a hook whose spec is
// unchanged keeps its queue and takes the app's new key and secret; one that is gone
// or changed sends what it holds and stops); Close drains at shutdown. Stats and the
// Prometheus collector registered through Config.Registerer report what happened to
// every event.
// Sign computes the X-Pusher-Signature a receiver checks.
//
// # The wire
//
// A request is a POST of {"time_ms":<unix ms when the request was built>,"events":[…]}
// with Content-Type: application/json, X-Pusher-Key (the app key),
// X-Pusher-Signature (Sign(secret, body)) and the hook's own headers. Each event
// carries only the fields of its type (Event.MarshalJSON). A 2xx answer is success;
// any other status (redirects included), a timeout (Config.Timeout) or a network
// error is a failure. A retry sends the same events with a fresh time_ms and
// signature.
//
// # Concurrency
//
// Each hook (one endpoint of one app) has its own bounded queue and its own
// goroutine, started by New or Reload and stopped by Reload (when the hook is
// retired) or Close, which waits for all of them. The apps and their hooks are one
// immutable version behind an atomic pointer that Reload replaces under the Sender's
// mutex; Send reads it without a lock. Send runs on the caller's goroutine: it copies the event into the queue of each matching hook under that
// hook's mutex and, at most, wakes the hook's goroutine through a channel of
// capacity one; it never waits on the network, on a full queue or on another lock.
// The hook's goroutine takes a batch under the same mutex and makes its request
// without it. No two locks are ever held together. Send, Enabled and Stats may be
// called from any goroutine, also during and after Close.
//
// # Invariants
//
//   - One request in flight per hook, so a hook receives its events in the order
//     Send took them; a batch that fails is retried before any later event is sent.
//   - A failing or slow endpoint holds only its own queue: other hooks of the app
//     and other apps go on at their own pace.
//   - Memory is bounded per hook: QueueSize events, QueueBytes of their strings,
//     plus one batch in flight.
//   - An event is delivered as soon as BatchMax events are queued for its hook, or
//     when it has waited BatchWait, or at Close; a backlog (after a slow request)
//     is sent at once in full batches.
//   - Every event handed to a hook ends up counted exactly once: sent, or dropped
//     with reason queue_full (no room at Send), retries_exhausted (RetryFor passed
//     since the batch's first attempt) or shutdown (Send after Close, or Close's
//     context ended first). failed counts the events of each failed attempt, so an
//     event may be counted there several times.
//   - Metric labels are bounded: the configured app ids, the seven event types and
//     the three drop reasons.
//   - An endpoint's trouble is logged, not each attempt: a Warn when it starts
//     failing, then at most one Warn per hook per 30 s, each with the number of
//     lines held back and of the events dropped since the last one, and an Info when
//     it recovers (if its failure was logged). URLs are logged without credentials
//     or query.
package webhook
