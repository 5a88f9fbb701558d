package transport

// UpgradeRequest is what the hub sees of a WebSocket handshake before it is accepted.
type UpgradeRequest struct {
	Path       string // request path, e.g. "/app/KEY"
	RawQuery   string // query string without '?'
	Origin     string // Origin header, "" when absent
	RemoteAddr string // client address "ip:port": from the PROXY header behind a trusted proxy, else the peer's
}

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
