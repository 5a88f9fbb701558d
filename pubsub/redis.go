package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Broker = (*Redis)(nil)

// RedisConfig configures NewRedis. Client and Node are required; every other field has
// a default.
type RedisConfig struct {
	// Client is the go-redis client: a *redis.Client for one server, or a
	// *redis.ClusterClient for a Redis Cluster, which switches the engine to sharded
	// pub/sub (SSUBSCRIBE, SPUBLISH). The broker runs its commands on it and makes its
	// subscriber connections from it; it never closes it. Its options must set
	// ContextTimeoutEnabled, or go-redis ignores the deadlines that bound every call
	// (OpTimeout, ProbeTimeout) and falls back on its own read and write timeouts; and
	// should set MaxRetries to -1, or go-redis resends a PUBLISH whose reply it lost,
	// which may deliver it twice.
	Client redis.UniversalClient
	// Prefix starts the name of every Redis channel and key the broker uses; default
	// "herald". It must not contain '{' or '}', which would change the hash tags.
	Prefix string
	// Node is this node's name, unique in the cluster: it names the node's probe
	// channels. It must not contain '{' or '}'.
	Node string
	// ProbeInterval is the time between two probes of each subscriber connection;
	// default 1 s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe may take to come back before its connection is
	// taken for down; it also bounds each subscriber command and each connection
	// attempt. Default 3 s.
	ProbeTimeout time.Duration
	// OpTimeout caps one Publish, PublishKeep, PublishControl or Last, whatever the
	// caller's context; default 1 s.
	OpTimeout time.Duration
	// Logger gets the engine's logs; default slog.Default().
	Logger *slog.Logger
}

// Redis is a Broker on a Redis server or a Redis Cluster. See the package doc for how it
// works; NewRedis makes one.
type Redis struct {
	handler  Handler
	log      *slog.Logger
	client   redis.UniversalClient
	cluster  *redis.ClusterClient // nil for a single server
	engine   string
	probeInt time.Duration
	probeTO  time.Duration
	opTO     time.Duration

	// Redis names: channels are chanPrefix+channel+"}", kept messages are
	// lastPrefix+channel+"}", control is ctlName, probes start with probePrefix.
	chanPrefix, lastPrefix, ctlName, probePrefix string

	ctx    context.Context // cancelled by Close: ends every wait on the network
	cancel context.CancelFunc
	wg     sync.WaitGroup // the shard supervisors and the topology watcher
	// topoKick wakes the topology watcher (cluster only); capacity 1.
	topoKick chan struct{}
	// firstUp is closed when the engine is up for the first time, which NewRedis
	// waits for.
	firstUp chan struct{}
	// topoMu serialises topology refreshes (cluster only); taken before mu.
	topoMu sync.Mutex
	// notifyMu orders the HandleBrokerState calls; taken before mu, never under it.
	notifyMu sync.Mutex

	// topo is the routing table, replaced whole under mu; Publish reads it without mu.
	topo atomic.Pointer[topology]

	closed                                       atomic.Bool
	up                                           atomic.Bool
	subscriptions                                atomic.Int64
	received, published, reconnects, badMessages atomic.Uint64
	lastErr                                      atomic.Pointer[errorBox]

	mu sync.RWMutex
	// The fields below are guarded by mu, as are every shard's and chanState's fields
	// documented so.
	closedLocked bool
	upLocked     bool
	everUp       bool
	// states are HandleBrokerState calls not made yet, in order (see flushStates).
	states []bool
	// ctl is the control channel's state; it moves between shards like any channel.
	ctl *chanState
	// nameBuf builds Redis names for map lookups without allocating.
	nameBuf []byte
}

type errorBox struct{ err error }

// topology maps channels to shards: one shard for a single server; for a cluster, the
// shard of each master and the master of each slot.
type topology struct {
	shards []*shard
	slots  *[numSlots]*shard // nil for a single server
}

