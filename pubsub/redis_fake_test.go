package pubsub_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-rt/herald/pubsub"
)

// fakeRedis speaks just enough RESP2 for the engine: HELLO is refused (so go-redis stays
// on RESP2), SUBSCRIBE, UNSUBSCRIBE and PUBLISH work, anything else is +OK. inject sends
// raw bytes to every subscriber connection, as if Redis had sent them.
type fakeRedis struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[*fakeConn]bool
}

type fakeConn struct {
	net.Conn
	wmu  sync.Mutex // serialises the connection's own replies and what others send it
	subs map[string]bool
}

func (c *fakeConn) send(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = io.WriteString(c.Conn, s)
}

func startFakeRedis(t *testing.T) *fakeRedis {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln, conns: make(map[*fakeConn]bool)}
	f.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := &fakeConn{Conn: nc, subs: make(map[string]bool)}
			f.mu.Lock()
			f.conns[c] = true
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeRedis) serve(c *fakeConn) {
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		_ = c.Close()
	}()
	rd := bufio.NewReader(c)
	for {
		args, err := readCommand(rd)
		if err != nil {
			return
		}
		switch strings.ToUpper(args[0]) {
		case "HELLO":
			c.send("-ERR unknown command 'HELLO'\r\n")
		case "SUBSCRIBE", "UNSUBSCRIBE":
			kind := strings.ToLower(args[0])
			var out strings.Builder
			f.mu.Lock()
			for _, ch := range args[1:] {
				if kind == "subscribe" {
					c.subs[ch] = true
				} else {
					delete(c.subs, ch)
				}
				fmt.Fprintf(&out, "*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:%d\r\n", len(kind), kind, len(ch), ch, len(c.subs))
			}
			f.mu.Unlock()
			c.send(out.String())
		case "PUBLISH":
			msg := fmt.Sprintf("*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(args[1]), args[1], len(args[2]), args[2])
			n := 0
			f.mu.Lock()
			for sc := range f.conns {
				if sc.subs[args[1]] {
					sc.send(msg)
					n++
				}
			}
			f.mu.Unlock()
			c.send(":" + strconv.Itoa(n) + "\r\n")
		default:
			c.send("+OK\r\n")
		}
	}
}

// inject sends raw to every connection that subscribed to something.
func (f *fakeRedis) inject(raw string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		if len(c.subs) > 0 {
			c.send(raw)
		}
	}
}

// readCommand reads one command as go-redis sends it: an array of bulk strings.
func readCommand(rd *bufio.Reader) ([]string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array: %q", line)
	}
	args := make([]string, n)
	for i := range args {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad bulk: %q", line)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:size])
	}
	return args, nil
}

func bulk(s string) string { return "$" + strconv.Itoa(len(s)) + "\r\n" + s + "\r\n" }

// TestRedisMalformedReplies: whatever a server sends on a subscriber connection, the
// engine does not panic. What it does not know, it skips, and the connection carries on;
// what leaves the connection in a state it cannot trust, it answers by reconnecting.
func TestRedisMalformedReplies(t *testing.T) {
	f := startFakeRedis(t)
	h := newEvents()
	b := newRedis(t, fastConfig(newClient(t, f.ln.Addr().String(), 2), "bad", "n1"), h)
	ctx := context.Background()
	if err := b.Subscribe(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	x := "bad:c:{x}"
	publishUntilDelivered(t, b, h, "x", "first")

	skipped := []struct{ name, raw string }{
		{"unknown kind", "*3\r\n" + bulk("foo") + bulk("a") + bulk("b")},
		{"integer", ":42\r\n"},
		{"nil", "$-1\r\n"},
		{"simple string", "+OK\r\n"},
		{"integer payload", "*3\r\n" + bulk("message") + bulk(x) + ":5\r\n"},
		{"array payload", "*3\r\n" + bulk("message") + bulk(x) + "*1\r\n" + bulk("q")},
		{"pattern message", "*4\r\n" + bulk("pmessage") + bulk("*") + bulk(x) + bulk("pattern")},
		{"message on a channel not subscribed", "*3\r\n" + bulk("message") + bulk("bad:c:{y}") + bulk("not for us")},
		{"unsubscribe of an unknown channel", "*3\r\n" + bulk("unsubscribe") + bulk("bad:c:{z}") + ":1\r\n"},
		{"psubscribe", "*3\r\n" + bulk("psubscribe") + bulk("*") + ":1\r\n"},
	}
	for i, tc := range skipped {
		before := b.BadMessages()
		f.inject(tc.raw)
		data := "after " + strconv.Itoa(i)
		publishUntilDelivered(t, b, h, "x", data)
		if tc.name != "message on a channel not subscribed" && tc.name != "unsubscribe of an unknown channel" && b.BadMessages() == before {
			t.Errorf("%s: not counted as a bad message", tc.name)
		}
		h.noState(t)
	}
	checkStats(t, b, true, 1, 0)

	fatal := []struct{ name, raw string }{
		{"empty array", "*0\r\n"},
		{"non-string kind", "*1\r\n:1\r\n"},
		{"short message", "*2\r\n" + bulk("message") + bulk(x)},
		{"non-string channel", "*3\r\n" + bulk("message") + ":1\r\n" + bulk("data")},
		{"error reply to nothing", "-ERR boom\r\n"},
		{"confirmation of nothing", "*3\r\n" + bulk("subscribe") + bulk("bad:c:{zzz}") + ":1\r\n"},
		{"not RESP", "?garbage\r\n"},
	}
	for i, tc := range fatal {
		f.inject(tc.raw)
		select {
		case s := <-h.states:
			if s.up {
				t.Fatalf("%s: HandleBrokerState(true) first", tc.name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the connection was kept", tc.name)
		}
		h.waitState(t, true, 5*time.Second)
		publishUntilDelivered(t, b, h, "x", "recovered "+strconv.Itoa(i))
	}
	checkStats(t, b, true, 1, uint64(len(fatal)))
	for _, err := range []error{b.Publish(ctx, "x", nil), b.PublishControl(ctx, nil)} {
		if err != nil && !errors.Is(err, pubsub.ErrUnavailable) {
			t.Error(err)
		}
	}
}
