package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// testHandler echoes every text message and records what happens.
type testHandler struct {
	mu      sync.Mutex
	conns   []*Conn
	opened  map[uint64]*Conn
	closes  map[uint64][]CloseReason
	msgs    int
	onIdle  func(c *Conn)
	onMsg   func(c *Conn, msg []byte) // replaces the echo
	onOpen  func(c *Conn)
	closeCh chan uint64
	openCh  chan *Conn
}

func newTestHandler() *testHandler {
	return &testHandler{
		opened:  map[uint64]*Conn{},
		closes:  map[uint64][]CloseReason{},
		closeCh: make(chan uint64, 4096),
		openCh:  make(chan *Conn, 4096),
	}
}

func (h *testHandler) Accept(req *UpgradeRequest) (any, error) {
	switch {
	case req.Path == "/app/forbidden":
		return nil, &RejectError{Status: http.StatusForbidden, Message: "origin not allowed"}
	case req.Path == "/app/fail":
		return nil, errors.New("some internal error")
	case !strings.HasPrefix(req.Path, "/app/"):
		return nil, &RejectError{Status: http.StatusNotFound, Message: "path not found; connect to /app/{key}"}
	}
	return req, nil
}

func (h *testHandler) OnOpen(c *Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.opened[c.ID()] = c
	h.mu.Unlock()
	if h.onOpen != nil {
		h.onOpen(c)
	}
	h.openCh <- c
}

func (h *testHandler) OnMessage(c *Conn, msg []byte) {
	h.mu.Lock()
	h.msgs++
	h.mu.Unlock()
	if h.onMsg != nil {
		h.onMsg(c, msg)
		return
	}
	c.WriteText(msg)
}

func (h *testHandler) OnIdle(c *Conn) {
	if h.onIdle != nil {
		h.onIdle(c)
	}
}

func (h *testHandler) OnClose(c *Conn, r CloseReason) {
	h.mu.Lock()
	h.closes[c.ID()] = append(h.closes[c.ID()], r)
	h.mu.Unlock()
	h.closeCh <- c.ID()
}

func (h *testHandler) closeReasons(id uint64) []CloseReason {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]CloseReason(nil), h.closes[id]...)
}

// waitClose waits for OnClose of conn id and returns its reason.
func (h *testHandler) waitClose(t *testing.T, id uint64) CloseReason {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if r := h.closeReasons(id); len(r) > 0 {
			return r[0]
		}
		select {
		case <-h.closeCh:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no OnClose for conn %d", id)
		}
	}
}

func (h *testHandler) waitOpen(t *testing.T) *Conn {
	t.Helper()
	select {
	case c := <-h.openCh:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no OnOpen")
		return nil
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer runs a Server on 127.0.0.1 and shuts it down at the end of the test.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 500 * time.Millisecond // the cleanup's Shutdown waits for silent clients
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx, CloseReason{})
	})
	return s
}

// onLoop runs fn on loop l and waits for it (test only: a job without a Conn).
func onLoop(t testing.TB, l *loop, fn func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.post(job{fn: func() { fn(); close(done) }}, false) {
		t.Fatal("loop closed")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not run the job")
	}
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455's sample nonce

func upgradeRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n"
}

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds a masked client frame; b0 is the first byte (FIN, RSV, opcode).
func clientFrame(b0 byte, payload []byte) []byte {
	return clientFrameLen(b0, payload, len(payload))
}

// clientFrameLen declares length n whatever the payload is.
func clientFrameLen(b0 byte, payload []byte, n int) []byte {
	var out []byte
	switch {
	case n <= 125:
		out = append(out, b0, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, b0, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, testMask[:]...)
	p := bytes.Clone(payload)
	ws.Cipher(p, testMask, 0)
	return append(out, p...)
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

const (
	finText  = 0x81
	finBin   = 0x82
	finClose = 0x88
	finPing  = 0x89
	fragText = 0x01
	finCont  = 0x80
	fragCont = 0x00
)

// wsClient is a minimal blocking WebSocket client over a raw TCP connection.
type wsClient struct {
	net.Conn
	br *bufio.Reader
}

func dialWS(t testing.TB, addr string) *wsClient {
	t.Helper()
	c, status := dialWSFrom(t, addr, "", nil)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	return c
}

// dialFrom connects to addr from source address src ("" for the default).
func dialFrom(addr, src string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	return d.Dial("tcp", addr)
}

// dialWSFrom connects from src, sends prefix (a PROXY header, or nil) and an upgrade
// request, and returns the client and the response status. Unless the status is 101
// the connection is closed.
func dialWSFrom(t testing.TB, addr, src string, prefix []byte) (*wsClient, int) {
	t.Helper()
	nc, err := dialFrom(addr, src)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{Conn: nc, br: bufio.NewReader(nc)}
	if _, err := nc.Write(append(append([]byte(nil), prefix...), upgradeRequest("/app/test")...)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	_ = nc.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = nc.Close()
	}
	return c, resp.StatusCode
}

// readFrame reads one server frame.
func (c *wsClient) readFrame() (op ws.OpCode, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("unexpected frame header %x", h)
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return ws.OpCode(h[0] & 0x0f), payload, err
}

func (c *wsClient) readText(t testing.TB) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	op, p, err := c.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	if op != ws.OpText {
		t.Fatalf("got op %v %q, want text", op, p)
	}
	return string(p)
}

func (c *wsClient) send(t testing.TB, b0 byte, payload []byte) {
	t.Helper()
	if _, err := c.Write(clientFrame(b0, payload)); err != nil {
		t.Fatal(err)
	}
}

func netipAddrPort(s string) (netip.AddrPort, error) { return netip.ParseAddrPort(s) }
