package pubsub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// warnEvery rate-limits the warnings of a shard that stays down.
const warnEvery = 30 * time.Second

var errStopped = errors.New("pubsub: redis: shard stopped")

// subConn is one subscriber connection of a shard, from connecting to closing.
type subConn struct {
	ps        *redis.PubSub
	probeName string

	failOnce  sync.Once
	err       error          // why it failed; written before failed is closed
	failed    chan struct{}  // closed by fail
	ready     chan struct{}  // closed once Redis answered the first batch (the resubscription)
	probeSig  chan struct{}  // capacity 1: a probe came back
	ackSig    chan struct{}  // capacity 1: a command was fully answered
	probeBack atomic.Uint64  // the highest probe sequence number back
	wg        sync.WaitGroup // the receiver and the writer

	// Guarded by Redis.mu: the commands written and not fully answered, oldest
	// first, and the sequence numbers that tell when the resubscription is answered.
	fifo                 []*command
	seq, acked, barrier  uint64
	flushed, readyClosed bool
}

func newSubConn() *subConn {
	return &subConn{
		failed:   make(chan struct{}),
		ready:    make(chan struct{}),
		probeSig: make(chan struct{}, 1),
		ackSig:   make(chan struct{}, 1),
	}
}

func (c *subConn) fail(err error) {
	c.failOnce.Do(func() {
		c.err = err
		close(c.failed)
	})
}

func (c *subConn) checkReadyLocked() {
	if c.flushed && !c.readyClosed && c.acked >= c.barrier {
		c.readyClosed = true
		close(c.ready)
	}
}

// shard is the part of the engine that one subscriber connection serves: the single
// server, or one master of a cluster. Its supervisor (run) owns the connection: it
// connects, starts a receiver and a writer, probes, and on any failure tears down and
// reconnects.
type shard struct {
	r      *Redis
	addr   string        // the master's address
	client *redis.Client // the single server's client, or the master's, for probes
	// sub makes the subscriber connections: a copy of client that speaks RESP2 (see
	// subscriberClient). run closes it.
	sub  *redis.Client
	stop chan struct{} // closed by retireLocked
	kick chan struct{} // capacity 1: wakes the writer
	up   atomic.Bool   // upLocked, for Publish

	// Guarded by Redis.mu.
	chans    map[string]*chanState // by Redis name
	dirty    []*chanState          // channels whose wanted state the writer must send
	conn     *subConn              // the current connection; nil between two
	upLocked bool
	everUp   bool
	retired  bool

	// Owned by the supervisor goroutine.
	downSince time.Time
}

func newShard(r *Redis, client *redis.Client) *shard {
	return &shard{
		r:      r,
		addr:   client.Options().Addr,
		client: client,
		sub:    subscriberClient(client),
		stop:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		chans:  make(map[string]*chanState),
	}
}

// subscriberClient returns a client with c's options but RESP2, for subscriber
// connections only. go-redis v9.17.3 loses RESP3 push frames (messages and
// confirmations alike) whose header is split between two reads: its push-notification
// processor peeks at a truncated name, takes the frame for an unknown notification and
// discards it (redis/go-redis#3839, fixed in v9.21.0, whose fix needed #3936). RESP2
// pub/sub replies are plain arrays that never go through that path. The copy keeps no
// idle connection: it only ever makes subscriber connections.
func subscriberClient(c *redis.Client) *redis.Client {
	opt := *c.Options()
	opt.Protocol = 2
	opt.MinIdleConns = 0
	opt.MaxIdleConns = 0
	opt.PushNotificationProcessor = nil
	opt.MaintNotificationsConfig = nil
	return redis.NewClient(&opt)
}

func (s *shard) label() string { return s.addr }

func (s *shard) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// retireLocked stops the shard's supervisor and answers its waiting Subscribes.
func (s *shard) retireLocked(err error) {
	if s.retired {
		return
	}
	s.retired = true
	close(s.stop)
	for _, st := range s.chans {
		for _, w := range st.waiters {
			w.finish(err)
		}
		st.waiters = nil
	}
}

