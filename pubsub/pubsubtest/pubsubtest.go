// Package pubsubtest is the conformance suite that every pubsub.Broker engine must pass.
//
// The suite assumes nothing about timing beyond the Broker contract, so it serves both
// the synchronous memory engine and engines that deliver asynchronously over a network:
// it waits for an expected delivery up to a bounded deadline and proves an absence with
// a marker message published after the unwanted one.
package pubsubtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-rt/herald/pubsub"
)

// Timeout bounds every wait for an expected delivery.
const Timeout = 5 * time.Second

// Run runs the suite. newBus is called once per subtest and returns a fresh, empty
// cluster; the function it returns makes one node of that cluster with the given
// Handler. The suite closes every broker it makes; whatever else the cluster holds (a
// Redis connection, a key prefix) is for newBus to clean up with t.Cleanup.
func Run(t *testing.T, newBus func(t *testing.T) func(h pubsub.Handler) pubsub.Broker) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, c *cluster)
	}{
		{"PublishReachesSubscribedNodesOnly", testSubscribedNodesOnly},
		{"UnsubscribeStopsDelivery", testUnsubscribe},
		{"SubscribeTwiceUnsubscribeUnknown", testIdempotent},
		{"OrderPerPublisherPerChannel", testOrder},
		{"DataUnchanged", testData},
		{"ChannelNamesOpaque", testChannelNames},
		{"ManyChannels", testManyChannels},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"HandlerMayPublish", testReentrantPublish},
		{"Close", testClose},
		{"CloseWithDoneContext", testCloseDoneContext},
		{"CancelledContext", testCancelledContext},
		{"ControlReachesEveryNode", testControl},
		{"PublishKeepAndLast", testKeep},
		{"KeptMessageExpires", testKeepExpiry},
		{"Stats", testStats},
		{"VariadicSubscribe", testVariadic},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &cluster{t: t, newNode: newBus(t)})
		})
	}
}

type cluster struct {
	t       *testing.T
	newNode func(h pubsub.Handler) pubsub.Broker
	markers atomic.Int64
}

// node makes a broker with a recording handler and closes it when the test ends.
func (c *cluster) node(name string) (pubsub.Broker, *recorder) {
	c.t.Helper()
	r := &recorder{name: name, notify: make(chan struct{}, 1)}
	b := c.newNode(r)
	if b == nil {
		c.t.Fatalf("factory returned a nil broker for node %s", name)
	}
	c.t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil && !errors.Is(err, pubsub.ErrClosed) {
			c.t.Errorf("node %s: Close: %v", name, err)
		}
	})
	return b, r
}

// barrier publishes a fresh marker on channel through pub and waits until r has it.
// Since a publisher's messages on one channel arrive in order, anything pub published on
// channel before has arrived too. For other channels the marker is only evidence that
// the engine had time to deliver, which is as much as an engine can offer.
func (c *cluster) barrier(pub pubsub.Broker, r *recorder, channel string) {
	c.t.Helper()
	marker := []byte("marker-" + strconv.FormatInt(c.markers.Add(1), 10))
	mustPublish(c.t, pub, channel, marker)
	r.waitFor(c.t, "marker "+string(marker)+" on "+channel, func(ms []message) bool {
		return count(ms, channel, marker) > 0
	})
}

// never fails the test if r received data on channel, now or by the time the test ends.
func never(t *testing.T, r *recorder, channel string, data []byte) {
	t.Helper()
	check := func(when string) {
		if n := r.count(channel, data); n > 0 {
			t.Errorf("node %s received %q on %q %d times %s, want never", r.name, data, channel, n, when)
		}
	}
	check("")
	t.Cleanup(func() { check("(by the end of the test)") })
}

// exactlyOnce fails the test unless r received data on channel exactly once.
func exactlyOnce(t *testing.T, r *recorder, channel string, data []byte) {
	t.Helper()
	if n := r.count(channel, data); n != 1 {
		t.Errorf("node %s received %q on %q %d times, want 1", r.name, data, channel, n)
	}
}

type message struct {
	channel string
	data    []byte
}

// recorder is a Handler that keeps every message and control message, without copying
// (the contract lets it keep data, so an engine that reuses buffers shows up as corrupted
// messages).
type recorder struct {
	name   string
	notify chan struct{} // capacity 1: "something arrived since you last looked"

	hook atomic.Pointer[func(channel string, data []byte)]

	mu     sync.Mutex
	msgs   []message
	ctrl   [][]byte
	states []bool
}

func (r *recorder) HandleMessage(channel string, data []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, message{channel, data})
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	if h := r.hook.Load(); h != nil {
		(*h)(channel, data)
	}
}

