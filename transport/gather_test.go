package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// holdLoop blocks loop l (a job that waits) until the returned release is called, so
// that the jobs posted meanwhile run in one mailbox batch.
func holdLoop(t testing.TB, l *loop) (release func()) {
	t.Helper()
	started, done := make(chan struct{}), make(chan struct{})
	if !l.postCtrl(job{fn: func() { close(started); <-done }}) {
		t.Fatal("loop closed")
	}
	<-started
	var once sync.Once
	release = func() { once.Do(func() { close(done) }) }
	t.Cleanup(release)
	return release
}

// gatherExpect is what conn id receives in TestGatherKeepsOrder: op i goes to every
// connection (a), to the even ids (b) or to the odd ones (c); after op doAt each
// connection gets a direct write (WriteText from a Do) between two ops.
func gatherExpect(id uint64, ops, doAt int) []string {
	var want []string
	for i := range ops {
		switch {
		case i%3 == 0:
			want = append(want, fmt.Sprintf("a %d", i))
		case i%3 == 1 && id%2 == 0:
			want = append(want, fmt.Sprintf("b %d", i))
		case i%3 == 2 && id%2 == 1:
			want = append(want, fmt.Sprintf("c %d", i))
		}
		if i == doAt {
			want = append(want, fmt.Sprintf("do %d", id))
		}
	}
	return want
}

// TestGatherKeepsOrder: frames of many channels (overlapping sets of connections)
// queued in one mailbox batch reach each connection in the order they were fanned out,
// with a direct write (a Do between them) in its place, and leave in far fewer
// syscalls than frames.
func TestGatherKeepsOrder(t *testing.T) {
	const nconns, ops, doAt = 20, 60, 30
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 2})
	clients := dialMany(t, s.Addr(), nconns)
	all, byLoop := collect(t, h, s, nconns)
	for _, c := range all {
		s.Do(c, func() { c.WriteText([]byte(fmt.Sprint(c.ID()))) })
	}
	ids := make([]uint64, nconns)
	for i, cl := range clients {
		_, err := fmt.Sscan(cl.readText(t), &ids[i])
		if err != nil {
			t.Fatal(err)
		}
	}
	even, odd := make([][]*Conn, len(byLoop)), make([][]*Conn, len(byLoop))
	for i, conns := range byLoop {
		for _, c := range conns {
			if c.ID()%2 == 0 {
				even[i] = append(even[i], c)
			} else {
				odd[i] = append(odd[i], c)
			}
		}
	}
	before := s.Stats()
	releases := []func(){holdLoop(t, s.loops[0]), holdLoop(t, s.loops[1])}
	for i := range ops {
		frame := AppendTextFrame(nil, []byte(fmt.Sprintf("%c %d", "abc"[i%3], i)))
		sets := [][][]*Conn{byLoop, even, odd}
		if dropped := s.Fanout(frame, sets[i%3], 0); dropped != 0 {
			t.Fatalf("op %d: %d dropped", i, dropped)
		}
		if i == doAt {
			for _, c := range all {
				s.Do(c, func() { c.WriteText([]byte(fmt.Sprintf("do %d", c.ID()))) })
			}
		}
	}
	for _, r := range releases {
		r()
	}
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, want := range gatherExpect(ids[i], ops, doAt) {
				if got := cl.readText(t); got != want {
					t.Errorf("conn %d, frame %d: got %q, want %q", ids[i], k, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	after := s.Stats()
	frames, writes := after.FramesOut-before.FramesOut, after.Writes-before.Writes
	t.Logf("%d frames in %d write calls", frames, writes)
	// Per connection: one writev before the Do, its write, one writev after.
	if writes > 3*nconns || frames < 10*writes {
		t.Fatalf("%d frames took %d write calls; gathering should make it at most %d", frames, writes, 3*nconns)
	}
}

// detachedConn is newDetachedConn with a real connection id (0 is "skip none").
func detachedConn(t testing.TB) (c *Conn, peer int) {
	c, peer = newDetachedConn(t, newTestHandler())
	c.id = 1
	return c, peer
}

// detachedTCPConn is an open Conn over a loopback TCP connection on a loop that is not
// running (the test goroutine acts as its owner loop); peer is the client's fd,
// nonblocking. TCP, unlike a socketpair, takes part of a frame when its buffer is
// nearly full.
func detachedTCPConn(t testing.TB) (c *Conn, peer int) {
	t.Helper()
	c, sp := detachedConn(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	dup := func(nc net.Conn) int {
		f, err := nc.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.Close()
		defer f.Close()
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		_ = unix.SetNonblock(fd, true)
		return fd
	}
	sfd, cfd := dup(sc), dup(cl)
	// Swap the socketpair end for the TCP one, in the epoll set too.
	l := c.l
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil)
	_ = unix.Close(int(c.fd))
	c.fd = int32(sfd)
	l.ev = unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.slot)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, sfd, &l.ev); err != nil {
		t.Fatal(err)
	}
	_ = sp // closed by newDetachedConn's cleanup
	t.Cleanup(func() { _ = unix.Close(cfd) })
	return c, cfd
}

