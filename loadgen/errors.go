package loadgen

import "errors"

// Errors returned (wrapped with %w) by this package. Check them with errors.Is.
var (
	// ErrConfig reports an invalid Config field.
	ErrConfig = errors.New("loadgen: invalid config")
	// ErrClosed is returned by Pool methods called after Close.
	ErrClosed = errors.New("loadgen: pool closed")
	// ErrNotRunning is returned by Pool methods that need Run first.
	ErrNotRunning = errors.New("loadgen: pool not running")

	// ErrFrame reports a server frame that breaks RFC 6455 (reserved bits, masking,
	// unknown opcode, fragmented or oversized control frame, non-minimal length).
	ErrFrame = errors.New("loadgen: bad server frame")
	// ErrFrameTooBig reports a frame or a reassembled message larger than the limit.
	ErrFrameTooBig = errors.New("loadgen: server message too big")

	// ErrHandshake reports a handshake response that is not a valid 101 upgrade.
	ErrHandshake = errors.New("loadgen: bad handshake response")
	// ErrHandshakeStatus reports a handshake answered with a status other than 101.
	ErrHandshakeStatus = errors.New("loadgen: handshake refused")

	// ErrJSON reports a Pusher message that is not a JSON object with an event name.
	ErrJSON = errors.New("loadgen: bad pusher message")
	// ErrPayload reports event data that is not in the seq:<n>:ts:<unixnano>:... format.
	ErrPayload = errors.New("loadgen: not a sequenced payload")

	// ErrPublish reports a publish the server refused (non-2xx status).
	ErrPublish = errors.New("loadgen: publish refused")
	// ErrHistogram reports a histogram that cannot be decoded or merged exactly.
	ErrHistogram = errors.New("loadgen: bad histogram")
)

// Errors of the coordinator, the workers and the thresholds.
var (
	// ErrScenario reports an invalid scenario (flags or file).
	ErrScenario = errors.New("loadgen: invalid scenario")
	// ErrThreshold reports a threshold expression that does not parse.
	ErrThreshold = errors.New("loadgen: invalid threshold")
	// ErrProtocol reports a coordinator/worker message that breaks the protocol
	// (bad JSON, unknown type, other version).
	ErrProtocol = errors.New("loadgen: worker protocol error")
	// ErrWorkerLost reports a worker that died, disconnected or went silent mid-run.
	ErrWorkerLost = errors.New("loadgen: worker lost")
	// ErrNoWorkers reports a run that had no worker to run it.
	ErrNoWorkers = errors.New("loadgen: no workers")
)
