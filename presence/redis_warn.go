package presence

import (
	"log/slog"
	"sync"
	"time"
)

// warnEvery is how often one kind of warning is logged at most.
const warnEvery = 10 * time.Second

// warnLimiter logs one line per kind per period, with the number of lines suppressed
// since the last one, so that an outage does not log once per failed call. Its mutex is
// never held with Redis.mu.
type warnLimiter struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*warnState
}

type warnState struct {
	last       time.Time
	suppressed int
}

func newWarnLimiter(log *slog.Logger, every time.Duration) *warnLimiter {
	return &warnLimiter{log: log, every: every, now: time.Now, kinds: make(map[string]*warnState)}
}

func (w *warnLimiter) warn(kind, msg string, args ...any) {
	now := w.now()
	w.mu.Lock()
	st := w.kinds[kind]
	if st == nil {
		st = &warnState{}
		w.kinds[kind] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < w.every {
		st.suppressed++
		w.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	w.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	w.log.Warn(msg, args...)
}
