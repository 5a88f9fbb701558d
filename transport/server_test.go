package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// TestCoderRoundTrip uses an independent client (coder/websocket) for many messages,
// small and large (fragmented by the client when it wants to).
func TestCoderRoundTrip(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, MaxMessageBytes: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+s.Addr()+"/app/key?protocol=7", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 200 << 10}
	for i := range 1000 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("é", i%50))
		if i < len(sizes) {
			msg = strings.Repeat("x", sizes[i])
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if typ != websocket.MessageText || string(got) != msg {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(msg))
		}
	}
	// A stream written by one writer (the client's own fragmentation).
	w, err := c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		_, _ = w.Write([]byte("fragment;"))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != strings.Repeat("fragment;", 10) {
		t.Fatalf("stream: %q %v", got, err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	open := h.waitOpen(t)
	if r := h.waitClose(t, open.ID()); r != ClosePeer {
		t.Fatalf("OnClose %+v, want ClosePeer", r)
	}
	st := s.Stats()
	if st.Upgraded != 1 || st.FramesIn < 1000 || st.FramesOut < 1000 || st.Closed["peer_close"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// collect waits for n opened conns and groups them by loop.
func collect(t *testing.T, h *testHandler, s *Server, n int) (all []*Conn, byLoop [][]*Conn) {
	t.Helper()
	byLoop = make([][]*Conn, s.NumLoops())
	for range n {
		c := h.waitOpen(t)
		all = append(all, c)
		byLoop[c.Loop()] = append(byLoop[c.Loop()], c)
	}
	return all, byLoop
}

func dialMany(t *testing.T, addr string, n int) []*wsClient {
	t.Helper()
	cs := make([]*wsClient, n)
	for i := range cs {
		cs[i] = dialWS(t, addr)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			_ = c.Close()
		}
	})
	return cs
}

func TestFanoutAcrossLoopsWithExcept(t *testing.T) {
	const nconns, nmsgs = 200, 50
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 2})
	clients := dialMany(t, s.Addr(), nconns)
	all, byLoop := collect(t, h, s, nconns)
	for i, l := range byLoop {
		if len(l) != nconns/2 {
			t.Fatalf("loop %d owns %d of %d connections; want an even split", i, len(l), nconns)
		}
	}
	// The excepted conn is the one whose ID is lowest: map it to its client by
	// asking the server to write its ID to it.
	except := all[0]
	s.Do(except, func() { except.WriteText([]byte("you are excepted")) })

	for i := range nmsgs {
		s.Fanout(AppendTextFrame(nil, []byte(fmt.Sprintf("msg %d", i))), byLoop, except.ID())
	}
	s.Fanout(AppendTextFrame(nil, []byte("end")), byLoop, 0)

	var wg sync.WaitGroup
	var excepted, errs atomic.Int32
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := c.readText(t)
			if first == "you are excepted" {
				excepted.Add(1)
				if got := c.readText(t); got != "end" {
					errs.Add(1)
					t.Errorf("excepted conn got %q", got)
				}
				return
			}
			for i := range nmsgs {
				want := fmt.Sprintf("msg %d", i)
				got := first
				if i > 0 {
					got = c.readText(t)
				}
				if got != want {
					errs.Add(1)
					t.Errorf("got %q want %q", got, want)
					return
				}
			}
			if got := c.readText(t); got != "end" {
				t.Errorf("got %q want end", got)
			}
		}()
	}
	wg.Wait()
	if excepted.Load() != 1 {
		t.Fatalf("%d conns saw the except message, want 1", excepted.Load())
	}
	if st := s.Stats(); st.MailboxDropped != 0 {
		t.Fatalf("dropped %d jobs", st.MailboxDropped)
	}
}

