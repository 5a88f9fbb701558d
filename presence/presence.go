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
	// ErrUnavailable is returned while a network engine cannot reach its server; the
	// call did nothing that the engine will not undo or redo by itself.
	ErrUnavailable = errors.New("presence: store unavailable")
	// ErrNodeIDInUse is returned by a cluster engine's constructor when a live node of
	// the cluster already has the requested node id.
	ErrNodeIDInUse = errors.New("presence: node id in use by a live node")
)

// Member is one user present in a channel, as the app's channel_data described it.
type Member struct {
	UserID string          `json:"user_id"`
	Info   json.RawMessage `json:"user_info,omitempty"` // raw JSON, never re-encoded; nil when absent
}

// Departure is a user who left a presence channel without its node saying so: the
// entries of a dead node were removed, or a removal that failed was completed later.
// The node that learns of it sends member_removed.
type Departure struct {
	Channel string
	UserID  string
}

// ChannelCount is a channel and a number of subscriptions to it.
type ChannelCount struct {
	Channel string
	Count   int
}

// Transition is a channel whose cluster-wide subscription count went from zero to more
// (Occupied) or back to zero (!Occupied). Exactly one node learns of each (the one whose
// report caused it), so that it alone sends channel_occupied or channel_vacated.
//
// A vacancy is only settled after the departure grace (DepartureGrace, 3 s by
// default): the node that learned of it asks ConfirmVacated then, and sends
// channel_vacated only if the channel stayed empty. An occupation within the grace of a
// vacancy is Returned: the two cancel out, and neither webhook is sent (a page reload
// must not flap a channel).
type Transition struct {
	App      string
	Channel  string
	Occupied bool
	Returned bool // Occupied within the departure grace of the channel's vacancy
	// Vacated: Occupied, and the channel's vacancy was still pending past the grace
	// (its ConfirmVacated had not run yet): the vacancy stood, and this node sends
	// channel_vacated before channel_occupied (ConfirmVacated then says false).
	Vacated bool
}

// Report is what SetSubscriptions reports.
type Report struct {
	// Transitions are the channels whose cluster-wide count went from or to zero.
	Transitions []Transition
	// Counts are the cluster-wide counts, after the report, of the channels whose
	// count on this node it changed (what pusher_internal:subscription_count says).
	Counts []ChannelCount
}

// Joined is what Join reports.
type Joined struct {
	// First is true for the user's first connection in the channel (cluster-wide):
	// member_added.
	First bool
	// Returned is true when First and the user left the channel less than the
	// departure grace ago: its departure is not settled yet, and the two cancel out
	// for webhooks (clients still hear member_added, as they heard member_removed).
	Returned bool
	// Departed is true when First and the user's departure was still pending past the
	// grace (its ConfirmDeparture had not run yet): the departure stood, and this node
	// sends member_removed before member_added (ConfirmDeparture then says false).
	Departed bool
	// Members are the channel's members with the new connection recorded.
	Members []Member
}

// Node is a live node of the cluster.
type Node struct {
	// ID is the node part of the socket ids it gives out.
	ID uint32 `json:"id"`
	// Name is unique for the node's lifetime (the id with an incarnation), so that a
	// restarted node is never taken for its former self.
	Name string `json:"name"`
}

// Handler receives what a Store learns on its own. The node (the hub) implements it;
// its methods may be called from the store's goroutines and must not block for long.
type Handler interface {
	// HandleDepartures gets users who left channels because a node's entries were
	// removed for it (it died, or its removal failed and was retried): the node
	// sends member_removed for each. Exactly one node of the cluster gets each.
	HandleDepartures(deps []Departure)
	// HandleVacated gets channels that a dead node's cleanup left empty (settled at
	// once: the node is gone). Exactly one node of the cluster gets each.
	HandleVacated(ts []Transition)
	// HandleReset says that this node's entries are no longer in the store (the
	// store lost its data, or the cluster took the node for dead while it could
	// not reach the store): the node Adds its live presence connections again and
	// reports all of its subscription counts again.
	HandleReset()
}