// NewRedis starts a Redis broker that delivers to h. It returns once the control
// channel is subscribed and a probe has made the round trip through every subscriber
// connection, or fails when ctx ends first; after that, it rides out outages in the
// background (see HandleBrokerState).
func NewRedis(ctx context.Context, cfg RedisConfig, h Handler) (*Redis, error) {
	if cfg.Client == nil {
		return nil, errors.New("pubsub: redis: RedisConfig.Client is required")
	}
	if cfg.Node == "" {
		return nil, errors.New("pubsub: redis: RedisConfig.Node is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "herald"
	}
	if strings.ContainsAny(cfg.Prefix, "{}") || strings.ContainsAny(cfg.Node, "{}") {
		return nil, errors.New("pubsub: redis: Prefix and Node must not contain '{' or '}'")
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 3 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if h == nil {
		h = nopHandler{}
	}
	single, _ := cfg.Client.(*redis.Client)
	cluster, _ := cfg.Client.(*redis.ClusterClient)
	if single == nil && cluster == nil {
		return nil, fmt.Errorf("pubsub: redis: a %T is neither a *redis.Client nor a *redis.ClusterClient", cfg.Client)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pubsub: redis: %w", err)
	}
	r := &Redis{
		handler:     h,
		log:         cfg.Logger,
		client:      cfg.Client,
		engine:      "redis",
		probeInt:    cfg.ProbeInterval,
		probeTO:     cfg.ProbeTimeout,
		opTO:        cfg.OpTimeout,
		chanPrefix:  cfg.Prefix + ":c:{",
		lastPrefix:  cfg.Prefix + ":last:{",
		ctlName:     cfg.Prefix + ":ctl",
		probePrefix: cfg.Prefix + ":probe:" + cfg.Node,
		topoKick:    make(chan struct{}, 1),
		firstUp:     make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if cluster != nil {
		r.cluster = cluster
		r.engine = "redis-cluster"
		if err := r.startCluster(ctx); err != nil {
			_ = r.Close(context.Background())
			return nil, err
		}
	} else {
		s := newShard(r, single)
		r.mu.Lock()
		r.topo.Store(&topology{shards: []*shard{s}})
		r.ctl = s.addInternalLocked(r.ctlName, kindControl)
		r.wg.Add(1)
		go s.run()
		r.mu.Unlock()
	}
	select {
	case <-r.firstUp:
		return r, nil
	case <-ctx.Done():
		err := r.lastError()
		_ = r.Close(context.Background())
		if err != nil {
			return nil, fmt.Errorf("pubsub: redis: not up when the context ended (%w); last error: %w", ctx.Err(), err)
		}
		return nil, fmt.Errorf("pubsub: redis: not up when the context ended: %w", ctx.Err())
	}
}

type nopHandler struct{}

func (nopHandler) HandleMessage(string, []byte) {}
func (nopHandler) HandleControl([]byte)         {}
func (nopHandler) HandleBrokerState(bool)       {}

// channelName is the Redis channel of a hub channel.
func (r *Redis) channelName(channel string) string {
	return r.chanPrefix + channel + "}"
}

// lookupName builds channel's Redis name in r.nameBuf, for a map lookup that does not
// allocate (mu held for writing).
func (r *Redis) lookupName(channel string) []byte {
	r.nameBuf = append(append(append(r.nameBuf[:0], r.chanPrefix...), channel...), '}')
	return r.nameBuf
}

// shardFor is the shard that serves the Redis channel or key name.
func (t *topology) shardFor(name string) *shard {
	if t.slots == nil {
		return t.shards[0]
	}
	return t.slots[keySlot(name)]
}

// checkPath returns ErrUnavailable when the shard that serves name is known to be down.
func (r *Redis) checkPath(op, name string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if s := r.topo.Load().shardFor(name); s == nil || !s.up.Load() {
		return fmt.Errorf("pubsub: %s: %w", op, ErrUnavailable)
	}
	return nil
}

// opContext bounds one command by OpTimeout.
func (r *Redis) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opTO)
}

// opError wraps a failed command: the caller's context error as such, anything else
// (a network error, OpTimeout, an error reply) as ErrUnavailable.
func (r *Redis) opError(op string, ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("pubsub: %s: %w", op, cerr)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("pubsub: %s: %w: no reply within %v", op, ErrUnavailable, r.opTO)
	}
	return fmt.Errorf("pubsub: %s: %w: %w", op, ErrUnavailable, err)
}

func (r *Redis) publishCmd(ctx context.Context, c redis.Cmdable, name string, data []byte) *redis.IntCmd {
	if r.cluster != nil {
		return c.SPublish(ctx, name, data)
	}
	return c.Publish(ctx, name, data)
}