func TestDoFromAnotherGoroutine(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h})
	cl := dialWS(t, s.Addr())
	c := h.waitOpen(t)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Do(c, func() { c.WriteText([]byte(fmt.Sprintf("do %d", i))) })
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for range 10 {
		seen[cl.readText(t)] = true
	}
	if len(seen) != 10 {
		t.Fatalf("got %v", seen)
	}
	// Do on a closed conn does not run.
	_ = cl.Close()
	h.waitClose(t, c.ID())
	ran := make(chan struct{}, 1)
	s.Do(c, func() { ran <- struct{}{} })
	onLoop(t, c.l, func() {})
	select {
	case <-ran:
		t.Fatal("Do ran on a closed conn")
	default:
	}
}

// TestSlowConsumer: a client that never reads is cut off at MaxPendingBytes while a
// reading client on the same loop gets every frame.
func TestSlowConsumer(t *testing.T) {
	const frames, size = 100, 32 << 10 // 3.2 MiB: far more than the (shrunk) socket buffers hold
	h := newTestHandler()
	slowReason := CloseReason{Code: 4100, Text: "slow consumer", Label: "slow_test"}
	s := startServer(t, Config{Handler: h, Loops: 1, MaxPendingBytes: 256 << 10, SlowConsumer: slowReason})
	slow := dialWS(t, s.Addr())
	if tc, ok := slow.Conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	defer slow.Close() // keeps it from the GC, whose finalizer would close it
	slowConn := h.waitOpen(t)
	onLoop(t, slowConn.l, func() { _ = unix.SetsockoptInt(int(slowConn.fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<10) })
	fast := dialWS(t, s.Addr())
	fastConn := h.waitOpen(t)

	got := make(chan int, 1)
	var received atomic.Int64
	go func() {
		n := 0
		defer func() { received.Store(-1) }()
		for n < frames {
			_ = fast.SetReadDeadline(time.Now().Add(20 * time.Second))
			op, p, err := fast.readFrame()
			if err != nil || op != ws.OpText || len(p) != size {
				break
			}
			n++
			received.Store(int64(n))
		}
		got <- n
	}()
	payload := bytes.Repeat([]byte("s"), size)
	byLoop := [][]*Conn{{slowConn, fastConn}}
	for i := range frames {
		// Pace on the fast reader so that only the slow one can pass the bound,
		// however slowly this machine runs the reader.
		for r := received.Load(); r >= 0 && int64(i)-r > 4; r = received.Load() {
			time.Sleep(100 * time.Microsecond)
		}
		s.Fanout(AppendTextFrame(nil, payload), byLoop, 0)
	}
	if n := <-got; n != frames {
		t.Fatalf("fast reader got %d frames, want %d", n, frames)
	}
	if r := h.waitClose(t, slowConn.ID()); r != slowReason {
		t.Fatalf("slow conn closed with %+v", r)
	}
	if st := s.Stats(); st.Closed["slow_test"] != 1 {
		t.Fatalf("Closed = %v", st.Closed)
	}
	if r := h.closeReasons(fastConn.ID()); len(r) != 0 {
		t.Fatalf("fast conn closed: %v", r)
	}
}

func TestIdleThenPongTimeout(t *testing.T) {
	h := newTestHandler()
	h.onIdle = func(c *Conn) { c.WriteText([]byte(`{"event":"pusher:ping"}`)) }
	h.onMsg = func(c *Conn, msg []byte) {} // a pong is just input
	idleClose := CloseReason{Code: 4201, Text: "pong reply not received", Label: "pong_timeout"}
	s := startServer(t, Config{
		Handler: h, IdleTimeout: 300 * time.Millisecond, PongTimeout: time.Second,
		IdleClose: idleClose, CloseTimeout: 300 * time.Millisecond,
	})
	silent := dialWS(t, s.Addr())
	silentConn := h.waitOpen(t)
	alive := dialWS(t, s.Addr())
	aliveConn := h.waitOpen(t)

	// The live client answers two pings; the silent one reads its ping, then the close.
	for range 2 {
		if got := alive.readText(t); !strings.Contains(got, "ping") {
			t.Fatalf("got %q", got)
		}
		alive.send(t, finText, []byte(`{"event":"pusher:pong"}`))
	}
	if got := silent.readText(t); !strings.Contains(got, "ping") {
		t.Fatalf("got %q", got)
	}
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	op, p, err := silent.readFrame()
	if err != nil || op != ws.OpClose {
		t.Fatalf("want close frame, got %v %q %v", op, p, err)
	}
	if want := appendCloseFrame(nil, idleClose.Code, idleClose.Text)[2:]; !bytes.Equal(p, want) {
		t.Fatalf("close payload %q, want %q", p, want)
	}
	if r := h.waitClose(t, silentConn.ID()); r != idleClose {
		t.Fatalf("OnClose %+v", r)
	}
	if r := h.closeReasons(aliveConn.ID()); len(r) != 0 {
		t.Fatalf("live conn closed: %v", r)
	}
}

// TestPongUnreadWhenDue: a loop held up past the pong timeout (a long fan-out
// backlog) finds more answered pings ready than one epoll_wait returns. The answers
// it has not read yet are in the sockets: none of those clients is closed.
func TestPongUnreadWhenDue(t *testing.T) {
	h := newTestHandler()
	h.onIdle = func(c *Conn) { c.WriteText([]byte(`{"event":"pusher:ping"}`)) }
	h.onMsg = func(c *Conn, msg []byte) {}
	idleClose := CloseReason{Code: 4201, Text: "pong reply not received", Label: "pong_timeout"}
	s := startServer(t, Config{
		// The pong timeout outlasts dialing and reading every ping, so that no
		// client is late before the loop is held; the hold outlasts it.
		Handler: h, Loops: 1, IdleTimeout: 500 * time.Millisecond, PongTimeout: 3 * time.Second,
		IdleClose: idleClose,
	})
	const n = 3 * maxEvents / 2 // more ready connections than one epoll_wait returns
	clients := make([]*wsClient, n)
	var first *Conn
	for i := range clients {
		clients[i] = dialWS(t, s.Addr())
		if c := h.waitOpen(t); first == nil {
			first = c
		}
	}
	for _, c := range clients { // every client is pinged within a tick or two
		if got := c.readText(t); !strings.Contains(got, "ping") {
			t.Fatalf("got %q", got)
		}
	}
	held := make(chan struct{})
	s.Do(first, func() { close(held); time.Sleep(4 * time.Second) }) // past every pong deadline
	<-held
	for _, c := range clients { // answered while the loop is held: unread when due
		c.send(t, finText, []byte(`{"event":"pusher:pong"}`))
	}
	// Each client's next frame is its next ping; a client judged silent gets the
	// close frame (4201) instead.
	closed := 0
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("reading the frame after the pong: %v", err)
		}
		if op == ws.OpClose {
			closed++
		} else if !strings.Contains(string(p), "ping") {
			t.Fatalf("got %v %q", op, p)
		}
	}
	if closed != 0 {
		t.Fatalf("%d of %d clients that answered their ping were closed for pong_timeout", closed, n)
	}
}

