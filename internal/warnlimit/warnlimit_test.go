package warnlimit

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/herald-rt/herald/internal/logtest"
)

const every = 10 * time.Second

var errDown = errors.New("broker unavailable")

// accounted is logtest.Occurrences, failing the test on a malformed line.
func accounted(t *testing.T, lines []logtest.Line) int {
	t.Helper()
	n, err := logtest.Occurrences(lines)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// 10,000 failures over a minute make one line per period, each with the count of
// what it held back, and every failure is accounted for.
func TestWarnLimiterSteadyOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c logtest.Recorder
		w := New(c.Logger(), every)
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
		lines := c.Matching("broker publish failed")
		// The first at once, then one report per 10 s: at 10, 20, ..., 60 s.
		if len(lines) != 7 {
			t.Fatalf("%d lines for 10,000 failures over 60 s, want 7 (one per %v)", len(lines), every)
		}
		if n := accounted(t, lines); n != 10_000 {
			t.Fatalf("the lines account for %d failures, want 10000", n)
		}
		for i := 1; i < len(lines); i++ {
			if gap := lines[i].At.Sub(lines[i-1].At); gap < every {
				t.Fatalf("lines %d and %d are %v apart, want >= %v", i-1, i, gap, every)
			}
		}
		if first := lines[0]; first.At != start || first.Attrs["suppressed"] != nil {
			t.Fatalf("the first failure is logged at once, alone: %+v", first)
		}
		// Kinds are limited apart: the other kind has its own lines.
		joins := c.Matching("presence join failed")
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
		var c logtest.Recorder
		w := New(c.Logger(), every)
		for range 10_000 {
			w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		}
		if n := len(c.Matching("member event lost")); n != 1 {
			t.Fatalf("%d lines right after the burst, want 1", n)
		}
		time.Sleep(every)
		synctest.Wait()
		lines := c.Matching("member event lost")
		if len(lines) != 2 || lines[1].Attrs["suppressed"] != int64(9_998) || accounted(t, lines) != 10_000 {
			t.Fatalf("after the period: %+v", lines)
		}
		// Quiet for a period: the next one is logged at once again.
		time.Sleep(every)
		w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		if n := len(c.Matching("member event lost")); n != 3 {
			t.Fatalf("%d lines, want 3", n)
		}
		for range 5 {
			w.Warn("member_event_lost", "member event lost: the broker refused it for too long", "channel", "1:presence-x", "err", errDown)
		}
		w.Close() // reports the 5 at once, and stops the timer
		lines = c.Matching("member event lost")
		if len(lines) != 4 || lines[3].Attrs["suppressed"] != int64(4) || accounted(t, lines) != 10_006 {
			t.Fatalf("after close: %+v", lines)
		}
		time.Sleep(2 * every)
		synctest.Wait()
		if n := len(c.Matching("member event lost")); n != 4 {
			t.Fatalf("%d lines after close, want 4", n)
		}
	})
}