func (r *recorder) HandleControl(data []byte) {
	r.mu.Lock()
	r.ctrl = append(r.ctrl, data)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) HandleBrokerState(up bool) {
	r.mu.Lock()
	r.states = append(r.states, up)
	r.mu.Unlock()
}

// waitControl waits up to Timeout for cond to hold over the control messages r received.
func (r *recorder) waitControl(t *testing.T, what string, cond func([][]byte) bool) {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.ctrl)
		n := len(r.ctrl)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-timer.C:
			t.Fatalf("node %s: no %s within %v (%d control messages received)", r.name, what, Timeout, n)
		}
	}
}

func (r *recorder) control() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ctrl)
}

// waitFor waits up to Timeout for cond to hold over everything r received so far.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]message) bool) {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond(r.msgs)
		n := len(r.msgs)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-timer.C:
			t.Fatalf("node %s: no %s within %v (%d messages received)", r.name, what, Timeout, n)
		}
	}
}

// waitCount waits until r has received at least n messages on channel and returns them.
func (r *recorder) waitCount(t *testing.T, channel string, n int) [][]byte {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%d messages on %q", n, channel), func(ms []message) bool {
		return len(on(ms, channel)) >= n
	})
	return r.on(channel)
}

func (r *recorder) on(channel string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return on(r.msgs, channel)
}

func (r *recorder) count(channel string, data []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return count(r.msgs, channel, data)
}

func on(ms []message, channel string) [][]byte {
	var out [][]byte
	for _, m := range ms {
		if m.channel == channel {
			out = append(out, m.data)
		}
	}
	return out
}

func count(ms []message, channel string, data []byte) int {
	n := 0
	for _, m := range ms {
		if m.channel == channel && bytes.Equal(m.data, data) {
			n++
		}
	}
	return n
}

func mustPublish(t *testing.T, b pubsub.Broker, channel string, data []byte) {
	t.Helper()
	if err := b.Publish(context.Background(), channel, data); err != nil {
		t.Fatalf("Publish(%q, %q): %v", channel, data, err)
	}
}

func mustSubscribe(t *testing.T, b pubsub.Broker, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		if err := b.Subscribe(context.Background(), ch); err != nil {
			t.Fatalf("Subscribe(%q): %v", ch, err)
		}
	}
}

func mustUnsubscribe(t *testing.T, b pubsub.Broker, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		if err := b.Unsubscribe(context.Background(), ch); err != nil {
			t.Fatalf("Unsubscribe(%q): %v", ch, err)
		}
	}
}

// testSubscribedNodesOnly: node a has x and y, node b has y and z; each publishes on
// every channel, and each message reaches exactly the nodes subscribed to its channel,
// exactly once, the publisher included.
func testSubscribedNodesOnly(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, a, "x", "y")
	mustSubscribe(t, b, "y", "z")

	subscribed := map[*recorder][]string{ra: {"x", "y"}, rb: {"y", "z"}}
	for _, pub := range []struct {
		name string
		b    pubsub.Broker
	}{{"a", a}, {"b", b}} {
		for _, ch := range []string{"x", "y", "z"} {
			mustPublish(t, pub.b, ch, []byte("from "+pub.name+" on "+ch))
		}
	}
	for r, chs := range subscribed {
		for _, ch := range chs {
			r.waitCount(t, ch, 2)
		}
	}
	// Markers on the channels each node has, from both publishers, so that a stray
	// copy of anything published above had its chance to arrive.
	for _, pub := range []pubsub.Broker{a, b} {
		c.barrier(pub, ra, "x")
		c.barrier(pub, rb, "z")
		c.barrier(pub, ra, "y")
		c.barrier(pub, rb, "y")
	}
	for r, chs := range subscribed {
		for _, pub := range []string{"a", "b"} {
			for _, ch := range []string{"x", "y", "z"} {
				data := []byte("from " + pub + " on " + ch)
				if slices.Contains(chs, ch) {
					exactlyOnce(t, r, ch, data)
				} else {
					never(t, r, ch, data)
				}
			}
		}
	}
}

// testUnsubscribe: after Unsubscribe returns, a node receives nothing more on that
// channel, while the other subscribers still do.
func testUnsubscribe(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, a, "x")
	mustSubscribe(t, b, "x", "y")

	mustPublish(t, a, "x", []byte("before"))
	rb.waitCount(t, "x", 1)
	ra.waitCount(t, "x", 1)

	mustUnsubscribe(t, b, "x")
	mustPublish(t, a, "x", []byte("after"))
	ra.waitFor(t, `"after" on x`, func(ms []message) bool { return count(ms, "x", []byte("after")) == 1 })
	c.barrier(a, rb, "y")
	never(t, rb, "x", []byte("after"))
	exactlyOnce(t, rb, "x", []byte("before"))

	// Subscribing again resumes delivery.
	mustSubscribe(t, b, "x")
	mustPublish(t, a, "x", []byte("again"))
	rb.waitFor(t, `"again" on x`, func(ms []message) bool { return count(ms, "x", []byte("again")) == 1 })
}

