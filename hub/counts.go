package hub

import (
	"context"
	"sync"
	"time"

	"github.com/herald-rt/herald/presence"
)

// countSync reports this node's subscription count of each channel to the presence
// store, which keeps the cluster-wide sums that the HTTP API answers with. A change only
// marks its channel; one goroutine reports the marked channels' current counts (absolute
// numbers, so a retry is harmless) in one call per app, so that a burst of subscribes
// costs a few store calls, not one each. A failed report is kept and retried every
// retryEvery until the store takes it. After the store's reset (it lost this node's
// share), every channel is reported again.
//
// Reports are at least countsEvery apart, so that a node ramping up thousands of
// subscriptions a second costs the store about ten calls a second, not one per batch
// that a fast store would take; a query that waits (settle) cuts the wait short.
//
// settle gives the HTTP API read-your-writes on one node: a query first waits (briefly)
// until the changes made before it on this node are reported.
type countSync struct {
	h *Hub

	mu      sync.Mutex
	dirty   map[*appState]map[string]struct{} // app → channel names to report
	marked  uint64                            // changes marked so far
	flushed uint64                            // changes reported (marked was this when its batch was taken)
	settled chan struct{}                     // closed and replaced when flushed advances
	closed  bool

	wake  chan struct{} // capacity 1
	hurry chan struct{} // capacity 1: a query waits, report now
	done  chan struct{} // closed when run returns

	ann announcer // subcount.go; the run goroutine's own
}

const (
	countsEvery      = 100 * time.Millisecond
	countsRetryEvery = time.Second
	countsChunk      = 1000 // channels per SetSubscriptions call
	settleTimeout    = time.Second
)

func newCountSync(h *Hub) *countSync {
	s := &countSync{
		h:       h,
		dirty:   make(map[*appState]map[string]struct{}),
		settled: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		hurry:   make(chan struct{}, 1),
		done:    make(chan struct{}),
		ann:     announcer{last: make(map[string]time.Time), trailing: make(map[string]*appState)},
	}
	go s.run()
	return s
}

// mark records that ch's local count changed.
func (s *countSync) mark(ch *channel) {
	s.mu.Lock()
	s.markLocked(ch.app, ch.name)
	s.mu.Unlock()
	s.kick()
}

func (s *countSync) markLocked(a *appState, name string) {
	names := s.dirty[a]
	if names == nil {
		names = make(map[string]struct{})
		s.dirty[a] = names
	}
	names[name] = struct{}{}
	s.marked++
}

// markAll marks every channel this node has, after the store lost its share.
func (s *countSync) markAll() {
	for _, a := range s.h.apps.Load().byID {
		var names []string
		s.h.index.each(a, func(ch *channel) { names = append(names, ch.name) })
		s.mu.Lock()
		for _, n := range names {
			s.markLocked(a, n)
		}
		s.mu.Unlock()
	}
	s.kick()
}

func (s *countSync) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// settle waits until every change marked before the call is reported, for at most
// settleTimeout (a store that is down answers the query that follows with its error).
func (s *countSync) settle(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	s.mu.Lock()
	target := s.marked
	if s.flushed < target {
		select {
		case s.hurry <- struct{}{}:
		default:
		}
	}
	for s.flushed < target && !s.closed {
		ch := s.settled
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
}

func (s *countSync) run() {
	defer close(s.done)
	retry := time.NewTimer(0)
	<-retry.C
	for {
		s.mu.Lock()
		batch, upTo, closed := s.dirty, s.marked, s.closed
		s.dirty = make(map[*appState]map[string]struct{})
		s.mu.Unlock()
		if len(batch) > 0 {
			ok := s.report(batch)
			s.mu.Lock()
			if ok {
				s.flushed = upTo
				close(s.settled)
				s.settled = make(chan struct{})
			} else {
				for a, names := range batch { // keep it for the retry
					for n := range names {
						s.markLocked(a, n)
					}
				}
			}
			s.mu.Unlock()
			if ok {
				if !closed {
					s.pause(countsEvery)
				}
				continue
			}
			if closed {
				return // the shutdown's deadline passed, or the store is gone
			}
			retry.Reset(countsRetryEvery)
			select {
			case <-retry.C:
			case <-s.h.base.Done():
				s.mu.Lock()
				s.closed = true
				s.mu.Unlock()
			}
			continue
		}
		if closed {
			return
		}
		if next := s.announceTrailing(); next > 0 {
			t := time.NewTimer(next)
			select {
			case <-s.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		<-s.wake
	}
}

// pause waits d, or less if a query is waiting or the hub is shutting down.
func (s *countSync) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.hurry:
	case <-s.h.base.Done():
	}
}

// report sends one batch; it reports whether the store took all of it.
func (s *countSync) report(batch map[*appState]map[string]struct{}) bool {
	ok := true
	for a, names := range batch {
		counts := make([]presence.ChannelCount, 0, min(len(names), countsChunk))
		for name := range names {
			n := 0
			if ch := s.h.index.get(channelKey(a, name)); ch != nil {
				n = ch.count()
			}
			counts = append(counts, presence.ChannelCount{Channel: name, Count: n})
			if len(counts) == countsChunk {
				ok = s.send(a, counts) && ok
				counts = counts[:0]
			}
		}
		if len(counts) > 0 {
			ok = s.send(a, counts) && ok
		}
	}
	return ok
}

func (s *countSync) send(a *appState, counts []presence.ChannelCount) bool {
	ctx, cancel := s.h.opContext()
	defer cancel()
	rep, err := s.h.presence.SetSubscriptions(ctx, a.id, counts)
	if err != nil {
		s.h.metrics.storeError()
		s.h.warns.Warn(warnCountsReport, "reporting subscription counts failed; will retry", "app", a.id, "channels", len(counts), "err", err)
		return false
	}
	s.h.channelTransitions(a, rep.Transitions)
	s.announceCounts(a, rep.Counts)
	return true
}

// close reports what is marked (while the shutdown's deadline allows) and stops.
func (s *countSync) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.kick()
	<-s.done
}
