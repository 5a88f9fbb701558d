package hub

import (
	"time"
)

// Hub is one Herald node's Pusher protocol engine.
type Hub struct {
	clock func() time.Time
}