// testIdempotent: a second Subscribe neither duplicates deliveries nor needs a second
// Unsubscribe; Unsubscribe of a channel never subscribed is a no-op.
func testIdempotent(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, b, "x", "x", "y")
	mustUnsubscribe(t, b, "never-subscribed")
	mustUnsubscribe(t, a, "never-subscribed", "x")
	mustSubscribe(t, a, "y")

	mustPublish(t, a, "x", []byte("one"))
	c.barrier(a, rb, "x") // same publisher, same channel: a duplicate would come first
	exactlyOnce(t, rb, "x", []byte("one"))
	never(t, ra, "x", []byte("one"))

	mustUnsubscribe(t, b, "x")
	mustPublish(t, a, "x", []byte("two"))
	c.barrier(a, rb, "y")
	never(t, rb, "x", []byte("two"))

	// Unsubscribing twice is as harmless as unsubscribing the unknown.
	mustUnsubscribe(t, b, "x")
	mustPublish(t, a, "y", []byte("still here"))
	rb.waitFor(t, `"still here" on y`, func(ms []message) bool { return count(ms, "y", []byte("still here")) == 1 })
	ra.waitFor(t, `"still here" on y`, func(ms []message) bool { return count(ms, "y", []byte("still here")) == 1 })
}

// testOrder: 1,000 messages from one publisher on one channel arrive in order, at the
// other node and at the publisher's own.
func testOrder(t *testing.T, c *cluster) {
	const n = 1000
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, a, "x")
	mustSubscribe(t, b, "x")
	for i := range n {
		mustPublish(t, a, "x", []byte(strconv.Itoa(i)))
	}
	for _, r := range []*recorder{ra, rb} {
		got := r.waitCount(t, "x", n)
		if len(got) != n {
			t.Errorf("node %s: %d messages, want %d", r.name, len(got), n)
		}
		for i, d := range got {
			if string(d) != strconv.Itoa(i) {
				t.Errorf("node %s: message %d is %q, want %d (out of order, lost or duplicated)", r.name, i, d, i)
				break
			}
		}
	}
}

// testData: payloads arrive byte for byte, whatever they hold, and stay intact after
// later messages (an engine must not reuse a buffer it handed out).
func testData(t *testing.T, c *cluster) {
	a, _ := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, b, "x")

	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>8)
	}
	payloads := [][]byte{
		[]byte(`{"event":"e","channel":"x","data":"{\"a\":1}"}`),
		{},
		every,
		{0},
		[]byte("\xff\xfe invalid UTF-8 \xc3\x28"),
		[]byte("\r\n*3\r\n$7\r\nmessage\r\n"), // looks like RESP
		[]byte("héllo, 世界"),
		big,
		nil,
	}
	for _, p := range payloads {
		mustPublish(t, a, "x", p)
	}
	got := rb.waitCount(t, "x", len(payloads))
	if len(got) != len(payloads) {
		t.Fatalf("received %d messages, want %d", len(got), len(payloads))
	}
	for i, p := range payloads {
		if !bytes.Equal(got[i], p) {
			t.Errorf("message %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got[i]), got[i], len(p), p)
		}
	}
}

// testChannelNames: names are opaque strings, not patterns or paths; a subscription to
// "news.*" gets only what was published on "news.*".
func testChannelNames(t *testing.T, c *cluster) {
	a, _ := c.node("a")
	b, rb := c.node("b")
	names := []string{"news.*", "room[12]", "a?", "app-1:presence-chat", "private-é世", "with space", "x\\y", "ctl\x00\x01"}
	mustSubscribe(t, b, names...)
	for _, ch := range names {
		mustPublish(t, a, ch, []byte("on "+ch))
	}
	for _, ch := range names {
		rb.waitFor(t, fmt.Sprintf("message on %q", ch), func(ms []message) bool {
			return count(ms, ch, []byte("on "+ch)) > 0
		})
	}
	// Names the patterns above would match, if an engine mistook them for patterns.
	matches := []string{"news.sport", "room1", "ab", "app-1:presence-chat2", "x"}
	for _, ch := range matches {
		mustPublish(t, a, ch, []byte("on "+ch))
	}
	for _, ch := range names {
		c.barrier(a, rb, ch)
		exactlyOnce(t, rb, ch, []byte("on "+ch))
	}
	for _, ch := range matches {
		never(t, rb, ch, []byte("on "+ch))
	}
}

