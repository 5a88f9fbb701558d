// Package warnlimit rate-limits warnings that repeat once per failed call during an
// outage (Redis down, an endpoint failing), so that an outage costs a few log lines
// per kind and cannot fill a disk, while the lines still account for every
// occurrence. The hub and the presence store share it.
package warnlimit

import (
	"log/slog"
	"sync"
	"time"
)

// Limiter logs the warnings that repeat per event or per connection while a
// dependency is failing (a publish, a join, a count report each fail), so that an
// outage costs a few lines instead of one per failed call and cannot fill a
// disk. Per kind it logs the first occurrence at once, then holds the others back for
// the period; when the period ends, the latest of them is logged with "suppressed", the
// number of the others, and the next period starts. Every line is one occurrence and
// "suppressed" counts the ones between it and the previous line of its kind, so the
// lines account for every occurrence (the sum of 1+suppressed), and a steady outage
// logs one line per kind per period.
//
// The reports run on time.AfterFunc timers, which Close stops, logging
// what is still held back. The mutex is a leaf: nothing else is locked under it, and
// nothing is logged while it is held.
type Limiter struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	kinds  map[string]*kindState
	closed bool
}

type kindState struct {
	last       time.Time   // when the last line of this kind was logged
	suppressed int         // occurrences held back since
	msg        string      // the latest held-back occurrence, for the report
	args       []any       //
	timer      *time.Timer // the report of the held-back ones; nil when none is due
}

// New returns a Limiter that logs to log at most one line per kind per every.
func New(log *slog.Logger, every time.Duration) *Limiter {
	return &Limiter{log: log, every: every, kinds: make(map[string]*kindState)}
}

// Warn logs msg at Warn level with args, unless a line of this kind was logged less
// than a period ago: then it is counted and reported when the period ends.
func (w *Limiter) Warn(kind, msg string, args ...any) {
	now := time.Now()
	w.mu.Lock()
	k := w.kinds[kind]
	if k == nil {
		k = &kindState{}
		w.kinds[kind] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < w.every {
		k.suppressed++
		k.msg, k.args = msg, args
		if k.timer == nil && !w.closed {
			k.timer = time.AfterFunc(k.last.Add(w.every).Sub(now), func() { w.report(kind) })
		}
		w.mu.Unlock()
		return
	}
	n := k.suppressed // held back after close: no report was made
	k.last, k.suppressed, k.msg, k.args = now, 0, "", nil
	w.mu.Unlock()
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n)
	}
	w.log.Warn(msg, args...)
}

// report logs the latest occurrence of kind held back in the period that just ended,
// with the number of the others.
func (w *Limiter) report(kind string) {
	w.mu.Lock()
	k := w.kinds[kind]
	k.timer = nil
	n, msg, args := k.suppressed, k.msg, k.args
	if n == 0 {
		w.mu.Unlock()
		return
	}
	k.last, k.suppressed, k.msg, k.args = time.Now(), 0, "", nil
	w.mu.Unlock()
	if n > 1 {
		args = append(args[:len(args):len(args)], "suppressed", n-1)
	}
	w.log.Warn(msg, args...)
}

// Close stops the pending reports and logs what they held back. Warnings after it
// are still limited, but what they hold back is not reported.
func (w *Limiter) Close() {
	w.mu.Lock()
	w.closed = true
	var due []string
	for kind, k := range w.kinds {
		if k.timer != nil && k.timer.Stop() {
			due = append(due, kind)
		}
	}
	w.mu.Unlock()
	for _, kind := range due {
		w.report(kind)
	}
}