// Publish sends data on channel with PUBLISH (SPUBLISH on a cluster) and returns once
// the server took it.
func (r *Redis) Publish(ctx context.Context, channel string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	name := r.channelName(channel)
	if err := r.checkPath("publish", name); err != nil {
		return err
	}
	octx, cancel := r.opContext(ctx)
	err := r.publishCmd(octx, r.client, name, data).Err()
	cancel()
	if err != nil {
		return r.opError("publish", ctx, err)
	}
	r.published.Add(1)
	return nil
}

// PublishKeep sets channel's kept message (SET … PX ttl) and publishes it, in one
// MULTI/EXEC: the key and the channel share their hash tag, so they share a slot.
func (r *Redis) PublishKeep(ctx context.Context, channel string, data []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish: %w", err)
	}
	name := r.channelName(channel)
	if err := r.checkPath("publish", name); err != nil {
		return err
	}
	key := r.lastPrefix + channel + "}"
	octx, cancel := r.opContext(ctx)
	defer cancel()
	keep := func(p redis.Pipeliner) {
		if ttl <= 0 { // kept for no time: what was kept before is gone too
			p.Del(octx, key)
			return
		}
		// Round up to the millisecond: go-redis would truncate, and a TTL under 1 ms
		// to nothing.
		p.Set(octx, key, data, (ttl + time.Millisecond - 1).Truncate(time.Millisecond))
	}
	var err error
	if r.cluster != nil && keySlot(key) != keySlot(name) {
		// A channel name whose hash tag is empty ("", "}…") is hashed whole, so its key
		// lives elsewhere: keep, then publish, in two round trips.
		if _, err = r.client.Pipelined(octx, func(p redis.Pipeliner) error { keep(p); return nil }); err == nil {
			err = r.publishCmd(octx, r.client, name, data).Err()
		}
	} else {
		_, err = r.client.TxPipelined(octx, func(p redis.Pipeliner) error {
			keep(p)
			r.publishCmd(octx, p, name, data)
			return nil
		})
	}
	if err != nil {
		return r.opError("publish", ctx, err)
	}
	r.published.Add(1)
	return nil
}

// Last reads channel's kept message and its remaining time (GET and PTTL in one
// MULTI/EXEC, so that they agree).
func (r *Redis) Last(ctx context.Context, channel string) ([]byte, time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, fmt.Errorf("pubsub: last: %w", err)
	}
	key := r.lastPrefix + channel + "}"
	if err := r.checkPath("last", key); err != nil {
		return nil, 0, false, err
	}
	octx, cancel := r.opContext(ctx)
	defer cancel()
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, err := r.client.TxPipelined(octx, func(p redis.Pipeliner) error {
		get = p.Get(octx, key)
		pttl = p.PTTL(octx, key)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, false, r.opError("last", ctx, err)
	}
	data, err := get.Bytes() // a copy: the caller owns it
	if errors.Is(err, redis.Nil) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, r.opError("last", ctx, err)
	}
	ttl := pttl.Val()
	switch {
	case ttl == -2: // no key: cannot follow a GET that found it in the same MULTI
		return nil, 0, false, nil
	case ttl < 0: // no expiry: not set by PublishKeep; report none left to count
		ttl = 0
	}
	return data, ttl, true, nil
}

// PublishControl publishes data on the control channel, which every node subscribes to.
func (r *Redis) PublishControl(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: publish control: %w", err)
	}
	if err := r.checkPath("publish control", r.ctlName); err != nil {
		return err
	}
	octx, cancel := r.opContext(ctx)
	err := r.publishCmd(octx, r.client, r.ctlName, data).Err()
	cancel()
	if err != nil {
		return r.opError("publish control", ctx, err)
	}
	r.published.Add(1)
	return nil
}