// testManyChannels: a node holds 1,000 subscriptions, receives on each, and after
// unsubscribing all of them receives on none.
func testManyChannels(t *testing.T, c *cluster) {
	const n = 1000
	a, _ := c.node("a")
	b, rb := c.node("b")
	chs := make([]string, n)
	for i := range chs {
		chs[i] = "many-" + strconv.Itoa(i)
	}
	mustSubscribe(t, b, chs...)
	mustSubscribe(t, b, "marker")
	for _, ch := range chs {
		mustPublish(t, a, ch, []byte("first"))
	}
	rb.waitFor(t, "one message on each channel", func(ms []message) bool { return len(ms) >= n })
	for _, ch := range chs {
		exactlyOnce(t, rb, ch, []byte("first"))
	}

	mustUnsubscribe(t, b, chs...)
	for _, ch := range chs {
		mustPublish(t, a, ch, []byte("second"))
	}
	c.barrier(a, rb, "marker")
	rb.mu.Lock()
	var leaked []string
	for _, m := range rb.msgs {
		if string(m.data) == "second" {
			leaked = append(leaked, m.channel)
		}
	}
	rb.mu.Unlock()
	if len(leaked) > 0 {
		t.Errorf("after unsubscribing, received on %d channels, e.g. %q", len(leaked), leaked[0])
	}
}

