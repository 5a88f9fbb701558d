package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func ip16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

// TestIPLimiterBucket: the burst is the rate, then one upgrade per interval.
func TestIPLimiterBucket(t *testing.T) {
	lim := newIPLimiter(0, 10) // 10/s: burst 10, one per 100 ms
	ip := ip16("192.0.2.1")
	const ms = int64(time.Millisecond)
	now := 1000 * ms
	for i := range 10 {
		if _, _, ok := lim.admit(ip, now); !ok {
			t.Fatalf("upgrade %d of the burst refused", i)
		}
	}
	if _, why, ok := lim.admit(ip, now); ok || why != refUpgradesPerIP {
		t.Fatalf("11th upgrade: ok=%t why=%d", ok, why)
	}
	if _, _, ok := lim.admit(ip16("192.0.2.2"), now); !ok {
		t.Fatal("another address is limited too")
	}
	if _, _, ok := lim.admit(ip, now+99*ms); ok {
		t.Fatal("a token before its interval")
	}
	if _, _, ok := lim.admit(ip, now+100*ms); !ok {
		t.Fatal("no token after one interval")
	}
	// After a full second of silence the bucket is full again, and the entry can go.
	now += 2000 * ms
	for i := range lim.shards {
		lim.shards[i].sweep(now)
	}
	if lim.entries() != 0 {
		t.Fatalf("%d entries after refill", lim.entries())
	}
	for range 10 {
		if _, _, ok := lim.admit(ip, now); !ok {
			t.Fatal("burst after refill refused")
		}
	}
}

func TestIPLimiterConns(t *testing.T) {
	lim := newIPLimiter(2, 0)
	ip := ip16("2001:db8::1")
	for range 2 {
		if held, _, ok := lim.admit(ip, 0); !ok || !held {
			t.Fatal("refused under the limit")
		}
	}
	if _, why, ok := lim.admit(ip, 0); ok || why != refConnsPerIP {
		t.Fatalf("3rd: ok=%t why=%d", ok, why)
	}
	lim.release(ip, 0)
	if _, _, ok := lim.admit(ip, 0); !ok {
		t.Fatal("refused after a release")
	}
	lim.release(ip, 0)
	lim.release(ip, 0)
	if n := lim.entries(); n != 0 {
		t.Fatalf("%d entries with nothing open", n)
	}
	lim.release(ip, 0)
	if n := lim.unbalanced.Load(); n != 1 {
		t.Fatalf("an unmatched release counted %d times", n)
	}
}

// TestIPLimiterBounded: a million distinct addresses, each upgrading once and
// leaving, do not grow the table beyond what is live (addresses with an open
// connection or a bucket still refilling), and the heap does not keep what the
// table once held. Synthetic addresses, straight into the limiter.
func TestIPLimiterBounded(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	const n = 1_000_000
	const step = 10 * time.Microsecond // 100,000 new addresses per second
	lim := newIPLimiter(4, 100)        // a bucket refills 10 ms after one upgrade: ~1,000 live addresses
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	maxEntries := 0
	var ip [16]byte
	for i := range n {
		if i%2 == 0 { // IPv4, as the loops key it (IPv4-mapped)
			ip = netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, uint32(i)))).As16()
		} else {
			ip = [16]byte{0x20, 0x01, 0x0d, 0xb8}
			binary.BigEndian.PutUint64(ip[8:], uint64(i))
		}
		now := int64(i) * int64(step)
		held, _, ok := lim.admit(ip, now)
		if !ok || !held {
			t.Fatalf("address %d refused", i)
		}
		lim.release(ip, now)
		if i%1000 == 0 {
			maxEntries = max(maxEntries, lim.entries())
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("1M addresses: at most %d entries held; heap grew %d KiB", maxEntries, grown>>10)
	// Live ≈ 1,000; each shard may hold ipMinSweep or twice its live share before a
	// sweep: 64 shards × 64 = 4,096.
	if maxEntries > 2*ipShards*ipMinSweep {
		t.Errorf("table grew to %d entries", maxEntries)
	}
	if grown > 4<<20 {
		t.Errorf("heap grew %d bytes", grown)
	}
	if u := lim.unbalanced.Load(); u != 0 {
		t.Errorf("%d unbalanced releases", u)
	}
}

