package hub

import (
	"context"
	"testing"
	"time"

	"github.com/herald-rt/herald/internal/logtest"
	"github.com/herald-rt/herald/pubsub"
)

// accounted is logtest.Occurrences, failing the test on a malformed line.
func accounted(t *testing.T, lines []logtest.Line) int {
	t.Helper()
	n, err := logtest.Occurrences(lines)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Through the hub: 10,000 client-event publishes that the broker refuses log a
// handful of lines, the suppressed ones counted, reported at the latest at Shutdown.
func TestHubBrokerFailuresAreRateLimited(t *testing.T) {
	var c logtest.Recorder
	flaky := &flakyBroker{}
	h := startHub(t, Config{
		Logger: c.Logger(),
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
	lines := c.Matching("broker publish failed")
	if len(lines) < 2 || len(lines) > 5 {
		t.Fatalf("%d lines for 10,000 failed publishes, want a handful", len(lines))
	}
	if n := accounted(t, lines); n != 10_000 {
		t.Fatalf("the lines account for %d failures, want 10000: %+v", n, lines)
	}
	if last := lines[len(lines)-1]; last.Attrs["suppressed"] == nil || last.Attrs["channel"] != "1:private-c" {
		t.Fatalf("last line %+v", last)
	}
}
