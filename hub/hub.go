package hub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-rt/herald/internal/warnlimit"
	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/transport"
	"github.com/herald-rt/herald/webhook"
)

// Config configures a Hub. The zero value serves no app; everything else has a default.
type Config struct {
	// Apps are the tenants served at start (Reload replaces them). Keys and ids must
	// be unique.
	Apps []App
	// NodeID is the first half of every socket_id ("<node>.<conn>"), so that socket ids
	// are unique across nodes; a cluster store refuses an id that a live node holds.
	// 0 picks a random one (another one if the store refuses it).
	NodeID uint32
	// Transport configures the listener and loops. Handler and HTTP are set by the hub;
	// the idle settings are derived from ActivityTimeout and PongTimeout.
	Transport transport.Config
	// NewPresence builds the presence store for node id with the hub as its handler;
	// nil uses presence.NewMemory (one node). It may return presence.ErrNodeIDInUse,
	// and is then called again with another id unless NodeID was set. The hub closes
	// the store.
	NewPresence func(nodeID uint32, h presence.Handler) (presence.Store, error)
	// NewBroker builds the broker for node id with the hub as its handler; nil uses
	// pubsub.NewMemory (one node). The hub closes the broker.
	NewBroker func(nodeID uint32, h pubsub.Handler) (pubsub.Broker, error)
	// ActivityTimeout is sent to clients (they ping after that much silence); default 120 s.
	// The server pings a connection it has not heard from for ActivityTimeout+30 s.
	ActivityTimeout time.Duration
	// PongTimeout is how long the server waits for any sign of life after its ping
	// before closing with 4201; default 30 s.
	PongTimeout time.Duration
	// MaxConnections caps this node's connections (all apps); past it new connections
	// get 4100 and are closed, and open ones are untouched. 0 means no cap.
	MaxConnections int
	// MaxChannelsPerConnection caps one connection's subscriptions; default 1000.
	MaxChannelsPerConnection int
	// CacheTTL is how long a cache channel keeps its last event; default 30 min.
	CacheTTL time.Duration
	// OpsShards and OpsQueue size the off-loop workers for broker and presence calls;
	// defaults 32 shards of 4096 queued jobs. A shard runs its jobs one at a time and
	// each may wait a Redis round trip, so the shards are how many wait at once.
	OpsShards, OpsQueue int
	// OpTimeout bounds one broker or presence call made for a client (subscribe,
	// presence join, client event); default 5 s.
	OpTimeout time.Duration
	// DeliveryWait is how long a broker message (another node's publish) waits for
	// room in a loop whose fan-out backlog is full before its deliveries there are
	// dropped and counted (delivery_timeout); default 1 s. It slows the broker's
	// delivery to this node, so keep it under the broker's probe timeout (3 s).
	DeliveryWait time.Duration
	// DepartureGrace is how long channel_vacated and member_removed webhooks wait for
	// the channel or user to come back (then neither is sent); default 3 s, Pusher's.
	// A cluster's stores must be made with the same grace.
	DepartureGrace time.Duration
	// Webhooks overrides how the webhook sender is configured (tests shorten its
	// batching and retries); its Apps, Logger and Registerer are the hub's.
	Webhooks webhook.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the hub's Prometheus metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Errors returned by New and Reload.
var (
	ErrDuplicateApp = errors.New("hub: duplicate app id or key")
	ErrNoApps       = errors.New("hub: no app configured")
	ErrClosed       = errors.New("hub: shut down")
)

// Hub is one Herald node's Pusher protocol engine. It owns the transport server, the
// broker and the presence store.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	warns   *warnlimit.Limiter // the warnings that repeat per event during an outage (kinds in warn.go)
	clock   func() time.Time
	nodeID  uint32
	nodeStr string

	// apps is the set served, replaced whole by Reload and read without a lock.
	apps atomic.Pointer[appSet]
	// known holds every app this hub has served, by id, so that an id a reload brings
	// back finds its state (channels, users and counters of its connections).
	reloadMu sync.Mutex // serializes Reload; guards known
	known    map[string]*appState

	srv      *transport.Server
	broker   pubsub.Broker
	presence presence.Store
	hooks    *webhook.Sender // made even when no app has a webhook: a reload may add one
	index    *index
	ops      *ops
	bsubs    *brokerSubs
	counts   *countSync
	metrics  *metrics

	// base is the parent of every broker and presence call's context; it is
	// cancelled when Shutdown's context ends, so that queued work cannot hold the
	// shutdown past its deadline.
	base       context.Context
	cancelBase context.CancelFunc

	open atomic.Int64 // open connections (all apps)

	users   userTable     // app + user id → signed-in clients
	entries atomic.Uint64 // presence entry sequence (see presenceSub.entry)

	settling atomic.Int64 // webhook confirmations waiting out the departure grace

	shutdownOnce sync.Once
	stopBy       atomic.Int64 // UnixNano by which broker and presence calls end (StopBy); 0 for none
	draining     atomic.Bool  // Drain or Shutdown began: readiness fails
	closed       atomic.Bool  // Shutdown began

	stopAuth chan struct{} // closed by Shutdown: ends authLoop
	authDone chan struct{} // closed when authLoop returned
}