// testConcurrentPublishers: several goroutines publish at once through two nodes while
// a third goroutine churns subscriptions; every message arrives once and each
// publisher's order holds per channel.
func testConcurrentPublishers(t *testing.T, c *cluster) {
	const publishers, perPublisher = 8, 250
	a, ra := c.node("a")
	b, rb := c.node("b")
	chs := []string{"p0", "p1"}
	mustSubscribe(t, a, chs...)
	mustSubscribe(t, b, chs...)

	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Go(func() {
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ch := "churn-" + strconv.Itoa(i%16)
			if err := b.Subscribe(ctx, ch); err != nil {
				t.Errorf("Subscribe(%q): %v", ch, err)
				return
			}
			if err := b.Unsubscribe(ctx, ch); err != nil {
				t.Errorf("Unsubscribe(%q): %v", ch, err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for p := range publishers {
		pub := []pubsub.Broker{a, b}[p%2]
		wg.Go(func() {
			for i := range perPublisher {
				ch := chs[i%2]
				if err := pub.Publish(context.Background(), ch, fmt.Appendf(nil, "%d/%d", p, i)); err != nil {
					t.Errorf("publisher %d: Publish: %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	if t.Failed() {
		return
	}

	for _, r := range []*recorder{ra, rb} {
		r.waitFor(t, "every message", func(ms []message) bool { return len(ms) >= publishers*perPublisher })
		for _, ch := range chs {
			last := make([]int, publishers) // last seq seen per publisher, +1
			for _, d := range r.on(ch) {
				ps, is, ok := strings.Cut(string(d), "/")
				p, err1 := strconv.Atoi(ps)
				i, err2 := strconv.Atoi(is)
				if !ok || err1 != nil || err2 != nil || p < 0 || p >= publishers {
					t.Fatalf("node %s: unexpected message %q on %q", r.name, d, ch)
				}
				if i < last[p] {
					t.Fatalf("node %s on %q: publisher %d's message %d after %d", r.name, ch, p, i, last[p]-1)
				}
				last[p] = i + 1
			}
		}
		r.mu.Lock()
		got := len(r.msgs)
		r.mu.Unlock()
		if got != publishers*perPublisher {
			t.Errorf("node %s: %d messages, want %d", r.name, got, publishers*perPublisher)
		}
	}
}

// testReentrantPublish: a Handler may publish from inside HandleMessage (the engine
// holds no lock, and does not wait for itself, while a Handler runs).
func testReentrantPublish(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, a, "pong")
	hook := func(channel string, data []byte) {
		if channel != "ping" {
			return
		}
		reply := append([]byte("pong "), data...)
		if err := b.Publish(context.Background(), "pong", reply); err != nil {
			t.Errorf("Publish from a Handler: %v", err)
		}
	}
	rb.hook.Store(&hook)
	mustSubscribe(t, b, "ping")
	for i := range 10 {
		mustPublish(t, a, "ping", []byte(strconv.Itoa(i)))
	}
	got := ra.waitCount(t, "pong", 10)
	for i, d := range got {
		if want := "pong " + strconv.Itoa(i); string(d) != want {
			t.Errorf("reply %d is %q, want %q", i, d, want)
		}
	}
}

// testClose: Close stops deliveries to the node, later calls return ErrClosed, and the
// other nodes carry on.
func testClose(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	d, rd := c.node("d")
	mustSubscribe(t, a, "x")
	mustSubscribe(t, b, "x")
	mustSubscribe(t, d, "x")

	mustPublish(t, a, "x", []byte("before"))
	rb.waitCount(t, "x", 1)

	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	_, _, lastOK, lastErr := b.Last(ctx, "x")
	for name, err := range map[string]error{
		"Publish":        b.Publish(ctx, "x", []byte("closed")),
		"PublishKeep":    b.PublishKeep(ctx, "x", []byte("closed"), time.Minute),
		"PublishControl": b.PublishControl(ctx, []byte("closed")),
		"Last":           lastErr,
		"Subscribe":      b.Subscribe(ctx, "y"),
		"Subscribe many": b.Subscribe(ctx, "y", "z"),
		"Unsubscribe":    b.Unsubscribe(ctx, "x"),
		"Close":          b.Close(context.Background()),
	} {
		if !errors.Is(err, pubsub.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if lastOK {
		t.Errorf("Last after Close: ok")
	}
	if st := b.Stats(); st.Up {
		t.Errorf("Stats after Close: Up, want down")
	}

	mustPublish(t, a, "x", []byte("after"))
	ra.waitFor(t, `"after" at a`, func(ms []message) bool { return count(ms, "x", []byte("after")) == 1 })
	rd.waitFor(t, `"after" at d`, func(ms []message) bool { return count(ms, "x", []byte("after")) == 1 })
	c.barrier(a, rd, "x")
	never(t, rb, "x", []byte("after"))
	never(t, ra, "x", []byte("closed"))
	never(t, rd, "x", []byte("closed"))
}

// testCancelledContext: every method fails fast on a done context, with an error that
// says so, and the broker still works afterwards.
func testCancelledContext(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	mustSubscribe(t, a, "x")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel2()

	for _, tc := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		_, _, _, lastErr := a.Last(tc.ctx, "x")
		for name, err := range map[string]error{
			"Publish":        a.Publish(tc.ctx, "x", []byte("cancelled")),
			"PublishKeep":    a.PublishKeep(tc.ctx, "x", []byte("cancelled"), time.Minute),
			"PublishControl": a.PublishControl(tc.ctx, []byte("cancelled")),
			"Last":           lastErr,
			"Subscribe":      a.Subscribe(tc.ctx, "y"),
			"Unsubscribe":    a.Unsubscribe(tc.ctx, "x"),
		} {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s with a done context: %v, want %v", name, err, tc.want)
			}
		}
	}

	// The failed Unsubscribe left x subscribed, and the failed Publish sent nothing:
	// "fine" comes after where "cancelled" would have been.
	mustPublish(t, a, "x", []byte("fine"))
	ra.waitFor(t, `"fine"`, func(ms []message) bool { return count(ms, "x", []byte("fine")) == 1 })
	never(t, ra, "x", []byte("cancelled"))
	if _, _, ok := mustLast(t, a, "x"); ok {
		t.Errorf("a PublishKeep with a done context kept its message")
	}
	if got := a.Stats(); got.Published != 1 || got.Subscriptions != 1 {
		t.Errorf("Stats: %+v, want 1 published (the failed calls do not count) and 1 subscription", got)
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if len(ra.ctrl) != 0 {
		t.Errorf("a PublishControl with a done context delivered %q", ra.ctrl)
	}
}

// mustKeep publishes with PublishKeep.
func mustKeep(t *testing.T, b pubsub.Broker, channel string, data []byte, ttl time.Duration) {
	t.Helper()
	if err := b.PublishKeep(context.Background(), channel, data, ttl); err != nil {
		t.Fatalf("PublishKeep(%q, %q, %v): %v", channel, data, ttl, err)
	}
}

// mustLast reads with Last.
func mustLast(t *testing.T, b pubsub.Broker, channel string) ([]byte, time.Duration, bool) {
	t.Helper()
	data, ttl, ok, err := b.Last(context.Background(), channel)
	if err != nil {
		t.Fatalf("Last(%q): %v", channel, err)
	}
	return data, ttl, ok
}

// testCloseDoneContext: Close with a context that is already done still closes the
// broker (what it does not do is wait for the engine's goroutines): later calls return
// ErrClosed and nothing more is delivered to it.
func testCloseDoneContext(t *testing.T, c *cluster) {
	a, ra := c.node("a")
	b, rb := c.node("b")
	mustSubscribe(t, a, "x")
	mustSubscribe(t, b, "x")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Close(cancelled); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Close with a done context: %v, want nil or context.Canceled", err)
	}
	if err := b.Publish(context.Background(), "x", []byte("closed")); !errors.Is(err, pubsub.ErrClosed) {
		t.Errorf("Publish after Close with a done context: %v, want ErrClosed", err)
	}
	if err := b.Close(context.Background()); !errors.Is(err, pubsub.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
	mustPublish(t, a, "x", []byte("after"))
	ra.waitFor(t, `"after"`, func(ms []message) bool { return count(ms, "x", []byte("after")) == 1 })
	c.barrier(a, ra, "x")
	never(t, rb, "x", []byte("after"))
}

// testControl: every node gets every control message exactly once, the publisher
// included and whatever it subscribed to, in order per publisher; control messages and
// channel messages never cross, whatever the channels are called.
func testControl(t *testing.T, c *cluster) {
	const n = 100
	a, ra := c.node("a")
	b, rb := c.node("b")
	d, rd := c.node("d")
	mustSubscribe(t, a, "x")
	// b subscribes to nothing; d to names an engine might give its control channel.
	mustSubscribe(t, d, "ctl", "control", "")
	for i := range n {
		for _, p := range []struct {
			name string
			b    pubsub.Broker
		}{{"a", a}, {"b", b}} {
			if err := p.b.PublishControl(context.Background(), []byte(p.name+"/"+strconv.Itoa(i))); err != nil {
				t.Fatalf("PublishControl from %s: %v", p.name, err)
			}
		}
	}
	for _, ch := range []string{"ctl", "control", ""} {
		mustPublish(t, a, ch, []byte("not control"))
	}
	// An end marker from each publisher: once it is in, every earlier one is.
	for _, p := range []struct {
		name string
		b    pubsub.Broker
	}{{"a", a}, {"b", b}} {
		if err := p.b.PublishControl(context.Background(), []byte(p.name+"/end")); err != nil {
			t.Fatalf("PublishControl from %s: %v", p.name, err)
		}
	}
	for _, r := range []*recorder{ra, rb, rd} {
		r.waitControl(t, "both end markers", func(ms [][]byte) bool {
			return slices.ContainsFunc(ms, func(m []byte) bool { return string(m) == "a/end" }) &&
				slices.ContainsFunc(ms, func(m []byte) bool { return string(m) == "b/end" })
		})
	}
	for _, ch := range []string{"ctl", "control", ""} {
		rd.waitFor(t, fmt.Sprintf("the message on %q", ch), func(ms []message) bool {
			return count(ms, ch, []byte("not control")) == 1
		})
	}
	for _, r := range []*recorder{ra, rb, rd} {
		next := map[string]int{"a": 0, "b": 0}
		for _, m := range r.control() {
			p, seq, ok := strings.Cut(string(m), "/")
			want, known := next[p]
			if !ok || !known {
				t.Errorf("node %s: unexpected control message %q", r.name, m)
				continue
			}
			if seq == "end" {
				if want != n {
					t.Errorf("node %s: end marker of %s after %d of its %d messages", r.name, p, want, n)
				}
				next[p] = -1
				continue
			}
			if i, err := strconv.Atoi(seq); err != nil || i != want {
				t.Errorf("node %s: control message %q from %s, want %d (lost, duplicated or out of order)", r.name, m, p, want)
				break
			}
			next[p]++
		}
		r.mu.Lock()
		for _, m := range r.msgs {
			if string(m.data) != "not control" && !strings.HasPrefix(string(m.data), "marker-") {
				t.Errorf("node %s: control message %q delivered as a message on %q", r.name, m.data, m.channel)
			}
		}
		r.mu.Unlock()
	}
	for _, r := range []*recorder{ra, rb, rd} {
		for _, m := range r.control() {
			if string(m) == "not control" {
				t.Errorf("node %s: a channel message delivered as a control message", r.name)
			}
		}
	}
}

// testKeep: a kept message is readable from any node for about its ttl, which counts
// down; a later one replaces it; Last's data is the caller's; and the message is kept
// before it is sent, so a node that receives it and reads Last finds it or a later one.
func testKeep(t *testing.T, c *cluster) {
	const ttl = 5 * time.Second
	a, _ := c.node("a")
	b, rb := c.node("b")
	if _, _, ok := mustLast(t, b, "k"); ok {
		t.Fatalf("Last of a channel never kept: ok")
	}

	versions := []string{"v1", "v2", "v3"}
	var seenMu sync.Mutex
	var seen []string // what Last returned from inside the Handler, per delivery
	hook := func(channel string, data []byte) {
		if channel != "k" {
			return
		}
		last, _, ok, err := b.Last(context.Background(), "k")
		seenMu.Lock()
		defer seenMu.Unlock()
		switch {
		case err != nil:
			t.Errorf("Last from the Handler: %v", err)
		case !ok:
			t.Errorf("Last from the Handler, on receiving %q: nothing kept", data)
		case slices.Index(versions, string(last)) < slices.Index(versions, string(data)):
			t.Errorf("Last from the Handler, on receiving %q: %q, an older one", data, last)
		}
		seen = append(seen, string(last))
	}
	rb.hook.Store(&hook)
	mustSubscribe(t, b, "k")

	start := time.Now()
	mustKeep(t, a, "k", []byte("v1"), ttl)
	data, left, ok := mustLast(t, b, "k")
	elapsed := time.Since(start)
	if !ok || string(data) != "v1" {
		t.Fatalf("Last after PublishKeep: %q ok=%v, want v1", data, ok)
	}
	// Kept at some point within elapsed, for ttl; engines count in milliseconds.
	if left > ttl || left < ttl-elapsed-10*time.Millisecond {
		t.Errorf("Last's ttl %v, want within [%v, %v]", left, ttl-elapsed, ttl)
	}
	time.Sleep(20 * time.Millisecond)
	_, left2, ok := mustLast(t, b, "k")
	if !ok || left2 >= left {
		t.Errorf("ttl %v then %v 20ms later, want it counting down", left, left2)
	}

	data[0] = 'X' // the caller's to modify
	if again, _, _ := mustLast(t, a, "k"); string(again) != "v1" {
		t.Errorf("Last after modifying an earlier result: %q, want v1", again)
	}

	mustKeep(t, a, "k", []byte("v2"), ttl)
	mustKeep(t, b, "k", []byte("v3"), ttl)
	for _, n := range []pubsub.Broker{a, b} {
		if data, _, ok := mustLast(t, n, "k"); !ok || string(data) != "v3" {
			t.Errorf("Last after a later PublishKeep: %q ok=%v, want v3", data, ok)
		}
	}
	got := rb.waitCount(t, "k", 3)
	for i, d := range got {
		if string(d) != versions[i] {
			t.Errorf("message %d on k: %q, want %q", i, d, versions[i])
		}
	}
	// The recorder keeps a message before running the hook: wait for the last hook.
	for deadline := time.Now().Add(Timeout); ; time.Sleep(time.Millisecond) {
		seenMu.Lock()
		n := len(seen)
		seenMu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Handler read Last %d times, want 3", n)
		}
	}

	// Keys are as opaque as channels, and a plain Publish keeps nothing.
	mustKeep(t, a, "news.*", []byte("kept"), ttl)
	for _, ch := range []string{"news.sport", "news", "K", "k2"} {
		if data, _, ok := mustLast(t, b, ch); ok {
			t.Errorf("Last(%q) = %q, want nothing kept", ch, data)
		}
	}
	mustPublish(t, a, "plain", []byte("not kept"))
	if data, _, ok := mustLast(t, b, "plain"); ok {
		t.Errorf("Last after a plain Publish = %q, want nothing kept", data)
	}

	// Names an engine might mangle when it builds keys from them.
	for _, ch := range []string{"", "}", "{x}", "a\x00b", "é世"} {
		mustSubscribe(t, b, ch)
		mustKeep(t, a, ch, []byte("kept on "+ch), ttl)
		if data, _, ok := mustLast(t, b, ch); !ok || string(data) != "kept on "+ch {
			t.Errorf("Last(%q) = %q ok=%v, want %q", ch, data, ok, "kept on "+ch)
		}
		rb.waitFor(t, fmt.Sprintf("the kept message on %q", ch), func(ms []message) bool {
			return count(ms, ch, []byte("kept on "+ch)) == 1
		})
	}
}

// testKeepExpiry: a kept message is gone once its ttl is over, not before.
func testKeepExpiry(t *testing.T, c *cluster) {
	const ttl = 300 * time.Millisecond
	a, _ := c.node("a")
	b, _ := c.node("b")
	start := time.Now()
	mustKeep(t, a, "e", []byte("short"), ttl)
	data, left, ok := mustLast(t, b, "e")
	switch {
	case ok && (string(data) != "short" || left <= 0 || left > ttl):
		t.Errorf("Last: %q with ttl %v, want %q within (0, %v]", data, left, "short", ttl)
	case !ok && time.Since(start) < ttl:
		t.Errorf("kept message gone %v after PublishKeep, before its ttl %v", time.Since(start), ttl)
	}
	for {
		_, _, ok := mustLast(t, b, "e")
		if !ok {
			if since := time.Since(start); since < ttl {
				t.Errorf("kept message gone %v after PublishKeep, before its ttl %v", since, ttl)
			}
			break
		}
		if time.Since(start) > ttl+Timeout {
			t.Fatalf("kept message still there %v after PublishKeep with ttl %v", time.Since(start), ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, ok := mustLast(t, a, "e"); ok {
		t.Errorf("expired message still readable from the publishing node")
	}
}

// testStats: the counters count what the contract says, and Subscriptions follows
// Subscribe and Unsubscribe, duplicates aside.
func testStats(t *testing.T, c *cluster) {
	ctx := context.Background()
	a, ra := c.node("a")
	b, rb := c.node("b")
	first := a.Stats()
	if first.Engine == "" || !first.Up || first.Subscriptions != 0 || first.Published != 0 || first.Received != 0 {
		t.Errorf("Stats of a new node: %+v, want a named engine, up, and zero counters", first)
	}

	mustSubscribe(t, b, "x", "y")
	if err := b.Subscribe(ctx, "x", "x", "y"); err != nil {
		t.Fatal(err)
	}
	if n := b.Stats().Subscriptions; n != 2 {
		t.Errorf("Subscriptions after subscribing x, y and x, x, y again: %d, want 2", n)
	}
	if err := b.Unsubscribe(ctx, "y", "never", "y"); err != nil {
		t.Fatal(err)
	}
	if n := b.Stats().Subscriptions; n != 1 {
		t.Errorf("Subscriptions after unsubscribing y and an unknown channel: %d, want 1", n)
	}

	for i := range 3 {
		mustPublish(t, a, "x", []byte(strconv.Itoa(i)))
	}
	mustPublish(t, a, "nobody", []byte("published all the same"))
	mustKeep(t, a, "x", []byte("kept"), time.Minute)
	if err := a.PublishControl(ctx, []byte("control")); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_ = a.Publish(cancelled, "x", []byte("failed"))
	_ = a.PublishControl(cancelled, []byte("failed"))
	_ = a.PublishKeep(cancelled, "x", []byte("failed"), time.Minute)

	rb.waitCount(t, "x", 4)
	for _, r := range []*recorder{ra, rb} {
		r.waitControl(t, "the control message", func(ms [][]byte) bool { return len(ms) == 1 })
	}
	if got := a.Stats(); got.Published != 6 || got.Received != 1 {
		t.Errorf("publisher's Stats: %+v, want 6 published (3 on x, 1 on nobody, 1 kept, 1 control) and 1 received (control)", got)
	}
	if got := b.Stats(); got.Received != 5 || got.Published != 0 || got.Subscriptions != 1 || !got.Up {
		t.Errorf("subscriber's Stats: %+v, want up, 1 subscription, 5 received (3 on x, 1 kept, 1 control), 0 published", got)
	}
	if a.Stats().Engine != first.Engine || b.Stats().Engine != first.Engine {
		t.Errorf("Engine changed: %q, then %q and %q", first.Engine, a.Stats().Engine, b.Stats().Engine)
	}
}

// testVariadic: one Subscribe or Unsubscribe call takes many channels (more than an
// engine would put in one command), duplicates, or none.
func testVariadic(t *testing.T, c *cluster) {
	const n = 1500
	ctx := context.Background()
	a, _ := c.node("a")
	b, rb := c.node("b")
	chs := make([]string, n)
	for i := range chs {
		chs[i] = "v-" + strconv.Itoa(i)
	}
	if err := b.Subscribe(ctx); err != nil {
		t.Errorf("Subscribe of no channel: %v", err)
	}
	if err := b.Unsubscribe(ctx); err != nil {
		t.Errorf("Unsubscribe of no channel: %v", err)
	}
	if err := b.Subscribe(ctx, slices.Concat(chs, []string{chs[0], "marker"})...); err != nil {
		t.Fatalf("Subscribe of %d channels: %v", n+2, err)
	}
	if got := b.Stats().Subscriptions; got != n+1 {
		t.Errorf("Subscriptions: %d, want %d", got, n+1)
	}
	for _, ch := range chs {
		mustPublish(t, a, ch, []byte("first"))
	}
	rb.waitFor(t, "one message on each channel", func(ms []message) bool { return len(ms) >= n })
	for _, ch := range []string{chs[0], chs[n/2], chs[n-1]} {
		exactlyOnce(t, rb, ch, []byte("first"))
	}

	// Unsubscribe all but the last 100, with duplicates, in one call.
	if err := b.Unsubscribe(ctx, slices.Concat(chs[:n-100], []string{chs[0], "never"})...); err != nil {
		t.Fatalf("Unsubscribe of %d channels: %v", n-100, err)
	}
	if got := b.Stats().Subscriptions; got != 101 {
		t.Errorf("Subscriptions: %d, want 101", got)
	}
	for _, ch := range chs {
		mustPublish(t, a, ch, []byte("second"))
	}
	c.barrier(a, rb, "marker")
	rb.waitFor(t, "the second message on the channels kept", func(ms []message) bool {
		return count(ms, chs[n-1], []byte("second")) == 1
	})
	rb.mu.Lock()
	got := 0
	for _, m := range rb.msgs {
		if string(m.data) != "second" {
			continue
		}
		if i, _ := strconv.Atoi(strings.TrimPrefix(m.channel, "v-")); i < n-100 {
			t.Errorf("received on %q after unsubscribing it", m.channel)
		}
		got++
	}
	rb.mu.Unlock()
	if got != 100 {
		t.Errorf("%d second messages, want 100", got)
	}
}
