package hub

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/transport"
)

// client is the hub's state for one connection. Its fields are owned by the
// connection's loop (the transport calls the hub there, and other goroutines reach it
// only through transport.Server.Do), except where noted.
//
// It is kept at 48 bytes because a node holds hundreds of thousands of them (see
// TestClientSize): what most connections never need lives in ext, allocated on use.
type client struct {
	conn *transport.Conn
	app  *appState       // nil for an unknown key
	subs []*subscription // a few per connection; linear search beats a map here
	ext  *clientExt
}

// clientExt is the state only some connections need.
type clientExt struct {
	// reject is set when the connection is refused (unknown key, bad protocol version,
	// over a limit): it gets that close, and it is not in the open counts.
	reject *transport.CloseReason
	userID string // signed-in user, "" if none
	// evTAT is the client-event rate limit's state: a token bucket kept as its
	// theoretical arrival time (GCRA), in ns on the limiter's clock (allowEvent).
	evTAT int64
	// authed: signed in, or subscribed to an authorized channel (for the app's
	// user_authentication_timeout; set only when the app has one).
	authed bool
}

// allowEvent takes one client event from the connection's token bucket: rate tokens
// per second, refilled continuously, holding at most rate (the burst). It is a GCRA,
// one int64 of state: evTAT is when the bucket would be full again, and an event
// passes while that is at most (rate-1) intervals ahead of now. So 10 per second
// allow 10 at once, then one every 100 ms; a burst across a second boundary gets
// the refill, never a new window of 10. now is in ns on a clock that does not go
// back (monotonic); a bucket ahead of now by more than it can hold is reset, so that
// a clock that jumped back never locks a connection out.
func (x *clientExt) allowEvent(now int64, rate int) bool {
	if rate <= 0 {
		rate = 1
	}
	interval := max(int64(time.Second)/int64(rate), 1)
	limit := int64(rate-1) * interval // how far ahead of now the bucket may be
	tat := max(x.evTAT, now)
	if tat-now > limit+interval { // ahead by more than the bucket holds
		tat = now
	}
	if tat-now > limit {
		return false
	}
	x.evTAT = tat + interval
	return true
}

func (c *client) x() *clientExt {
	if c.ext == nil {
		c.ext = &clientExt{}
	}
	return c.ext
}

func (c *client) rejected() *transport.CloseReason {
	if c.ext == nil {
		return nil
	}
	return c.ext.reject
}

func (c *client) userID() string {
	if c.ext == nil {
		return ""
	}
	return c.ext.userID
}

// subscription is one connection's membership of one channel (32 bytes).
type subscription struct {
	ch *channel
	c  *client
	// member is the presence member (presence channels only, else nil).
	member *presenceSub
	// idx is the position in ch.members, -1 when not a member (guarded by ch.mu).
	idx int32
	// dead is set (under ch.mu) when the connection unsubscribed or closed, so that an
	// ops job finishing late does not add it to the channel.
	dead atomic.Bool
}

func (s *subscription) memberID() string {
	if s.member == nil {
		return ""
	}
	return s.member.UserID
}

// presenceSub is a presence subscription's member, kept so that the node can add it to
// the store again after the store lost it (HandleReset).
type presenceSub struct {
	presence.Member
	// entry is the store's connection id for this subscription: the socket id and a
	// sequence number, so that a removal the store retries after a failed attempt can
	// never remove a later subscription of the same connection to the same channel.
	entry string
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
