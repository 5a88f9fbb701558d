package pubsub

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// maxBatch caps the channels of one SUBSCRIBE or UNSUBSCRIBE command, so that a node
// with 100,000 channels does not send Redis a command it must parse whole before
// answering anything.
const maxBatch = 1000

type chanKind uint8

const (
	kindChannel chanKind = iota // a hub channel
	kindControl                 // the control channel, always wanted
	kindProbe                   // this node's probe channel of one shard
)

// chanState is one Redis channel of a shard: what the hub wants and what was sent to
// Redis on the current connection. Every field is guarded by Redis.mu.
//
// A channel is confirmed (subscribed on the server, and delivered) when it is wanted,
// the last command sent for it was a subscribe, and no command for it is in flight:
// counting the commands in flight is what keeps SUBSCRIBE x, UNSUBSCRIBE x, SUBSCRIBE x
// from passing for confirmed on the first reply.
type chanState struct {
	name  string // the Redis name
	hub   string // the hub's name: a substring of name
	kind  chanKind
	slot  int    // the cluster slot of name (cluster only)
	shard *shard // the shard whose map holds it; nil once dropped or moved

	wanted   bool // the hub wants it (or the engine, for control and probe)
	sentSub  bool // the last command sent or queued for it on this connection subscribes
	dirty    bool // in shard.dirty, waiting for the writer
	inflight int  // commands for it written and not yet fully answered
	waiters  []*waiter
}

func (st *chanState) confirmed() bool { return st.wanted && st.sentSub && st.inflight == 0 }

// waiter is one Subscribe call waiting for its channels; guarded by Redis.mu.
type waiter struct {
	pending  int
	finished bool
	err      error
	done     chan struct{}
}

func (w *waiter) one() {
	if w.finished {
		return
	}
	if w.pending--; w.pending <= 0 {
		w.finish(nil)
	}
}

func (w *waiter) finish(err error) {
	if w.finished {
		return
	}
	w.finished = true
	w.err = err
	close(w.done)
}

// command is one SUBSCRIBE/UNSUBSCRIBE (SSUBSCRIBE/SUNSUBSCRIBE) written on a
// connection. Redis answers each channel of it, in order, or the whole of it with one
// error.
type command struct {
	unsub bool
	chans []*chanState
	names []string
	next  int // chans[next] is the next answer expected
	seq   uint64
}

// addInternalLocked adds a channel the engine itself wants (control, probe).
func (s *shard) addInternalLocked(name string, kind chanKind) *chanState {
	st := &chanState{name: name, kind: kind, shard: s, wanted: true}
	if s.r.cluster != nil {
		st.slot = keySlot(name)
	}
	s.chans[name] = st
	s.markDirtyLocked(st)
	return st
}

