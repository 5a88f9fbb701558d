package pubsub

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// bare is an engine with one shard and a connection that no goroutine serves: the test
// plays the writer (batch) and the receiver (confirm, deliver), one step at a time.
type bare struct {
	t *testing.T
	r *Redis
	s *shard
	c *subConn
}

func newBare(t *testing.T, h Handler) *bare {
	r := &Redis{
		handler: h, log: slog.New(slog.DiscardHandler), engine: "redis",
		chanPrefix: "p:c:{", lastPrefix: "p:last:{", ctlName: "p:ctl", probePrefix: "p:probe:n",
		topoKick: make(chan struct{}, 1), firstUp: make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	s := &shard{r: r, addr: "bare", stop: make(chan struct{}), kick: make(chan struct{}, 1), chans: make(map[string]*chanState)}
	r.topo.Store(&topology{shards: []*shard{s}})
	c := newSubConn()
	r.mu.Lock()
	s.conn = c
	r.setShardUpLocked(s, true)
	r.mu.Unlock()
	return &bare{t, r, s, c}
}

// batch is what the writer would send now.
func (b *bare) batch() []*command {
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	return b.s.takeBatchLocked(b.c)
}

// wantBatch checks the next batch: one command of the given kind for the channels.
func (b *bare) wantBatch(unsub bool, channels ...string) {
	b.t.Helper()
	cmds := b.batch()
	if len(channels) == 0 {
		if len(cmds) != 0 {
			b.t.Fatalf("batch: %d commands, want none", len(cmds))
		}
		return
	}
	if len(cmds) != 1 || cmds[0].unsub != unsub || len(cmds[0].names) != len(channels) {
		b.t.Fatalf("batch: %+v, want one command (unsub=%v) for %q", cmds, unsub, channels)
	}
	for i, ch := range channels {
		if cmds[0].names[i] != "p:c:{"+ch+"}" {
			b.t.Fatalf("batch: channel %d is %q, want %q", i, cmds[0].names[i], ch)
		}
	}
}

// confirm is Redis answering for channel.
func (b *bare) confirm(kind, channel string) error {
	return b.s.onSubscription(b.c, &redis.Subscription{Kind: kind, Channel: "p:c:{" + channel + "}"})
}

func (b *bare) mustConfirm(kind, channel string) {
	b.t.Helper()
	if err := b.confirm(kind, channel); err != nil {
		b.t.Fatalf("%s %s: %v", kind, channel, err)
	}
}

// deliver is Redis sending a message on channel.
func (b *bare) deliver(channel, payload string) {
	b.s.onMessage(b.c, &redis.Message{Channel: "p:c:{" + channel + "}", Payload: payload})
}

// subscribeAsync calls Subscribe in a goroutine and returns once it is waiting.
func (b *bare) subscribeAsync(channel string) <-chan error {
	b.t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.r.Subscribe(context.Background(), channel) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		b.r.mu.RLock()
		st := b.s.chans["p:c:{"+channel+"}"]
		waiting := st != nil && len(st.waiters) > 0
		b.r.mu.RUnlock()
		if waiting {
			return done
		}
		if time.Now().After(deadline) {
			b.t.Fatal("Subscribe never waited")
		}
	}
}

func returned(done <-chan error, within time.Duration) (error, bool) {
	select {
	case err := <-done:
		return err, true
	case <-time.After(within):
		return nil, false
	}
}

type log struct {
	mu   sync.Mutex
	msgs []string
}

func (l *log) HandleMessage(channel string, data []byte) {
	l.mu.Lock()
	l.msgs = append(l.msgs, channel+"="+string(data))
	l.mu.Unlock()
}
func (l *log) HandleControl([]byte)   {}
func (l *log) HandleBrokerState(bool) {}

