package hub

import (
	"sync"
	"time"
)

// Authorized connections (an app's user_authentication_timeout; PUSHER.md §1.10): a
// connection that neither signs in nor subscribes to a private, encrypted or presence
// channel (with a valid signature) within the timeout is closed with 4009.
//
// Each app with a timeout keeps its new connections in arrival order, which is their
// deadline order (one timeout per app); one goroutine looks at the front of each queue
// every authCheckEvery and has the due connections' loops close those that are still
// unauthorized. A connection costs one queue entry until its deadline, nothing after.

const authCheckEvery = 250 * time.Millisecond

// authQueue is one app's connections waiting for their deadline.
type authQueue struct {
	mu sync.Mutex
	q  []authWait
}

type authWait struct {
	c        *client
	deadline time.Time
}

// reset forgets the waiting connections and returns them.
func (q *authQueue) reset() []authWait {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.q
	q.q = nil
	return w
}

// watchAuth queues c for the app's authentication deadline (loop, OnOpen).
func (h *Hub) watchAuth(c *client) {
	a := c.app
	timeout := time.Duration(a.conf().UserAuthenticationTimeout)
	if timeout <= 0 {
		return
	}
	a.auth.mu.Lock()
	a.auth.q = append(a.auth.q, authWait{c: c, deadline: time.Now().Add(timeout)})
	a.auth.mu.Unlock()
}

// authorized marks c as signed in or subscribed to an authorized channel (loop).
func (c *client) authorized() {
	if c.app.conf().UserAuthenticationTimeout > 0 {
		c.x().authed = true
	}
}

// authLoop closes the connections past their deadline until stop is closed.
func (h *Hub) authLoop(stop <-chan struct{}) {
	t := time.NewTicker(authCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, a := range h.apps.Load().byID {
				if a.conf().UserAuthenticationTimeout > 0 {
					h.expireAuth(a, now)
				} else {
					a.auth.reset() // a reload turned the timeout off: nobody waits any more
				}
			}
		}
	}
}

func (h *Hub) expireAuth(a *appState, now time.Time) {
	a.auth.mu.Lock()
	n := 0
	for n < len(a.auth.q) && !a.auth.q[n].deadline.After(now) {
		n++
	}
	due := append([]authWait(nil), a.auth.q[:n]...)
	clear(a.auth.q[:n])
	a.auth.q = a.auth.q[n:]
	if cap(a.auth.q) > 1024 && len(a.auth.q) < cap(a.auth.q)/4 {
		a.auth.q = append([]authWait(nil), a.auth.q...) // give back what a burst grew
	}
	a.auth.mu.Unlock()
	for _, w := range due {
		c := w.c
		h.srv.Do(c.conn, func() {
			if c.conn.Closed() || c.rejected() != nil || (c.ext != nil && c.ext.authed) {
				return
			}
			a.stats.dropped("unauthorized")
			h.refuse(c, closeUnauthorized)
		})
	}
}
