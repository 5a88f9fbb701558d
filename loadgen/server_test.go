package loadgen

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fakeServer is a small Pusher server built on github.com/coder/websocket, independent
// of the client's code: it checks subscription signatures with its own HMAC, answers
// pusher:ping, and publishes to subscribers.
type fakeServer struct {
	t         *testing.T
	key       string
	secret    string
	activity  atomic.Int32 // activity_timeout sent to clients
	pongDelay atomic.Int64 // ns before a pusher:pong answers a pusher:ping

	srv    *httptest.Server
	nextID atomic.Int64

	// peers are the servers of a fake cluster (this one included): an API publish
	// reaches the subscribers of every peer. Set before the first connection.
	peers []*fakeServer
	// apiPublished counts events accepted by the HTTP API.
	apiPublished atomic.Int64

	mu      sync.Mutex
	subs    map[string][]*fakeConn // channel → subscribers
	conns   []*fakeConn
	remotes []string
	pings   int // pusher:ping received
	badAuth int
}

type fakeConn struct {
	ws       *websocket.Conn
	socketID string
	writeMu  sync.Mutex
}

func (c *fakeConn) write(ctx context.Context, msg string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.ws.Write(ctx, websocket.MessageText, []byte(msg))
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	s := &fakeServer{t: t, key: "test-key", secret: "test-secret", subs: map[string][]*fakeConn{}}
	s.activity.Store(120)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.close)
	return s
}

// newFakeCluster returns n fake servers that act as one: an API publish on any of
// them reaches the subscribers of all.
func newFakeCluster(t *testing.T, n int) []*fakeServer {
	t.Helper()
	var out []*fakeServer
	for i := 0; i < n; i++ {
		out = append(out, newFakeServer(t))
	}
	for _, s := range out {
		s.peers = out
	}
	return out
}

func (s *fakeServer) addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

func (s *fakeServer) close() {
	s.mu.Lock()
	conns := append([]*fakeConn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.CloseNow()
	}
	s.srv.Close()
}

func (s *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/apps/") {
		s.api(w, r)
		return
	}
	if r.URL.Path != "/app/"+s.key {
		http.Error(w, "no such app", http.StatusNotFound)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	ws.SetReadLimit(1 << 20)
	c := &fakeConn{ws: ws, socketID: fmt.Sprintf("1.%d", s.nextID.Add(1))}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.remotes = append(s.remotes, r.RemoteAddr)
	s.mu.Unlock()
	ctx := r.Context()
	est := fmt.Sprintf(`{"event":"pusher:connection_established","data":"{\"socket_id\":\"%s\",\"activity_timeout\":%d}"}`, c.socketID, s.activity.Load())
	if c.write(ctx, est) != nil {
		return
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var m struct {
			Event string `json:"event"`
			Data  struct {
				Channel     string `json:"channel"`
				Auth        string `json:"auth"`
				ChannelData string `json:"channel_data"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		switch m.Event {
		case "pusher:ping":
			s.mu.Lock()
			s.pings++
			s.mu.Unlock()
			time.Sleep(time.Duration(s.pongDelay.Load()))
			_ = c.write(ctx, `{"event":"pusher:pong","data":{}}`)
		case "pusher:subscribe":
			if !s.authOK(c.socketID, m.Data.Channel, m.Data.Auth, m.Data.ChannelData) {
				s.mu.Lock()
				s.badAuth++
				s.mu.Unlock()
				_ = c.write(ctx, `{"event":"pusher:subscription_error","channel":"`+m.Data.Channel+`","data":{"type":"AuthError","status":401}}`)
				continue
			}
			s.mu.Lock()
			s.subs[m.Data.Channel] = append(s.subs[m.Data.Channel], c)
			s.mu.Unlock()
			_ = c.write(ctx, `{"event":"pusher_internal:subscription_succeeded","channel":"`+m.Data.Channel+`","data":"{}"}`)
		}
	}
}

// api answers POST /apps/{id}/events and /apps/{id}/batch_events (signed, checked
// with verifyPusherRequest) by writing each event to the subscribers of every peer.
func (s *fakeServer) api(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || !verifyPusherRequest(r, body, s.key, s.secret) {
		http.Error(w, `{"error":"bad request or signature"}`, http.StatusUnauthorized)
		return
	}
	type event struct{ Name, Channel, Data string }
	var events []event
	switch {
	case strings.HasSuffix(r.URL.Path, "/batch_events"):
		var b struct{ Batch []event }
		if err := json.Unmarshal(body, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		events = b.Batch
	case strings.HasSuffix(r.URL.Path, "/events"):
		var e event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		events = []event{e}
	default:
		http.NotFound(w, r)
		return
	}
	peers := s.peers
	if peers == nil {
		peers = []*fakeServer{s}
	}
	for _, e := range events {
		data, _ := json.Marshal(e.Data)
		msg := `{"event":"` + e.Name + `","channel":"` + e.Channel + `","data":` + string(data) + `}`
		for _, peer := range peers {
			for _, c := range peer.subscribers(e.Channel) {
				_ = c.write(r.Context(), msg)
			}
		}
		s.apiPublished.Add(1)
	}
	_, _ = io.WriteString(w, "{}")
}

// conns returns how many WebSocket connections the server accepted.
func (s *fakeServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *fakeServer) authOK(socketID, channel, auth, channelData string) bool {
	signed := socketID + ":" + channel
	switch {
	case strings.HasPrefix(channel, "presence-"):
		signed += ":" + channelData
	case strings.HasPrefix(channel, "private-"):
	default:
		return auth == ""
	}
	m := hmac.New(sha256.New, []byte(s.secret))
	m.Write([]byte(signed))
	return auth == s.key+":"+hex.EncodeToString(m.Sum(nil))
}

// all returns every accepted connection.
func (s *fakeServer) all() []*fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fakeConn(nil), s.conns...)
}

// subscribers returns the connections subscribed to channel.
func (s *fakeServer) subscribers(channel string) []*fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fakeConn(nil), s.subs[channel]...)
}

// publish sends msg to every subscriber of channel.
func (s *fakeServer) publish(t *testing.T, channel, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range s.subscribers(channel) {
		if err := c.write(ctx, msg); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

func seqEvent(channel string, seq uint64) string {
	return `{"event":"tick","channel":"` + channel + `","data":"` + string(AppendPayload(nil, seq, time.Now().UnixNano(), 100)) + `"}`
}

// rawServer accepts one TCP connection and hands it to fn: for transcripts with
// exact bytes that a WebSocket library would refuse to send.
func rawServer(t *testing.T, fn func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}
