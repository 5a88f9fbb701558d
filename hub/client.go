package hub

import (
	"sync"
	"sync/atomic"

	"github.com/herald-rt/herald/transport"
)

// client is the hub's state for one connection. Its fields are owned by the
// connection's loop (the transport calls the hub there, and other goroutines reach it
// only through transport.Server.Do), except where noted.
type client struct {
	conn   *transport.Conn
	app    *appState              // nil for an unknown key
	reject *transport.CloseReason // set by Accept: refuse at OnOpen

	counted bool            // included in the open-connection counts
	subs    []*subscription // a few per connection; linear search beats a map here
	userID  string          // signed-in user, "" if none

	// client-event rate limit: a fixed one-second window.
	evWindow int64
	evCount  int32
}

// subscription is one connection's membership of one channel.
type subscription struct {
	ch *channel
	// member is the presence user id (presence channels only).
	member string
	// dead is set (under ch.mu) when the connection unsubscribed or closed, so that an
	// ops job finishing late does not add it to the channel.
	dead atomic.Bool
}

func (c *client) findSub(name string) (int, *subscription) {
	for i, s := range c.subs {
		if s.ch.name == name {
			return i, s
		}
	}
	return -1, nil
}

func (c *client) dropSub(i int) {
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[last] = nil
	c.subs = c.subs[:last]
}

// connTable maps transport conn ids to clients, to resolve socket_id exclusions.
type connTable struct {
	shards [32]struct {
		mu sync.RWMutex
		m  map[uint64]*client
	}
}

func (t *connTable) put(id uint64, c *client) {
	s := &t.shards[id%uint64(len(t.shards))]
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[uint64]*client)
	}
	s.m[id] = c
	s.mu.Unlock()
}

func (t *connTable) del(id uint64, c *client) {
	s := &t.shards[id%uint64(len(t.shards))]
	s.mu.Lock()
	if s.m[id] == c {
		delete(s.m, id)
	}
	s.mu.Unlock()
}

func (t *connTable) get(id uint64) *client {
	s := &t.shards[id%uint64(len(t.shards))]
	s.mu.RLock()
	c := s.m[id]
	s.mu.RUnlock()
	return c
}

// userTable maps (app, user id) to the connections signed in as that user.
type userTable struct {
	mu sync.Mutex
	m  map[userKey][]*client
}

type userKey struct {
	app  *appState
	user string
}

func (t *userTable) add(a *appState, user string, c *client) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[userKey][]*client)
	}
	k := userKey{a, user}
	t.m[k] = append(t.m[k], c)
	t.mu.Unlock()
}

func (t *userTable) del(a *appState, user string, c *client) {
	t.mu.Lock()
	k := userKey{a, user}
	cs := t.m[k]
	for i, x := range cs {
		if x == c {
			cs[i] = cs[len(cs)-1]
			cs[len(cs)-1] = nil
			cs = cs[:len(cs)-1]
			break
		}
	}
	if len(cs) == 0 {
		delete(t.m, k)
	} else {
		t.m[k] = cs
	}
	t.mu.Unlock()
}

func (t *userTable) get(a *appState, user string) []*client {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*client(nil), t.m[userKey{a, user}]...)
}
