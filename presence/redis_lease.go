package presence

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// The Redis engine's background work: the node's lease, the sweep of dead nodes, and
// the retries of removals. Each runs in a goroutine of its own, started by NewRedis and
// stopped by Close, so that a slow cleanup never delays a renewal.

const (
	// claimTTL is how long a sweeper has to clean a dead node before another may take
	// the claim over (the first one died, or cannot reach Redis).
	claimTTL = 30 * time.Second
	// claimLimit bounds the dead nodes one sweep claims; the rest wait a sweep.
	claimLimit = 16
	// retryEvery is the period of the retries of removals.
	retryEvery = time.Second
	// scanCount is the COUNT hint of the scans of a dead node's sets.
	scanCount = 512
)

// opCtx bounds a background call by OpTimeout; shutdown cancels it.
func (s *Redis) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.opTimeout)
}

func (s *Redis) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// --- lease -------------------------------------------------------------------------

func (s *Redis) renewLoop() {
	defer close(s.renewDone)
	t := time.NewTicker(s.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.paused.Load() {
			s.renew()
		}
	}
}

// renew extends the lease in one script call that also drops the pch members the node
// no longer needs and lists the live nodes. If the node's name is no longer registered,
// the node takes a new one (reincarnate).
func (s *Redis) renew() {
	s.mu.Lock()
	name, epoch, srem := s.name, s.epoch, s.srem
	s.srem = nil
	s.mu.Unlock()
	args := make([]any, 0, 2+len(srem))
	args = append(args, name, s.lease.Milliseconds())
	for _, m := range srem {
		args = append(args, m)
	}
	ctx, cancel := s.opCtx()
	res, err := renewScript.Run(ctx, s.client, []string{s.keyNodes, s.pchKey(name)}, args...).Slice()
	cancel()
	if err != nil {
		s.mu.Lock()
		if s.epoch == epoch && len(srem)+len(s.srem) <= maxSrem {
			s.srem = append(srem, s.srem...)
		}
		s.mu.Unlock()
		if !s.stopping() {
			s.warn.Warn("renew", "presence: lease renewal failed", "node", name, "err", err)
		}
		return
	}
	if ok, _ := res[0].(int64); ok == 1 {
		nodes := parseNodes(res[1:])
		s.mu.Lock()
		if s.epoch == epoch {
			s.nodes = nodes
		}
		s.mu.Unlock()
		return
	}
	s.reincarnate(name)
}

// reincarnate registers the node under a new name after its old one was dropped from
// the registry (the cluster took it for dead, or Redis lost its data), forgets the
// bookkeeping of the old name's sets, and tells the hub, which Adds its connections and
// reports its counts again. The old name's entries are cleaned by whichever node claims
// it; an Add under the new name takes a connection's entry over, so that the cleaning
// does not remove what the hub re-asserted.
//
// The new name is registered before it is used, so that no entry is ever written under
// a name that cleanup could not find. It is registered even if another live node has
// taken the same id meanwhile (that is logged): this node must stay covered by a lease.
func (s *Redis) reincarnate(old string) {
	s.mu.Lock()
	inc := max(time.Now().UnixMicro(), s.inc+1)
	s.mu.Unlock()
	name := s.nameOf(inc)
	ctx, cancel := s.opCtx()
	res, err := registerScript.Run(ctx, s.client, []string{s.keyNodes},
		name, s.lease.Milliseconds(), s.idPrefix(), "1").Slice()
	cancel()
	if err != nil {
		// The next renewal finds the old name missing again and retries.
		s.warn.Warn("register", "presence: re-registering the node failed", "old", old, "err", err)
		return
	}
	reg := parseRegister(res)
	s.mu.Lock()
	s.inc, s.name = inc, name
	s.epoch++
	s.pch = make(map[string]*chanState)
	s.apps = make(map[string]bool)
	s.srem = nil
	s.nodes = reg.nodes
	s.mu.Unlock()
	s.log.Warn("presence: this node's entries were dropped (its lease ran out, or Redis lost its data); re-registered under a new name",
		"old", old, "name", name)
	if reg.holder != "" {
		s.log.Error("presence: another live node has this node's id", "id", s.id, "other", reg.holder)
	}
	s.h.HandleReset()
}

