package presence

import (
	"context"
	"encoding/json"
	"errors"
)

// Errors returned by a Store.
var (
	ErrFull   = errors.New("presence: channel member limit reached")
	ErrClosed = errors.New("presence: store closed")
)

// Member is one user present in a channel, as the app's channel_data described it.
type Member struct {
	UserID string          `json:"user_id"`
	Info   json.RawMessage `json:"user_info,omitempty"` // raw JSON, never re-encoded; nil when absent
}

// Departure is a user who left a channel because a node's entries were removed (the
// node crashed or was cleaned up): the node that learns of it sends member_removed.
type Departure struct {
	Channel string
	UserID  string
}

// Store tracks which users are present in which presence channels, across every node.
//
// A user may be present through several connections (tabs, devices, nodes): the store
// counts connections per user, so that first reports the user's first connection in a
// channel (cluster-wide) and last reports the last one. That is what member_added and
// member_removed are decided on.
//
// Each Store value belongs to one node (its NodeID); the entries it adds are owned by that
// node, so that a cluster implementation can remove a crashed node's entries. Channel
// names are opaque (the hub prefixes them with the app id). Count must not read all
// members (implementations keep a counter).
//
// Every method checks ctx at entry, so a cancelled context fails fast with an error that
// wraps ctx.Err(). Methods may do network I/O; callers must not call them from an epoll
// loop.
type Store interface {
	// Add records connection connID as member m of channel. If the user is not yet
	// present and the channel already has maxMembers users (maxMembers > 0), it returns
	// ErrFull and records nothing; another connection of a present user is always
	// accepted. first is true when this is the user's first connection in the channel.
	// Adding the same connID twice is a no-op (first=false). The store keeps its own
	// copy of m.Info.
	Add(ctx context.Context, channel, connID string, m Member, maxMembers int) (first bool, err error)
	// Remove forgets connection connID of userID in channel, whichever node added it.
	// last is true when the user has no connection left there. Removing an unknown
	// connection returns last=false.
	Remove(ctx context.Context, channel, connID, userID string) (last bool, err error)
	// Members lists the distinct users of channel, each with the info of one of its
	// connections, in no particular order. The caller owns the returned slices.
	Members(ctx context.Context, channel string) ([]Member, error)
	// Count is the number of distinct users in channel.
	Count(ctx context.Context, channel string) (int, error)
	// Close releases this node's store; later calls on it, Close included, return
	// ErrClosed.
	Close() error
}
