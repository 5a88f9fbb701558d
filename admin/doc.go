// Package admin serves a Herald node's operational endpoints on a separate address:
//
//	GET /stats    JSON figures per node and per app, with per-second rates
//	GET /metrics  Prometheus exposition (herald_* metrics, Go and process collectors)
//	GET /healthz  200 while the process serves
//	GET /readyz   200 while the node accepts connections, 503 once it drains
//	/debug/pprof/ the runtime profiles
//
// Entry points: New builds the server from a Config, Run serves until Close. Rates
// ("per second" figures) come from a sampler goroutine that Close stops and waits for.
//
// The admin address must not be reachable from the internet: pprof and the stats are
// for operators. It binds 127.0.0.1 by default.
package admin
