package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-rt/herald/bench/cluster"
	"github.com/herald-rt/herald/loadgen"
)

const (
	slowChannel = "soak-slow"
	// The slow channel is fed slowPayload-byte events slowRate times a second: with
	// the client's receive buffer at slowRcvBuf, the node's 1 MiB per-connection
	// queue fills in seconds.
	slowPayload = 8 << 10
	slowRate    = 20
	slowRcvBuf  = 4 << 10
	// slowHold bounds one slow consumer: not cut off by then is a failure.
	slowHold = 2 * time.Minute
)

// SlowStats are the slow consumer's cycles.
type SlowStats struct {
	Cycles int `json:"cycles"` // connections that subscribed and stopped reading
	Cut    int `json:"cut"`    // cut off by the node (its slow_consumer count went up)
	NotCut int `json:"not_cut"`
	// CutSeconds are the times from the subscription to the cut.
	CutSecondsMin float64 `json:"cut_seconds_min"`
	CutSecondsMax float64 `json:"cut_seconds_max"`
	// Closes are how the client saw its end when it read again: "close <code>" for
	// a close frame, "eof" for a connection closed without one, by count.
	Closes    map[string]int `json:"closes"`
	Published uint64         `json:"published"` // events published to the slow channel
	PubErrors uint64         `json:"publish_errors"`
	Errors    []string       `json:"errors,omitempty"` // the first few
}

func (s *SlowStats) fail(format string, a ...any) {
	if len(s.Errors) < 10 {
		s.Errors = append(s.Errors, fmt.Sprintf(format, a...))
	}
}

// runSlowConsumer feeds the slow channel and runs slow consumers one after the other,
// on each node in turn, until ctx ends.
func runSlowConsumer(ctx context.Context, c *cluster.Cluster, st *SlowStats) {
	pub, err := loadgen.NewPublisher(loadgen.PublisherConfig{BaseURL: "http://" + c.Nodes[0].Addr, AppID: appID, Key: appKey, Secret: appSecret, MaxConns: 2})
	if err != nil {
		st.fail("publisher: %v", err)
		return
	}
	defer pub.Close()
	var published, pubErrs atomic.Uint64
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // the feed
		defer close(done)
		data := []byte(strings.Repeat("x", slowPayload))
		t := time.NewTicker(time.Second / slowRate)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			if err := pub.Publish(pctx, slowChannel, "fill", data); err != nil {
				if pctx.Err() == nil {
					pubErrs.Add(1)
				}
				continue
			}
			published.Add(1)
		}
	}()
	defer func() {
		stop()
		<-done
		st.Published, st.PubErrors = published.Load(), pubErrs.Load()
	}()

	st.Closes = map[string]int{}
	for i := 0; ctx.Err() == nil; i++ {
		n := c.Nodes[i%len(c.Nodes)]
		slowCycle(ctx, n, st)
	}
}

// slowCycle runs one slow consumer on node n.
func slowCycle(ctx context.Context, n *cluster.Node, st *SlowStats) {
	before, err := slowCloses(ctx, n.Admin)
	if err != nil {
		st.fail("metrics: %v", err)
		sleepCtx(ctx, time.Second)
		return
	}
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, slowRcvBuf)
		})
		return errors.Join(err, serr)
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, "ws://"+n.Addr+"/app/"+appKey+"?protocol=7&client=soak-slow", &websocket.DialOptions{HTTPClient: hc})
	if err == nil {
		_, err = readEvent(dctx, ws, "pusher:connection_established")
	}
	if err == nil {
		err = ws.Write(dctx, websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":{"channel":"`+slowChannel+`"}}`))
	}
	if err == nil {
		_, err = readEvent(dctx, ws, "pusher_internal:subscription_succeeded")
	}
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			st.fail("slow consumer on %s: %v", n.Name, err)
		}
		if ws != nil {
			ws.CloseNow()
		}
		sleepCtx(ctx, time.Second)
		return
	}
	defer ws.CloseNow()
	st.Cycles++
	// Stop reading. The node queues what the socket does not take and, past its
	// bound, cuts the connection off.
	start := time.Now()
	for {
		sleepCtx(ctx, time.Second)
		if ctx.Err() != nil {
			st.Cycles-- // ended by the soak, not decided
			return
		}
		now, err := slowCloses(ctx, n.Admin)
		if err == nil && now > before {
			d := time.Since(start).Seconds()
			if st.Cut == 0 || d < st.CutSecondsMin {
				st.CutSecondsMin = d
			}
			st.CutSecondsMax = max(st.CutSecondsMax, d)
			st.Cut++
			break
		}
		if time.Since(start) > slowHold {
			st.NotCut++
			st.fail("slow consumer on %s not cut off within %v", n.Name, slowHold)
			return
		}
	}
	// Read what is left, to see how the connection ended for the client.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		_, _, err := ws.Read(rctx)
		if err == nil {
			continue
		}
		switch code := websocket.CloseStatus(err); {
		case code != -1:
			st.Closes["close "+strconv.Itoa(int(code))]++
		case rctx.Err() != nil:
			st.Closes["still open"]++
		default:
			st.Closes["eof"]++
		}
		return
	}
}