// nodeIDAttempts bounds how many random node ids New tries when the store refuses one.
const nodeIDAttempts = 8

// New builds a hub, its presence store and broker, and binds its listening socket.
// Call Run to serve.
func New(cfg Config) (*Hub, error) {
	if err := validateApps(cfg.Apps); err != nil {
		return nil, err
	}
	if cfg.ActivityTimeout <= 0 {
		cfg.ActivityTimeout = 120 * time.Second
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = 30 * time.Second
	}
	if cfg.MaxChannelsPerConnection <= 0 {
		cfg.MaxChannelsPerConnection = 1000
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Minute
	}
	if cfg.OpsShards <= 0 {
		cfg.OpsShards = 32
	}
	if cfg.OpsQueue <= 0 {
		cfg.OpsQueue = 4096
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.DeliveryWait <= 0 {
		cfg.DeliveryWait = time.Second
	}
	if cfg.DepartureGrace <= 0 {
		cfg.DepartureGrace = presence.DefaultDepartureGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NewPresence == nil {
		cfg.NewPresence = func(uint32, presence.Handler) (presence.Store, error) {
			return &presence.Memory{DepartureGrace: cfg.DepartureGrace}, nil
		}
	}
	if cfg.NewBroker == nil {
		cfg.NewBroker = func(_ uint32, h pubsub.Handler) (pubsub.Broker, error) { return pubsub.NewMemory(h), nil }
	}
	h := &Hub{
		cfg:   cfg,
		log:   cfg.Logger,
		warns: warnlimit.New(cfg.Logger, warnEvery),
		clock: time.Now,
		known: make(map[string]*appState),
		index: newIndex(),
	}
	h.base, h.cancelBase = context.WithCancel(context.Background())
	h.metrics = newMetrics(h, cfg.Registerer)
	set := &appSet{byKey: make(map[string]*appState), byID: make(map[string]*appState)}
	for _, a := range cfg.Apps {
		st := newAppState(a, h.metrics.forApp(a.ID))
		h.known[a.ID] = st
		set.byKey[a.Key], set.byID[a.ID] = st, st
	}
	h.apps.Store(set)
	wc := cfg.Webhooks
	wc.Apps, wc.Logger, wc.Registerer = webhookApps(cfg.Apps), cfg.Logger, cfg.Registerer
	var err error
	if h.hooks, err = webhook.New(wc); err != nil {
		return nil, fmt.Errorf("hub: webhooks: %w", err)
	}

	for attempt := 1; ; attempt++ {
		h.nodeID = cfg.NodeID
		if h.nodeID == 0 {
			h.nodeID = randomNodeID()
		}
		h.presence, err = cfg.NewPresence(h.nodeID, h)
		if err == nil || cfg.NodeID != 0 || !errors.Is(err, presence.ErrNodeIDInUse) || attempt == nodeIDAttempts {
			break
		}
	}
	if err != nil {
		h.closeHooks()
		return nil, fmt.Errorf("hub: presence store: %w", err)
	}
	h.nodeStr = strconv.FormatUint(uint64(h.nodeID), 10)
	if h.broker, err = cfg.NewBroker(h.nodeID, h); err != nil {
		_ = h.presence.Close(context.Background())
		h.closeHooks()
		return nil, fmt.Errorf("hub: broker: %w", err)
	}

	tc := cfg.Transport
	tc.Handler = h
	tc.HTTP = h.APIHandler()
	tc.IdleTimeout = cfg.ActivityTimeout + 30*time.Second
	tc.PongTimeout = cfg.PongTimeout
	tc.IdleClose = closePongTimeout
	tc.SlowConsumer = closeSlowConsumer
	tc.Overloaded = closeOverloaded
	if tc.FirstConnID == 0 {
		// Socket ids are "<node>.<conn>": counting conns from the clock keeps a
		// restarted node with the same id from handing out its former ids again.
		tc.FirstConnID = uint64(time.Now().UnixMicro())
	}
	if tc.Logger == nil {
		tc.Logger = cfg.Logger
	}
	h.srv, err = transport.New(tc)
	if err != nil {
		_ = h.broker.Close(context.Background())
		_ = h.presence.Close(context.Background())
		h.closeHooks()
		return nil, err
	}
	h.ops = newOps(cfg.OpsShards, cfg.OpsQueue)
	h.ops.dropped = func(key string) { h.cleanupDropped(dropCleanup, key) }
	h.bsubs = newBrokerSubs(h)
	h.counts = newCountSync(h)
	h.stopAuth, h.authDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(h.authDone)
		h.authLoop(h.stopAuth)
	}()
	return h, nil
}

// reserve returns a context that ends somewhat before ctx: a quarter of the time left,
// at most a second, is kept for closing the engines.
func reserve(ctx context.Context) context.Context {
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx
	}
	keep := min(time.Until(deadline)/4, time.Second)
	c, cancel := context.WithDeadline(ctx, deadline.Add(-keep))
	context.AfterFunc(c, cancel)
	return c
}