// TestOnCloseOnce drives every way a connection ends and checks that each opened
// connection gets exactly one OnClose, with the first reason.
func TestOnCloseOnce(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, CloseTimeout: 200 * time.Millisecond})
	want := map[uint64]string{}

	peer := dialWS(t, s.Addr()) // peer close
	c := h.waitOpen(t)
	want[c.ID()] = "peer_close"
	peer.send(t, finClose, closePayload(1000, ""))

	lost := dialWS(t, s.Addr()) // EOF without close
	c = h.waitOpen(t)
	want[c.ID()] = "conn_lost"
	_ = lost.Close()

	twice := dialWS(t, s.Addr()) // Close twice, then a protocol error: first reason wins
	c2 := h.waitOpen(t)
	want[c2.ID()] = "normal"
	s.Do(c2, func() { c2.Close(CloseNormal); c2.Close(CloseGoingAway) })
	twice.send(t, 0x81, []byte("after close")) // ignored while closing
	_, _, _ = twice.readFrame()
	twice.send(t, finClose, closePayload(1000, ""))

	silent := dialWS(t, s.Addr()) // server Close, peer never answers: CloseTimeout
	c3 := h.waitOpen(t)
	want[c3.ID()] = "going_away"
	s.Do(c3, func() { c3.Close(CloseGoingAway) })
	defer silent.Close()

	bad := dialWS(t, s.Addr()) // protocol error
	c = h.waitOpen(t)
	want[c.ID()] = "protocol_error"
	_, _ = bad.Write([]byte{0x81, 0x00})
	defer bad.Close()

	for id, label := range want {
		if r := h.waitClose(t, id); r.Label != label {
			t.Errorf("conn %d: OnClose %+v, want %s", id, r, label)
		}
	}
	time.Sleep(300 * time.Millisecond) // a second OnClose would come now
	for id := range want {
		if n := len(h.closeReasons(id)); n != 1 {
			t.Errorf("conn %d: %d OnClose calls", id, n)
		}
	}
}

