package hub

import (
	"context"
	"testing"
	"time"
)

// subscribedReader connects one client to "orders" and drains what it receives, so
// that its socket never fills; it returns the broker key and an envelope to deliver.
func subscribedReader(t testing.TB, h *Hub) (key string, env []byte) {
	return subscribedOrders(t, h, true)
}

// subscribedOrders connects one client to "orders"; with drain, a goroutine reads what it
// receives.
func subscribedOrders(t testing.TB, h *Hub, drain bool) (key string, env []byte) {
	w := connect(t, h, testApp.Key)
	w.subscribe("orders", "", "")
	w.expect("pusher_internal:subscription_succeeded")
	key = channelKey(h.appByID(testApp.ID), "orders")
	env = remoteEnvelope(h.envelope(eventJSON(nil, "tick", "orders", []byte(`"x"`), ""), 0, 0))
	if !drain {
		return key, env
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			if _, _, err := w.c.Read(ctx); err != nil {
				return
			}
		}
	}()
	return key, env
}

// The delivery path of a broker message (snapshot of recipients, one mailbox job per
// loop) allocates nothing once the channel's snapshot is built. Nothing reads the
// client's side while it is measured (the 201 frames fit in the socket buffers):
// AllocsPerRun counts the whole process, and a reading client allocates for every
// message it reads, which failed the test whenever the reader ran in the window.
func TestHandleMessageAllocatesNothing(t *testing.T) {
	h := startHub(t, Config{})
	key, env := subscribedOrders(t, h, false)
	h.HandleMessage(key, env) // builds the snapshot
	time.Sleep(50 * time.Millisecond)
	if n := testing.AllocsPerRun(200, func() { h.HandleMessage(key, env) }); n != 0 {
		t.Fatalf("HandleMessage allocates %.1f times per message", n)
	}
}

// BenchmarkHandleMessage measures the publisher side of a delivery: the caller's cost
// per broker message. It runs faster than the loop can write, so the loop's mailbox
// grows to its bound and then drops (counted) jobs: the allocations it reports are
// that growth, which TestHandleMessageAllocatesNothing shows is absent at a pace the
// loop keeps up with.
func BenchmarkHandleMessage(b *testing.B) {
	h := startHub(b, Config{})
	key, env := subscribedReader(b, h)
	b.ReportAllocs()
	for b.Loop() {
		h.HandleMessage(key, env)
	}
}

// remoteEnvelope makes env look published by another node (a node drops its own).
func remoteEnvelope(env []byte) []byte {
	env[1], env[2], env[3], env[4] = 0xfe, 0xed, 0xfa, 0xce
	return env
}
