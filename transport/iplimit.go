package transport

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ipLimiter enforces Config.MaxConnectionsPerIP and MaxUpgradesPerIPPerSecond. All
// loops share it, so it is split into shards by a seeded hash of the address, each
// behind its own mutex held for one map lookup and store (the lock is a leaf: nothing
// else is locked while it is held, and nothing is locked inside it).
//
// The upgrade rate is a token bucket kept as one timestamp per address (GCRA, the
// "virtual scheduling" form): tat is when the bucket will be full again. An upgrade
// at now is allowed when tat-now <= (burst-1)*interval and moves tat forward by one
// interval; burst equals the rate, so an address may make `rate` upgrades at once and
// then one every 1/rate seconds.
//
// Bounded memory: an entry exists while its address has an open connection or a
// bucket that is not full (tat > now, which lasts at most a second after its last
// upgrade). Releasing the last connection of an address with a full bucket deletes
// its entry at once; the others are swept when a shard has doubled since its last
// sweep, and a sweep that frees most of a shard rebuilds its map (Go maps never
// shrink). So a shard holds at most about twice the addresses that were live at its
// last sweep, whatever the number of distinct addresses seen (TestIPLimiterBounded).
type ipLimiter struct {
	maxConns  int32
	interval  int64 // ns per token; 0: no rate limit
	tolerance int64 // (burst-1) * interval
	seed      uint64
	shards    [ipShards]ipShard

	unbalanced atomic.Uint64 // releases that matched no admitted connection (must stay 0)
}

const (
	ipShards   = 64
	ipMinSweep = 64 // entries a shard may hold before it is first swept
)

type ipShard struct {
	mu      sync.Mutex
	m       map[[16]byte]ipEntry
	sweepAt int
	_       [40]byte // one shard per cache line
}

type ipEntry struct {
	conns int32 // open WebSocket connections
	tat   int64 // loop clock (ns): the bucket is full from then on
}

// newIPLimiter returns nil when neither limit is set.
func newIPLimiter(maxConns, perSecond int) *ipLimiter {
	if maxConns <= 0 && perSecond <= 0 {
		return nil
	}
	t := &ipLimiter{maxConns: int32(max(maxConns, 0)), seed: rand.Uint64()}
	if perSecond > 0 {
		t.interval = max(int64(time.Second)/int64(perSecond), 1)
		t.tolerance = int64(perSecond-1) * t.interval
	}
	for i := range t.shards {
		t.shards[i].m = map[[16]byte]ipEntry{}
		t.shards[i].sweepAt = ipMinSweep
	}
	return t
}

func (t *ipLimiter) shard(ip *[16]byte) *ipShard {
	a, b := binary.LittleEndian.Uint64(ip[:8]), binary.LittleEndian.Uint64(ip[8:])
	h := (a ^ bits.RotateLeft64(b, 29) ^ t.seed) * 0x9e3779b97f4a7c15
	return &t.shards[h>>(64-6)]
}

// admit takes a token for one upgrade from ip at now and, with a connection limit,
// one of ip's connections. held says a connection was taken (release it exactly
// once). A refused attempt still spends its token: attempts are what cost the server.
func (t *ipLimiter) admit(ip [16]byte, now int64) (held bool, why refusal, ok bool) {
	sh := t.shard(&ip)
	sh.mu.Lock()
	e, found := sh.m[ip]
	if t.interval > 0 {
		tat := max(e.tat, now)
		if tat-now > t.tolerance {
			sh.mu.Unlock()
			return false, refUpgradesPerIP, false
		}
		e.tat = tat + t.interval
	}
	if t.maxConns > 0 {
		if e.conns >= t.maxConns {
			sh.m[ip] = e // found: an address at its limit has an entry
			sh.mu.Unlock()
			return false, refConnsPerIP, false
		}
		e.conns++
		held = true
	}
	if !found && len(sh.m) >= sh.sweepAt {
		sh.sweep(now)
	}
	sh.m[ip] = e
	sh.mu.Unlock()
	return held, 0, true
}

// release gives back a connection admit took.
func (t *ipLimiter) release(ip [16]byte, now int64) {
	sh := t.shard(&ip)
	sh.mu.Lock()
	e, ok := sh.m[ip]
	switch {
	case !ok || e.conns <= 0:
		t.unbalanced.Add(1) // a release without its admit: a bug, which the tests look for
	case e.conns == 1 && e.tat <= now:
		delete(sh.m, ip)
	default:
		e.conns--
		sh.m[ip] = e
	}
	sh.mu.Unlock()
}

// sweep deletes the entries that hold nothing: no connection and a full bucket.
func (sh *ipShard) sweep(now int64) {
	before := len(sh.m)
	for k, e := range sh.m {
		if e.conns <= 0 && e.tat <= now {
			delete(sh.m, k)
		}
	}
	if n := len(sh.m); n < before/2 {
		m := make(map[[16]byte]ipEntry, n)
		for k, e := range sh.m {
			m[k] = e
		}
		sh.m = m
	}
	sh.sweepAt = max(2*len(sh.m), ipMinSweep)
}

// entries counts the addresses held (tests).
func (t *ipLimiter) entries() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// conns is ip's open connection count (tests).
func (t *ipLimiter) conns(ip [16]byte) int {
	sh := t.shard(&ip)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.m[ip].conns)
}