// TestIPConnLimit: past MaxConnectionsPerIP the upgrade is answered 429; another
// address is not affected; a close frees the slot.
func TestIPConnLimit(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, MaxConnectionsPerIP: 3})
	var held []*wsClient
	for range 3 {
		c, status := dialWSFrom(t, s.Addr(), "127.0.0.5", nil)
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d under the limit", status)
		}
		held = append(held, c)
		defer c.Close()
	}
	if _, status := dialWSFrom(t, s.Addr(), "127.0.0.5", nil); status != http.StatusTooManyRequests {
		t.Fatalf("4th: status %d, want 429", status)
	}
	if c, status := dialWSFrom(t, s.Addr(), "127.0.0.6", nil); status != http.StatusSwitchingProtocols {
		t.Fatalf("another address: status %d", status)
	} else {
		defer c.Close()
	}
	collect(t, h, s, 4)
	// OnOpen order follows the loops, not the dials: wait for whichever conn closes.
	held[0].send(t, finClose, closePayload(1000, ""))
	select {
	case <-h.closeCh:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose after the client's close")
	}
	if c, status := dialWSFrom(t, s.Addr(), "127.0.0.5", nil); status != http.StatusSwitchingProtocols {
		t.Fatalf("after a close: status %d", status)
	} else {
		defer c.Close()
	}
	if st := s.Stats(); st.Refused[RefusedConnsPerIP] != 1 || st.Refused[RefusedUpgradesPerIP] != 0 {
		t.Fatalf("Refused %v", st.Refused)
	}
}

// TestIPConnLimitBehindProxy: behind a trusted balancer the limit is per client, not
// per balancer.
func TestIPConnLimitBehindProxy(t *testing.T) {
	s := startServer(t, Config{Handler: newTestHandler(), MaxConnectionsPerIP: 1, ProxyProtocol: true,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix(srcLB + "/32")}})
	for i, tc := range []struct {
		header string
		want   int
	}{
		{"PROXY TCP4 203.0.113.1 10.0.0.1 1000 6001\r\n", 101},
		{"PROXY TCP4 203.0.113.2 10.0.0.1 1000 6001\r\n", 101},
		{"PROXY TCP6 2001:db8::1 2001:db8::2 1000 6001\r\n", 101},
		{"PROXY TCP4 203.0.113.1 10.0.0.1 1001 6001\r\n", 429},
		{"PROXY TCP6 ::ffff:203.0.113.2 ::1 1001 6001\r\n", 429}, // the same client, IPv4-mapped
	} {
		c, status := dialWSFrom(t, s.Addr(), srcLB, []byte(tc.header))
		if status != tc.want {
			t.Fatalf("%d: status %d, want %d", i, status, tc.want)
		}
		defer c.Close()
	}
}

