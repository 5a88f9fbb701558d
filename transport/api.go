package transport

// This file is the contract between transport and its user (the hub). Keep the exported
// surface stable; add to it rather than change it.

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

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

// UpgradeRequest is what the hub sees of a WebSocket handshake before it is accepted.
type UpgradeRequest struct {
	Path       string // request path, e.g. "/app/KEY"
	RawQuery   string // query string without '?'
	Origin     string // Origin header, "" when absent
	RemoteAddr string // peer address "ip:port"
}

// RejectError rejects a handshake with an HTTP status and message. Handler.Accept returns it.
type RejectError struct {
	Status  int
	Message string
}

func (e *RejectError) Error() string { return "transport: handshake rejected: " + e.Message }

// Handler receives a connection's events. All methods for one connection are called
// from that connection's owner loop, one at a time; they must not block (no network
// calls, no waiting on other loops). Conn methods documented "owner loop only" may be
// called from inside these callbacks.
type Handler interface {
	// Accept decides whether to complete a WebSocket handshake. A *RejectError answers
	// the request with its status; any other error answers 400. The returned value is
	// stored in the Conn (Conn.Value) before OnOpen.
	Accept(req *UpgradeRequest) (value any, err error)
	// OnOpen runs once the handshake response has been queued.
	OnOpen(c *Conn)
	// OnMessage delivers one complete text message. msg is valid only during the call.
	OnMessage(c *Conn, msg []byte)
	// OnIdle runs when nothing was received for Config.IdleTimeout. The handler may send
	// a ping of its own; if nothing is received within Config.PongTimeout afterwards,
	// the transport closes the connection with Config.IdleClose.
	OnIdle(c *Conn)
	// OnClose runs once per opened connection, after which the Conn must not be used.
	OnClose(c *Conn, reason CloseReason)
}

// Config configures a Server. The zero value works except for Handler, which is required.
type Config struct {
	Addr      string // listen address; default ":6001"
	ReusePort bool   // set SO_REUSEPORT so that several processes can share Addr
	Loops     int    // epoll loops; default runtime.NumCPU()

	MaxHeaderBytes   int           // request head limit; default 16 KiB (431 beyond)
	HandshakeTimeout time.Duration // whole request head must arrive within; default 5 s (408 beyond)
	MaxMessageBytes  int           // reassembled message limit; default 64 KiB (close 1009 beyond)
	MaxPendingBytes  int           // per-connection output queue bound; default 1 MiB
	SlowConsumer     CloseReason   // reason used past MaxPendingBytes; default {1008, "slow consumer", "slow_consumer"}

	IdleTimeout time.Duration // call Handler.OnIdle after this much silence; 0 disables
	PongTimeout time.Duration // after OnIdle, close with IdleClose unless data arrives; default 30 s
	IdleClose   CloseReason   // default {1001, "pong timeout", "pong_timeout"}

	CloseTimeout time.Duration // how long to wait for the peer's close frame after ours; default 3 s

	Handler Handler      // required
	HTTP    http.Handler // serves plain (non-upgrade) HTTP requests on Addr; nil answers 404
	Logger  *slog.Logger // default slog.Default()
}

// Stats are the transport's counters, safe to read at any time.
type Stats struct {
	Accepted        uint64 // TCP connections accepted
	Upgraded        uint64 // WebSocket handshakes completed
	HandshakeFailed uint64 // handshakes answered with an HTTP error or timed out
	HTTPRequests    uint64 // connections handed to the HTTP handler
	Open            int64  // WebSocket connections open now
	BytesIn         uint64
	BytesOut        uint64
	FramesIn        uint64
	FramesOut       uint64
	MailboxDropped  uint64            // fan-out jobs dropped because a loop's mailbox was full
	Closed          map[string]uint64 // closes by CloseReason.Label
}

// AppendTextFrame appends an unmasked, unfragmented server text frame holding payload to
// dst and returns the extended slice. Build a frame once and hand the same bytes to
// every recipient with Server.Fanout or Conn.WriteFrame.
func AppendTextFrame(dst, payload []byte) []byte {
	panic("transport: not implemented")
}

// Server owns the listening socket, the epoll loops and every connection.
type Server struct{}

// New binds cfg.Addr and prepares the loops. Call Run to start serving.
func New(cfg Config) (*Server, error) { panic("transport: not implemented") }

// Addr is the bound listen address (useful with port 0).
func (s *Server) Addr() string { panic("transport: not implemented") }

// Run starts the loops and the HTTP handoff server; it returns at once.
func (s *Server) Run() error { panic("transport: not implemented") }

// Shutdown stops accepting, closes every WebSocket with reason, waits until they are gone
// or ctx ends (then closes the rest abruptly), stops the HTTP server, stops the loops.
func (s *Server) Shutdown(ctx context.Context, reason CloseReason) error {
	panic("transport: not implemented")
}

// StopAccepting closes the listening socket; open connections are untouched.
func (s *Server) StopAccepting() error { panic("transport: not implemented") }

// NumLoops is the number of epoll loops; Conn.Loop is in [0, NumLoops).
func (s *Server) NumLoops() int { panic("transport: not implemented") }

// Fanout writes one prebuilt frame to every connection in byLoop (byLoop[i] holds only
// connections owned by loop i), skipping except (may be nil). Safe from any goroutine;
// never blocks: each loop gets one job in its bounded mailbox. The slices in byLoop and
// frame must not be modified afterwards.
func (s *Server) Fanout(frame []byte, byLoop [][]*Conn, except *Conn) {
	panic("transport: not implemented")
}

// Do runs fn on c's owner loop (from any goroutine), unless c is already closed.
func (s *Server) Do(c *Conn, fn func()) { panic("transport: not implemented") }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats { panic("transport: not implemented") }

// Conn is one WebSocket connection, owned by one loop.
type Conn struct{}

// ID is unique within this Server for its lifetime (starts at 1).
func (c *Conn) ID() uint64 { panic("transport: not implemented") }

// Loop is the index of the owner loop.
func (c *Conn) Loop() int { panic("transport: not implemented") }

// Value is what Handler.Accept returned; SetValue replaces it (owner loop only).
func (c *Conn) Value() any         { panic("transport: not implemented") }
func (c *Conn) SetValue(v any)     { panic("transport: not implemented") }
func (c *Conn) RemoteAddr() string { panic("transport: not implemented") }

// WriteText frames payload as one text message and writes or queues it (owner loop only).
func (c *Conn) WriteText(payload []byte) { panic("transport: not implemented") }

// WriteFrame writes or queues a prebuilt frame (owner loop only). The frame must not be
// modified afterwards.
func (c *Conn) WriteFrame(frame []byte) { panic("transport: not implemented") }

// Close starts the close handshake with reason (owner loop only). Queued output is
// flushed first; OnClose follows once the socket is gone. Further writes are dropped.
func (c *Conn) Close(reason CloseReason) { panic("transport: not implemented") }

// Closed reports whether Close was called or the socket failed (owner loop only).
func (c *Conn) Closed() bool { panic("transport: not implemented") }
