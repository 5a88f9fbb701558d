package warnlimit

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

const every = 10 * time.Second

var errDown = errors.New("broker unavailable")

// logCapture is a slog.Handler that keeps every record's message and attributes.
type logCapture struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct {
	at    time.Time
	level slog.Level
	msg   string
	attrs map[string]any
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	l := logLine{at: r.Time, level: r.Level, msg: r.Message, attrs: map[string]any{}}
	r.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.Any()
		return true
	})
	c.mu.Lock()
	c.lines = append(c.lines, l)
	c.mu.Unlock()
	return nil
}

// matching returns the lines whose message starts with prefix.
func (c *logCapture) matching(prefix string) []logLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logLine
	for _, l := range c.lines {
		if strings.HasPrefix(l.msg, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// accounted is how many occurrences the lines stand for: each line is one, and its
// "suppressed" counts the others held back before it.
func accounted(t *testing.T, lines []logLine) (occurrences int) {
	t.Helper()
	for _, l := range lines {
		if l.level != slog.LevelWarn {
			t.Fatalf("line at %v, want Warn: %+v", l.level, l)
		}
		if _, ok := l.attrs["err"]; !ok {
			t.Fatalf("every line keeps its occurrence's details: %+v", l)
		}
		occurrences++
		if v, ok := l.attrs["suppressed"]; ok {
			n, _ := v.(int64)
			if n <= 0 {
				t.Fatalf("suppressed=%v", v)
			}
			occurrences += int(n)
		}
	}
	return occurrences
}

// 10,000 failures over a minute make one line per period, each with the count of
// what it held back, and every failure is accounted for.
func TestWarnLimiterSteadyOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c logCapture
		w := New(slog.New(&c), every)
		start := time.Now()
		for i := range 10_000 {
			w.Warn("broker_publish", "broker publish failed", "channel", "1:c", "err", errDown)
			if i%2 == 0 {
				w.Warn("presence_join", "presence join failed", "channel", "1:presence-c", "err", errDown)
			}
			time.Sleep(6 * time.Millisecond) // 10,000 over 60 s
		}
		time.Sleep(every) // the last period's report
		synctest.Wait()
		lines := c.matching("broker publish failed")
		// The first at once, then one report per 10 s: at 10, 20, ..., 60 s.
		if len(lines) != 7 {
			t.Fatalf("%d lines for 10,000 failures over 60 s, want 7 (one per %v)", len(lines), every)
		}
		if n := accounted(t, lines); n != 10_000 {
			t.Fatalf("the lines account for %d failures, want 10000", n)
		}
		for i := 1; i < len(lines); i++ {
			if gap := lines[i].at.Sub(lines[i-1].at); gap < every {
				t.Fatalf("lines %d and %d are %v apart, want >= %v", i-1, i, gap, every)
			}
		}
		if first := lines[0]; first.at != start || first.attrs["suppressed"] != nil {
			t.Fatalf("the first failure is logged at once, alone: %+v", first)
		}
		// Kinds are limited apart: the other kind has its own lines.
		joins := c.matching("presence join failed")
		if len(joins) != 7 || accounted(t, joins) != 5_000 {
			t.Fatalf("presence join: %d lines for %d failures", len(joins), accounted(t, joins))
		}
		w.Close()
	})
}

// A burst then silence: the first line, then one report at the end of the period;
// close reports what is still held back.
func TestWarnLimiterBurstAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c logCapture
		w := New(slog.New(&c), every)
		for range 10_000 {
			w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		}
		if n := len(c.matching("member event lost")); n != 1 {
			t.Fatalf("%d lines right after the burst, want 1", n)
		}
		time.Sleep(every)
		synctest.Wait()
		lines := c.matching("member event lost")
		if len(lines) != 2 || lines[1].attrs["suppressed"] != int64(9_998) || accounted(t, lines) != 10_000 {
			t.Fatalf("after the period: %+v", lines)
		}
		// Quiet for a period: the next one is logged at once again.
		time.Sleep(every)
		w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		if n := len(c.matching("member event lost")); n != 3 {
			t.Fatalf("%d lines, want 3", n)
		}
		for range 5 {
			w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		}
		w.Close() // reports the 5 at once, and stops the timer
		lines = c.matching("member event lost")
		if len(lines) != 4 || lines[3].attrs["suppressed"] != int64(4) || accounted(t, lines) != 10_006 {
			t.Fatalf("after close: %+v", lines)
		}
		time.Sleep(2 * every)
		synctest.Wait()
		if n := len(c.matching("member event lost")); n != 4 {
			t.Fatalf("%d lines after close, want 4", n)
		}
	})
}