// closeHooks stops the webhook sender at once (New failed: nothing was queued).
func (h *Hub) closeHooks() {
	if h.hooks != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = h.hooks.Close(ctx)
	}
}

// randomNodeID is a random non-zero 31-bit id.
func randomNodeID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])>>1 | 1
}

// Run starts serving; it returns at once.
func (h *Hub) Run() error { return h.srv.Run() }

// Addr is the public listen address.
func (h *Hub) Addr() string { return h.srv.Addr() }

// NodeID is the node part of this hub's socket ids.
func (h *Hub) NodeID() uint32 { return h.nodeID }

// Draining reports whether Drain or Shutdown has started (readiness probes fail from
// then on).
func (h *Hub) Draining() bool { return h.draining.Load() }

// drainLogEvery is how often Drain logs its progress at most.
const drainLogEvery = time.Second

// Drain is the graceful start of a stop; Shutdown follows it. The hub is draining from
// Drain's first statement on (Draining is true: readiness probes fail); then the
// transport stops accepting (an upgrade under way is answered 503) and closes the open
// connections with 4200 spread evenly over window, so that their clients reconnect to
// the other nodes without arriving there all at once. Drain returns when every
// connection is closed, or when ctx ends (then the caller wants the rest closed at
// once, which Shutdown does), with the transport's error (transport.ErrDrainCut when
// ctx ended). It logs its start, its progress at most every drainLogEvery, and its
// end. Call it once, before Shutdown.
func (h *Hub) Drain(ctx context.Context, window time.Duration) error {
	h.draining.Store(true)
	start := time.Now()
	h.log.Info("draining: refusing new connections, closing the open ones with 4200", "connections", h.open.Load(), "window", window)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(drainLogEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				st := h.srv.Stats()
				h.log.Info("draining", "connections", h.open.Load(), "closing_started", st.DrainClosed,
					"of", st.DrainTotal, "elapsed", time.Since(start).Round(time.Millisecond))
			}
		}
	}()
	err := h.srv.Drain(ctx, closeShutdown, window)
	close(stop)
	<-done
	left := h.open.Load()
	switch {
	case err != nil || left > 0:
		h.log.Info("drain cut short: the rest are closed at once", "connections", left, "elapsed", time.Since(start).Round(time.Millisecond), "err", err)
	default:
		h.log.Info("drained: every connection closed", "elapsed", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// Shutdown stops accepting, closes every connection still open with 4200 at once so
// that clients reconnect to another node, and waits for them (until ctx ends). It then
// finishes the queued broker and presence work (member_removed for the users who left,
// the last subscription counts, webhook confirmations), closes the broker and the
// store, and last the webhook sender. When ctx ends first, the remaining work is
// abandoned: a cluster's other nodes clean up after this one when its lease runs out.
// Only the transport's error is returned; the engines' are logged. A graceful stop
// calls Drain first, so that the connections leave over a window rather than at once.
func (h *Hub) Shutdown(ctx context.Context) error {
	var err error
	h.shutdownOnce.Do(func() {
		if d, ok := ctx.Deadline(); ok {
			h.StopBy(d)
		}
		h.draining.Store(true)
		h.closed.Store(true)
		stop := context.AfterFunc(ctx, h.cancelBase)
		defer stop()
		err = h.srv.Shutdown(ctx, closeShutdown)
		close(h.stopAuth)
		<-h.authDone
		h.counts.close()
		// The departures of the last connections are settled after the grace:
		// channel_vacated and member_removed are sent before the node goes, if the
		// deadline leaves time for the engines' goodbye after it.
		h.settle(reserve(ctx))
		h.ops.close()
		h.bsubs.close()
		// An engine that cannot say goodbye (Redis down) is no reason to fail the
		// shutdown: the node's lease runs out and the cluster cleans up after it.
		if cerr := h.broker.Close(ctx); cerr != nil {
			h.log.Warn("closing the broker", "err", cerr)
		}
		if cerr := h.presence.Close(ctx); cerr != nil {
			h.log.Warn("closing the presence store; the cluster cleans up when this node's lease runs out", "err", cerr)
		}
		// Last, with what is left of the deadline: an endpoint that is down would
		// otherwise hold the engines' goodbye (the lease) until the deadline passed.
		if herr := h.hooks.Close(ctx); herr != nil {
			h.log.Warn("webhooks still queued at shutdown were dropped", "err", herr)
		}
		h.warns.Close() // logs the warnings still held back
		h.cancelBase()
	})
	return err
}

// TransportStats exposes the transport's counters (for the admin server).
func (h *Hub) TransportStats() transport.Stats { return h.srv.Stats() }

var _ transport.Handler = (*Hub)(nil)
var _ pubsub.Handler = (*Hub)(nil)

// --- transport.Handler --------------------------------------------------------------

// Accept checks the path, the app key, the Origin and the protocol version. An unknown
// key or a bad version is accepted and then closed with its Pusher code, because
// pusher-js reads close codes (an HTTP error would just make it retry).
func (h *Hub) Accept(req *transport.UpgradeRequest) (any, error) {
	key, ok := strings.CutPrefix(req.Path, "/app/")
	if !ok || key == "" || strings.Contains(key, "/") {
		return nil, &transport.RejectError{Status: http.StatusNotFound, Message: "path not found; connect to /app/{key}"}
	}
	c := &client{}
	a := h.apps.Load().byKey[key]
	if a == nil {
		c.x().reject = &closeAppNotFound
		return c, nil
	}
	cfg := a.conf()
	if cfg.Disabled {
		c.app = a
		c.x().reject = &closeAppDisabled
		return c, nil
	}
	if req.Origin != "" && !cfg.originAllowed(req.Origin) {
		a.stats.rejected("origin_not_allowed")
		return nil, &transport.RejectError{Status: http.StatusForbidden, Message: "origin not allowed"}
	}
	c.app = a
	if r := checkProtocol(req.RawQuery); r != nil {
		c.x().reject = r
	}
	return c, nil
}

// checkProtocol accepts protocol 5 to 7 and a missing one (taken as 7).
func checkProtocol(rawQuery string) *transport.CloseReason {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "protocol" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return &closeBadProtocol
		}
		if n < 5 {
			return &closeOldProtocol
		}
		return nil
	}
	return nil
}