func TestReusePort(t *testing.T) {
	h1, h2 := newTestHandler(), newTestHandler()
	s1 := startServer(t, Config{Handler: h1, ReusePort: true, Loops: 1})
	s2 := startServer(t, Config{Handler: h2, ReusePort: true, Loops: 1, Addr: s1.Addr()})
	if s1.Addr() != s2.Addr() {
		t.Fatalf("addrs %s %s", s1.Addr(), s2.Addr())
	}
	// The kernel hashes the 4-tuple; a few dozen source ports reach both.
	for i := 0; i < 200 && (s1.Stats().Upgraded == 0 || s2.Stats().Upgraded == 0); i++ {
		c := dialWS(t, s1.Addr())
		_ = c.Close()
	}
	if s1.Stats().Upgraded == 0 || s2.Stats().Upgraded == 0 {
		t.Fatalf("upgrades: %d and %d", s1.Stats().Upgraded, s2.Stats().Upgraded)
	}
	// Without SO_REUSEPORT the port is taken.
	if _, err := New(Config{Handler: h1, Addr: s1.Addr(), Logger: quietLogger()}); !errors.Is(err, ErrListen) || !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("want EADDRINUSE, got %v", err)
	}
}

func TestStopAccepting(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h})
	c := dialWS(t, s.Addr())
	if err := s.StopAccepting(); err != nil {
		t.Fatal(err)
	}
	if err := s.StopAccepting(); err != nil {
		t.Fatal(err)
	}
	if nc, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		_ = nc.Close()
		t.Fatal("dial succeeded after StopAccepting")
	}
	c.send(t, finText, []byte("still here"))
	if got := c.readText(t); got != "still here" {
		t.Fatalf("got %q", got)
	}
}