// registration is registerScript's reply.
type registration struct {
	ok         bool
	holder     string        // the live node with the same id, if any
	holderLeft time.Duration // until the holder's lease runs out
	nodes      []Node
}

func parseRegister(res []any) registration {
	var r registration
	if len(res) < 4 {
		return r
	}
	ok, _ := res[0].(int64)
	now, _ := res[1].(int64)
	r.ok = ok == 1
	r.holder, _ = res[2].(string)
	if exp, _ := res[3].(string); exp != "" {
		if f, err := strconv.ParseFloat(exp, 64); err == nil && int64(f) > now {
			r.holderLeft = time.Duration(int64(f)-now) * time.Millisecond
		}
	}
	r.nodes = parseNodes(res[4:])
	return r
}

// parseNodes reads node names, "<id>-<incarnation>".
func parseNodes(names []any) []Node {
	out := make([]Node, 0, len(names))
	for _, v := range names {
		name, _ := v.(string)
		idStr, _, _ := strings.Cut(name, "-")
		id, _ := strconv.ParseUint(idStr, 10, 32)
		out = append(out, Node{ID: uint32(id), Name: name})
	}
	return out
}

// --- sweep -------------------------------------------------------------------------

// sweepEvery is the sweep period: min(1 s, Lease/4), so that a dead node's entries go
// within Lease plus about a second of its last renewal.
func (s *Redis) sweepEvery() time.Duration { return min(time.Second, s.lease/4) }

func (s *Redis) sweepLoop() {
	defer close(s.sweepDone)
	// The first sweep runs at once: a cluster that was entirely down leaves dead nodes
	// behind, and nobody else may be left to clean them.
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.paused.Load() {
			s.sweep()
		}
		// Jitter spreads the sweeps of nodes started together; it only shortens the
		// period, so that the bound on cleanup holds.
		d := s.sweepEvery()
		t.Reset(d - rand.N(d/5))
	}
}

// sweep claims the dead nodes (exactly one node of the cluster claims each), then cleans
// them, and the ones whose cleaning failed earlier.
func (s *Redis) sweep() {
	ctx, cancel := s.opCtx()
	claimed, err := claimScript.Run(ctx, s.client, []string{s.keyNodes, s.keyClaims, s.keyClaimers},
		s.Name(), claimTTL.Milliseconds(), claimLimit, s.id).StringSlice()
	cancel()
	if err != nil {
		if !s.stopping() {
			s.warn.Warn("sweep", "presence: sweep failed", "err", err)
		}
		return
	}
	if len(claimed) > 0 {
		if hook := s.claimHook.Load(); hook != nil {
			(*hook)(claimed)
		}
	}
	for _, dead := range claimed {
		s.unfinished[dead] = true
	}
	for dead := range s.unfinished {
		if s.stopping() {
			return
		}
		if s.clean(dead) {
			delete(s.unfinished, dead)
		}
	}
}

