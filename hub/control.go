package hub

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
)

// Control messages go from node to node over the broker's control channel (every node
// gets every one, the sender included):
//
//	[0]    version (envVersion)
//	[1:5]  node id of the sender, which acts on its own message before publishing it
//	       and ignores it when the broker hands it back
//	[5]    command
//	[6:]   the command's arguments
//
// Commands:
//
//	ctlTerminate  app id, 0x00, user id: close that user's connections with 4009
//
// A node ignores a command it does not know (a newer node's), counting it as a bad
// envelope, so that nodes of two versions can run side by side during a rolling update.
const (
	ctlHeader    = 6
	ctlTerminate = 1
)

func (h *Hub) controlMessage(cmd byte, args ...[]byte) []byte {
	n := ctlHeader
	for _, a := range args {
		n += len(a) + 1
	}
	b := make([]byte, ctlHeader, n)
	b[0] = envVersion
	binary.BigEndian.PutUint32(b[1:5], h.nodeID)
	b[5] = cmd
	for i, a := range args {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, a...)
	}
	return b
}

// terminateUser closes every connection signed in as userID, on every node (pusher:error
// 4009, close 4009). This node's are closed before the command goes out; an error means
// the other nodes may not have been told, and a retry is harmless.
func (h *Hub) terminateUser(ctx context.Context, a *appState, userID string) error {
	h.terminateLocal(a, userID)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	defer cancel()
	if err := h.broker.PublishControl(ctx, h.controlMessage(ctlTerminate, []byte(a.id), []byte(userID))); err != nil {
		h.metrics.brokerError()
		return err
	}
	return nil
}

// terminateLocal closes this node's connections of a user and returns how many there were.
func (h *Hub) terminateLocal(a *appState, userID string) int {
	cs := h.users.get(a, userID)
	for _, c := range cs {
		h.srv.Do(c.conn, func() { h.refuse(c, closeTerminated) })
	}
	return len(cs)
}

var errBadControl = errors.New("hub: malformed control message")

// HandleControl runs a control message from another node.
func (h *Hub) HandleControl(data []byte) {
	if err := h.handleControl(data); err != nil {
		h.metrics.badEnvelope()
		h.warns.Warn(warnControlDropped, "control message dropped", "err", err)
	}
}

func (h *Hub) handleControl(data []byte) error {
	if len(data) < ctlHeader || data[0] != envVersion {
		return errBadControl
	}
	if binary.BigEndian.Uint32(data[1:5]) == h.nodeID {
		return nil // ours: already acted on
	}
	switch data[5] {
	case ctlTerminate:
		appID, user, ok := bytes.Cut(data[ctlHeader:], []byte{0})
		if !ok {
			return errBadControl
		}
		if a := h.appByID(string(appID)); a != nil {
			h.terminateLocal(a, string(user))
		}
		return nil
	}
	return errBadControl
}
