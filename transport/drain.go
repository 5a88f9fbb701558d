package transport

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// Drain stops accepting (the listener is closed, as by StopAccepting), then closes the
// open WebSocket connections with reason, spread evenly over window, so that their
// clients reconnect elsewhere in a trickle rather than a stampede. It returns when
// none is open (every close handshake finished or timed out) or when ctx ends
// (ErrDrainCut wrapping ctx's cause); closing goes on in the loops either way, and
// Shutdown afterwards closes whatever is left at once.
//
// Each loop closes, at every wake-up (at least once per 100 ms timer tick while a
// drain runs), ceil(n × elapsed/window) minus what it has closed so far, n being
// the WebSockets it had open when the drain started, so closes per second are flat
// over the window. Once Drain has started, an upgrade is refused with 503 (a client
// that was mid-handshake retries elsewhere); plain HTTP requests are still served.
// A zero reason means CloseShutdown; window <= 0 closes everything at once.
//
// Safe to call once (then ErrDraining), from any goroutine but a Handler callback.
func (s *Server) Drain(ctx context.Context, reason CloseReason, window time.Duration) error {
	if reason == (CloseReason{}) {
		reason = CloseShutdown
	}
	s.mu.Lock()
	switch {
	case s.done:
		s.mu.Unlock()
		return ErrClosed
	case s.drainStarted:
		s.mu.Unlock()
		return ErrDraining
	}
	s.drainStarted = true
	running := s.running
	s.mu.Unlock()
	s.draining.Store(true)
	err := s.StopAccepting()
	if !running {
		return err
	}
	start, w := s.clock(), int64(max(window, 0))
	for _, l := range s.loops {
		l.postCtrl(job{fn: func() { l.startPace(reason, start, w) }})
	}
	for _, l := range s.loops {
		select {
		case <-l.paced:
		case <-ctx.Done():
			return errors.Join(err, fmt.Errorf("%w: %w", ErrDrainCut, context.Cause(ctx)))
		}
	}
	return err
}

// pacer is one loop's share of a Drain.
type pacer struct {
	reason    CloseReason
	start     int64 // loop clock (ns) when Drain was called
	window    int64 // ns
	total     int   // WebSockets open on this loop when the pacer started
	issued    int   // of those, closed so far
	cursor    int   // next slab slot to look at
	issuedAll bool  // every close has been started: wait for the sockets to go
}

// startPace begins this loop's share of a Drain. New upgrades are refused from now
// on, so the set of open connections only shrinks and one pass over the slab meets
// each of them once.
func (l *loop) startPace(reason CloseReason, start, window int64) {
	if l.pace != nil {
		return
	}
	l.draining = true
	p := &pacer{reason: reason, start: start, window: window, issuedAll: l.stopping}
	for _, e := range l.slab {
		if e.c != nil && e.c.state == stOpen {
			p.total++
		}
	}
	l.pace = p
	l.st.drainTotal.Store(uint64(p.total))
	l.paceStep()
}

// paceStep starts the closes that are due by the loop clock.
func (l *loop) paceStep() {
	p := l.pace
	if p.issuedAll {
		return
	}
	target := p.total
	if el := l.now - p.start; el < p.window {
		target = ceilMulDiv(p.total, max(el, 0), p.window)
	}
	for p.issued < target {
		if p.cursor >= len(l.slab) {
			break // some left on their own: fewer to close
		}
		c := l.slab[p.cursor].c
		p.cursor++
		if c != nil && c.state == stOpen {
			c.Close(p.reason)
			p.issued++
			bump(&l.st.drainClosed, 1)
		}
	}
	if p.issued >= p.total || p.cursor >= len(l.slab) {
		p.issuedAll = true
	}
}

// ceilMulDiv is ceil(n × a / b) for 0 <= a < b, exact in 128 bits (n × a overflows
// int64 for a million connections and a window of a few hours).
func ceilMulDiv(n int, a, b int64) int {
	hi, lo := bits.Mul64(uint64(n), uint64(a))
	lo, carry := bits.Add64(lo, uint64(b-1), 0)
	q, _ := bits.Div64(hi+carry, lo, uint64(b)) // hi+carry < b since n×a + b-1 < (n+1)×b
	return int(q)
}

func (l *loop) signalPaced() {
	select {
	case <-l.paced:
	default:
		close(l.paced)
	}
}
