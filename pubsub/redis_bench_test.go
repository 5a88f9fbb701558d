package pubsub_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/redistest"
	"github.com/herald-rt/herald/pubsub"
	"github.com/herald-rt/herald/pubsub/pubsubtest"
)

// TestRedisBurst: a burst of messages of assorted sizes, published faster than they are
// read, arrives whole and in order, with a client configured for RESP3 (go-redis's
// default). With v9.17.3, a RESP3 subscriber connection loses the frames whose header
// straddles two reads (redis/go-redis#3839): this is the test that caught it.
func TestRedisBurst(t *testing.T) {
	const n = 20000
	srv := redistest.Shared(t)
	client := newClient(t, srv.Addr, 3)
	prefix := redistest.Prefix(t)
	h := newEvents()
	b := newRedis(t, fastConfig(client, prefix, "n1"), h)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "burst"); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("0123456789abcdef", 64)
	_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			msg := strconv.Itoa(i) + ":" + payload[:i%len(payload)]
			p.Publish(ctx, prefix+":c:{burst}", msg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case m := <-h.msgs:
			if seq, _, _ := strings.Cut(m.data, ":"); seq != strconv.Itoa(i) {
				t.Fatalf("message %d is %.20q (lost, duplicated or out of order)", i, m.data)
			}
		case <-time.After(pubsubtest.Timeout):
			t.Fatalf("%d of %d messages delivered", i, n)
		}
	}
}

// counting is a Handler that counts messages and signals every one.
type counting struct {
	n   atomic.Int64
	sig chan struct{}
}

func (c *counting) HandleMessage(string, []byte) {
	c.n.Add(1)
	select {
	case c.sig <- struct{}{}:
	default:
	}
}
func (c *counting) HandleControl([]byte)   {}
func (c *counting) HandleBrokerState(bool) {}

// waitCount waits until c counted n messages.
func (c *counting) waitCount(tb testing.TB, n int64) {
	deadline := time.After(pubsubtest.Timeout)
	for c.n.Load() < n {
		select {
		case <-c.sig:
		case <-deadline:
			tb.Fatalf("%d of %d messages received", c.n.Load(), n)
		}
	}
}

// BenchmarkRedisRoundTrip publishes through one node and receives through another, on
// the shared server: "sequential" waits for each message before the next (ns/op is the
// round trip); "parallel" publishes from GOMAXPROCS goroutines and waits for them all.
//
//	go test ./pubsub -run '^$' -bench Redis -benchtime 2s
func BenchmarkRedisRoundTrip(b *testing.B) {
	srv := redistest.Shared(b)
	client := newClient(b, srv.Addr, 0)
	prefix := redistest.Prefix(b)
	h := &counting{sig: make(chan struct{}, 1)}
	sub := newRedis(b, pubsub.RedisConfig{Client: client, Prefix: prefix, Node: "sub"}, h)
	pub := newRedis(b, pubsub.RedisConfig{Client: client, Prefix: prefix, Node: "pub"}, nil)
	ctx := context.Background()
	if err := sub.Subscribe(ctx, "app-1:chat"); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"event":"message","channel":"chat","data":"hi"}`)

	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		n := 0
		for b.Loop() {
			want := h.n.Load() + 1
			if err := pub.Publish(ctx, "app-1:chat", data); err != nil {
				b.Fatal(err)
			}
			h.waitCount(b, want)
			n++
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		base := h.n.Load()
		var sent atomic.Int64
		start := time.Now()
		b.SetParallelism(8) // publishers are network-bound: more of them than CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := pub.Publish(ctx, "app-1:chat", data); err != nil {
					b.Error(err)
					return
				}
				sent.Add(1)
			}
		})
		h.waitCount(b, base+sent.Load())
		b.ReportMetric(float64(sent.Load())/time.Since(start).Seconds(), "msgs/s")
	})
}

// BenchmarkRedisReceive measures the receive path alone: a raw connection pipelines
// PUBLISH commands (encoded before the timer starts) and the benchmark ends when the
// Handler has b.N messages. It keeps at most inFlight messages ahead of the Handler:
// past 32 MB queued for a subscriber, Redis disconnects it. allocs/op is what receiving
// one message costs, go-redis's parsing included (the engine's own part allocates
// nothing: TestReceivePathAllocs).
func BenchmarkRedisReceive(b *testing.B) {
	const chunk, inFlight = 1000, 50000
	srv := redistest.Shared(b)
	client := newClient(b, srv.Addr, 0)
	prefix := redistest.Prefix(b)
	h := &counting{sig: make(chan struct{}, 1)}
	sub := newRedis(b, pubsub.RedisConfig{Client: client, Prefix: prefix, Node: "sub"}, h)
	if err := sub.Subscribe(context.Background(), "app-1:chat"); err != nil {
		b.Fatal(err)
	}
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go func() { _, _ = io.Copy(io.Discard, conn) }() // the replies; ends with conn
	channel := prefix + ":c:{app-1:chat}"
	data := `{"event":"message","channel":"chat","data":"hi"}`
	cmd := fmt.Sprintf("*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(channel), channel, len(data), data)
	buf := []byte(strings.Repeat(cmd, chunk))
	base := h.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(chunk, b.N-sent)
		h.waitCount(b, base+int64(sent+n-inFlight))
		if _, err := conn.Write(buf[:n*len(cmd)]); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	h.waitCount(b, base+int64(b.N))
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