// clean removes a claimed dead node's entries, channel by channel, and its counts, app
// by app, then its sets and its claim, and hands the users who thereby left to the
// Handler at once. Every step can run again harmlessly, so a failure leaves the node for
// the next sweep (or, if this node dies, for whoever claims it when the claim runs out).
func (s *Redis) clean(dead string) bool {
	var deps []Departure
	var vacated []Transition
	defer func() { // what was removed is reported, failure or not
		s.handleDepartures(deps)
		if len(vacated) > 0 {
			s.h.HandleVacated(vacated)
		}
	}()
	channels, err := s.scanSet(s.pchKey(dead), func(m string) string {
		if i := strings.LastIndexByte(m, '#'); i >= 0 {
			return m[:i]
		}
		return m
	})
	if err != nil {
		s.warn.Warn("clean", "presence: cleaning a dead node failed", "node", dead, "err", err)
		return false
	}
	for ch := range channels {
		ctx, cancel := s.opCtx()
		users, err := cleanChannelScript.Run(ctx, s.client, s.channelKeys(ch), dead).StringSlice()
		cancel()
		if err != nil {
			s.warn.Warn("clean", "presence: cleaning a dead node failed", "node", dead, "channel", ch, "err", err)
			return false
		}
		for _, u := range users {
			deps = append(deps, Departure{Channel: ch, UserID: u})
		}
	}
	apps, err := s.scanSet(s.appsKey(dead), func(m string) string { return m })
	if err != nil {
		s.warn.Warn("clean", "presence: cleaning a dead node failed", "node", dead, "err", err)
		return false
	}
	for app := range apps {
		ctx, cancel := s.opCtx()
		emptied, err := cleanAppScript.Run(ctx, s.client, s.appKeys(app, dead)).StringSlice()
		cancel()
		if err != nil {
			s.warn.Warn("clean", "presence: cleaning a dead node failed", "node", dead, "app", app, "err", err)
			return false
		}
		for _, ch := range emptied {
			vacated = append(vacated, Transition{App: app, Channel: ch})
		}
	}
	ctx, cancel := s.opCtx()
	defer cancel()
	pipe := s.client.Pipeline()
	pipe.Del(ctx, s.pchKey(dead), s.appsKey(dead))
	pipe.ZRem(ctx, s.keyClaims, dead)
	pipe.HDel(ctx, s.keyClaimers, dead)
	if _, err := pipe.Exec(ctx); err != nil {
		s.warn.Warn("clean", "presence: cleaning a dead node failed", "node", dead, "err", err)
		return false
	}
	s.log.Info("presence: cleaned up after a dead node", "node", dead, "channels", len(channels),
		"apps", len(apps), "departures", len(deps))
	return true
}

// scanSet reads a set's members through f, deduplicated.
func (s *Redis) scanSet(key string, f func(string) string) (map[string]bool, error) {
	out := make(map[string]bool)
	var cursor uint64
	for {
		ctx, cancel := s.opCtx()
		members, next, err := s.client.SScan(ctx, key, cursor, "", scanCount).Result()
		cancel()
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			out[f(m)] = true
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// --- retries -----------------------------------------------------------------------

func (s *Redis) retryLoop() {
	defer close(s.retryDone)
	t := time.NewTicker(retryEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if !s.paused.Load() {
			s.retryPass()
		}
	}
}

// retryPass redoes the queued removals, in one pass that stops at the first failure
// (Redis is still out of reach: the rest wait for the next pass rather than each time
// out in turn), and reports the users who left in one call.
func (s *Redis) retryPass() {
	s.mu.Lock()
	batch := make([]*retry, 0, len(s.retries))
	for _, p := range s.retries {
		if p.running == nil {
			p.running = make(chan struct{})
			batch = append(batch, p)
		}
	}
	s.mu.Unlock()
	var deps []Departure
	var failed error
	for _, p := range batch {
		if failed == nil && !s.stopping() {
			ctx, cancel := s.opCtx()
			d, err := s.redo(ctx, p)
			cancel()
			if err == nil {
				deps = append(deps, d...)
				s.finishRetry(p, true)
				continue
			}
			failed = err
		}
		s.finishRetry(p, false)
	}
	if failed != nil && !s.stopping() {
		s.warn.Warn("retry", "presence: retrying removals failed", "queued", len(batch), "err", failed)
	}
	s.handleDepartures(deps)
}

func (s *Redis) finishRetry(p *retry, done bool) {
	s.mu.Lock()
	if done {
		delete(s.retries, retryKey{p.channel, p.conn})
	}
	close(p.running)
	p.running = nil
	s.mu.Unlock()
}
