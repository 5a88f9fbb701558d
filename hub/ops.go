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
// request with a clear error). Clean-up jobs (must=true) are admitted past that bound,
// because dropping one would leak a broker subscription or a presence entry, up to a
// bound of their own, mustFactor times as many: there is at most one per subscription
// that ended, and the bound for new work stops new subscriptions long before, so
// reaching it means the store or the broker has not answered for a long time. Past it
// a clean-up job is dropped and reported to dropped, which the hub sets to count and
// log it (reason cleanup_dropped; hub/doc.go says what is left behind).
type ops struct {
	seed   maphash.Seed
	shards []*opShard
	wg     sync.WaitGroup
	// busy counts the jobs queued or running, for idle.
	busy atomic.Int64
	// dropped is told the key of each clean-up job refused at mustLimit; nil for none.
	dropped func(key string)
}

// mustFactor sizes the clean-up bound: mustFactor × the bound for new work.
const mustFactor = 8

type opShard struct {
	mu        sync.Mutex
	jobs      []func()
	closed    bool
	wake      chan struct{} // capacity 1
	limit     int
	mustLimit int
}

func newOps(shards, limit int) *ops {
	o := &ops{seed: maphash.MakeSeed(), shards: make([]*opShard, shards)}
	for i := range o.shards {
		s := &opShard{wake: make(chan struct{}, 1), limit: limit, mustLimit: mustFactor * limit}
		o.shards[i] = s
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			s.run(&o.busy)
		}()
	}
	return o
}

// submit queues fn on the shard of key. It reports false when the shard is closed or
// full: at limit for new work, at mustLimit for clean-up (must), which it then
// reports to o.dropped.
func (o *ops) submit(key string, must bool, fn func()) bool {
	s := o.shards[maphash.String(o.seed, key)%uint64(len(o.shards))]
	s.mu.Lock()
	if s.closed || (!must && len(s.jobs) >= s.limit) {
		s.mu.Unlock()
		return false
	}
	if must && len(s.jobs) >= s.mustLimit {
		s.mu.Unlock()
		if o.dropped != nil {
			o.dropped(key)
		}
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
