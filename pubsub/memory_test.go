package pubsub_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/pubsub/pubsubtest"
)

// TestMain checks for leaked goroutines once every test ran, and stops the shared Redis
// servers the Redis tests started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }

func TestMemoryConformance(t *testing.T) {
	pubsubtest.Run(t, func(t *testing.T) func(h pubsub.Handler) pubsub.Broker {
		bus := pubsub.NewMemoryBus()
		return func(h pubsub.Handler) pubsub.Broker { return bus.Broker(h) }
	})
}

// TestMemoryZeroBusConformance runs the suite on zero-value buses, which must work.
func TestMemoryZeroBusConformance(t *testing.T) {
	pubsubtest.Run(t, func(t *testing.T) func(h pubsub.Handler) pubsub.Broker {
		var bus pubsub.MemoryBus
		return func(h pubsub.Handler) pubsub.Broker { return bus.Broker(h) }
	})
}

// counter is a Handler that allocates nothing.
type counter struct{ n atomic.Int64 }

func (c *counter) HandleMessage(string, []byte) { c.n.Add(1) }
func (c *counter) HandleControl([]byte)         {}
func (c *counter) HandleBrokerState(bool)       {}

// funcHandler adapts a function, for handlers that call back into the broker.
type funcHandler func(channel string, data []byte)

func (f funcHandler) HandleMessage(channel string, data []byte) { f(channel, data) }
func (f funcHandler) HandleControl([]byte)                      {}
func (f funcHandler) HandleBrokerState(bool)                    {}

func TestMemoryPublishIsSynchronous(t *testing.T) {
	ctx := context.Background()
	var c counter
	m := pubsub.NewMemory(&c)
	defer m.Close(context.Background())
	if err := m.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := m.Publish(ctx, "x", nil); err != nil {
			t.Fatal(err)
		}
		if got := c.n.Load(); got != int64(i+1) {
			t.Fatalf("after Publish %d returned, %d deliveries, want %d", i+1, got, i+1)
		}
	}
}

func TestNewMemoryHasABusOfItsOwn(t *testing.T) {
	ctx := context.Background()
	var ca, cb counter
	a, b := pubsub.NewMemory(&ca), pubsub.NewMemory(&cb)
	defer a.Close(context.Background())
	defer b.Close(context.Background())
	for _, m := range []*pubsub.Memory{a, b} {
		if err := m.Subscribe(ctx, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Publish(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if ca.n.Load() != 1 || cb.n.Load() != 0 {
		t.Fatalf("deliveries a=%d b=%d, want 1 and 0", ca.n.Load(), cb.n.Load())
	}
}

func TestMemoryZeroValue(t *testing.T) {
	ctx := context.Background()
	var m pubsub.Memory // no Handler: messages are dropped, calls still work
	if err := m.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(ctx, "x", []byte("dropped")); err != nil {
		t.Fatal(err)
	}
	if err := m.Unsubscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(ctx, "x", nil); !errors.Is(err, pubsub.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

// TestMemoryHandlerMayCallBroker: Subscribe, Unsubscribe, Publish and Close from inside
// a Handler must not deadlock (no lock is held while a Handler runs).
func TestMemoryHandlerMayCallBroker(t *testing.T) {
	ctx := context.Background()
	bus := pubsub.NewMemoryBus()
	var got []string
	var self *pubsub.Memory
	self = bus.Broker(funcHandler(func(channel string, data []byte) {
		got = append(got, channel+":"+string(data))
		switch string(data) {
		case "subscribe":
			if err := self.Subscribe(ctx, "y"); err != nil {
				t.Error(err)
			}
			if err := self.Publish(ctx, "y", []byte("nested")); err != nil {
				t.Error(err)
			}
		case "unsubscribe":
			if err := self.Unsubscribe(ctx, "y"); err != nil {
				t.Error(err)
			}
		case "close":
			if err := self.Close(context.Background()); err != nil {
				t.Error(err)
			}
		}
	}))
	pub := bus.Broker(nil)
	defer pub.Close(context.Background())
	if err := self.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"subscribe", "unsubscribe", "close", "after close"} {
		if err := pub.Publish(ctx, "x", []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, "y", []byte("on y after "+msg)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"x:subscribe", "y:nested", "y:on y after subscribe", "x:unsubscribe", "x:close"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestMemoryCloseDuringDelivery: a broker closed by an earlier Handler in the same
// Publish receives nothing from it.
func TestMemoryCloseDuringDelivery(t *testing.T) {
	ctx := context.Background()
	bus := pubsub.NewMemoryBus()
	var victimGot counter
	victim := bus.Broker(&victimGot)
	closer := bus.Broker(funcHandler(func(string, []byte) {
		if err := victim.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}))
	defer closer.Close(context.Background())
	// closer subscribes first, so it is served first.
	for _, m := range []*pubsub.Memory{closer, victim} {
		if err := m.Subscribe(ctx, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := closer.Publish(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if n := victimGot.n.Load(); n != 0 {
		t.Fatalf("closed broker got %d messages, want 0", n)
	}
}

// TestMemoryPublishAllocs pins the fast path: a Publish to several subscribed nodes
// allocates nothing.
func TestMemoryPublishAllocs(t *testing.T) {
	ctx := context.Background()
	bus := pubsub.NewMemoryBus()
	var c counter
	for range 4 {
		m := bus.Broker(&c)
		defer m.Close(context.Background())
		if err := m.Subscribe(ctx, "app-1:chat"); err != nil {
			t.Fatal(err)
		}
	}
	pub := bus.Broker(nil)
	defer pub.Close(context.Background())
	data := []byte(`{"event":"message","channel":"chat","data":"hi"}`)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := pub.Publish(ctx, "app-1:chat", data); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Publish allocates %v times per call, want 0", allocs)
	}
	if got, want := c.n.Load(), int64(4*1001); got != want { // AllocsPerRun warms up once
		t.Fatalf("%d deliveries, want %d", got, want)
	}
}

// nop is a Handler that does nothing, so that a benchmark measures the broker (a shared
// counter would measure cache-line contention between the benchmark's goroutines).
type nop struct{}

func (nop) HandleMessage(string, []byte) {}
func (nop) HandleControl([]byte)         {}
func (nop) HandleBrokerState(bool)       {}

func BenchmarkMemoryPublish(b *testing.B) {
	ctx := context.Background()
	data := []byte(`{"event":"message","channel":"chat","data":"hi"}`)
	for _, nodes := range []int{1, 4, 16} {
		bus := pubsub.NewMemoryBus()
		for range nodes {
			m := bus.Broker(nop{})
			defer m.Close(context.Background())
			if err := m.Subscribe(ctx, "app-1:chat"); err != nil {
				b.Fatal(err)
			}
			// Other channels in the map, as on a busy node.
			for i := range 100 {
				if err := m.Subscribe(ctx, "app-1:other-"+strconv.Itoa(i)); err != nil {
					b.Fatal(err)
				}
			}
		}
		pub := bus.Broker(nil)
		defer pub.Close(context.Background())
		b.Run("nodes="+strconv.Itoa(nodes), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := pub.Publish(ctx, "app-1:chat", data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("nodes="+strconv.Itoa(nodes)+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := pub.Publish(ctx, "app-1:chat", data); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