func TestShutdownDrains(t *testing.T) {
	h := newTestHandler()
	s, err := New(Config{Handler: h, Addr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = dialWS(t, s.Addr())
	}
	// A half-open handshake and an HTTP keep-alive connection are closed too.
	hsConn, _ := net.Dial("tcp", s.Addr())
	_, _ = io.WriteString(hsConn, "GET /app/k HTTP/1.1\r\n")
	defer hsConn.Close()

	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { // a well-behaved client answers the close frame
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			op, p, err := c.readFrame()
			if err != nil || op != ws.OpClose || !bytes.Equal(p, appendCloseFrame(nil, 4200, "reconnect")[2:]) {
				t.Errorf("got %v %q %v", op, p, err)
			}
			_, _ = c.Write(clientFrame(finClose, p[:2]))
			_, _ = io.ReadAll(c)
			_ = c.Close()
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reason := CloseReason{Code: 4200, Text: "reconnect", Label: "shutdown"}
	if err := s.Shutdown(ctx, reason); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	st := s.Stats()
	if st.Closed["shutdown"] != n || st.Open != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := s.Shutdown(ctx, reason); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestShutdownForced(t *testing.T) {
	h := newTestHandler()
	s, err := New(Config{Handler: h, Addr: "127.0.0.1:0", Logger: quietLogger(), CloseTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, s.Addr()) // never answers the close
	defer c.Close()
	conn := h.waitOpen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx, CloseReason{}); !errors.Is(err, ErrForcedClose) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if r := h.closeReasons(conn.ID()); len(r) != 1 || r[0] != CloseShutdown {
		t.Fatalf("OnClose %v", r)
	}
}

func TestShutdownWithoutRun(t *testing.T) {
	s, err := New(Config{Handler: newTestHandler(), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background(), CloseReason{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Shutdown: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoHandler) {
		t.Fatalf("got %v", err)
	}
	if _, err := New(Config{Handler: newTestHandler(), Addr: "127.0.0.1:99999"}); !errors.Is(err, ErrListen) {
		t.Fatalf("got %v", err)
	}
}

func TestMailboxDropped(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 1, MailboxSize: 4})
	_ = dialWS(t, s.Addr())
	c := h.waitOpen(t)
	release := make(chan struct{})
	started := make(chan struct{})
	s.Do(c, func() { close(started); <-release }) // holds the loop (tests only)
	<-started
	for range 10 {
		s.Fanout(AppendTextFrame(nil, []byte("x")), [][]*Conn{{c}}, 0)
	}
	// Do is admitted past the bound, in order behind the Fanouts.
	ran := make(chan struct{})
	s.Do(c, func() { close(ran) })
	close(release)
	<-ran
	if got := s.Stats().MailboxDropped; got != 6 {
		t.Fatalf("MailboxDropped = %d, want 6", got)
	}
}

func TestHTTPHandoffStats(t *testing.T) {
	s := startServer(t, Config{Handler: newTestHandler()})
	for range 3 {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(nc, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(nc)
		_ = nc.Close()
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 404 ")) {
			t.Fatalf("got %q", b)
		}
	}
	if st := s.Stats(); st.HTTPRequests != 3 || st.Accepted != 3 || st.Upgraded != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConnSize(t *testing.T) {
	size := unsafe.Sizeof(Conn{})
	t.Logf("Conn: %d bytes, slab entry %d, wheel entry %d", size, unsafe.Sizeof(slabEntry{}), unsafe.Sizeof(wheelEntry{}))
	// A node holds hundreds of thousands of these: stay in the 64-byte size class.
	if size > 64 {
		t.Fatalf("Conn is %d bytes, want <= 64", size)
	}
}

// TestIdleConnState checks that once traffic stops, a connection holds no side
// buffers: partial input, reassembly and output queues were released.
func TestIdleConnState(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 1})
	cl := dialWS(t, s.Addr())
	c := h.waitOpen(t)
	big := strings.Repeat("y", 40<<10)
	msg := clientFrame(finText, []byte(big))
	_, _ = cl.Write(msg[:1000]) // partial frame
	time.Sleep(50 * time.Millisecond)
	onLoop(t, c.l, func() {
		if c.ext == nil || len(c.ext.in) == 0 {
			t.Error("partial frame not buffered")
		}
	})
	_, _ = cl.Write(msg[1000:])
	cl.send(t, fragText, []byte("a"))
	cl.send(t, finCont, []byte("b"))
	if got := cl.readText(t); got != big {
		t.Fatalf("got %d bytes", len(got))
	}
	if got := cl.readText(t); got != "ab" {
		t.Fatalf("got %q", got)
	}
	onLoop(t, c.l, func() {
		if c.ext != nil {
			t.Errorf("idle conn keeps %+v", *c.ext)
		}
	})
}

// TestWriteIdleConnNoAlloc pins the hot path: a frame to a conn with nothing queued
// is one write syscall and no allocation.
func TestWriteIdleConnNoAlloc(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	c, peer := newDetachedConn(t, newTestHandler())
	fds := [2]int{int(c.fd), peer}
	frame := AppendTextFrame(nil, []byte(`{"event":"x","channel":"c","data":"{}"}`))
	sink := make([]byte, 64<<10)
	allocs := testing.AllocsPerRun(1000, func() {
		c.WriteFrame(frame)
		_, _ = unix.Read(fds[1], sink) // keep the socket buffer empty
	})
	if allocs != 0 {
		t.Fatalf("WriteFrame allocates %.1f times per call", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		c.WriteText([]byte("hello"))
		_, _ = unix.Read(fds[1], sink)
	})
	if allocs != 0 {
		t.Fatalf("WriteText allocates %.1f times per call", allocs)
	}
	if c.ext != nil {
		t.Fatal("an idle write left state behind")
	}
}

// newDetachedConn returns an open Conn on a loop that is not running (so the test
// goroutine may act as its owner loop), over a socketpair; peer is the other end.
func newDetachedConn(t testing.TB, h Handler) (c *Conn, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Handler: h, MaxMessageBytes: 4 << 10, Logger: quietLogger()}.withDefaults()}
	l, err := newLoop(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.loops = []*loop{l}
	c = &Conn{l: l, fd: int32(fds[0]), state: stOpen, flags: fOpened}
	c.slot = l.allocSlot(c)
	l.nconns++
	l.ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.slot)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fds[0], &l.ev); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.state != stDead {
			l.finish(c, CloseConnLost)
		}
		_ = unix.Close(fds[1])
		l.closeFDs()
	})
	return c, fds[1]
}

