package transport

import "time"

// The timer wheel holds at most one live entry per connection. Activity never
// touches it: a read only stores a timestamp, and when an entry fires the loop
// rechecks the connection and re-arms it for the real deadline (lazy re-arming).
// A connection that wants an earlier deadline than its live entry adds a new entry;
// the old one is then stale (its tick no longer matches Conn.timerAt) and is dropped
// when it comes round.

const (
	tick       = 100 * time.Millisecond // timer resolution
	wheelSlots = 1024                   // one round is 102.4 s; later entries wait a round
)

type wheelEntry struct {
	slot, gen uint32
	at        int32 // tick number
}

type wheel struct {
	slots [wheelSlots][]wheelEntry
	next  int64 // next tick to process
	n     int   // entries, live or stale
}

// tickNow is the loop clock in ticks, as Conn stores times.
func (l *loop) tickNow() int32 { return int32(l.now / int64(tick)) }

// at converts a Conn tick back to the loop clock (ns).
func at(t int32) int64 { return int64(t) * int64(tick) }

// schedule makes sure c's timer fires at deadline (loop clock, ns) or earlier.
func (l *loop) schedule(c *Conn, deadline int64) {
	t := int32(deadline/int64(tick) + 1)
	if c.timerAt != 0 && c.timerAt <= t {
		return // the live entry fires first and re-arms
	}
	c.timerAt = t
	w := &l.wheel
	i := max(int64(t), w.next) % wheelSlots
	w.slots[i] = append(w.slots[i], wheelEntry{slot: c.slot, gen: l.slab[c.slot].gen, at: t})
	w.n++
}

// advance fires every entry due at the loop's current time.
func (l *loop) advance() {
	w := &l.wheel
	target := l.now / int64(tick)
	if w.next > target {
		return
	}
	steps := min(target-w.next+1, wheelSlots)
	for s := int64(0); s < steps; s++ {
		i := (w.next + s) % wheelSlots
		list := w.slots[i]
		w.slots[i] = nil // fire may schedule into this slot again
		keep := list[:0]
		for _, e := range list {
			if int64(e.at) > target {
				keep = append(keep, e)
				continue
			}
			w.n--
			c := l.lookup(e.slot, e.gen)
			if c == nil || c.timerAt != e.at {
				continue // stale
			}
			c.timerAt = 0
			l.fire(c)
		}
		if added := w.slots[i]; len(added) > 0 {
			keep = append(keep, added...)
		}
		if cap(keep) > 256 && len(keep) < cap(keep)/4 {
			keep = append([]wheelEntry(nil), keep...) // give back what a burst grew
		}
		if len(keep) == 0 && cap(keep) > 64 {
			keep = nil
		}
		w.slots[i] = keep
	}
	w.next = target + 1
}

// timeout is the epoll_wait timeout in ms: until the next tick, or forever when
// nothing waits on the wheel.
func (l *loop) timeout() int {
	if l.wheel.n == 0 && !l.acceptPaused && (l.pace == nil || l.pace.issuedAll) {
		return -1
	}
	d := l.wheel.next*int64(tick) - l.now
	return int(max(d/int64(time.Millisecond)+1, 0))
}

// fire runs c's deadline logic for its state and re-arms it when needed.
func (l *loop) fire(c *Conn) {
	cfg := l.cfg
	switch c.state {
	case stHandshake:
		if d := at(c.mark) + int64(cfg.HandshakeTimeout); l.now < d {
			l.schedule(c, d)
			return
		}
		l.rejectHead(c, refHeadTimeout, 408, "request head not received in time")
	case stOpen:
		if cfg.IdleTimeout <= 0 {
			return
		}
		if c.flags&fPinged != 0 { // no input since OnIdle (a read clears the flag)
			if d := at(c.mark) + int64(cfg.PongTimeout); l.now < d {
				l.schedule(c, d)
				return
			}
			// The answer may be in the socket, unread: a loop held up past the
			// pong timeout (a long fan-out backlog) finds more connections ready
			// than one epoll_wait returns, and the timers run before it reaches
			// the rest. The client was not silent; read before judging.
			l.onReadable(c)
			if c.state != stOpen {
				return
			}
			if c.flags&fPinged == 0 {
				l.schedule(c, at(c.lastRead)+int64(cfg.IdleTimeout))
				return
			}
			c.Close(cfg.IdleClose)
			return
		}
		if d := at(c.lastRead) + int64(cfg.IdleTimeout); l.now < d {
			l.schedule(c, d)
			return
		}
		c.flags |= fPinged
		c.mark = l.tickNow()
		cfg.Handler.OnIdle(c)
		if c.state == stOpen {
			l.schedule(c, l.now+int64(cfg.PongTimeout))
		}
	case stClosing, stLinger:
		if d := at(c.mark) + int64(cfg.CloseTimeout); l.now < d {
			l.schedule(c, d)
			return
		}
		l.finish(c, c.ext.reason)
	}
}