// Store is the cluster-wide state of a Herald cluster: who is present in which presence
// channels, how many connections subscribe to each channel, and which nodes are alive.
//
// A user may be present through several connections (tabs, devices, nodes): the store
// counts connections per user, so that first reports the user's first connection in a
// channel (cluster-wide) and last reports the last one. That is what member_added and
// member_removed are decided on.
//
// Each Store value belongs to one node; the entries it adds and the counts it reports are
// owned by that node, so that a cluster engine can remove a dead node's share. Presence
// channel names are opaque (the hub prefixes them with the app id); subscription
// counts name the app and the channel apart, so that an engine can list an app's
// channels. Count and Subscriptions must not read all members or nodes (engines keep
// counters).
//
// Every method but Nodes checks ctx at entry, so a cancelled context fails fast with an
// error that wraps ctx.Err(). Methods may do network I/O; callers must not call them from
// an epoll loop.
type Store interface {
	// Add records connection connID as member m of channel. If the user is not yet
	// present and the channel already has maxMembers users (maxMembers > 0), it returns
	// ErrFull and records nothing; another connection of a present user is always
	// accepted. first is true when this is the user's first connection in the channel.
	// Adding the same connID twice is a no-op (first=false). The store keeps its own
	// copy of m.Info. If Add fails otherwise, the store makes sure that the entry does
	// not stay (a network engine removes it later if the server may have applied it).
	Add(ctx context.Context, channel, connID string, m Member, maxMembers int) (first bool, err error)
	// Join is Add followed by Members in one step (one round trip for a network
	// engine): it also returns the channel's members as they are with the connection
	// recorded, which is what a presence subscription confirms with, and whether the
	// user returned within the departure grace. It fails as Add does, and leaves no
	// entry behind when it fails.
	Join(ctx context.Context, channel, connID string, m Member, maxMembers int) (Joined, error)
	// Remove forgets connection connID of userID in channel, whichever node added it.
	// last is true when the user has no connection left there; the departure is then
	// pending until ConfirmDeparture (a Join of the user within the departure grace
	// cancels it). Removing an unknown connection returns last=false. If Remove fails,
	// the store retries it by itself and reports the user through HandleDepartures if
	// it was the last connection.
	Remove(ctx context.Context, channel, connID, userID string) (last bool, err error)
	// ConfirmDeparture settles a departure that Remove reported (last), once the
	// departure grace has passed: it reports whether the user stayed away, so that
	// exactly one node sends member_removed's webhook, and only for a real departure.
	ConfirmDeparture(ctx context.Context, channel, userID string) (bool, error)
	// Members lists the distinct users of channel, each with the info of one of its
	// connections, in no particular order. The caller owns the returned slices.
	Members(ctx context.Context, channel string) ([]Member, error)
	// Count is the number of distinct users in channel.
	Count(ctx context.Context, channel string) (int, error)

	// SetSubscriptions reports this node's number of subscriptions to channels of app
	// (absolute numbers, so that a retry is harmless; 0 for a channel the node no
	// longer has). It returns the channels whose cluster-wide count went from or to
	// zero because of this report (vacancies are pending until ConfirmVacated), and
	// the new cluster-wide counts of the channels it changed.
	SetSubscriptions(ctx context.Context, app string, counts []ChannelCount) (Report, error)
	// ConfirmVacated settles a vacancy that SetSubscriptions reported, once the
	// departure grace has passed: it reports whether the channel stayed empty.
	ConfirmVacated(ctx context.Context, app, channel string) (bool, error)
	// Subscriptions is the cluster-wide number of subscriptions to channel of app.
	Subscriptions(ctx context.Context, app, channel string) (int, error)
	// Channels lists the channels of app with at least one subscription in the
	// cluster whose name starts with prefix ("" for all), with their counts, in no
	// particular order.
	Channels(ctx context.Context, app, prefix string) ([]ChannelCount, error)

	// Nodes lists the live nodes of the cluster as last seen; it never waits on the
	// network.
	Nodes() []Node
	// Close releases this node's store, waiting at most until ctx ends; later calls,
	// Close included, return ErrClosed. A cluster engine gives up the node's lease,
	// so that the cluster removes what the node left behind at once rather than when
	// the lease would have run out.
	Close(ctx context.Context) error
}
