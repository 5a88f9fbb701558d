package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"
)

// warnEvery is how often one hook logs a warning at most; the lines it holds back are
// counted in the next one ("suppressed").
const warnEvery = 30 * time.Second

// run is the hook's goroutine: it takes batches from the queue and delivers each, one
// request at a time, until Close drained the queue or gave up on it.
func (h *hook) run() {
	defer h.s.hookDone()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]queued, 0, h.s.cfg.BatchMax)
	for {
		var ok bool
		batch, ok = h.next(batch[:0], timer)
		if !ok {
			return
		}
		h.deliver(batch, timer)
		clear(batch) // release the strings while waiting for the next batch
		if h.qfull.Load() > 0 {
			if now := time.Now(); h.health.mayWarn(now) {
				h.warn(now, "webhook queue full, events dropped")
			}
		}
	}
}

// next waits until a batch is due and takes it: BatchMax events are queued, the oldest
// waited BatchWait, or Close began. It returns false when the hook is done: Close
// began and the queue is empty, or Close gave up (what was queued is dropped).
func (h *hook) next(batch []queued, timer *time.Timer) ([]queued, bool) {
	s := h.s
	for {
		if s.abort.Err() != nil {
			h.dropQueue(reasonShutdown)
			return batch, false
		}
		h.mu.Lock()
		if h.n == 0 {
			closing := h.closing
			h.mu.Unlock()
			if closing {
				return batch, false
			}
			// Drops counted since the last warning are logged once the window
			// allows, even if no further failure brings another line.
			var flush <-chan time.Time
			if h.health.exhausted > 0 || h.qfull.Load() > 0 {
				timer.Reset(time.Until(h.health.lastWarn.Add(warnEvery)))
				flush = timer.C
			}
			select {
			case <-h.wake:
			case <-flush:
				h.warn(time.Now(), "webhook events dropped")
			case <-s.abort.Done():
			}
			timer.Stop()
			continue
		}
		var wait time.Duration
		if h.n < s.cfg.BatchMax && !h.closing {
			wait = h.buf[h.head].at + s.cfg.BatchWait - time.Since(s.epoch)
		}
		if wait <= 0 {
			batch = h.takeLocked(batch, s.cfg.BatchMax)
			h.mu.Unlock()
			return batch, true
		}
		h.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-h.wake:
		case <-timer.C:
		case <-s.abort.Done():
		}
		timer.Stop()
	}
}

// dropQueue empties the queue, counting each event as dropped for reason.
func (h *hook) dropQueue(reason int) {
	h.mu.Lock()
	for h.n > 0 {
		q := &h.buf[h.head]
		h.app.stats.dropped[reason][q.t].Add(1)
		*q = queued{}
		h.head = (h.head + 1) % len(h.buf)
		h.n--
	}
	h.head, h.bytes, h.buf = 0, 0, nil
	h.mu.Unlock()
}

// deliver sends one batch, retrying with backoff until RetryFor has passed since the
// first attempt; then, or when Close gives up, the batch is dropped and counted.
func (h *hook) deliver(batch []queued, timer *time.Timer) {
	s := h.s
	st := h.app.stats
	deadline := time.Now().Add(s.cfg.RetryFor)
	backoff := s.cfg.BackoffMin
	for {
		err := h.post(batch)
		if err == nil {
			st.delivered(batch, s.wallNow())
			h.recovered()
			return
		}
		if s.abort.Err() != nil { // Close gave up: not the endpoint's failure
			st.drop(reasonShutdown, batch)
			return
		}
		st.count(&st.failed, batch)
		now := time.Now()
		h.failed(now, err, len(batch))
		left := deadline.Sub(now)
		if left <= 0 {
			st.drop(reasonRetriesExhausted, batch)
			h.health.exhausted += len(batch)
			h.warn(now, "webhook events dropped: retries exhausted", "retry_for", s.cfg.RetryFor)
			return
		}
		// The last wait ends at the deadline, so that the final attempt is made
		// RetryFor after the first rather than up to a backoff earlier.
		timer.Reset(min(jitter(backoff), left))
		backoff = min(2*backoff, s.cfg.BackoffMax)
		select {
		case <-timer.C:
		case <-s.abort.Done():
			timer.Stop()
			st.drop(reasonShutdown, batch)
			return
		}
	}
}