// slowCloses is the node's herald_connections_closed_total{reason="slow_consumer"}.
func slowCloses(ctx context.Context, admin string) (float64, error) {
	ss, err := cluster.ScrapeSeries(ctx, admin)
	if err != nil {
		return 0, err
	}
	v := 0.0
	for _, s := range ss {
		if s.Name == "herald_connections_closed_total" && s.Labels["reason"] == "slow_consumer" {
			v += s.Value
		}
	}
	return v, nil
}

type pusherEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// readEvent reads until an event named want (skipping others) and returns it.
func readEvent(ctx context.Context, ws *websocket.Conn, want string) (pusherEvent, error) {
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return pusherEvent{}, fmt.Errorf("waiting for %s: %w", want, err)
		}
		var e pusherEvent
		if err := json.Unmarshal(b, &e); err != nil {
			return e, fmt.Errorf("waiting for %s: %q: %w", want, b, err)
		}
		switch e.Event {
		case want:
			return e, nil
		case "pusher:error", "pusher_internal:subscription_error", "pusher:subscription_error":
			return e, fmt.Errorf("waiting for %s: %s %s", want, e.Event, e.Data)
		}
	}
}

// ReconnectStats are the reconnecting client's cycles.
type ReconnectStats struct {
	Cycles   int      `json:"cycles"` // connect, subscribe, close
	Failures int      `json:"failures"`
	Presence int      `json:"presence"` // cycles on a presence channel
	Abrupt   int      `json:"abrupt"`   // cycles that dropped the socket instead of a close handshake
	Errors   []string `json:"errors,omitempty"`
}

// runReconnector connects, subscribes and closes in a loop until ctx ends, on each
// node in turn: a public or a presence channel, a close handshake or a dropped
// socket, alternately.
func runReconnector(ctx context.Context, c *cluster.Cluster, st *ReconnectStats) {
	for i := 0; ctx.Err() == nil; i++ {
		n := c.Nodes[i%len(c.Nodes)]
		presence, abrupt := i%2 == 1, (i/2)%2 == 1
		err := reconnectCycle(ctx, n.Addr, i, presence, abrupt)
		if ctx.Err() != nil {
			return
		}
		st.Cycles++
		if presence {
			st.Presence++
		}
		if abrupt {
			st.Abrupt++
		}
		if err != nil {
			st.Failures++
			if len(st.Errors) < 10 {
				st.Errors = append(st.Errors, fmt.Sprintf("%s: %v", n.Name, err))
			}
			sleepCtx(ctx, time.Second)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func reconnectCycle(ctx context.Context, addr string, i int, presence, abrupt bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/app/"+appKey+"?protocol=7&client=soak-reconnect", nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	e, err := readEvent(ctx, ws, "pusher:connection_established")
	if err != nil {
		return err
	}
	var s string
	var est struct {
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal(e.Data, &s); err != nil || json.Unmarshal([]byte(s), &est) != nil || est.SocketID == "" {
		return fmt.Errorf("connection_established %s", e.Data)
	}
	ch := "soak-reconnect-" + strconv.Itoa(i%10)
	sub := map[string]string{"channel": ch}
	if presence {
		ch = "presence-soak-reconnect-" + strconv.Itoa(i%10)
		cd := `{"user_id":"reconnect-` + strconv.Itoa(i) + `"}`
		sub = map[string]string{"channel": ch, "channel_data": cd,
			"auth": loadgen.ChannelAuth(appKey, appSecret, est.SocketID, ch, cd)}
	}
	d, _ := json.Marshal(sub)
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"event":"pusher:subscribe","data":`+string(d)+`}`)); err != nil {
		return err
	}
	if _, err := readEvent(ctx, ws, "pusher_internal:subscription_succeeded"); err != nil {
		return err
	}
	if abrupt {
		return nil // the deferred CloseNow drops the socket without a close handshake
	}
	if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		return fmt.Errorf("close handshake: %w", err)
	}
	return nil
}
