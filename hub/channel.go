package hub

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/herald-rt/herald/transport"
)

// kind is a channel's type, from its name's prefix.
type kind uint8

const (
	kindPublic kind = iota
	kindPrivate
	kindEncrypted // private-encrypted-: relayed as is, never decrypted
	kindPresence
	kindUser   // #server-to-user-{id}
	kindOnline // #online:{id}, the hub's own (watchlist.go)
	kindWatch  // #watchers:{id}, the hub's own (watchlist.go)
)

// channelKind returns the type of a channel name and whether it is a cache channel.
// Prefixes match exactly, dash included.
func channelKind(name string) (k kind, cache bool) {
	switch {
	case strings.HasPrefix(name, serverToUserPrefix):
		return kindUser, false
	case strings.HasPrefix(name, onlinePrefix):
		return kindOnline, false
	case strings.HasPrefix(name, watchersPrefix):
		return kindWatch, false
	case strings.HasPrefix(name, "private-encrypted-cache-"):
		return kindEncrypted, true
	case strings.HasPrefix(name, "private-encrypted-"):
		return kindEncrypted, false
	case strings.HasPrefix(name, "private-cache-"):
		return kindPrivate, true
	case strings.HasPrefix(name, "private-"):
		return kindPrivate, false
	case strings.HasPrefix(name, "presence-cache-"):
		return kindPresence, true
	case strings.HasPrefix(name, "presence-"):
		return kindPresence, false
	case strings.HasPrefix(name, "cache-"):
		return kindPublic, true
	}
	return kindPublic, false
}

// channel is one app channel with local subscribers. It lives in the index while any
// connection holds a reference (subscribed or subscribing) and is removed with the last.
type channel struct {
	app   *appState
	name  string
	key   string // broker and presence key: app id + ":" + name
	kind  kind
	cache bool

	refs int // guarded by the index shard's lock

	// ready is set by the ops shard once the broker delivers this channel to the node.
	ready atomic.Bool

	mu sync.Mutex
	// members are the subscriptions that receive the channel's messages (sent
	// subscription_succeeded, or about to be). Each knows its index here, so removal
	// is a swap with the last: O(1) and 8 bytes per member, where a map would cost
	// several times that.
	members []*subscription
	snap    [][]*transport.Conn // members' conns grouped by loop; nil when members changed since
}

// addLocked makes s a recipient of the channel's messages (ch.mu held). The app's
// subscription count follows every add and remove, so that Stats never walks the
// channels.
func (ch *channel) addLocked(s *subscription) {
	s.idx = int32(len(ch.members))
	ch.members = append(ch.members, s)
	ch.snap = nil
	ch.app.stats.subscriptions.Add(1)
}

// removeLocked stops s receiving (ch.mu held); a no-op when it is not a member.
func (ch *channel) removeLocked(s *subscription) {
	i := s.idx
	if i < 0 {
		return
	}
	last := len(ch.members) - 1
	moved := ch.members[last]
	ch.members[i] = moved
	moved.idx = i
	ch.members[last] = nil
	ch.members = ch.members[:last]
	s.idx = -1
	ch.snap = nil
	ch.app.stats.subscriptions.Add(-1)
	if cap(ch.members) > 1024 && len(ch.members) < cap(ch.members)/4 {
		ch.members = append([]*subscription(nil), ch.members...) // give back what a crowd grew
	}
}

// subscribers returns the recipients grouped by owner loop. The snapshot is rebuilt only
// after the set changed, so steady fan-out costs no allocation; it is never modified
// once returned (a change makes a new one).
func (ch *channel) subscribers(loops int) (byLoop [][]*transport.Conn, n int) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.snap == nil && len(ch.members) > 0 {
		counts := make([]int, loops)
		for _, s := range ch.members {
			counts[s.c.conn.Loop()]++
		}
		all := make([]*transport.Conn, len(ch.members))
		snap := make([][]*transport.Conn, loops)
		off := 0
		for i, k := range counts {
			snap[i] = all[off : off : off+k]
			off += k
		}
		for _, s := range ch.members {
			l := s.c.conn.Loop()
			snap[l] = append(snap[l], s.c.conn)
		}
		ch.snap = snap
	}
	return ch.snap, len(ch.members)
}

func (ch *channel) count() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return len(ch.members)
}

// index maps channel keys to channels, split into shards each behind its own lock so
// that subscribes on different loops and publishes from API goroutines rarely contend.
type index struct {
	seed   maphash.Seed
	shards [64]indexShard
}

type indexShard struct {
	mu sync.Mutex
	m  map[string]*channel
}

func newIndex() *index {
	x := &index{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].m = make(map[string]*channel)
	}
	return x
}

func (x *index) shard(key string) *indexShard {
	return &x.shards[maphash.String(x.seed, key)%uint64(len(x.shards))]
}

func channelKey(a *appState, name string) string { return a.id + ":" + name }

// acquire returns the channel, creating it, and takes a reference.
func (x *index) acquire(a *appState, name string) *channel {
	key := channelKey(a, name)
	s := x.shard(key)
	s.mu.Lock()
	ch := s.m[key]
	if ch == nil {
		k, cache := channelKind(name)
		ch = &channel{app: a, name: name, key: key, kind: k, cache: cache}
		s.m[key] = ch
		a.stats.channels.Add(1)
	}
	ch.refs++
	s.mu.Unlock()
	return ch
}

// release drops a reference and reports whether it was the last (the channel is then
// out of the index; a later acquire makes a new one).
func (x *index) release(ch *channel) bool {
	s := x.shard(ch.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	ch.refs--
	if ch.refs > 0 {
		return false
	}
	if s.m[ch.key] == ch {
		delete(s.m, ch.key)
		ch.app.stats.channels.Add(-1)
	}
	return true
}

// get returns the channel with that key, or nil.
func (x *index) get(key string) *channel {
	s := x.shard(key)
	s.mu.Lock()
	ch := s.m[key]
	s.mu.Unlock()
	return ch
}

// each calls fn for every channel of app a (under no lock but the shard's; fn must be quick).
func (x *index) each(a *appState, fn func(ch *channel)) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.Lock()
		for _, ch := range s.m {
			if ch.app == a {
				fn(ch)
			}
		}
		s.mu.Unlock()
	}
}