// Subscribe makes the channels wanted, hands them to their shards' writers, and waits
// until Redis confirmed every one of them (see the package doc).
func (r *Redis) Subscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: subscribe: %w", err)
	}
	var w *waiter // made when a channel is not confirmed yet
	r.mu.Lock()
	if r.closedLocked {
		r.mu.Unlock()
		return ErrClosed
	}
	up := r.upLocked
	topo := r.topo.Load()
	for _, channel := range channels {
		buf := r.lookupName(channel)
		s := topo.shards[0]
		if topo.slots != nil {
			s = topo.slots[keySlot(buf)]
		}
		st := s.chans[string(buf)]
		if st == nil {
			name := string(buf)
			st = &chanState{name: name, hub: name[len(r.chanPrefix) : len(name)-1], shard: s}
			if topo.slots != nil {
				st.slot = keySlot(name)
			}
			s.chans[name] = st
		}
		if !st.wanted {
			st.wanted = true
			r.subscriptions.Add(1)
			s.markDirtyLocked(st)
		}
		if up && !st.confirmed() && s.conn != nil {
			if w == nil {
				w = &waiter{done: make(chan struct{})}
			}
			st.waiters = append(st.waiters, w)
			w.pending++
		}
	}
	r.mu.Unlock()
	if !up {
		return fmt.Errorf("pubsub: subscribe: %w", ErrUnavailable)
	}
	if w == nil {
		return nil
	}
	select {
	case <-w.done:
		return w.err // written before done was closed
	case <-ctx.Done():
		return fmt.Errorf("pubsub: subscribe: %w", ctx.Err())
	}
}

// Unsubscribe makes the channels unwanted at once; the writers tell Redis later.
func (r *Redis) Unsubscribe(ctx context.Context, channels ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pubsub: unsubscribe: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closedLocked {
		return ErrClosed
	}
	topo := r.topo.Load()
	for _, channel := range channels {
		buf := r.lookupName(channel)
		s := topo.shards[0]
		if topo.slots != nil {
			s = topo.slots[keySlot(buf)]
		}
		st := s.chans[string(buf)]
		if st == nil || !st.wanted {
			continue
		}
		st.wanted = false
		r.subscriptions.Add(-1)
		// A Subscribe still waiting for this channel is answered: it was subscribed
		// and unsubscribed since, in that order.
		for _, w := range st.waiters {
			w.one()
		}
		st.waiters = nil
		s.markDirtyLocked(st)
		s.settleLocked(st)
	}
	return nil
}

// Stats returns the engine's counters; it takes no lock and makes no call.
func (r *Redis) Stats() Stats {
	return Stats{
		Engine:        r.engine,
		Up:            r.up.Load() && !r.closed.Load(),
		Subscriptions: int(r.subscriptions.Load()),
		Received:      r.received.Load(),
		Published:     r.published.Load(),
		Reconnects:    r.reconnects.Load(),
	}
}

// Close stops every goroutine of the engine, closing its subscriber connections, and
// waits for them until ctx ends. It does not close the client. A Close called from a
// Handler cannot see the goroutine that runs the Handler end, so it waits until ctx ends.
func (r *Redis) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closedLocked {
		r.mu.Unlock()
		return ErrClosed
	}
	r.closedLocked = true
	r.closed.Store(true)
	r.upLocked = false
	r.up.Store(false)
	r.states = nil
	if topo := r.topo.Load(); topo != nil { // nil when NewRedis never learnt the cluster's
		for _, s := range topo.shards {
			s.retireLocked(ErrClosed)
		}
	}
	r.mu.Unlock()
	r.cancel()

	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pubsub: close: %w", ctx.Err())
	}
}

// setShardUpLocked records a shard's state and derives the engine's: up while every
// shard is. A change is queued for the Handler, unless it is the first up (NewRedis
// returning says that).
func (r *Redis) setShardUpLocked(s *shard, up bool) {
	s.upLocked = up
	s.up.Store(up)
	r.recomputeUpLocked()
}

func (r *Redis) recomputeUpLocked() {
	if r.closedLocked {
		return
	}
	up := true
	for _, s := range r.topo.Load().shards {
		up = up && s.upLocked
	}
	if up == r.upLocked {
		return
	}
	r.upLocked = up
	r.up.Store(up)
	switch {
	case up && !r.everUp:
		r.everUp = true
		close(r.firstUp)
	case r.everUp:
		r.states = append(r.states, up)
	}
}

// flushStates makes the HandleBrokerState calls queued by recomputeUpLocked, in order,
// one at a time, with no lock of the engine held but notifyMu.
func (r *Redis) flushStates() {
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	for {
		r.mu.Lock()
		if len(r.states) == 0 || r.closedLocked {
			r.mu.Unlock()
			return
		}
		up := r.states[0]
		r.states = r.states[1:]
		r.mu.Unlock()
		r.handler.HandleBrokerState(up)
	}
}

func (r *Redis) setLastError(err error) { r.lastErr.Store(&errorBox{err}) }

func (r *Redis) lastError() error {
	if b := r.lastErr.Load(); b != nil {
		return b.err
	}
	return nil
}
