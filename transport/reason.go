package transport

import "errors"

// CloseReason says why a connection was closed: the WebSocket close code sent to the
// peer, the reason text sent with it, and a short label used as a metric label.
type CloseReason struct {
	Code  uint16 // WebSocket close code (1000-4999); 0 means close the socket without a close frame
	Text  string // close reason text (at most 123 bytes, valid UTF-8)
	Label string // metric label: lower_snake_case, stable across releases
}

// Close reasons owned by the transport (RFC 6455 codes). The hub defines its own
// (Pusher 4000-4999 codes) as values of the same type.
var (
	CloseNormal        = CloseReason{Code: 1000, Text: "", Label: "normal"}
	CloseGoingAway     = CloseReason{Code: 1001, Text: "going away", Label: "going_away"}
	CloseProtocolError = CloseReason{Code: 1002, Text: "protocol error", Label: "protocol_error"}
	CloseUnsupported   = CloseReason{Code: 1003, Text: "unsupported data", Label: "unsupported_data"}
	CloseInvalidUTF8   = CloseReason{Code: 1007, Text: "invalid utf-8", Label: "invalid_payload"}
	CloseTooBig        = CloseReason{Code: 1009, Text: "message too big", Label: "message_too_big"}
	// ClosePeer is reported to OnClose when the peer started the close handshake.
	ClosePeer = CloseReason{Code: 1000, Label: "peer_close"}
	// CloseConnLost is reported to OnClose when the socket failed or hit EOF without a close frame.
	CloseConnLost = CloseReason{Code: 1006, Label: "conn_lost"}
	// CloseShutdown is the default reason used by Shutdown when none is given.
	CloseShutdown = CloseReason{Code: 1001, Text: "server shutting down", Label: "shutdown"}
)

// Defaults for the Config reasons.
var (
	defaultSlowConsumer = CloseReason{Code: 1008, Text: "slow consumer", Label: "slow_consumer"}
	defaultIdleClose    = CloseReason{Code: 1001, Text: "pong timeout", Label: "pong_timeout"}
	defaultOverloaded   = CloseReason{Code: 1013, Text: "try again later", Label: "overloaded"}
)

// RejectError rejects a handshake with an HTTP status and message. Handler.Accept returns it.
type RejectError struct {
	Status  int
	Message string
}

func (e *RejectError) Error() string { return "transport: handshake rejected: " + e.Message }

// Errors returned by the package. Syscall failures are wrapped in them with %w, so
// errors.Is works on both the sentinel and the underlying errno.
var (
	ErrNoHandler   = errors.New("transport: Config.Handler is required")
	ErrListen      = errors.New("transport: cannot listen")
	ErrPoll        = errors.New("transport: cannot set up epoll")
	ErrRunning     = errors.New("transport: server already running")
	ErrClosed      = errors.New("transport: server closed")
	ErrForcedClose = errors.New("transport: shutdown cut short; remaining connections closed abruptly")
	ErrConfig      = errors.New("transport: invalid config")
	ErrDraining    = errors.New("transport: Drain already called")
	ErrDrainCut    = errors.New("transport: drain cut short; connections still open")
)
