package hub

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// ops runs the work that may block on the network (broker subscribe/unsubscribe/publish
// for client events, presence store calls) off the epoll loops. Work is sharded by
// channel key and each shard runs its jobs in order, so that for one channel a
// subscribe is never overtaken by the unsubscribe that follows it, and a presence Add by
// its Remove. Each shard's queue is bounded for new work (a full queue refuses the
// request with a clear error); clean-up jobs (must=true) are always admitted, because
// dropping one would leak broker subscriptions or presence entries, and there are at
// most as many of them as there are subscriptions.
type ops struct {
	seed   maphash.Seed
	shards []*opShard
	wg     sync.WaitGroup
	// busy counts the jobs queued or running, for idle.
	busy atomic.Int64
}

type opShard struct {
	mu     sync.Mutex
	jobs   []func()
	closed bool
	wake   chan struct{} // capacity 1
	limit  int
}

func newOps(shards, limit int) *ops {
	o := &ops{seed: maphash.MakeSeed(), shards: make([]*opShard, shards)}
	for i := range o.shards {
		s := &opShard{wake: make(chan struct{}, 1), limit: limit}
		o.shards[i] = s
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			s.run(&o.busy)
		}()
	}
	return o
}

// submit queues fn on the shard of key. It reports false when the shard is full (and
// must is false) or closed.
func (o *ops) submit(key string, must bool, fn func()) bool {
	s := o.shards[maphash.String(o.seed, key)%uint64(len(o.shards))]
	s.mu.Lock()
	if s.closed || (!must && len(s.jobs) >= s.limit) {
		s.mu.Unlock()
		return false
	}
	s.jobs = append(s.jobs, fn)
	o.busy.Add(1)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// close stops accepting work, lets every shard finish what is queued, and waits.
func (o *ops) close() {
	for _, s := range o.shards {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	o.wg.Wait()
}

// idle reports whether no job is queued or running.
func (o *ops) idle() bool { return o.busy.Load() == 0 }

// pending is the number of queued jobs across shards.
func (o *ops) pending() int {
	n := 0
	for _, s := range o.shards {
		s.mu.Lock()
		n += len(s.jobs)
		s.mu.Unlock()
	}
	return n
}

func (s *opShard) run(busy *atomic.Int64) {
	var batch []func()
	for {
		s.mu.Lock()
		batch, s.jobs = s.jobs, batch[:0]
		closed := s.closed
		s.mu.Unlock()
		for i, fn := range batch {
			fn()
			batch[i] = nil
			busy.Add(-1)
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			return
		}
		<-s.wake
	}
}