// markDirtyLocked queues st for the writer. Between connections it does nothing: a new
// connection queues every wanted channel.
func (s *shard) markDirtyLocked(st *chanState) {
	if st.dirty || s.conn == nil {
		return
	}
	st.dirty = true
	s.dirty = append(s.dirty, st)
	if len(s.dirty) == 1 { // else a kick is pending, or the writer has yet to take the list
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// settleLocked acts on a channel with nothing in flight and nothing queued: it answers
// the Subscribes waiting for it once it is confirmed, and forgets it once it is neither
// wanted nor subscribed.
func (s *shard) settleLocked(st *chanState) {
	if st.inflight > 0 || st.dirty {
		return
	}
	if st.confirmed() {
		for _, w := range st.waiters {
			w.one()
		}
		st.waiters = nil
		return
	}
	if !st.wanted && !st.sentSub && st.shard != nil {
		if st.shard.chans[st.name] == st {
			delete(st.shard.chans, st.name)
		}
		st.shard = nil
	}
}

// moveLocked hands a channel over to the shard that now serves its slot. The old state
// stays behind for the answers still in flight on the old connection, in no map.
func (s *shard) moveLocked(st *chanState, dst *shard) {
	delete(s.chans, st.name)
	st.shard = nil
	if !st.wanted {
		return
	}
	n := &chanState{name: st.name, hub: st.hub, kind: st.kind, slot: st.slot, shard: dst, wanted: true, waiters: st.waiters}
	st.wanted, st.waiters = false, nil
	if n.kind == kindControl {
		s.r.ctl = n
	}
	dst.chans[n.name] = n
	if dst.conn == nil {
		for _, w := range n.waiters {
			w.finish(fmt.Errorf("pubsub: subscribe: %w", ErrUnavailable))
		}
		n.waiters = nil
	}
	dst.markDirtyLocked(n)
}

func (s *shard) cmdName(cmd *command) string {
	switch {
	case s.r.cluster != nil && cmd.unsub:
		return "SUNSUBSCRIBE"
	case s.r.cluster != nil:
		return "SSUBSCRIBE"
	case cmd.unsub:
		return "UNSUBSCRIBE"
	}
	return "SUBSCRIBE"
}

// takeBatchLocked turns the dirty list into commands and records them as in flight on c:
// a channel wanted and not subscribed is subscribed, one subscribed and no longer wanted
// is unsubscribed, and one that went back and forth since the last batch costs nothing.
// On a cluster, Redis takes only channels of one slot per command.
func (s *shard) takeBatchLocked(c *subConn) []*command {
	if s.conn != c {
		return nil
	}
	var subs, unsubs []*chanState
	for _, st := range s.dirty {
		if !st.dirty || st.shard != s {
			continue
		}
		st.dirty = false
		switch {
		case st.wanted && !st.sentSub:
			subs = append(subs, st)
		case !st.wanted && st.sentSub:
			unsubs = append(unsubs, st)
		default:
			s.settleLocked(st)
		}
	}
	clear(s.dirty)
	s.dirty = s.dirty[:0]
	cmds := s.batch(nil, unsubs, true)
	cmds = s.batch(cmds, subs, false)
	for _, cmd := range cmds {
		c.seq++
		cmd.seq = c.seq
		for _, st := range cmd.chans {
			st.inflight++
			st.sentSub = !cmd.unsub
		}
		c.fifo = append(c.fifo, cmd)
	}
	if !c.flushed {
		c.flushed = true
		c.barrier = c.seq
		c.checkReadyLocked()
	}
	return cmds
}

func (s *shard) batch(cmds []*command, sts []*chanState, unsub bool) []*command {
	if s.r.cluster != nil {
		slices.SortFunc(sts, func(a, b *chanState) int { return cmp.Compare(a.slot, b.slot) })
	}
	for len(sts) > 0 {
		n := min(len(sts), maxBatch)
		if s.r.cluster != nil {
			for i := 1; i < n; i++ {
				if sts[i].slot != sts[0].slot {
					n = i
					break
				}
			}
		}
		cmd := &command{unsub: unsub, chans: sts[:n:n], names: make([]string, n)}
		for i, st := range cmd.chans {
			cmd.names[i] = st.name
		}
		cmds = append(cmds, cmd)
		sts = sts[n:]
	}
	return cmds
}

// onSubscription matches a (un)subscribe confirmation with the oldest command in flight.
// An unsubscribe that matches none is the server dropping a subscription (on a cluster,
// its slot moved); a subscribe that matches none means the connection is not in the
// state the engine thinks it is, and ends it.
func (s *shard) onSubscription(c *subConn, m *redis.Subscription) error {
	var unsub bool
	switch m.Kind {
	case "subscribe", "ssubscribe":
	case "unsubscribe", "sunsubscribe":
		unsub = true
	default:
		s.badMessage(m.Kind + " " + m.Channel)
		return nil
	}
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.conn != c {
		return nil
	}
	if len(c.fifo) > 0 {
		if cmd := c.fifo[0]; cmd.unsub == unsub && cmd.names[cmd.next] == m.Channel {
			st := cmd.chans[cmd.next]
			if cmd.next++; cmd.next == len(cmd.chans) {
				c.popLocked()
			}
			st.inflight--
			s.settleLocked(st)
			return nil
		}
	}
	if !unsub {
		return fmt.Errorf("pubsub: redis: unexpected %s confirmation for %q", m.Kind, m.Channel)
	}
	st := s.chans[m.Channel]
	if st == nil || st.inflight > 0 || !st.sentSub {
		return nil
	}
	st.sentSub = false
	r.log.Debug("pubsub: redis dropped a subscription", "shard", s.label(), "channel", m.Channel)
	switch {
	case st.kind == kindProbe:
		return errors.New("pubsub: redis: the server dropped the probe channel")
	case !st.wanted:
		s.settleLocked(st)
	case r.cluster != nil:
		r.kickTopology() // which routes it again and subscribes it where it now lives
	default:
		s.markDirtyLocked(st)
	}
	return nil
}

func (c *subConn) popLocked() {
	cmd := c.fifo[0]
	c.fifo[0] = nil
	c.fifo = c.fifo[1:]
	c.acked = cmd.seq
	c.checkReadyLocked()
	select {
	case c.ackSig <- struct{}{}:
	default:
	}
}

// onErrorReply answers the oldest command with an error reply. An unsubscribe refused
// (MOVED: the slot is gone, and its subscriptions with it) is as good as done. A
// subscribe refused with MOVED after the resubscription waits for the topology watcher
// to route its channels again; any other refusal ends c.
func (s *shard) onErrorReply(c *subConn, rerr error) error {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.conn != c {
		return nil
	}
	if len(c.fifo) == 0 {
		return fmt.Errorf("pubsub: redis: error reply with no command in flight: %w", rerr)
	}
	cmd := c.fifo[0]
	c.popLocked()
	rest := cmd.chans[cmd.next:]
	for _, st := range rest {
		if st.inflight--; st.inflight == 0 && !cmd.unsub {
			st.sentSub = false
		}
	}
	if !cmd.unsub {
		_, moved := redis.IsMovedError(rerr)
		reroute := moved && r.cluster != nil && c.readyClosed
		for _, st := range rest {
			reroute = reroute && st.kind != kindProbe
		}
		if !reroute {
			return fmt.Errorf("pubsub: redis: %s refused: %w", s.cmdName(cmd), rerr)
		}
		r.kickTopology()
	}
	for _, st := range rest {
		s.settleLocked(st)
	}
	return nil
}
