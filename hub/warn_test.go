package hub

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/pubsub"
)

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

// Through the hub: 10,000 client-event publishes that the broker refuses log a
// handful of lines, the suppressed ones counted, reported at the latest at Shutdown.
func TestHubBrokerFailuresAreRateLimited(t *testing.T) {
	var c logCapture
	flaky := &flakyBroker{}
	h := startHub(t, Config{
		Logger: slog.New(&c),
		NewBroker: func(_ uint32, ph pubsub.Handler) (pubsub.Broker, error) {
			flaky.Broker = pubsub.NewMemory(ph)
			return flaky, nil
		},
	})
	flaky.down.Store(true)
	a := h.appByID(testApp.ID)
	env := h.envelope([]byte(`{"event":"client-x","channel":"private-c","data":{}}`), 0, 0)
	for range 10_000 {
		if h.publishAsync(a, channelKey(a, "private-c"), env, "client_event_unpublished") {
			t.Fatal("published through a broker that is down")
		}
	}
	if got := h.Stats().Apps["1"].Dropped["client_event_unpublished"]; got != 10_000 {
		t.Fatalf("dropped counted %d, want 10000", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	lines := c.matching("broker publish failed")
	if len(lines) < 2 || len(lines) > 5 {
		t.Fatalf("%d lines for 10,000 failed publishes, want a handful", len(lines))
	}
	if n := accounted(t, lines); n != 10_000 {
		t.Fatalf("the lines account for %d failures, want 10000: %+v", n, lines)
	}
	if last := lines[len(lines)-1]; last.attrs["suppressed"] == nil || last.attrs["channel"] != "1:private-c" {
		t.Fatalf("last line %+v", last)
	}
}
