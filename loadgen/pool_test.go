package loadgen

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "loadgen-test-")
	if err != nil {
		panic(err)
	}
	testTmp = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

func startPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dialAll(t *testing.T, p *Pool, n int, subscribed bool) Counts {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	if err := p.Dial(ctx, n); err != nil {
		t.Fatal(err)
	}
	c, err := p.WaitCounts(ctx, func(c Counts) bool {
		if c.Failed > 0 {
			return true
		}
		if subscribed {
			return c.Subscribed == int64(n)
		}
		return c.Established == int64(n)
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Failed > 0 {
		s, _ := p.Stats(ctx, 0, 0)
		t.Fatalf("%d connections failed: %s", c.Failed, s.ReasonsString())
	}
	return c
}

func TestPoolSubscribeAndDeliver(t *testing.T) {
	srv := newFakeServer(t)
	const n = 300
	p := startPool(t, Config{
		Addr: srv.addr(), Key: srv.key, Secret: srv.secret, Loops: 2, MaxHandshakes: 64,
		Channels: func(id uint64) []string {
			chans := []string{"bench"}
			if id%2 == 0 {
				chans = append(chans, "private-a")
			}
			if id%3 == 0 {
				chans = append(chans, "presence-p")
			}
			return chans
		},
	})
	dialAll(t, p, n, true)
	srv.mu.Lock()
	bad := srv.badAuth
	srv.mu.Unlock()
	if bad != 0 {
		t.Fatalf("server refused %d signatures", bad)
	}
	if got := len(srv.subscribers("private-a")); got != n/2 {
		t.Fatalf("private-a has %d subscribers, want %d", got, n/2)
	}
	if got := len(srv.subscribers("presence-p")); got != n/3 {
		t.Fatalf("presence-p has %d subscribers, want %d", got, n/3)
	}

	// 1, 2, 3, 3 (duplicate), 5, 4 (reordered), 7: seq 6 is missing.
	for _, seq := range []uint64{1, 2, 3, 3, 5, 4, 7} {
		srv.publish(t, "bench", seqEvent("bench", seq))
	}
	srv.publish(t, "private-a", `{"event":"other","channel":"private-a","data":"not sequenced"}`)
	waitFor(t, "deliveries", func() bool { return p.Delivered() == 7*n })
	if c, last := p.SeqDeliveries(3); c != 2*n || last == 0 {
		t.Fatalf("seq 3: %d deliveries, last %d; want %d", c, last, 2*n)
	}
	if u, d, _ := p.seqDeliveries(3); u != n || d != n {
		t.Fatalf("seq 3: %d unique deliveries and %d duplicates, want %d and %d", u, d, n, n)
	}
	if c, _ := p.SeqDeliveries(6); c != 0 {
		t.Fatalf("seq 6: %d deliveries, want 0", c)
	}
	st, err := p.Stats(ctxT(t, 5*time.Second), 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unsequenced event", func() bool {
		st, err = p.Stats(ctxT(t, 5*time.Second), 1, 7)
		return err == nil && st.Events == 7*n+n/2
	})
	if st.Delivered != 7*n || st.Duplicates != n || st.Reordered != n || st.Missing != n {
		t.Fatalf("delivered %d dups %d reordered %d missing %d; want %d, %d, %d, %d",
			st.Delivered, st.Duplicates, st.Reordered, st.Missing, 7*n, n, n, n)
	}
	if st.Latency.Count() != 7*n || st.Connect.Count() != n {
		t.Fatalf("latency n=%d connect n=%d", st.Latency.Count(), st.Connect.Count())
	}
	if st.Latency.Max() <= 0 || st.Latency.Max() > 10*time.Second {
		t.Fatalf("latency max %v", st.Latency.Max())
	}
	// Idle connections hold no buffers.
	assertIdle(t, p)
}

// assertIdle checks that no connection holds per-connection buffers.
func assertIdle(t *testing.T, p *Pool) {
	t.Helper()
	for _, l := range p.loops {
		ch := make(chan int, 1)
		if err := p.do(ctxT(t, 5*time.Second), l, func(l *loop) {
			busy := 0
			for i := range l.conns {
				if l.conns[i].ext != nil {
					busy++
				}
			}
			ch <- busy
		}); err != nil {
			t.Fatal(err)
		}
		if busy := <-ch; busy != 0 {
			t.Fatalf("%d idle connections hold buffers", busy)
		}
	}
}

func TestConnStructSize(t *testing.T) {
	// The idle cost promised in doc.go.
	if s := unsafe.Sizeof(conn{}); s > 80 {
		t.Fatalf("conn is %d bytes, want at most 80", s)
	}
}

func TestPoolBadAuthIsReported(t *testing.T) {
	srv := newFakeServer(t)
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Secret: "wrong", Loops: 1,
		Channels: func(uint64) []string { return []string{"private-x"} }})
	dialAll(t, p, 3, false)
	waitFor(t, "subscription errors", func() bool {
		st, err := p.Stats(ctxT(t, 5*time.Second), 0, 0)
		return err == nil && st.Reasons["subscription_error"] == 3
	})
	if c := p.Counts(); c.Subscribed != 0 {
		t.Fatalf("subscribed %d with a wrong secret", c.Subscribed)
	}
}