// backoff is the jittered exponential wait before connection attempt n (1, 2, …):
// 50–100 ms, then doubling up to 1–2 s. The cap bounds how long cross-node delivery
// stays down after Redis is back; a node's attempts every second or two cost Redis
// nothing worth sparing.
func backoff(n int) time.Duration {
	d := 2 * time.Second
	if n < 6 {
		d = min(d, 100*time.Millisecond<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or less if the shard is stopped; it reports whether it was not.
func (s *shard) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// run is the shard's supervisor: it keeps a connection up until the shard is stopped.
func (s *shard) run() {
	r := s.r
	defer r.wg.Done()
	defer s.sub.Close()
	var lastWarn time.Time
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !s.sleep(backoff(attempt)) {
				return
			}
			if r.cluster != nil {
				// The shard may have failed because the cluster changed: route again
				// before connecting (this may retire the shard).
				ctx, cancel := context.WithTimeout(r.ctx, r.probeTO)
				err := r.refreshTopology(ctx)
				cancel()
				if err != nil {
					if s.stopped() {
						return
					}
					r.setLastError(err)
					r.log.Debug("pubsub: redis cluster topology refresh failed", "shard", s.label(), "err", err)
					continue
				}
			}
		}
		if s.stopped() {
			return
		}
		wasUp, err := s.session()
		if s.stopped() {
			return
		}
		r.setLastError(err)
		switch {
		case wasUp:
			r.log.Warn("pubsub: redis subscriber connection lost", "shard", s.label(), "err", err)
			s.downSince, lastWarn = time.Now(), time.Now()
			attempt = 0 // the next attempt waits backoff(1)
		case time.Since(lastWarn) >= warnEvery:
			what := "pubsub: redis subscriber connection still down"
			if s.downSince.IsZero() {
				what = "pubsub: redis subscriber connection cannot be made"
			}
			r.log.Warn(what, "shard", s.label(), "attempts", attempt+1, "err", err)
			lastWarn = time.Now()
		default:
			r.log.Debug("pubsub: redis connection attempt failed", "shard", s.label(), "attempt", attempt+1, "err", err)
		}
	}
}

// session runs one connection: it subscribes every wanted channel, proves the path with
// probes, and returns when the connection fails or the shard stops. wasUp tells whether
// the connection was up.
func (s *shard) session() (wasUp bool, err error) {
	r := s.r
	c := newSubConn()
	// No I/O yet: the first subscribe command, from the writer, connects.
	c.ps = s.sub.Subscribe(r.ctx)
	r.mu.Lock()
	if s.retired {
		r.mu.Unlock()
		_ = c.ps.Close()
		return false, errStopped
	}
	err = s.startLocked(c)
	r.mu.Unlock()
	if err == nil {
		c.wg.Add(2)
		go s.receive(c)
		go s.write(c)
		wasUp, err = s.probe(c)
	}
	c.fail(err)

	r.mu.Lock()
	s.conn = nil
	s.downLocked(fmt.Errorf("pubsub: subscribe: %w: %w", ErrUnavailable, err))
	r.setShardUpLocked(s, false)
	r.mu.Unlock()
	r.flushStates()
	_ = c.ps.Close() // ends the receiver's wait; waits for a write under way
	c.wg.Wait()
	return wasUp, err
}

// startLocked makes c the shard's connection and queues every wanted channel, and the
// probe channel, for the writer.
func (s *shard) startLocked(c *subConn) error {
	c.probeName = s.r.probePrefix
	if topo := s.r.topo.Load(); topo.slots != nil {
		tag, ok := slotTag(func(slot int) bool { return topo.slots[slot] == s })
		if !ok {
			return errors.New("pubsub: redis: the shard serves no slot")
		}
		c.probeName += ":{" + tag + "}"
	}
	s.conn = c
	s.dirty = s.dirty[:0]
	for name, st := range s.chans {
		st.sentSub, st.inflight, st.dirty = false, 0, false
		if !st.wanted || st.kind == kindProbe {
			delete(s.chans, name)
			st.shard = nil
			continue
		}
		s.markDirtyLocked(st)
	}
	s.addInternalLocked(c.probeName, kindProbe)
	return nil
}

// downLocked forgets what the lost connection held: the server dropped every
// subscription with it. Waiting Subscribes get err; wanted channels stay, for the next
// connection.
func (s *shard) downLocked(err error) {
	for name, st := range s.chans {
		for _, w := range st.waiters {
			w.finish(err)
		}
		st.waiters = nil
		st.sentSub, st.inflight, st.dirty = false, 0, false
		if !st.wanted || st.kind == kindProbe {
			delete(s.chans, name)
			st.shard = nil
		}
	}
	clear(s.dirty)
	s.dirty = s.dirty[:0]
}

// markUp records that c proved the path: every channel wanted when it connected is
// subscribed and a probe came back.
func (s *shard) markUp(c *subConn) {
	r := s.r
	r.mu.Lock()
	if s.conn != c {
		r.mu.Unlock()
		return
	}
	again := s.everUp
	s.everUp = true
	r.setShardUpLocked(s, true)
	if again {
		r.reconnects.Add(1)
	}
	n := len(s.chans)
	r.mu.Unlock()
	r.flushStates()
	if again {
		r.log.Info("pubsub: redis subscriber connection restored", "shard", s.label(),
			"down_for", time.Since(s.downSince).Round(time.Millisecond), "channels", n)
	}
}

// probe waits for the resubscription to be answered, then publishes a probe every
// ProbeInterval on the shard's probe channel and expects it back on c within
// ProbeTimeout. It returns why c is no longer usable, and whether it was up.
func (s *shard) probe(c *subConn) (wasUp bool, err error) {
	r := s.r
	tick := time.NewTicker(r.probeInt)
	defer tick.Stop()

	// The resubscription may be long (100,000 channels); it is alive as long as Redis
	// keeps answering.
	var lastAcked uint64
	progress := time.Now()
	for waiting := true; waiting; {
		select {
		case <-c.ready:
			waiting = false
		case <-c.failed:
			return false, c.err
		case <-s.stop:
			return false, errStopped
		case now := <-tick.C:
			r.mu.RLock()
			acked := c.acked
			r.mu.RUnlock()
			if acked != lastAcked {
				lastAcked, progress = acked, now
			} else if now.Sub(progress) >= r.probeTO {
				return false, fmt.Errorf("subscriptions not confirmed within %v", r.probeTO)
			}
		}
	}

	deadline := time.NewTimer(r.probeTO)
	defer deadline.Stop()
	var seq uint64
	outstanding := false
	send := func() error {
		seq++
		outstanding = true
		deadline.Reset(r.probeTO)
		return s.sendProbe(c, seq)
	}
	if err := send(); err != nil {
		return false, err
	}
	for {
		select {
		case <-c.failed:
			return wasUp, c.err
		case <-s.stop:
			return wasUp, errStopped
		case <-c.probeSig:
			if outstanding && c.probeBack.Load() >= seq {
				outstanding = false
				deadline.Stop()
				if !wasUp {
					wasUp = true
					s.markUp(c)
				}
			}
		case <-deadline.C:
			if outstanding {
				return wasUp, fmt.Errorf("probe not back within %v", r.probeTO)
			}
		case <-tick.C:
			if !outstanding {
				if err := send(); err != nil {
					return wasUp, err
				}
			}
		}
	}
}

func (s *shard) sendProbe(c *subConn, seq uint64) error {
	r := s.r
	ctx, cancel := context.WithTimeout(r.ctx, r.probeTO)
	defer cancel()
	n, err := r.publishCmd(ctx, s.client, c.probeName, strconv.AppendUint(nil, seq, 10)).Result()
	if errors.Is(err, context.DeadlineExceeded) && r.ctx.Err() == nil {
		return fmt.Errorf("probe: no answer from the server within %v", r.probeTO)
	}
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if n == 0 {
		return errors.New("probe: no subscriber on the probe channel")
	}
	return nil
}

// write sends what Subscribe and Unsubscribe queued, in batches, until c fails. It
// keeps one batch in flight at a time: what is queued while Redis answers one goes out
// in the next, so that concurrent callers share commands instead of each paying for
// its own, at the cost of one round trip of waiting at most.
func (s *shard) write(c *subConn) {
	defer c.wg.Done()
	r := s.r
	for {
		select {
		case <-s.kick:
		case <-c.failed:
			return
		case <-s.stop:
			return
		}
		r.mu.Lock()
		cmds := s.takeBatchLocked(c)
		r.mu.Unlock()
		for _, cmd := range cmds {
			if err := s.send(c, cmd); err != nil {
				c.fail(fmt.Errorf("%s %d channels: %w", s.cmdName(cmd), len(cmd.names), err))
				return
			}
		}
		if len(cmds) == 0 {
			continue
		}
		if !s.awaitAnswers(c, cmds[len(cmds)-1].seq) {
			return
		}
	}
}

// awaitAnswers waits until Redis fully answered command seq, and reports whether c is
// still usable. A connection on which the answers stop coming for ProbeTimeout is
// failed: a reply lost there would leave Subscribes waiting for ever.
func (s *shard) awaitAnswers(c *subConn, seq uint64) bool {
	r := s.r
	timer := time.NewTimer(r.probeTO)
	defer timer.Stop()
	for {
		r.mu.RLock()
		answered := c.acked >= seq
		r.mu.RUnlock()
		if answered {
			return true
		}
		select {
		case <-c.ackSig:
			timer.Reset(r.probeTO)
		case <-timer.C:
			c.fail(fmt.Errorf("subscription commands not answered within %v", r.probeTO))
			return false
		case <-c.failed:
			return false
		case <-s.stop:
			return false
		}
	}
}

func (s *shard) send(c *subConn, cmd *command) error {
	ctx, cancel := context.WithTimeout(s.r.ctx, s.r.probeTO)
	defer cancel()
	switch {
	case s.r.cluster != nil && cmd.unsub:
		return c.ps.SUnsubscribe(ctx, cmd.names...)
	case s.r.cluster != nil:
		return c.ps.SSubscribe(ctx, cmd.names...)
	case cmd.unsub:
		return c.ps.Unsubscribe(ctx, cmd.names...)
	}
	return c.ps.Subscribe(ctx, cmd.names...)
}

// receive reads c until it fails, handing messages to the Handler and confirmations to
// the channel states.
func (s *shard) receive(c *subConn) {
	defer c.wg.Done()
	ctx := context.Background() // Receive uses it only for a deadline: none, probes watch c
	for {
		msg, err := receiveOne(ctx, c.ps)
		if err != nil {
			if err = s.onReceiveError(c, err); err != nil {
				c.fail(err)
				return
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.onMessage(c, m)
		case *redis.Subscription:
			if err := s.onSubscription(c, m); err != nil {
				c.fail(err)
				return
			}
		default: // *redis.Pong included: the engine never sends PING
			s.badMessage(fmt.Sprintf("%T", msg))
		}
	}
}

// errMalformed is what a panic in go-redis's parsing of a reply becomes.
var errMalformed = errors.New("pubsub: redis: malformed reply")

// receiveOne is PubSub.Receive with the panics of go-redis's reply parsing (which
// type-asserts what Redis sent) turned into errMalformed.
func receiveOne(ctx context.Context, ps *redis.PubSub) (msg any, err error) {
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("%w: %v", errMalformed, p)
		}
	}()
	return ps.Receive(ctx)
}