// jitter draws a wait from [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

func (s *Sender) wallNow() time.Time {
	if s.cfg.Clock != nil {
		return s.cfg.Clock()
	}
	return time.Now()
}

// statusError is an answer other than 2xx.
type statusError int

func (e statusError) Error() string {
	return fmt.Sprintf("status %d %s", int(e), http.StatusText(int(e)))
}

// post makes one attempt: a fresh body (time_ms) and signature, one request bounded by
// Timeout, the answer read and discarded so that the connection is reused.
func (h *hook) post(batch []queued) error {
	s := h.s
	body := appendBody(make([]byte, 0, h.sizeHint+64), s.wallNow().UnixMilli(), batch)
	h.sizeHint = len(body)
	ctx, cancel := context.WithTimeout(s.abort, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	cred := h.cred.Load()
	req.Header = cred.header.Clone()
	req.Header["X-Pusher-Signature"] = []string{h.sign(cred, body)}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp.StatusCode)
	}
	return nil
}

// sign is Sign with the hook's reused HMAC state, made anew when a Reload changed the
// secret.
func (h *hook) sign(cred *hookCred, body []byte) string {
	if h.macCred == nil || h.macCred.secret != cred.secret {
		h.mac = hmac.New(sha256.New, []byte(cred.secret))
	}
	h.macCred = cred
	h.mac.Reset()
	h.mac.Write(body)
	var sum [32]byte
	return hex.EncodeToString(h.mac.Sum(sum[:0]))
}

// health is a hook's failure episode, for logging; only the hook's goroutine uses it.
type health struct {
	failing    bool
	since      time.Time // first failed attempt of the episode
	attempts   int       // failed attempts in the episode
	logged     bool      // a warning of the episode was logged: its recovery is too
	lastWarn   time.Time
	suppressed int // warnings held back since lastWarn
	exhausted  int // events dropped as retries_exhausted since lastWarn
}

func (hs *health) mayWarn(now time.Time) bool {
	return hs.lastWarn.IsZero() || now.Sub(hs.lastWarn) >= warnEvery
}

func (h *hook) failed(now time.Time, err error, events int) {
	hs := &h.health
	msg := "webhook endpoint still failing"
	if !hs.failing {
		hs.failing, hs.since, hs.attempts, hs.logged = true, now, 0, false
		h.failing.Store(true)
		msg = "webhook endpoint failing"
	}
	hs.attempts++
	h.warn(now, msg, "error", describe(err, h.s.cfg.Timeout), "events", events,
		"failed_attempts", hs.attempts, "failing_for", now.Sub(hs.since))
}

func (h *hook) recovered() {
	hs := &h.health
	if !hs.failing {
		return
	}
	if hs.logged {
		h.s.log.Info("webhook endpoint recovered", "app", h.app.id, "hook", h.cred.Load().index, "url", h.logURL,
			"failed_attempts", hs.attempts, "failing_for", time.Since(hs.since))
	}
	hs.failing = false
	h.failing.Store(false)
}

// warn logs at most one line per hook per warnEvery. A line that is logged also
// tells what was dropped since the last one, so that held-back lines lose no count.
func (h *hook) warn(now time.Time, msg string, args ...any) {
	hs := &h.health
	if !hs.mayWarn(now) {
		hs.suppressed++
		return
	}
	args = append([]any{"app", h.app.id, "hook", h.cred.Load().index, "url", h.logURL}, args...)
	if n := h.qfull.Swap(0); n > 0 {
		args = append(args, "dropped_queue_full", n)
	}
	if hs.exhausted > 0 {
		args = append(args, "dropped_retries_exhausted", hs.exhausted)
	}
	if hs.suppressed > 0 {
		args = append(args, "suppressed", hs.suppressed)
	}
	hs.lastWarn, hs.suppressed, hs.exhausted = now, 0, 0
	if hs.failing {
		hs.logged = true
	}
	h.s.log.Warn(msg, args...)
}

// describe words a failed attempt for the log, without the URL (it may hold a token).
func describe(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var te interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &te) && te.Timeout() {
		return fmt.Sprintf("no answer within %v", timeout)
	}
	return err.Error()
}
