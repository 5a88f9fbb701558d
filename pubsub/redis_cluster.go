package pubsub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// topologyPause spaces two refreshes of the topology watcher, so that a cluster whose
// nodes disagree for a while (gossip) is not asked again and again.
const topologyPause = 100 * time.Millisecond

// startCluster learns the cluster's topology, which starts a shard per master, and the
// topology watcher. It retries until ctx ends.
func (r *Redis) startCluster(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := r.refreshTopology(ctx)
		if err == nil {
			break
		}
		r.setLastError(err)
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pubsub: redis: cluster topology not known when the context ended (%w); last error: %w", ctx.Err(), err)
		case <-t.C:
		}
	}
	r.wg.Add(1)
	go r.watchTopology()
	return nil
}

func (r *Redis) kickTopology() {
	select {
	case r.topoKick <- struct{}{}:
	default:
	}
}

// watchTopology refreshes the topology when a receiver saw a slot move (a subscription
// dropped by the server, a MOVED reply to a subscribe).
func (r *Redis) watchTopology() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.topoKick:
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.probeTO)
		err := r.refreshTopology(ctx)
		cancel()
		if err != nil {
			r.log.Debug("pubsub: redis cluster topology refresh failed", "err", err)
		}
		t := time.NewTimer(topologyPause)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err != nil {
			r.kickTopology()
		}
	}
}

// refreshTopology asks the cluster which master serves which slot and routes every
// channel accordingly (see applyTopologyLocked).
func (r *Redis) refreshTopology(ctx context.Context) error {
	err := r.refreshTopologyOnce(ctx)
	r.flushStates() // after topoMu: a Handler never delays a refresh
	return err
}

func (r *Redis) refreshTopologyOnce(ctx context.Context) error {
	r.topoMu.Lock()
	defer r.topoMu.Unlock()
	// ForEachMaster reloads go-redis's own view, which SPUBLISH is routed with, and
	// yields the masters' clients, which the subscriber connections are made from.
	var mu sync.Mutex
	clients := make(map[string]*redis.Client)
	err := r.cluster.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		clients[c.Options().Addr] = c
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("pubsub: redis: cluster masters: %w", err)
	}
	ranges, err := r.cluster.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("pubsub: redis: CLUSTER SLOTS: %w", err)
	}
	owners := new([numSlots]*redis.Client)
	for _, rg := range ranges {
		if len(rg.Nodes) == 0 || rg.Start < 0 || rg.End >= numSlots || rg.Start > rg.End {
			continue
		}
		c := clients[rg.Nodes[0].Addr]
		if c == nil {
			return fmt.Errorf("pubsub: redis: slots %d-%d are served by %s, which go-redis does not know as a master yet", rg.Start, rg.End, rg.Nodes[0].Addr)
		}
		for slot := rg.Start; slot <= rg.End; slot++ {
			owners[slot] = c
		}
	}
	for slot, c := range owners {
		if c == nil {
			return fmt.Errorf("pubsub: redis: slot %d is served by no master", slot)
		}
	}
	r.mu.Lock()
	r.applyTopologyLocked(owners)
	r.mu.Unlock()
	return nil
}

// applyTopologyLocked installs the routing of owners: a shard per master (a new one for
// a master not seen before, or whose client go-redis replaced), every channel moved to
// the shard that serves its slot, and every wanted channel that lost its subscription
// queued again.
func (r *Redis) applyTopologyLocked(owners *[numSlots]*redis.Client) {
	if r.closedLocked {
		return
	}
	old := r.topo.Load()
	byClient := make(map[*redis.Client]*shard)
	if old != nil {
		for _, s := range old.shards {
			if !s.retired {
				byClient[s.client] = s
			}
		}
	}
	t := &topology{slots: new([numSlots]*shard)}
	kept := make(map[*shard]bool)
	var started []*shard
	for slot, c := range owners {
		s := byClient[c]
		if s == nil {
			s = newShard(r, c)
			byClient[c] = s
			started = append(started, s)
		}
		if !kept[s] {
			kept[s] = true
			t.shards = append(t.shards, s)
		}
		t.slots[slot] = s
	}
	r.topo.Store(t)
	moved := 0
	if old != nil {
		for _, s := range old.shards {
			for _, st := range s.chans {
				if st.kind == kindProbe {
					continue
				}
				if dst := t.slots[st.slot]; dst != s {
					s.moveLocked(st, dst)
					moved++
				}
			}
			if !kept[s] {
				s.retireLocked(fmt.Errorf("pubsub: subscribe: %w", ErrUnavailable))
			}
		}
	}
	if r.ctl == nil {
		r.ctl = t.slots[keySlot(r.ctlName)].addInternalLocked(r.ctlName, kindControl)
	}
	for _, s := range t.shards {
		for _, st := range s.chans {
			if st.wanted && !st.sentSub && st.inflight == 0 {
				s.markDirtyLocked(st)
			}
		}
	}
	if moved > 0 || len(started) > 0 {
		r.log.Debug("pubsub: redis cluster topology changed", "masters", len(t.shards), "new", len(started), "channels_moved", moved)
	}
	r.recomputeUpLocked()
	for _, s := range started {
		r.wg.Add(1)
		go s.run()
	}
}