func (h *Hub) OnOpen(tc *transport.Conn) {
	c := tc.Value().(*client)
	c.conn = tc
	if r := c.rejected(); r != nil {
		h.refuse(c, *r)
		return
	}
	a := c.app
	cfg := a.conf()
	if cfg.Disabled { // by a reload since Accept
		c.x().reject = &closeAppDisabled
		h.refuse(c, closeAppDisabled)
		return
	}
	n := h.open.Add(1)
	an := a.stats.open.Add(1)
	var over *transport.CloseReason
	switch {
	case h.cfg.MaxConnections > 0 && n > int64(h.cfg.MaxConnections):
		over = &closeOverCapacity
	case cfg.MaxConnections > 0 && an > int64(cfg.MaxConnections):
		over = &closeOverQuota
	}
	if over != nil {
		// Old connections are untouched; this one is told why and leaves the counts now.
		h.open.Add(-1)
		a.stats.open.Add(-1)
		c.x().reject = over
		h.refuse(c, *over)
		return
	}
	a.stats.opened()
	h.watchAuth(c)
	b := make([]byte, 0, 128)
	b = append(b, `{"event":"pusher:connection_established","data":"{\"socket_id\":\"`...)
	b = h.appendSocketID(b, c)
	b = append(b, `\",\"activity_timeout\":`...)
	b = strconv.AppendInt(b, int64(h.cfg.ActivityTimeout/time.Second), 10)
	b = append(b, `}"}`...)
	tc.WriteText(b)
}

