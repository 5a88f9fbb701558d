package hub

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"

	"github.com/herald-rt/herald/transport"
)

// A broker message is an envelope around a finished WebSocket frame, so that the
// receiving node sends the bytes it got without decoding or encoding anything:
//
//	[0]     flags (reserved, 0)
//	[1:5]   node id of the connection to skip (big endian; 0 for none)
//	[5:13]  conn id of the connection to skip
//	[13:]   the server text frame
const envHeader = 13

// envelope wraps the event JSON js in a frame and an envelope, in one allocation.
func (h *Hub) envelope(js []byte, exceptNode uint32, exceptConn uint64, _ bool) []byte {
	b := make([]byte, envHeader, envHeader+len(js)+10)
	binary.BigEndian.PutUint32(b[1:5], exceptNode)
	binary.BigEndian.PutUint64(b[5:13], exceptConn)
	return transport.AppendTextFrame(b, js)
}

// publishEnvelope hands an envelope to the broker (not from a loop: it may block).
func (h *Hub) publishEnvelope(key string, env []byte) error {
	ctx, cancel := h.opContext()
	defer cancel()
	err := h.broker.Publish(ctx, key, env)
	if err != nil {
		h.log.Warn("broker publish failed", "channel", key, "err", err)
		h.metrics.brokerError()
	}
	return err
}

// HandleMessage delivers a broker message to this node's subscribers of the channel:
// the frame inside the envelope is written as is to every one of them.
func (h *Hub) HandleMessage(key string, data []byte) {
	if len(data) <= envHeader {
		h.metrics.badEnvelope()
		return
	}
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
	if node := binary.BigEndian.Uint32(data[1:5]); node != 0 && node == h.nodeID {
		except = binary.BigEndian.Uint64(data[5:13])
		n-- // deliveries attempted: the sender is normally a subscriber
	}
	h.srv.Fanout(data[envHeader:], byLoop, except)
	ch.app.stats.sent(uint64(n))
}

// ErrUnknownSocket is returned for an exclusion socket_id that is not of the form "digits.digits".
var ErrUnknownSocket = errors.New("hub: invalid socket_id")

// publish implements the HTTP API's trigger (see internal_api.go).
func (h *Hub) publish(ctx context.Context, a *appState, channels []string, name string, data json.RawMessage, excludeSocketID string) error {
	var node uint32
	var conn uint64
	if excludeSocketID != "" {
		var ok bool
		node, conn, ok = parseSocketID(excludeSocketID)
		if !ok {
			return ErrUnknownSocket
		}
	}
	var errs []error
	for _, chName := range channels {
		js := eventJSON(make([]byte, 0, 48+len(name)+len(chName)+len(data)), name, chName, data, "")
		env := h.envelope(js, node, conn, false)
		key := channelKey(a, chName)
		if _, cache := channelKind(chName); cache {
			h.cache.set(key, env[envHeader:], data, h.clock().Add(h.cfg.CacheTTL))
		}
		if err := h.broker.Publish(ctx, key, env); err != nil {
			h.metrics.brokerError()
			errs = append(errs, err)
			continue
		}
		a.stats.published("api")
	}
	return errors.Join(errs...)
}
