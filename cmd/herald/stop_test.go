package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testNode is a started node whose signals the test sends.
type testNode struct {
	*node
	sigs    chan os.Signal
	stopped chan error
	logs    *lockedBuffer
}

// startNode starts a node on loopback ports with args and serves it until the test
// sends SIGTERM (or the test ends: then it is stopped).
func startNode(t *testing.T, args ...string) *testNode {
	t.Helper()
	o, err := parseFlags(append([]string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--loops", "1"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	n, err := start(o, io.Discard, logs)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{node: n, sigs: make(chan os.Signal, 4), stopped: make(chan error, 1), logs: logs}
	go func() { tn.stopped <- n.wait(tn.sigs) }()
	t.Cleanup(func() {
		select {
		case tn.sigs <- syscall.SIGTERM:
		default:
		}
		select {
		case <-tn.stopped:
		case <-time.After(30 * time.Second):
			t.Error("node did not stop")
		}
	})
	return tn
}

// waitStopped waits for wait to return and checks it returned nil (exit status 0).
func (n *testNode) waitStopped(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case err := <-n.stopped:
		if err != nil {
			t.Fatalf("stop: %v, want nil (exit 0)", err)
		}
		n.stopped <- nil // for the cleanup
	case <-time.After(within):
		t.Fatalf("the node did not stop within %v\n%s", within, n.logs)
	}
}

// client is a WebSocket client of the node.
type client struct {
	t        *testing.T
	c        *websocket.Conn
	socketID string
}

func dial(t *testing.T, n *testNode, key string) (*client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+n.h.Addr()+"/app/"+key+"?protocol=7", nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.CloseNow() })
	cl := &client{t: t, c: c}
	var d struct {
		SocketID string `json:"socket_id"`
	}
	e := cl.read()
	if e.Event != "pusher:connection_established" {
		return nil, fmt.Errorf("first event %+v", e)
	}
	var s string
	_ = json.Unmarshal(e.Data, &s)
	_ = json.Unmarshal([]byte(s), &d)
	cl.socketID = d.SocketID
	return cl, nil
}