func (l *log) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// TestSubscribeWaitsForItsOwnConfirmation: SUBSCRIBE x, UNSUBSCRIBE x, SUBSCRIBE x; the
// reply to the UNSUBSCRIBE must not pass for the confirmation of the second SUBSCRIBE,
// and nothing is delivered on x between the two.
func TestSubscribeWaitsForItsOwnConfirmation(t *testing.T) {
	var l log
	b := newBare(t, &l)
	ctx := context.Background()

	done := b.subscribeAsync("x")
	b.wantBatch(false, "x")
	if _, ok := returned(done, 20*time.Millisecond); ok {
		t.Fatal("Subscribe returned before Redis confirmed")
	}
	b.mustConfirm("subscribe", "x")
	if err, ok := returned(done, time.Second); !ok || err != nil {
		t.Fatalf("Subscribe after the confirmation: %v (returned: %v)", err, ok)
	}
	b.deliver("x", "m1")

	if err := b.r.Unsubscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	b.deliver("x", "m2") // published before Redis got the UNSUBSCRIBE: dropped
	b.wantBatch(true, "x")
	done = b.subscribeAsync("x")
	b.wantBatch(false, "x")
	b.mustConfirm("unsubscribe", "x")
	if _, ok := returned(done, 20*time.Millisecond); ok {
		t.Fatal("the second Subscribe returned on the reply to the UNSUBSCRIBE")
	}
	b.deliver("x", "m3") // cannot happen on a real server, and must not be delivered
	b.mustConfirm("subscribe", "x")
	if err, ok := returned(done, time.Second); !ok || err != nil {
		t.Fatalf("second Subscribe after its confirmation: %v (returned: %v)", err, ok)
	}
	b.deliver("x", "m4")

	// Unsubscribe then Subscribe before the writer ran: no command, no wait.
	if err := b.r.Unsubscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.r.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	b.wantBatch(false)
	b.deliver("x", "m5")

	if got := l.got(); len(got) != 3 || got[0] != "x=m1" || got[1] != "x=m4" || got[2] != "x=m5" {
		t.Errorf("delivered %q, want x=m1, x=m4, x=m5", got)
	}

	// Unsubscribed and confirmed: forgotten.
	if err := b.r.Unsubscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	b.wantBatch(true, "x")
	b.mustConfirm("unsubscribe", "x")
	if n := len(b.s.chans); n != 0 {
		t.Errorf("%d channel states left, want 0", n)
	}
}