// runBatch has detached loop l run Fanout jobs of frames to c as one mailbox batch.
func runBatch(l *loop, c *Conn, frames ...[]byte) {
	conns := []*Conn{c}
	runJobs(l, conns, frames...)
}

func runJobs(l *loop, conns []*Conn, frames ...[]byte) {
	for _, f := range frames {
		j := job{frame: f, conns: conns}
		l.runJob(&j)
	}
	l.flushGather()
}

// TestGatherNoAlloc pins the gathered path: several frames to a connection with
// nothing queued are one writev and no allocation.
func TestGatherNoAlloc(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	c, peer := detachedConn(t)
	frames := [][]byte{
		AppendTextFrame(nil, []byte(`{"event":"a","channel":"c","data":"{}"}`)),
		AppendTextFrame(nil, []byte(`{"event":"b","channel":"c","data":"{}"}`)),
		AppendTextFrame(nil, []byte(`{"event":"c","channel":"d","data":"{}"}`)),
	}
	want := len(frames[0]) + len(frames[1]) + len(frames[2])
	sink := make([]byte, 64<<10)
	l := c.l
	conns := []*Conn{c}
	allocs := testing.AllocsPerRun(1000, func() {
		w0 := l.st.writes.Load()
		runJobs(l, conns, frames...)
		if n, _ := unix.Read(peer, sink); n != want || l.st.writes.Load() != w0+1 {
			t.Fatalf("read %d of %d bytes after %d write calls", n, want, l.st.writes.Load()-w0)
		}
	})
	if allocs != 0 {
		t.Fatalf("a gathered batch allocates %.1f times", allocs)
	}
	if c.ext != nil {
		t.Fatal("a gathered write left state behind")
	}
}

// fillPending writes frames to c (never read) until the kernel refuses some and the
// queue holds at least one frame, and returns the queued bytes.
func fillPending(t *testing.T, c *Conn, frame []byte) int {
	t.Helper()
	for i := 0; c.ext == nil || len(c.ext.out) == 0; i++ {
		if i > 1000 {
			t.Fatal("the socket never filled")
		}
		c.WriteFrame(frame)
	}
	return c.ext.outBytes
}

// TestGatherCutsAtSamePoint: MaxPendingBytes means the bytes handed to a connection
// that the kernel has not taken, frame by frame or gathered: in both, a peer that
// never reads is cut at the first frame whose bytes, added to what was pending, pass
// the bound. With frames larger than the socket buffer the kernel takes the same
// bytes either way, so that is the same frame. (With small frames it may take a few
// more from one writev than from many writes, whose buffers cost it more overhead:
// the rule holds, and the cut comes that many bytes later.)
func TestGatherCutsAtSamePoint(t *testing.T) {
	for _, tc := range []struct {
		size, bound int
		same        bool // the kernel takes the same bytes both ways
	}{{48000, 150000, true}, {6000, 40000, false}} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) { testCutPoint(t, tc.size, tc.bound, tc.same) })
	}
}