func connectTo(t *testing.T, n *testNode, key string) *client {
	t.Helper()
	c, err := dial(t, n, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type wsEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

func (c *client) read() wsEvent {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.c.Read(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var e wsEvent
	_ = json.Unmarshal(b, &e)
	return e
}

func (c *client) send(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// subscribePrivate subscribes to a private channel with a signature of secret and
// returns the answer's event name.
func (c *client) subscribePrivate(key, secret, channel string) string {
	c.t.Helper()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(c.socketID + ":" + channel))
	c.send(`{"event":"pusher:subscribe","data":{"channel":"` + channel + `","auth":"` + key + ":" + hex.EncodeToString(m.Sum(nil)) + `"}}`)
	return c.read().Event
}

// closeCode reads until the connection closes and returns its close code and when.
func (c *client) closeCode(within time.Duration) (websocket.StatusCode, time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		if _, _, err := c.c.Read(ctx); err != nil {
			return websocket.CloseStatus(err), time.Now()
		}
	}
}

func readyz(t *testing.T, n *testNode) int {
	t.Helper()
	resp, err := http.Get("http://" + n.adm.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// SIGTERM: readiness fails at once, every connection is closed with 4200 within the
// drain window, new connections are refused meanwhile, and the node stops cleanly
// within --shutdown-timeout.
func TestSIGTERMDrains(t *testing.T) {
	n := startNode(t, "--app-id", "1", "--app-key", "k", "--app-secret", "s", "--drain-window", "2s", "--shutdown-timeout", "5s")
	cs := make([]*client, 4) // on one loop: closed 0.5 s apart
	for i := range cs {
		cs[i] = connectTo(t, n, "k")
	}
	if got := readyz(t, n); got != http.StatusOK {
		t.Fatalf("/readyz %d before the signal", got)
	}
	start := time.Now()
	n.sigs <- syscall.SIGTERM
	deadline := time.Now().Add(time.Second)
	for !n.h.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := readyz(t, n); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d during the drain", got)
	}
	if c, err := dial(t, n, "k"); err == nil {
		c.c.CloseNow()
		t.Error("a connection was accepted during the drain")
	}
	var last time.Duration
	for i, c := range cs {
		code, at := c.closeCode(5 * time.Second)
		if code != 4200 {
			t.Errorf("connection %d closed with %d, want 4200", i, code)
		}
		last = max(last, at.Sub(start))
	}
	if last < 500*time.Millisecond || last > 2500*time.Millisecond {
		t.Errorf("last close %v after SIGTERM, want within the 2s window and spread over it", last)
	}
	n.waitStopped(t, 5*time.Second)
	for _, want := range []string{"draining: refusing new connections", "drained: every connection closed", "stopped"} {
		if !strings.Contains(n.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, n.logs)
		}
	}
}

// A second SIGTERM (or SIGINT) during the drain closes the rest at once, and the node
// goes on stopping.
func TestSecondSignalCutsTheDrain(t *testing.T) {
	n := startNode(t, "--app-id", "1", "--app-key", "k", "--app-secret", "s", "--drain-window", "20s", "--shutdown-timeout", "30s")
	cs := make([]*client, 4)
	for i := range cs {
		cs[i] = connectTo(t, n, "k")
	}
	n.sigs <- syscall.SIGTERM
	if code, _ := cs[0].closeCode(5 * time.Second); code != 4200 { // the first close of the window: at once
		t.Fatalf("first close %d", code)
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	n.sigs <- syscall.SIGINT
	for i, c := range cs[1:] {
		if code, at := c.closeCode(5 * time.Second); code != 4200 || at.Sub(start) > 2*time.Second {
			t.Errorf("connection %d closed with %d after %v, want 4200 at once", i+1, code, at.Sub(start))
		}
	}
	n.waitStopped(t, 5*time.Second)
	if !strings.Contains(n.logs.String(), "second signal") {
		t.Errorf("log:\n%s", n.logs)
	}
}

// SIGHUP rereads --config: a removed app's connections are closed with 4003, a new
// secret signs from then on; a bad file is refused, logged and counted, and the
// running apps are kept.
func TestSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "apps.json")
	write := func(doc string) {
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"apps":[{"id":"1","key":"k1","secret":"s1"},{"id":"2","key":"k2","secret":"s2"}]}`)
	// The flags' app is part of every reload too.
	n := startNode(t, "--config", cfg, "--app-id", "3", "--app-key", "k3", "--app-secret", "s3")
	one, two := connectTo(t, n, "k1"), connectTo(t, n, "k2")
	two.send(`{"event":"pusher:subscribe","data":{"channel":"orders"}}`)
	if e := two.read(); e.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("subscribe: %+v", e)
	}

	write(`{"apps":[{"id":"1","key":"k1","secret":"s1-new"}]}`)
	n.sigs <- syscall.SIGHUP
	if code, _ := two.closeCode(5 * time.Second); code != 4003 {
		t.Fatalf("removed app's connection closed with %d, want 4003", code)
	}
	if got := one.subscribePrivate("k1", "s1", "private-a"); got != "pusher:subscription_error" {
		t.Fatalf("old secret: %s", got)
	}
	if got := one.subscribePrivate("k1", "s1-new", "private-a"); got != "pusher_internal:subscription_succeeded" {
		t.Fatalf("new secret: %s", got)
	}
	if ids := n.h.AppIDs(); strings.Join(ids, ",") != "1,3" {
		t.Fatalf("apps %v after the reload", ids)
	}

	for _, bad := range []string{`{"apps":[{"id":"1","key":"k1"`, `{"apps":[{"id":"1","key":"k1","secret":"s","max_conections":1}]}`, `{"apps":[{"id":"3","key":"k1","secret":"s"}]}`} {
		write(bad)
		n.sigs <- syscall.SIGHUP
	}
	os.Remove(cfg)
	n.sigs <- syscall.SIGHUP
	waitUntil(t, "the refused reloads to be counted", func() bool { return n.h.Stats().Node.ConfigReloads.Errors == 4 })
	if st := n.h.Stats().Node.ConfigReloads; st.OK != 1 || !strings.Contains(st.LastError, "no such file") {
		t.Fatalf("reload stats %+v", st)
	}
	if got := one.subscribePrivate("k1", "s1-new", "private-b"); got != "pusher_internal:subscription_succeeded" {
		t.Fatalf("after refused reloads: %s", got)
	}
	if c := strings.Count(n.logs.String(), "config reload refused"); c != 4 {
		t.Fatalf("%d refusals logged, want 4:\n%s", c, n.logs)
	}
}

// A node that started with the demo app keeps it, secret and all, across a reload
// that finds nothing configured.
func TestSIGHUPKeepsTheDemoApp(t *testing.T) {
	n := startNode(t)
	demo := n.demo[0]
	c := connectTo(t, n, demo.Key)
	n.sigs <- syscall.SIGHUP
	waitUntil(t, "the reload", func() bool { return n.h.Stats().Node.ConfigReloads.OK == 1 })
	if got := c.subscribePrivate(demo.Key, demo.Secret, "private-a"); got != "pusher_internal:subscription_succeeded" {
		t.Fatalf("demo secret after the reload: %s", got)
	}
}

// The transport's new options reach the transport: a second connection from one
// address is refused past --max-connections-per-ip, and with --proxy-protocol a
// trusted source that sends no PROXY header is refused.
func TestTransportFlagsWired(t *testing.T) {
	n := startNode(t, "--app-id", "1", "--app-key", "k", "--app-secret", "s", "--max-connections-per-ip", "1", "--max-upgrades-per-ip-per-second", "100")
	connectTo(t, n, "k")
	if _, err := dial(t, n, "k"); err == nil {
		t.Fatal("a second connection from 127.0.0.1 was accepted with --max-connections-per-ip 1")
	}
	waitUntil(t, "the refusal to be counted", func() bool {
		return n.h.Stats().Node.Transport.Refused["too_many_connections_per_ip"] == 1
	})

	p := startNode(t, "--app-id", "1", "--app-key", "k", "--app-secret", "s", "--proxy-protocol", "--trusted-proxies", "127.0.0.1")
	if _, err := dial(t, p, "k"); err == nil {
		t.Fatal("a connection without a PROXY header was accepted from a trusted proxy")
	}
	waitUntil(t, "the refusal to be counted", func() bool {
		return p.h.Stats().Node.Transport.Refused["proxy_missing"] == 1
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
