package hub

import "github.com/herald-rt/herald/transport"

// Pusher close reasons. The code ranges tell pusher-js what to do: 4000-4099 do not
// reconnect, 4100-4199 back off then reconnect, 4200-4299 reconnect at once. Each
// label is the metric label of herald_connections_closed_total.
var (
	closeAppNotFound  = transport.CloseReason{Code: 4001, Text: "app does not exist", Label: "app_not_found"}
	closeAppDisabled  = transport.CloseReason{Code: 4003, Text: "app disabled", Label: "app_disabled"}
	closeOverQuota    = transport.CloseReason{Code: 4004, Text: "app over connection quota", Label: "app_over_quota"}
	closeBadProtocol  = transport.CloseReason{Code: 4006, Text: "invalid protocol version", Label: "invalid_version"}
	closeOldProtocol  = transport.CloseReason{Code: 4007, Text: "unsupported protocol version", Label: "unsupported_protocol"}
	closeTerminated   = transport.CloseReason{Code: 4009, Text: "terminated by the app", Label: "terminated"}
	closeUnauthorized = transport.CloseReason{Code: 4009, Text: "connection is unauthorized: sign in or subscribe to a private channel in time", Label: "unauthorized"}
	closeOverCapacity = transport.CloseReason{Code: 4100, Text: "over capacity", Label: "over_capacity"}
	closeSlowConsumer = transport.CloseReason{Code: 4100, Text: "slow consumer", Label: "slow_consumer"}
	closeOverloaded   = transport.CloseReason{Code: 4100, Text: "server overloaded", Label: "overloaded"}
	closeShutdown     = transport.CloseReason{Code: 4200, Text: "server shutting down, reconnect", Label: "shutdown"}
	closePongTimeout  = transport.CloseReason{Code: 4201, Text: "pong reply not received", Label: "pong_timeout"}
)
