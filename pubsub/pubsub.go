package pubsub

import (
	"context"
	"errors"
	"time"
)

// Errors returned by a Broker.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("pubsub: broker closed")
	// ErrUnavailable is returned while the engine's pub/sub path is known to be down
	// (a network engine between losing its server and proving it back): the call did
	// nothing, and the caller may retry later.
	ErrUnavailable = errors.New("pubsub: broker unavailable")
)

// Handler receives what the engine delivers to its node. The node (the hub) implements
// it; engines never import node logic.
//
// Its methods may be called from several goroutines at once and must not block for
// long: a network engine calls them from its receive loop, and a slow Handler delays
// every delivery behind it.
type Handler interface {
	// HandleMessage gets a message published on a channel this node subscribed to.
	// data is immutable: the handler may keep it, and the engine must not reuse it.
	HandleMessage(channel string, data []byte)
	// HandleControl gets a message published with PublishControl by any node, this
	// one included. data is immutable, as for HandleMessage.
	HandleControl(data []byte)
	// HandleBrokerState reports that the engine's pub/sub path stopped (up=false) or
	// works again (up=true). up=true comes only once every channel the node still
	// wants is subscribed again and a round trip through the engine succeeded; what
	// was published while it was down is lost (at-most-once). An engine that cannot
	// fail (the memory engine) never calls it.
	HandleBrokerState(up bool)
}

// Broker carries messages between the nodes that have subscribers for a channel, and
// control messages between all nodes.
//
// Delivery is at-most-once: a message published while a node is not (yet) subscribed,
// or lost with a connection to the engine, is not redelivered. Messages from one
// publisher on one channel arrive in the order they were published. Channel names are
// opaque to the broker (the hub prefixes them with the app id).
//
// Every method but Stats checks ctx at entry, so a cancelled context fails fast with an
// error that wraps ctx.Err(). Methods that may wait on the network also stop waiting
// when ctx ends.
type Broker interface {
	// Publish sends data to every node subscribed to channel, this one included.
	// The caller must not modify data afterwards. It returns once the engine has
	// taken the message (for a network engine: the server acknowledged it).
	Publish(ctx context.Context, channel string, data []byte) error
	// PublishKeep publishes like Publish and keeps data as channel's last message for
	// ttl, readable with Last on any node (Pusher's cache channels). The message is
	// kept before it is sent, so a node that receives it and then reads Last finds
	// it or a later one.
	PublishKeep(ctx context.Context, channel string, data []byte, ttl time.Duration) error
	// Last returns the message kept for channel and how much longer it is kept; ok is
	// false when there is none (never kept, or expired). The caller owns data.
	Last(ctx context.Context, channel string) (data []byte, ttl time.Duration, ok bool, err error)
	// PublishControl sends data to the HandleControl of every node of the cluster,
	// this one included, whatever it subscribed to.
	PublishControl(ctx context.Context, data []byte) error
	// Subscribe starts delivery of the channels to this node's Handler. When it
	// returns nil, every message published on them afterwards is delivered.
	// Subscribing twice is a no-op (subscriptions are not counted: one Unsubscribe
	// undoes any number of them). Engines batch: one call with many channels, and
	// concurrent calls, cost one round trip to the server, not one per channel.
	//
	// While the engine is down it returns ErrUnavailable at once; the channels stay
	// wanted and are subscribed again before HandleBrokerState(true). On any other
	// error the channels may or may not be subscribed: the caller Unsubscribes them
	// when it no longer wants them.
	Subscribe(ctx context.Context, channels ...string) error
	// Unsubscribe stops delivery of the channels: when it returns, nothing more on
	// them reaches the Handler. It does not wait on the network (the engine tells
	// the server in the background, and a lost connection drops the subscription
	// anyway), so it fails only on a done context or after Close. Unsubscribing a
	// channel that is not subscribed is a no-op.
	Unsubscribe(ctx context.Context, channels ...string) error
	// Stats returns the engine's figures; it never waits on the network.
	Stats() Stats
	// Close stops delivery to the Handler and releases the engine, waiting at most
	// until ctx ends for its goroutines; later calls, Close included, return
	// ErrClosed.
	Close(ctx context.Context) error
}

// Stats are a broker's figures, exported by the node as herald_broker_* metrics.
type Stats struct {
	// Engine names the implementation: "memory", "redis" or "redis-cluster".
	Engine string `json:"engine"`
	// Up is true while the pub/sub path works, as proven by the engine's last round
	// trip (always true for the memory engine until Close).
	Up bool `json:"up"`
	// Subscriptions is the number of channels this node holds in the engine (the
	// control channel and the engine's own probe channels not included).
	Subscriptions int `json:"subscriptions"`
	// Received counts the messages delivered to the Handler (HandleMessage and
	// HandleControl); Published counts Publish, PublishKeep and PublishControl calls
	// that succeeded.
	Received  uint64 `json:"received_messages"`
	Published uint64 `json:"published_messages"`
	// Reconnects counts the times the engine lost its connection to the server and
	// made a new one.
	Reconnects uint64 `json:"reconnects"`
}
