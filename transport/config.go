package transport

import (
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"time"
)

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
	PongTimeout time.Duration // after OnIdle, close with IdleClose unless data arrives (the socket is read once more first: an answer the loop had no turn to read counts); default 30 s
	IdleClose   CloseReason   // default {1001, "pong timeout", "pong_timeout"}

	CloseTimeout time.Duration // how long to wait for the peer's close frame after ours; default 3 s

	// MailboxSize bounds each loop's fan-out backlog in jobs: the Fanout jobs queued
	// or being written. A loop at the bound refuses its share of a Fanout (the caller
	// hears how many connections it missed; Stats.MailboxDropped counts the jobs).
	// Congested reports true from half of it. Default 8192 jobs.
	MailboxSize int
	// MailboxDeliveries bounds each loop's fan-out backlog in deliveries: the
	// connections of the Fanout jobs queued or being written, which is what decides
	// how far behind the loop is (a job for a channel of 10,000 is 10,000 writes). A
	// loop at the bound refuses its share of a Fanout, as above; Congested reports
	// true from half of it (the high-water mark). Default 1,048,576 (a few seconds of
	// writing on one core).
	MailboxDeliveries int
	// DoMailboxSize bounds each loop's queue of Do jobs. A Do past it is not queued:
	// its connection is closed with Overloaded instead (see Server.Do). Default 65,536.
	DoMailboxSize int
	// Overloaded is the reason a connection is closed with when a Do for it finds the
	// Do queue full; default {1013, "try again later", "overloaded"}.
	Overloaded CloseReason

	// ProxyProtocol expects a PROXY protocol header (v1 or v2) at the start of every
	// connection from TrustedProxies, before the HTTP request; the client address it
	// carries becomes Conn.RemoteAddr, UpgradeRequest.RemoteAddr, the HTTP handler's
	// Request.RemoteAddr and the key of the per-IP limits. From a trusted source the
	// header is required (without one the connection is closed: proxy_missing); from
	// any other source a header is refused (proxy_untrusted), so that a client cannot
	// choose its own address. Default off: a header is then just a bad request.
	ProxyProtocol bool
	// TrustedProxies are the sources whose PROXY header is accepted (the load
	// balancers' addresses as the kernel sees them). Empty with ProxyProtocol on: every
	// source must send a header. Ignored with ProxyProtocol off.
	TrustedProxies []netip.Prefix

	// MaxConnectionsPerIP bounds the open WebSocket connections of one client address
	// (the real one, behind a trusted proxy); an upgrade past it is answered 429. 0
	// (default): no limit.
	MaxConnectionsPerIP int
	// MaxUpgradesPerIPPerSecond bounds the upgrade attempts of one client address per
	// second (a token bucket whose burst is the rate); past it the upgrade is answered
	// 429. 0 (default): no limit.
	MaxUpgradesPerIPPerSecond int

	// FirstConnID is the id of the first connection minus one: Conn.ID counts up from
	// FirstConnID+1. A caller whose ids must not repeat across restarts (Herald's
	// socket ids) starts it from the clock; default 0.
	FirstConnID uint64

	Handler Handler      // required
	HTTP    http.Handler // serves plain (non-upgrade) HTTP requests on Addr; nil answers 404
	Logger  *slog.Logger // default slog.Default()
}

const (
	defaultAddr             = ":6001"
	defaultMaxHeaderBytes   = 16 << 10
	defaultHandshakeTimeout = 5 * time.Second
	defaultMaxMessageBytes  = 64 << 10
	defaultMaxPendingBytes  = 1 << 20
	defaultPongTimeout      = 30 * time.Second
	defaultCloseTimeout     = 3 * time.Second
	defaultMailboxSize      = 8192
	defaultMailboxDeliv     = 1 << 20
	defaultDoMailboxSize    = 1 << 16
)

// withDefaults fills every zero (or negative) field with its documented default.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = defaultAddr
	}
	if c.Loops <= 0 {
		c.Loops = runtime.NumCPU()
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = defaultMaxMessageBytes
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = defaultMaxPendingBytes
	}
	if c.SlowConsumer == (CloseReason{}) {
		c.SlowConsumer = defaultSlowConsumer
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = defaultPongTimeout
	}
	if c.IdleClose == (CloseReason{}) {
		c.IdleClose = defaultIdleClose
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = defaultCloseTimeout
	}
	if c.MailboxSize <= 0 {
		c.MailboxSize = defaultMailboxSize
	}
	if c.MailboxDeliveries <= 0 {
		c.MailboxDeliveries = defaultMailboxDeliv
	}
	if c.DoMailboxSize <= 0 {
		c.DoMailboxSize = defaultDoMailboxSize
	}
	if c.Overloaded == (CloseReason{}) {
		c.Overloaded = defaultOverloaded
	}
	c.MaxConnectionsPerIP = max(c.MaxConnectionsPerIP, 0)
	c.MaxUpgradesPerIPPerSecond = max(c.MaxUpgradesPerIPPerSecond, 0)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
