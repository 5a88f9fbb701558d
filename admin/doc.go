// Package admin serves a Herald node's operational endpoints on a separate address:
//
//	GET /         a live dashboard: one page embedded in the binary (inline CSS, script
//	              and SVG charts; no external font, script or CDN) fed by /events
//	GET /events   server-sent events: the /stats document once per sampling interval
//	GET /stats    JSON figures per node and per app, with per-second rates
//	GET /metrics  Prometheus exposition (herald_* metrics, Go and process collectors)
//	GET /healthz  200 while the process serves
//	GET /readyz   200 while the node accepts connections, 503 once it drains
//	/debug/pprof/ the runtime profiles
//
// Entry points: New builds the server from a Config, Run serves until Close.
//
// Concurrency: Run starts the HTTP server and a sampler goroutine that takes the
// source's Stats every Interval. The sampler's two last samples give the rates; it
// keeps the last 300 points (connections, messages in and out per second) for the
// dashboard's charts, and wakes the /events streams. Each stream is a net/http
// handler goroutine; the document it sends is encoded once per sample for every
// stream. Close stops the sampler, ends every stream at once (a client that does not
// read is cut off when Close's context ends) and waits for them. One mutex (Server.mu)
// guards the samples, the history and the encoded document; the stream counter has its
// own, never held with the first.
//
// Invariants: at most Config.MaxStreams streams are open (past it /events answers 503
// and the page polls /stats instead); an /events document is the /stats document of
// the last sample, so it is at most one interval old; the page uses relative URLs
// only, so it works through an SSH tunnel or under a proxy's path prefix, and its
// Content-Security-Policy lets it talk to this server and nothing else.
//
// The admin address must not be reachable from the internet: pprof and the stats are
// for operators. It binds 127.0.0.1 by default; reach the dashboard through a tunnel
// (ssh -L 9601:127.0.0.1:9601 host, then http://127.0.0.1:9601/).
package admin