func testCutPoint(t *testing.T, size, bound int, same bool) {
	frame := AppendTextFrame(nil, bytes.Repeat([]byte("g"), size))
	// offer hands n frames to a fresh connection and reports whether it was cut, and
	// the bytes pending if not.
	type outcome struct {
		cut     bool
		pending int
	}
	offer := func(gathered bool, n int) outcome {
		c, _ := detachedConn(t)
		c.l.cfg.MaxPendingBytes = bound
		if err := unix.SetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10); err != nil {
			t.Fatal(err)
		}
		if gathered {
			frames := make([][]byte, n)
			for i := range frames {
				frames[i] = frame
			}
			runBatch(c.l, c, frames...)
		} else {
			for range n {
				c.WriteFrame(frame)
			}
		}
		if c.state != stOpen {
			return outcome{cut: true}
		}
		p := 0
		if c.ext != nil {
			p = c.ext.outBytes
		}
		return outcome{pending: p}
	}
	first := map[bool]int{}
	for _, gathered := range []bool{false, true} {
		prev := outcome{}
		for n := 1; n <= 64; n++ {
			o := offer(gathered, n)
			if !o.cut {
				if o.pending > bound {
					t.Fatalf("gathered=%v, %d frames: %d bytes pending past the bound %d", gathered, n, o.pending, bound)
				}
				prev = o
				continue
			}
			// The cut frame is the one that passed the bound.
			if prev.pending+len(frame) <= bound {
				t.Fatalf("gathered=%v: cut at %d frames with %d pending before: %d more do not pass %d",
					gathered, n, prev.pending, len(frame), bound)
			}
			first[gathered] = n
			break
		}
		if first[gathered] == 0 {
			t.Fatalf("gathered=%v: never cut", gathered)
		}
	}
	t.Logf("cut at frame %d one by one, %d gathered", first[false], first[true])
	if same && first[false] != first[true] {
		t.Fatalf("cut at frame %d one by one but %d gathered", first[false], first[true])
	}
}

// readAll reads what peer holds until EOF or a pause (nonblocking socket).
func readAll(t *testing.T, peer int) (data []byte, eof bool) {
	t.Helper()
	buf := make([]byte, 64<<10)
	idle := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(idle) {
		n, err := unix.Read(peer, buf)
		switch {
		case n > 0:
			data = append(data, buf[:n]...)
			idle = time.Now().Add(200 * time.Millisecond)
		case err == nil && n == 0:
			return data, true
		case err == unix.EAGAIN:
			time.Sleep(time.Millisecond)
		default:
			return data, true
		}
	}
	return data, false
}

// parseFrames splits server frames (unmasked) and returns their opcodes and
// payloads; rest is an incomplete frame at the end.
func parseFrames(b []byte) (ops []ws.OpCode, payloads [][]byte, rest []byte) {
	for len(b) >= 2 {
		n, off := int(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return ops, payloads, b
			}
			n, off = int(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			if len(b) < 10 {
				return ops, payloads, b
			}
			n, off = int(binary.BigEndian.Uint64(b[2:10])), 10
		}
		if len(b) < off+n {
			return ops, payloads, b
		}
		ops = append(ops, ws.OpCode(b[0]&0x0f))
		payloads = append(payloads, b[off:off+n])
		b = b[off+n:]
	}
	return ops, payloads, b
}