// TestIPConnLimitReleasedOnce opens and closes many connections from one address by
// every way a connection can end, before and after the upgrade; each open takes the
// address's slot exactly once and each end gives it back exactly once.
func TestIPConnLimitReleasedOnce(t *testing.T) {
	const limit, rounds = 2, 60
	h := newTestHandler()
	s := startServer(t, Config{Handler: h, Loops: 2, MaxConnectionsPerIP: limit, CloseTimeout: 50 * time.Millisecond})
	src := "127.0.0.7"
	ip := ip16(src)
	ends := []func(c *wsClient, conn *Conn){
		func(c *wsClient, _ *Conn) { c.send(t, finClose, closePayload(1000, "")) }, // peer close
		func(c *wsClient, _ *Conn) { _ = c.Close() },                               // connection lost
		func(c *wsClient, conn *Conn) { // server close, answered
			s.Do(conn, func() { conn.Close(CloseGoingAway) })
			_, _, _ = c.readFrame()
			c.send(t, finClose, closePayload(1001, ""))
		},
		func(c *wsClient, conn *Conn) { s.Do(conn, func() { conn.Close(CloseGoingAway) }) }, // server close, unanswered: CloseTimeout
		func(c *wsClient, _ *Conn) { _, _ = c.Write([]byte{0x81, 0x00}) },                   // protocol error
		func(c *wsClient, conn *Conn) { // a socket error: closed without a handshake
			s.Do(conn, func() { conn.l.finish(conn, CloseConnLost) })
		},
	}
	var clients []*wsClient
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for r := range rounds {
		// A handshake that fails after taking the slot (Accept refuses it) gives it back.
		if nc, err := dialFrom(s.Addr(), src); err == nil {
			_, _ = nc.Write([]byte(upgradeRequest("/app/forbidden")))
			resp, _ := io.ReadAll(nc)
			_ = nc.Close()
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 403 ")) {
				t.Fatalf("round %d: %q", r, resp)
			}
		}
		var conns []*Conn
		for range limit {
			c, status := dialWSFrom(t, s.Addr(), src, nil)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("round %d: status %d (a slot was not given back)", r, status)
			}
			clients = append(clients, c)
			conns = append(conns, h.waitOpen(t))
		}
		if got := s.limits.conns(ip); got != limit {
			t.Fatalf("round %d: %d held, want %d", r, got, limit)
		}
		if _, status := dialWSFrom(t, s.Addr(), src, nil); status != http.StatusTooManyRequests {
			t.Fatalf("round %d: status %d past the limit", r, status)
		}
		for i, conn := range conns {
			ends[(r*limit+i)%len(ends)](clients[len(clients)-limit+i], conn)
			h.waitClose(t, conn.ID())
		}
	}
	if n := s.limits.entries(); n != 0 {
		t.Fatalf("%d addresses still held (%d conns for %s)", n, s.limits.conns(ip), src)
	}
	if n := s.limits.unbalanced.Load(); n != 0 {
		t.Fatalf("%d releases without a held connection", n)
	}
	st := s.Stats()
	if st.Upgraded != rounds*limit || st.Refused[RefusedConnsPerIP] != rounds || st.Refused[RefusedRejected] != rounds {
		t.Fatalf("upgraded %d, refused %v", st.Upgraded, st.Refused)
	}
	// And one more full set opens.
	for range limit {
		c, status := dialWSFrom(t, s.Addr(), src, nil)
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d after all rounds", status)
		}
		clients = append(clients, c)
	}
}

// TestIPUpgradeRate drives the token bucket with a fake clock: the burst, the 429,
// and the refill.
func TestIPUpgradeRate(t *testing.T) {
	var now atomic.Int64
	now.Store(int64(time.Hour))
	h := newTestHandler()
	s, err := New(Config{Handler: h, Addr: "127.0.0.1:0", Loops: 2, Logger: quietLogger(), MaxUpgradesPerIPPerSecond: 5})
	if err != nil {
		t.Fatal(err)
	}
	s.nowFn = now.Load
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx, CloseReason{})
	}()
	src := "127.0.0.8"
	expect := func(step string, want ...int) {
		t.Helper()
		for i, w := range want {
			c, status := dialWSFrom(t, s.Addr(), src, nil)
			if status != w {
				t.Fatalf("%s, upgrade %d: status %d, want %d", step, i, status, w)
			}
			_ = c.Close()
		}
	}
	expect("burst", 101, 101, 101, 101, 101, 429)
	if c, status := dialWSFrom(t, s.Addr(), "127.0.0.9", nil); status != 101 {
		t.Fatalf("another address: status %d", status)
	} else {
		_ = c.Close()
	}
	now.Add(int64(200 * time.Millisecond)) // one token
	expect("after 200 ms", 101, 429)
	now.Add(int64(time.Second)) // full again
	expect("after 1.2 s", 101, 101, 101, 101, 101, 429)
	if st := s.Stats(); st.Refused[RefusedUpgradesPerIP] != 3 {
		t.Fatalf("Refused %v", st.Refused)
	}
}