// TestConfirmationsMatchCommands: answers are matched with commands in order, a
// subscribe confirmation that matches none ends the connection, and an unsubscribe
// that matches none (the server dropping a subscription) makes the engine subscribe
// again.
func TestConfirmationsMatchCommands(t *testing.T) {
	var l log
	b := newBare(t, &l)
	ctx := context.Background()
	if err := b.r.Unsubscribe(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	d1 := b.subscribeAsync("a")
	d2 := b.subscribeAsync("b")
	b.wantBatch(false, "a", "b")
	if err := b.confirm("subscribe", "b"); err == nil {
		t.Error("a confirmation out of order was taken")
	}
	b.mustConfirm("subscribe", "a")
	b.mustConfirm("subscribe", "b")
	for _, d := range []<-chan error{d1, d2} {
		if err, ok := returned(d, time.Second); !ok || err != nil {
			t.Fatalf("Subscribe: %v (returned: %v)", err, ok)
		}
	}
	b.mustConfirm("unsubscribe", "a") // the server dropped a
	b.deliver("a", "lost")
	b.wantBatch(false, "a")
	b.mustConfirm("subscribe", "a")
	b.deliver("a", "back")
	if got := l.got(); len(got) != 1 || got[0] != "a=back" {
		t.Errorf("delivered %q, want a=back", got)
	}
	b.mustConfirm("unsubscribe", "unknown") // nothing held: ignored
}

type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// TestErrorReplies: a refused SUBSCRIBE ends the connection (the engine would not know
// what it holds); a refused UNSUBSCRIBE is as good as done.
func TestErrorReplies(t *testing.T) {
	b := newBare(t, nil)
	ctx := context.Background()
	done := b.subscribeAsync("x")
	b.wantBatch(false, "x")
	if err := b.s.onErrorReply(b.c, replyError("ERR boom")); err == nil {
		t.Error("a refused SUBSCRIBE did not end the connection")
	}
	// What the supervisor does next: the waiting Subscribe learns the path is down.
	b.r.mu.Lock()
	b.s.downLocked(ErrUnavailable)
	b.r.mu.Unlock()
	if err, ok := returned(done, time.Second); !ok || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Subscribe when its connection failed: %v (returned: %v), want ErrUnavailable", err, ok)
	}

	b = newBare(t, nil)
	done = b.subscribeAsync("y")
	b.wantBatch(false, "y")
	b.mustConfirm("subscribe", "y")
	if err, _ := returned(done, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.r.Unsubscribe(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	b.wantBatch(true, "y")
	if err := b.s.onErrorReply(b.c, replyError("MOVED 1 127.0.0.1:1")); err != nil {
		t.Errorf("a refused UNSUBSCRIBE ended the connection: %v", err)
	}
	if n := len(b.s.chans); n != 0 {
		t.Errorf("%d channel states left, want 0", n)
	}
	if err := b.s.onErrorReply(b.c, replyError("ERR nothing in flight")); err == nil {
		t.Error("an error reply with no command in flight was taken")
	}
}

type nopH struct{}

func (nopH) HandleMessage(string, []byte) {}
func (nopH) HandleControl([]byte)         {}
func (nopH) HandleBrokerState(bool)       {}

// TestReceivePathAllocs pins the engine's part of the receive path: from go-redis's
// message to the Handler, nothing is allocated (go-redis's parsing is measured by
// BenchmarkRedisReceive).
func TestReceivePathAllocs(t *testing.T) {
	b := newBare(t, nopH{})
	done := b.subscribeAsync("app-1:chat")
	b.wantBatch(false, "app-1:chat")
	b.mustConfirm("subscribe", "app-1:chat")
	if err, _ := returned(done, time.Second); err != nil {
		t.Fatal(err)
	}
	msg := &redis.Message{Channel: "p:c:{app-1:chat}", Payload: `{"event":"message","channel":"chat","data":"hi"}`}
	dropped := &redis.Message{Channel: "p:c:{other}", Payload: "x"}
	allocs := testing.AllocsPerRun(1000, func() {
		b.s.onMessage(b.c, msg)
		b.s.onMessage(b.c, dropped)
	})
	if allocs != 0 {
		t.Errorf("receive path allocates %v times per message, want 0", allocs)
	}
	if got := b.r.received.Load(); got != 1001 {
		t.Errorf("%d messages received, want 1001", got)
	}
}

// TestKeySlot checks the slot function against the examples of the Redis Cluster
// specification (TestRedisKeySlot checks it against a real cluster).
func TestKeySlot(t *testing.T) {
	if c := crc16("123456789"); c != 0x31C3 {
		t.Errorf("crc16(123456789) = %#x, want 0x31c3", c)
	}
	for _, tc := range []struct{ key, hashed string }{
		{"{user1000}.following", "user1000"},
		{"{user1000}.followers", "user1000"},
		{"foo{}{bar}", "foo{}{bar}"},
		{"foo{{bar}}zap", "{bar"},
		{"foo{bar}{zap}", "bar"},
		{"no tag", "no tag"},
		{"{unclosed", "{unclosed"},
		{"", ""},
	} {
		want := int(crc16(tc.hashed)) & (numSlots - 1)
		if got := keySlot(tc.key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d (the slot of %q)", tc.key, got, want, tc.hashed)
		}
		if got := keySlot([]byte(tc.key)); got != want {
			t.Errorf("keySlot([]byte(%q)) = %d, want %d", tc.key, got, want)
		}
	}
}

// TestSlotTagCoversEverySlot: the tags slotTag tries reach every slot, so every shard
// gets a probe channel.
func TestSlotTagCoversEverySlot(t *testing.T) {
	var seen [numSlots]bool
	left := numSlots
	for i := range 1 << 20 {
		if s := keySlot("{" + strconv.Itoa(i) + "}"); !seen[s] {
			seen[s] = true
			left--
		}
	}
	if left != 0 {
		t.Fatalf("%d slots not reached by any tag", left)
	}
	for _, want := range []int{0, 1, 8191, numSlots - 1} {
		tag, ok := slotTag(func(slot int) bool { return slot == want })
		if !ok || keySlot("p:probe:n:{"+tag+"}") != want {
			t.Errorf("slotTag for slot %d: %q, %v", want, tag, ok)
		}
	}
}
