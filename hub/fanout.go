package hub

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/herald-rt/herald/transport"
)

// A broker message is an envelope around a finished WebSocket frame, so that the
// receiving node sends the bytes it got without decoding or encoding anything:
//
//	[0]      version (envVersion); a node drops, and counts, an envelope of another
//	         version rather than guess at its layout
//	[1:5]    node id of the publishing node (big endian)
//	[5:9]    node id of the connection to skip (0 for none)
//	[9:17]   conn id of the connection to skip
//	[17:]    the server text frame
//
// The publishing node delivers to its own subscribers itself, once the broker took the
// message, and drops the copy the broker hands back to it (its origin is its own id):
// every subscriber in the cluster gets each message exactly once, and a node's own
// subscribers do not wait for a round trip through Redis. Node ids are unique among live
// nodes (the presence store refuses a taken one).
const (
	envVersion = 1
	envHeader  = 17
)

// envelope wraps the event JSON js in a frame and an envelope, in one allocation. The
// connection (exceptNode, exceptConn) is skipped on delivery; 0, 0 skips none.
func (h *Hub) envelope(js []byte, exceptNode uint32, exceptConn uint64) []byte {
	b := make([]byte, envHeader, envHeader+len(js)+10)
	b[0] = envVersion
	binary.BigEndian.PutUint32(b[1:5], h.nodeID)
	binary.BigEndian.PutUint32(b[5:9], exceptNode)
	binary.BigEndian.PutUint64(b[9:17], exceptConn)
	return transport.AppendTextFrame(b, js)
}

// opContext bounds one broker or presence call: Config.OpTimeout, and never past the
// stop's deadline (StopBy). The deadline, not only a cancellation, matters: a call
// blocked on a frozen Redis ends at its deadline, and a cancellation is not seen
// until then.
func (h *Hub) opContext() (context.Context, context.CancelFunc) {
	d := time.Now().Add(h.cfg.OpTimeout)
	if by := h.stopBy.Load(); by != 0 && by < d.UnixNano() {
		d = time.Unix(0, by)
	}
	return context.WithDeadline(h.base, d)
}

// StopBy tells the hub the time by which the process will have stopped (the
// shutdown's deadline, known from the first signal, before the drain). Every broker
// and presence call made after it ends by then, so that a frozen Redis cannot hold
// the stop past its deadline. Shutdown calls it with its context's deadline. Safe
// from any goroutine; an earlier time wins.
func (h *Hub) StopBy(t time.Time) {
	by := t.UnixNano()
	for {
		old := h.stopBy.Load()
		if old != 0 && old <= by {
			return
		}
		if h.stopBy.CompareAndSwap(old, by) {
			return
		}
	}
}

// publishEnvelope hands an envelope to the broker and, once the broker took it, delivers
// it to this node's own subscribers. With keep > 0 the broker also keeps it as the
// channel's last message (cache channels). It may block: never call it from a loop.
func (h *Hub) publishEnvelope(ctx context.Context, key string, env []byte, keep time.Duration) error {
	var err error
	if keep > 0 {
		err = h.broker.PublishKeep(ctx, key, env, keep)
	} else {
		err = h.broker.Publish(ctx, key, env)
	}
	if err != nil {
		h.metrics.brokerError()
		return err
	}
	h.deliver(key, env, false)
	return nil
}

// publishAsync publishes an envelope from an ops job and counts a failure under reason;
// it reports whether the broker took it.
func (h *Hub) publishAsync(a *appState, key string, env []byte, reason string) bool {
	ctx, cancel := h.opContext()
	defer cancel()
	if err := h.publishEnvelope(ctx, key, env, 0); err != nil {
		a.stats.dropped(reason)
		h.warns.Warn(warnBrokerPublish, "broker publish failed", "channel", key, "err", err)
		return false
	}
	return true
}

// HandleMessage delivers a broker message to this node's subscribers of the channel:
// the frame inside the envelope is written as is to every one of them. A loop whose
// fan-out backlog is full is waited for, at most Config.DeliveryWait (overload.go).
func (h *Hub) HandleMessage(key string, data []byte) {
	if len(data) <= envHeader || data[0] != envVersion {
		h.metrics.badEnvelope()
		return
	}
	if binary.BigEndian.Uint32(data[1:5]) == h.nodeID {
		return // ours: delivered locally when it was published
	}
	h.deliver(key, data, true)
}

// deliver writes the envelope's frame to this node's subscribers of the channel. A
// broker message (remote) waits for a full loop, at most Config.DeliveryWait; a local
// publish never waits (it was checked against the high-water mark before it was
// published). Subscribers in a share a full loop refused are counted as dropped, the
// others as sent.
func (h *Hub) deliver(key string, env []byte, remote bool) {
	ch := h.index.get(key)
	if ch == nil {
		return
	}
	byLoop, n := ch.subscribers(h.srv.NumLoops())
	if n == 0 {
		return
	}
	// The connection to skip is named by socket id; it is on this node when the node
	// part is ours, and then the transport skips it by its conn id.
	var except uint64
	if node := binary.BigEndian.Uint32(env[5:9]); node != 0 && node == h.nodeID {
		except = binary.BigEndian.Uint64(env[9:17])
		n-- // deliveries attempted: the sender is normally a subscriber
	}
	var dropped int
	if remote {
		dropped = h.srv.FanoutWait(h.base, h.cfg.DeliveryWait, env[envHeader:], byLoop, except)
	} else {
		dropped = h.srv.Fanout(env[envHeader:], byLoop, except)
	}
	if dropped > 0 {
		reason := dropDeliveryOverflow
		if remote {
			reason = dropDeliveryTimeout
		}
		h.droppedDeliveries(ch, reason, dropped)
		n -= dropped
	}
	ch.app.stats.sent(uint64(max(n, 0)))
}

// HandleBrokerState logs the broker's outages; the broker resubscribes by itself, and
// the figures are in Stats.
func (h *Hub) HandleBrokerState(up bool) {
	if up {
		h.log.Info("broker is up again: cross-node delivery resumed")
	} else {
		h.log.Warn("broker is down: publishes fail with 503 and cross-node delivery stops until it is back")
	}
}

// ErrUnknownSocket is returned for an exclusion socket_id that is not of the form "digits.digits".
var ErrUnknownSocket = errors.New("hub: invalid socket_id")

// publish implements the HTTP API's trigger (see internal_api.go). It stops at the first
// channel the broker refuses, so that the publisher's retry repeats as little as
// possible. While this node's loops are past their high-water mark it publishes
// nothing and returns ErrServerBusy (503 with Retry-After; overload.go).
func (h *Hub) publish(ctx context.Context, a *appState, channels []string, name string, data json.RawMessage, excludeSocketID string) error {
	if h.busy(a, dropPublishBusy) {
		return ErrServerBusy
	}
	var node uint32
	var conn uint64
	if excludeSocketID != "" {
		var ok bool
		node, conn, ok = parseSocketID(excludeSocketID)
		if !ok {
			return ErrUnknownSocket
		}
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	defer cancel()
	for _, chName := range channels {
		js := eventJSON(make([]byte, 0, 48+len(name)+len(chName)+len(data)), name, chName, data, "")
		var keep time.Duration
		if _, cache := channelKind(chName); cache {
			keep = h.cfg.CacheTTL
		}
		if err := h.publishEnvelope(ctx, channelKey(a, chName), h.envelope(js, node, conn), keep); err != nil {
			return err
		}
		a.stats.published("api")
	}
	return nil
}