// FuzzConnInput feeds arbitrary client bytes, in arbitrary chunks, through the
// connection's whole read path (frames, reassembly, pings, close) and checks that
// nothing panics and that buffered input stays within its bounds.
func FuzzConnInput(f *testing.F) {
	f.Add(clientFrame(finText, []byte("hello")), uint8(3))
	f.Add(append(clientFrame(fragText, []byte("he")), clientFrame(finCont, []byte("llo"))...), uint8(5))
	f.Add(append(clientFrame(finPing, []byte("p")), clientFrame(finClose, closePayload(1000, "x"))...), uint8(1))
	f.Add(clientFrameLen(finText, nil, 5000)[:8], uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		c, peer := newDetachedConn(t, newTestHandler())
		l := c.l
		step := int(chunk)%64 + 1
		sink := make([]byte, 64<<10)
		for len(in) > 0 && c.state != stDead {
			n := min(step, len(in))
			l.readFrames(c, bytes.Clone(in[:n]))
			l.reapClosed()
			in = in[n:]
			_, _ = unix.Read(peer, sink)
			if x := c.ext; x != nil && (len(x.in) > l.cfg.MaxMessageBytes+14+n || len(x.msg) > l.cfg.MaxMessageBytes) {
				t.Fatalf("buffers beyond bounds: in=%d msg=%d", len(x.in), len(x.msg))
			}
		}
	})
}

// TestIdleMemory measures the server's heap per idle WebSocket. The clients are raw
// blocking sockets (no Go objects), so the heap growth is the server's. It logs the
// figure; the assertion is a loose ceiling against regressions, not a benchmark.
func TestIdleMemory(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	t.Run("plain", func(t *testing.T) { testIdleMemory(t, Config{}, false) })
	// Behind a load balancer with per-IP limits: each connection sends a PROXY header
	// with a client address of its own, so each also has a per-IP table entry.
	t.Run("proxy_limits", func(t *testing.T) {
		testIdleMemory(t, Config{
			ProxyProtocol: true, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
			MaxConnectionsPerIP: 10, MaxUpgradesPerIPPerSecond: 10,
		}, true)
	})
}

