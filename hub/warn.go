package hub

import "time"

// warnEvery is how often the hub logs one kind of repeated warning at most.
const warnEvery = 10 * time.Second

// Warning kinds: each is rate-limited on its own (internal/warnlimit).
const (
	warnBrokerPublish     = "broker_publish"
	warnBrokerUnsubscribe = "broker_unsubscribe"
	warnMemberEventLost   = "member_event_lost"
	warnPresenceJoin      = "presence_join"
	warnPresenceRemove    = "presence_remove"
	warnPresenceReadd     = "presence_readd"
	warnCountsReport      = "counts_report"
	warnWatchlist         = "watchlist_subscribe"
	warnControlDropped    = "control_dropped"
)