// onReceiveError sorts what Receive failed with: a reply go-redis does not know is
// skipped, an error reply answers the oldest command, anything else ends c.
func (s *shard) onReceiveError(c *subConn, err error) error {
	if errors.Is(err, redis.Nil) || strings.HasPrefix(err.Error(), "redis: unsupported pubsub message") {
		s.badMessage(err.Error())
		return nil
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, errMalformed) {
		return s.onErrorReply(c, err)
	}
	return err
}

func (s *shard) badMessage(what string) {
	s.r.badMessages.Add(1)
	s.r.log.Debug("pubsub: redis sent an unexpected reply, skipped", "shard", s.label(), "reply", what)
}

// onMessage hands a message to the Handler if its channel is confirmed; what arrives
// for a channel no longer wanted, or not yet confirmed, is dropped.
func (s *shard) onMessage(c *subConn, m *redis.Message) {
	r := s.r
	if m.Pattern != "" || m.PayloadSlice != nil {
		s.badMessage("message " + m.Channel)
		return
	}
	r.mu.RLock()
	st := s.chans[m.Channel]
	ok := st != nil && s.conn == c && st.confirmed()
	var kind chanKind
	var hub string
	if ok {
		kind, hub = st.kind, st.hub
	}
	r.mu.RUnlock()
	if !ok || r.closed.Load() {
		return
	}
	// No copy: go-redis made this string for this message alone and keeps no
	// reference to it, so nobody will write to its bytes, and the Handler may keep
	// them (the contract makes data immutable for it too).
	data := unsafe.Slice(unsafe.StringData(m.Payload), len(m.Payload))
	switch kind {
	case kindProbe:
		if seq, err := strconv.ParseUint(m.Payload, 10, 64); err == nil {
			c.probeBack.Store(seq)
			select {
			case c.probeSig <- struct{}{}:
			default:
			}
		}
	case kindControl:
		r.received.Add(1)
		r.handler.HandleControl(data)
	default:
		r.received.Add(1)
		r.handler.HandleMessage(hub, data)
	}
}
