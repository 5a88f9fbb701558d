package pubsub

import (
	"context"
	"errors"
)

// ErrClosed is returned by a Broker's methods after Close.
var ErrClosed = errors.New("pubsub: broker closed")

// Handler receives the messages published to the channels its node subscribed to. The
// node (the hub) implements it; engines never import node logic.
//
// HandleMessage may be called from several goroutines at once and must not block for
// long. data is immutable: the handler may keep it, and the engine must not reuse it.
type Handler interface {
	HandleMessage(channel string, data []byte)
}

// Broker carries messages between the nodes that have subscribers for a channel.
//
// Delivery is at-most-once: a message published while a node is not (yet) subscribed,
// or lost with a connection to the engine, is not redelivered. Messages from one
// publisher on one channel arrive in the order they were published. Channel names are
// opaque to the broker (the hub prefixes them with the app id).
//
// Every method checks ctx at entry, so a cancelled context fails fast with an error that
// wraps ctx.Err().
type Broker interface {
	// Publish sends data to every node subscribed to channel, this one included.
	// The caller must not modify data afterwards.
	Publish(ctx context.Context, channel string, data []byte) error
	// Subscribe starts delivery of channel to this node's Handler. When it returns nil,
	// every message published afterwards is delivered. Subscribing twice is a no-op
	// (subscriptions are not counted: one Unsubscribe undoes any number of them).
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe stops delivery of channel. Unsubscribing an unknown channel is a no-op.
	Unsubscribe(ctx context.Context, channel string) error
	// Close releases the broker and stops delivery to its Handler; later calls, Close
	// included, return ErrClosed.
	Close() error
}