func TestPoolSourceAddrs(t *testing.T) {
	srv := newFakeServer(t)
	srcs := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, SourceAddrs: srcs, Loops: 1})
	dialAll(t, p, 10, false)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	seen := map[string]int{}
	for _, r := range srv.remotes {
		host, _, _ := net.SplitHostPort(r)
		seen[host]++
	}
	if seen["127.0.0.2"] != 5 || seen["127.0.0.3"] != 5 {
		t.Fatalf("remote addresses %v, want 5 from each of 127.0.0.2 and 127.0.0.3", seen)
	}
}

func TestPoolPings(t *testing.T) {
	srv := newFakeServer(t)
	srv.activity.Store(1) // the client must ping after 1 s of silence
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 1})
	dialAll(t, p, 4, false)
	// WebSocket ping: coder/websocket's Ping returns when the pong arrives.
	for _, c := range srv.all() {
		if err := c.ws.Ping(ctxT(t, 5*time.Second)); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	waitFor(t, "pusher:ping from every client", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.pings >= 4
	})
	// pusher:ping from the server gets pusher:pong: read it on a raw transcript below.
}

func TestPoolFragmentedMessage(t *testing.T) {
	srv := newFakeServer(t)
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 1,
		Channels: func(uint64) []string { return []string{"frag"} }})
	dialAll(t, p, 2, true)
	msg := seqEvent("frag", 1)
	for _, c := range srv.subscribers("frag") {
		w, err := c.ws.Writer(ctxT(t, 5*time.Second), websocket.MessageText)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(msg); i += 7 {
			if _, err := w.Write([]byte(msg[i:min(i+7, len(msg))])); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "fragmented deliveries", func() bool { return p.Delivered() == 2 })
	assertIdle(t, p)
}

func TestPoolServerClose(t *testing.T) {
	srv := newFakeServer(t)
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 2})
	dialAll(t, p, 6, false)
	var wg sync.WaitGroup
	for _, c := range srv.all() {
		wg.Add(1)
		go func() { // Close waits for the client's echo
			defer wg.Done()
			if err := c.ws.Close(4200, "reconnect"); err != nil {
				t.Errorf("close: %v", err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "closes", func() bool { return p.Counts().Closed == 6 })
	st, err := p.Stats(ctxT(t, 5*time.Second), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reasons["close_4200"] != 6 {
		t.Fatalf("reasons %s, want close_4200=6", st.ReasonsString())
	}
}

func TestPoolHandshakeRefused(t *testing.T) {
	srv := newFakeServer(t)
	p := startPool(t, Config{Addr: srv.addr(), Key: "unknown-key", Loops: 1})
	ctx := ctxT(t, 10*time.Second)
	if err := p.Dial(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitCounts(ctx, func(c Counts) bool { return c.Failed == 3 }); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx, 0, 0)
	if st.Reasons["handshake_status"] != 3 {
		t.Fatalf("reasons %s", st.ReasonsString())
	}
}

func TestPoolConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := startPool(t, Config{Addr: addr, Key: "k", Loops: 1})
	ctx := ctxT(t, 10*time.Second)
	if err := p.Dial(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitCounts(ctx, func(c Counts) bool { return c.Failed == 2 }); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx, 0, 0)
	if st.Reasons["connect_ECONNREFUSED"] != 2 {
		t.Fatalf("reasons %s", st.ReasonsString())
	}
}

func TestPoolShutdown(t *testing.T) {
	srv := newFakeServer(t)
	p := startPool(t, Config{Addr: srv.addr(), Key: srv.key, Loops: 2})
	dialAll(t, p, 8, false)
	if err := p.Shutdown(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if c := p.Counts(); c.Closed != 8 {
		t.Fatalf("closed %d, want 8", c.Closed)
	}
	if _, err := p.Stats(ctxT(t, time.Second), 0, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats after Shutdown: %v, want ErrClosed", err)
	}
}

// serverHandshake reads an upgrade request and answers 101 with an accept computed
// here, independently of the client's code.
func serverHandshake(t *testing.T, c net.Conn, br *bufio.Reader, acceptOverride string) {
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Errorf("read request: %v", err)
		return
	}
	h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	accept := base64.StdEncoding.EncodeToString(h[:])
	if acceptOverride != "" {
		accept = acceptOverride
	}
	_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+accept+"\r\n\r\n")
}

func serverText(s string) []byte {
	b := []byte{0x81}
	switch n := len(s); {
	case n < 126:
		b = append(b, byte(n))
	default:
		b = append(b, 126, byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// readClientFrame reads one masked client frame and returns its opcode and payload.
func readClientFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Errorf("read frame: %v", err)
		return 0, nil
	}
	if h[1]&0x80 == 0 {
		t.Errorf("client frame not masked")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(br, l[:])
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	var mask [4]byte
	_, _ = io.ReadFull(br, mask[:])
	p := make([]byte, n)
	_, _ = io.ReadFull(br, p)
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return h[0] & 0x0f, p
}

const establishedMsg = `{"event":"pusher:connection_established","data":"{\"socket_id\":\"7.7\",\"activity_timeout\":120}"}`

// TestTranscriptByteByByte sends the 101, connection_established, a pusher:ping, a
// WebSocket ping and an event one byte per write, so that every frame arrives in
// pieces, and checks the client's exact answers.
func TestTranscriptByteByByte(t *testing.T) {
	got := make(chan string, 4)
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("read request: %v", err)
			return
		}
		if req.URL.Path != "/app/k" || req.URL.Query().Get("protocol") != "7" ||
			req.Header.Get("Sec-WebSocket-Version") != "13" || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			t.Errorf("bad request %v %v", req.URL, req.Header)
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		var out []byte
		out = append(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(h[:])+"\r\n\r\n"...)
		out = append(out, serverText(establishedMsg)...)
		out = append(out, serverText(`{"event":"pusher:ping","data":{}}`)...)
		out = append(out, 0x89, 3, 'a', 'b', 'c') // WebSocket ping
		out = append(out, serverText(`{"event":"e","channel":"c","data":"`+string(AppendPayload(nil, 1, time.Now().UnixNano(), 200))+`"}`)...)
		for i := range out {
			if _, err := c.Write(out[i : i+1]); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			if i%16 == 0 {
				time.Sleep(50 * time.Microsecond)
			}
		}
		for i := 0; i < 2; i++ {
			op, p := readClientFrame(t, br)
			got <- string([]byte{'0' + op}) + ":" + string(p)
		}
		_, _ = io.Copy(io.Discard, br)
	})
	p := startPool(t, Config{Addr: addr, Key: "k", Loops: 1})
	dialAll(t, p, 1, false)
	want := []string{"1:" + `{"event":"pusher:pong","data":{}}`, ":abc"}
	want[1] = string([]byte{'0' + opPong}) + want[1]
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("client sent %q, want %q", g, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer from the client")
		}
	}
	waitFor(t, "delivery", func() bool { return p.Delivered() == 1 })
	assertIdle(t, p)
}

func TestTranscriptProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		frame    []byte
		wantCode uint16
		reason   string
	}{
		{"masked", []byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, 1002, "protocol_error"},
		{"reserved bit", []byte{0xc1, 0x01, 'x'}, 1002, "protocol_error"},
		{"continuation without start", []byte{0x80, 0x01, 'x'}, 1002, "protocol_error"},
		{"too big", []byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, 1009, "message_too_big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codes := make(chan uint16, 1)
			addr := rawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				serverHandshake(t, c, br, "")
				_, _ = c.Write(append(serverText(establishedMsg), tc.frame...))
				op, p := readClientFrame(t, br)
				if op != opClose || len(p) < 2 {
					t.Errorf("client sent op %d %q, want a close frame", op, p)
					codes <- 0
					return
				}
				codes <- binary.BigEndian.Uint16(p)
			})
			p := startPool(t, Config{Addr: addr, Key: "k", Loops: 1})
			if err := p.Dial(ctxT(t, 5*time.Second), 1); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-codes:
				if code != tc.wantCode {
					t.Fatalf("close code %d, want %d", code, tc.wantCode)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no close frame")
			}
			waitFor(t, "close", func() bool { return p.Counts().Closed == 1 })
			st, _ := p.Stats(ctxT(t, 5*time.Second), 0, 0)
			if st.Reasons[tc.reason] != 1 {
				t.Fatalf("reasons %s, want %s=1", st.ReasonsString(), tc.reason)
			}
		})
	}
}

func TestTranscriptBadAccept(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		serverHandshake(t, c, br, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
		_, _ = io.Copy(io.Discard, br)
	})
	p := startPool(t, Config{Addr: addr, Key: "k", Loops: 1})
	ctx := ctxT(t, 5*time.Second)
	if err := p.Dial(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitCounts(ctx, func(c Counts) bool { return c.Failed == 1 }); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx, 0, 0)
	if st.Reasons["handshake_invalid"] != 1 {
		t.Fatalf("reasons %s", st.ReasonsString())
	}
}

func TestPoolHandshakeTimeout(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }) // never answers
	p := startPool(t, Config{Addr: addr, Key: "k", Loops: 1, HandshakeTimeout: 200 * time.Millisecond})
	ctx := ctxT(t, 5*time.Second)
	if err := p.Dial(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitCounts(ctx, func(c Counts) bool { return c.Failed == 1 }); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx, 0, 0)
	if st.Reasons["handshake_timeout"] != 1 {
		t.Fatalf("reasons %s", st.ReasonsString())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Addr: "localhost:80", Key: "k"},
		{Addr: "127.0.0.1:80"},
		{Addr: "127.0.0.1:80", Key: "k", SourceAddrs: []netip.Addr{netip.MustParseAddr("::1")}},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	p, err := New(Config{Addr: "127.0.0.1:1", Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Dial(context.Background(), 1); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Dial before Run: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}