func testIdleMemory(t *testing.T, cfg Config, proxied bool) {
	const n = 400
	h := &countingHandler{}
	cfg.Handler, cfg.Loops, cfg.IdleTimeout = h, 2, time.Hour
	s := startServer(t, cfg)
	ap, _ := netipAddrPort(s.Addr())
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC() // and the sync.Pool victim caches
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	buf := make([]byte, 512)
	for i := range n {
		req := []byte(upgradeRequest("/app/k"))
		if proxied {
			req = append(fmt.Appendf(nil, "PROXY TCP4 10.0.%d.%d 10.0.0.1 40000 6001\r\n", i/256, i%256), req...)
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, req); err != nil {
			t.Fatal(err)
		}
		if m, err := unix.Read(fd, buf); err != nil || !bytes.HasPrefix(buf[:m], []byte("HTTP/1.1 101")) {
			t.Fatalf("handshake: %q %v", buf[:max(m, 0)], err)
		}
	}
	for h.open.Load() < n {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	t.Logf("server heap per idle WebSocket: %.0f bytes (%d conns)", per, n)
	if s.limits != nil && s.limits.entries() != n {
		t.Errorf("%d per-IP entries for %d addresses", s.limits.entries(), n)
	}
	if g := runtime.NumGoroutine(); g > goroutines+2 {
		t.Errorf("%d goroutines for %d idle conns, %d before", g, n, goroutines)
	}
	if per > 512 {
		t.Errorf("%.0f bytes per idle conn", per)
	}
}

type countingHandler struct{ open atomic.Int64 }

func (h *countingHandler) Accept(*UpgradeRequest) (any, error) { return nil, nil }
func (h *countingHandler) OnOpen(*Conn)                        { h.open.Add(1) }
func (h *countingHandler) OnMessage(*Conn, []byte)             {}
func (h *countingHandler) OnIdle(*Conn)                        {}
func (h *countingHandler) OnClose(*Conn, CloseReason)          { h.open.Add(-1) }

func BenchmarkFanout(b *testing.B) {
	for _, nconns := range []int{100, 400} {
		b.Run(fmt.Sprint(nconns), func(b *testing.B) {
			h := &countingHandler{}
			s := startServer(b, Config{Handler: h, Loops: 2, MailboxSize: 1 << 16})
			var wg sync.WaitGroup
			var received atomic.Int64
			conns := make([]net.Conn, nconns)
			for i := range conns {
				c := dialWS(b, s.Addr())
				conns[i] = c
				wg.Add(1)
				go func() { // drain
					defer wg.Done()
					buf := make([]byte, 64<<10)
					for {
						n, err := c.Read(buf)
						received.Add(int64(n))
						if err != nil {
							return
						}
					}
				}()
			}
			for h.open.Load() < int64(nconns) {
				time.Sleep(time.Millisecond)
			}
			byLoop := make([][]*Conn, s.NumLoops())
			for _, l := range s.loops {
				onLoop(b, l, func() {
					for _, e := range l.slab {
						if e.c != nil && e.c.state == stOpen {
							byLoop[l.idx] = append(byLoop[l.idx], e.c)
						}
					}
				})
			}
			frame := AppendTextFrame(nil, []byte(`{"event":"update","channel":"prices","data":"{\"p\":101.5}"}`))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// Waits while a loop's backlog is full, so that nothing is dropped and
				// the figure is the loops' delivery rate.
				s.FanoutWait(context.Background(), time.Minute, frame, byLoop, 0)
			}
			want := int64(b.N) * int64(nconns) * int64(len(frame))
			for received.Load() < want && s.Stats().MailboxDropped == 0 {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*nconns)/b.Elapsed().Seconds(), "frames/s")
			for _, c := range conns {
				_ = c.Close()
			}
			wg.Wait()
		})
	}
}

// Each visits every open connection on its own loop, and only open ones.
func TestEachVisitsOpenConnections(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h})
	cls := dialMany(t, s.Addr(), 6)
	collect(t, h, s, 6)
	_ = cls[0].Close()
	var gone uint64 // OnOpen order follows the loops, not the dials
	select {
	case gone = <-h.closeCh:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
	}
	var mu sync.Mutex
	seen := map[uint64]int{}
	s.Each(func(c *Conn) {
		if l := c.Loop(); s.loops[l] == nil {
			t.Errorf("conn %d on no loop", c.ID())
		}
		mu.Lock()
		seen[c.ID()]++
		mu.Unlock()
	})
	for _, l := range s.loops { // a job posted after Each's runs after it
		onLoop(t, l, func() {})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 5 || seen[gone] != 0 {
		t.Fatalf("Each visited %v, want the 5 open connections once each", seen)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("conn %d visited %d times", id, n)
		}
	}
}