// TestSlowConsumerCloseFrame: a slow consumer is offered its close frame once. When
// the socket buffer has room (the client read meanwhile), the client reads every
// frame it was sent whole, then the 4100 close; when it has none, the socket is
// closed without it. Both outcomes are counted.
func TestSlowConsumerCloseFrame(t *testing.T) {
	reason := CloseReason{Code: 4100, Text: "slow consumer", Label: "slow_test"}
	// Frames larger than loopback's 64 KiB segments, so that the kernel takes part
	// of one, and smaller than the socket buffer, so that once the client has read,
	// the rest of one and the close frame fit.
	const size = 100_000
	frame := AppendTextFrame(nil, bytes.Repeat([]byte("s"), size))
	for _, room := range []bool{true, false} {
		t.Run(fmt.Sprintf("room=%v", room), func(t *testing.T) {
			c, peer := detachedTCPConn(t)
			l := c.l
			l.cfg.MaxPendingBytes = 800_000
			l.cfg.SlowConsumer = reason
			_ = unix.SetsockoptInt(int(c.fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 256<<10)
			// Until the kernel takes nothing more: loopback moves bytes on to the
			// peer's buffer, which the loop's EPOLLOUT flush would fill again.
			var pending int
			for i := 0; ; i++ {
				if i > 100 {
					t.Fatal("the socket never filled")
				}
				pending = fillPending(t, c, frame)
				time.Sleep(20 * time.Millisecond)
				l.flush(c)
				if c.ext != nil && c.ext.outBytes == pending {
					break
				}
			}
			for pending+len(frame) <= l.cfg.MaxPendingBytes {
				c.WriteFrame(frame)
				pending = c.ext.outBytes
			}
			var got []byte
			if room {
				got, _ = readAll(t, peer) // the client catches up; the loop has not flushed
			}
			outq, _ := unix.IoctlGetInt(int(c.fd), unix.SIOCOUTQ)
			t.Logf("client read %d bytes; kernel send queue %d; %d bytes pending, mid-frame %v",
				len(got), outq, c.ext.outBytes, c.ext.headRest || c.ext.outOff > 0)
			c.WriteFrame(frame) // passes the bound
			if c.state == stOpen {
				t.Fatal("not cut")
			}
			rest, eof := readAll(t, peer)
			got = append(got, rest...)
			ops, payloads, tail := parseFrames(got)
			st := &l.st
			if room {
				if c.state != stLinger || !eof {
					t.Fatalf("state %d, eof %v: want the write side shut after the close frame", c.state, eof)
				}
				if len(tail) != 0 || len(ops) == 0 || ops[len(ops)-1] != ws.OpClose {
					t.Fatalf("the client read %d frames and %d stray bytes; want whole frames then a close", len(ops), len(tail))
				}
				p := payloads[len(payloads)-1]
				if code := binary.BigEndian.Uint16(p); code != 4100 || string(p[2:]) != reason.Text {
					t.Fatalf("close frame %d %q", code, p[2:])
				}
				for i, op := range ops[:len(ops)-1] {
					if op != ws.OpText || len(payloads[i]) != size {
						t.Fatalf("frame %d: op %v, %d bytes", i, op, len(payloads[i]))
					}
				}
				if st.slowSent.Load() != 1 || st.slowUnsent.Load() != 0 {
					t.Fatalf("sent %d unsent %d", st.slowSent.Load(), st.slowUnsent.Load())
				}
				return
			}
			if c.state != stDead {
				t.Fatalf("state %d: want the socket closed", c.state)
			}
			for _, op := range ops {
				if op == ws.OpClose {
					t.Fatal("a close frame went out with no room for it")
				}
			}
			if st.slowSent.Load() != 0 || st.slowUnsent.Load() != 1 {
				t.Fatalf("sent %d unsent %d", st.slowSent.Load(), st.slowUnsent.Load())
			}
		})
	}
}

// TestDoPastBound: Do jobs past DoMailboxSize are refused and their connection is
// closed with Config.Overloaded before anything else of the batch reaches it (the
// jobs admitted before still run, on a closing connection); a connection dialed
// afterwards is served as usual.
func TestDoPastBound(t *testing.T) {
	over := CloseReason{Code: 4100, Text: "server overloaded", Label: "overloaded_test"}
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 1, DoMailboxSize: 4, Overloaded: over})
	cl := dialWS(t, s.Addr())
	c := h.waitOpen(t)
	other := dialWS(t, s.Addr())
	oc := h.waitOpen(t)
	release := holdLoop(t, s.loops[0])
	var ran sync.WaitGroup
	for i := range 4 {
		ran.Add(1)
		if !s.Do(c, func() { defer ran.Done(); c.WriteText([]byte(fmt.Sprintf("do %d", i))) }) {
			t.Fatalf("Do %d refused under the bound", i)
		}
	}
	s.Fanout(AppendTextFrame(nil, []byte("after")), [][]*Conn{{c, oc}}, 0)
	if s.Do(c, func() { c.WriteText([]byte("lost")) }) {
		t.Fatal("Do past the bound admitted")
	}
	if s.Do(oc, func() { oc.WriteText([]byte("lost")) }) {
		t.Fatal("Do past the bound admitted")
	}
	release()
	ran.Wait() // the admitted Dos ran...
	// ...but c was closed first: its client reads the close, nothing else. The
	// bound is the loop's: oc's Do was refused too, so both close.
	_ = cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	op, p, err := cl.readFrame()
	if err != nil || op != ws.OpClose || binary.BigEndian.Uint16(p) != 4100 || string(p[2:]) != over.Text {
		t.Fatalf("got op %v %q %v; want the close %d", op, p, err, over.Code)
	}
	if r := h.waitClose(t, c.ID()); r != over {
		t.Fatalf("closed with %+v", r)
	}
	h.waitClose(t, oc.ID())
	_ = other.Close()
	st := s.Stats()
	if st.DoRefused != 2 || st.DoOverflowClosed != 2 || st.Closed[over.Label] != 2 {
		t.Fatalf("DoRefused %d, DoOverflowClosed %d, closed %v", st.DoRefused, st.DoOverflowClosed, st.Closed)
	}
	// A third connection, dialed after, is served as usual.
	third := dialWS(t, s.Addr())
	tc := h.waitOpen(t)
	if !s.Do(tc, func() { tc.WriteText([]byte("fine")) }) {
		t.Fatal("Do refused with an empty queue")
	}
	if got := third.readText(t); got != "fine" {
		t.Fatalf("got %q", got)
	}
}