// refuse sends pusher:error with the reason's code and closes with it.
func (h *Hub) refuse(c *client, r transport.CloseReason) {
	c.conn.WriteText(errorJSON(int(r.Code), r.Text))
	c.conn.Close(r)
}

func (h *Hub) OnMessage(tc *transport.Conn, msg []byte) {
	c := tc.Value().(*client)
	if c.rejected() != nil || c.conn.Closed() || h.closeIfOff(c) {
		return
	}
	c.app.stats.received()
	h.handleMessage(c, msg)
}

func (h *Hub) OnIdle(tc *transport.Conn) {
	if c := tc.Value().(*client); c.rejected() == nil && h.closeIfOff(c) {
		return
	}
	tc.WriteText(pingJSON)
}

func (h *Hub) OnClose(tc *transport.Conn, reason transport.CloseReason) {
	c := tc.Value().(*client)
	if c.app == nil {
		h.metrics.closedNoApp(reason.Label)
		return
	}
	c.app.stats.closed(reason.Label)
	if c.rejected() != nil {
		return
	}
	h.open.Add(-1)
	c.app.stats.open.Add(-1)
	if u := c.userID(); u != "" {
		h.users.del(c.app, u, c)
	}
	for _, s := range c.subs {
		h.leave(c, s)
	}
	c.subs = nil
}

// socket ids are "<node>.<conn id>": unique across nodes, and a node can tell its own.
func (h *Hub) appendSocketID(b []byte, c *client) []byte {
	b = append(b, h.nodeStr...)
	b = append(b, '.')
	return strconv.AppendUint(b, c.conn.ID(), 10)
}

func (h *Hub) socketID(c *client) string { return string(h.appendSocketID(nil, c)) }

// parseSocketID splits "<node>.<conn>"; ok is false for anything else.
func parseSocketID(s string) (node uint32, conn uint64, ok bool) {
	a, b, found := strings.Cut(s, ".")
	if !found || a == "" || b == "" {
		return 0, 0, false
	}
	for _, r := range a + b {
		if r < '0' || r > '9' {
			return 0, 0, false
		}
	}
	n, err1 := strconv.ParseUint(a, 10, 32)
	cid, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		// A well-formed id of another server (longer numbers) is valid but never ours.
		return 0, 0, true
	}
	return uint32(n), cid, true
}