// TestFanoutBacklogBound: past MailboxDeliveries a loop refuses its share (counted,
// and reported to the caller), Congested reports the high-water mark, and
// FanoutWait waits for room, or gives up after its wait.
func TestFanoutBacklogBound(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 1, MailboxDeliveries: 4})
	cls := dialMany(t, s.Addr(), 2)
	_, byLoop := collect(t, h, s, 2)
	frame := func(s string) []byte { return AppendTextFrame(nil, []byte(s)) }
	if s.Congested() {
		t.Fatal("congested with nothing queued")
	}
	release := holdLoop(t, s.loops[0])
	if d := s.Fanout(frame("1"), byLoop, 0); d != 0 {
		t.Fatalf("dropped %d", d)
	}
	if !s.Congested() {
		t.Fatal("not congested at half the bound")
	}
	if d := s.Fanout(frame("2"), byLoop, 0); d != 0 {
		t.Fatalf("dropped %d", d)
	}
	except := byLoop[0][0].ID()
	if d := s.Fanout(frame("lost"), byLoop, except); d != 1 {
		t.Fatalf("dropped %d, want 1 (one connection besides the excepted one)", d)
	}
	start := time.Now()
	if d := s.FanoutWait(context.Background(), 50*time.Millisecond, frame("lost too"), byLoop, 0); d != 2 {
		t.Fatalf("FanoutWait dropped %d, want 2", d)
	}
	if w := time.Since(start); w < 50*time.Millisecond {
		t.Fatalf("FanoutWait gave up after %v", w)
	}
	done := make(chan int)
	go func() { done <- s.FanoutWait(context.Background(), 10*time.Second, frame("3"), byLoop, 0) }()
	time.Sleep(20 * time.Millisecond)
	release()
	if d := <-done; d != 0 {
		t.Fatalf("FanoutWait dropped %d after the loop caught up", d)
	}
	for _, cl := range cls {
		var got []string
		for range 3 {
			got = append(got, cl.readText(t))
		}
		if strings.Join(got, ",") != "1,2,3" {
			t.Fatalf("got %v", got)
		}
	}
	st := s.Stats()
	if st.MailboxDropped != 2 || st.DeliveriesDropped != 3 {
		t.Fatalf("MailboxDropped %d, DeliveriesDropped %d; want 2 and 3", st.MailboxDropped, st.DeliveriesDropped)
	}
	for st.FanoutBacklog != 0 {
		time.Sleep(time.Millisecond)
		st = s.Stats()
	}
	if s.Congested() {
		t.Fatal("still congested")
	}
}
