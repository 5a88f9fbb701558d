package hub

import (
	"strconv"
	"strings"
	"time"

	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/webhook"
)

// Subscription counts told to subscribers (an app's "subscription_count": true;
// PUSHER.md §1.12): when the cluster-wide count of a non-presence channel changes, its
// subscribers get pusher_internal:subscription_count (pusher-js surfaces it as
// pusher:subscription_count) and the app's webhooks get subscription_count.
//
// The node whose count report changed the total announces it, through the broker, so
// that every node's subscribers hear it. Announcements from different nodes are not
// ordered with each other: a webhook receiver may get a channel's counts out of order
// across nodes (the REST API's subscription_count is always the current one). A count
// of zero is not announced: nobody is left to hear it, and channel_vacated tells the
// app after the grace. Counts of up to throttleAbove subscribers are
// announced at each change (reports are at least countsEvery apart); above, a channel
// is announced at most once per throttleEvery per node, and the last change of a quiet
// window is announced when the window ends, so that the count subscribers last heard is
// never stale for long. Only the countSync goroutine touches announcer's state.

const (
	throttleAbove = 100
	throttleEvery = 30 * time.Second
)

// announcer is the throttle state of the channels this node announced.
type announcer struct {
	last     map[string]time.Time // channel key → when last announced (throttled channels only)
	trailing map[string]*appState // channel key → a change not announced yet
}

// wantsCounts reports whether app a hears about subscription counts at all: the
// subscription_count webhook too comes only with the app's subscription_count.
func (h *Hub) wantsCounts(a *appState) bool { return a.conf().SubscriptionCount }

// announceCounts announces the counts a report changed (countSync goroutine).
func (s *countSync) announceCounts(a *appState, counts []presence.ChannelCount) {
	h := s.h
	if !h.wantsCounts(a) {
		return
	}
	now := time.Now()
	for _, c := range counts {
		if internalChannel(c.Channel) || strings.HasPrefix(c.Channel, "presence-") {
			continue // presence channels have user counts and member events instead
		}
		if c.Count == 0 {
			// Nobody is left to tell, and channel_vacated (after the grace) says it
			// to the app: a page reload does not post 0 then 1.
			delete(s.ann.last, channelKey(a, c.Channel))
			delete(s.ann.trailing, channelKey(a, c.Channel))
			continue
		}
		key := channelKey(a, c.Channel)
		if c.Count > throttleAbove {
			if last, ok := s.ann.last[key]; ok && now.Sub(last) < throttleEvery {
				s.ann.trailing[key] = a
				continue
			}
			s.ann.last[key] = now
		} else {
			delete(s.ann.last, key)
		}
		delete(s.ann.trailing, key)
		h.announceCount(a, c.Channel, c.Count)
	}
}

// announceTrailing announces the throttled changes whose window has ended, with the
// count as it is now; it returns how long until the next window ends (0: none waits).
func (s *countSync) announceTrailing() time.Duration {
	if len(s.ann.trailing) == 0 && len(s.ann.last) == 0 {
		return 0
	}
	h := s.h
	now := time.Now()
	var next time.Duration
	for key, a := range s.ann.trailing {
		wait := throttleEvery - now.Sub(s.ann.last[key])
		if wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		name := key[len(a.id)+1:]
		ctx, cancel := h.opContext()
		n, err := h.presence.Subscriptions(ctx, a.id, name)
		cancel()
		if err != nil {
			h.metrics.storeError()
			continue // the next pass tries again
		}
		delete(s.ann.trailing, key)
		s.ann.last[key] = now
		h.announceCount(a, name, n)
	}
	if len(s.ann.last) > 4*len(s.ann.trailing)+1024 { // forget quiet channels
		for key, at := range s.ann.last {
			if now.Sub(at) >= throttleEvery && s.ann.trailing[key] == nil {
				delete(s.ann.last, key)
			}
		}
	}
	return next
}

// announceCount tells channel's subscribers on every node, and the app's webhooks,
// that the channel has n subscriptions.
func (h *Hub) announceCount(a *appState, name string, n int) {
	h.hook(a, webhook.Event{Name: webhook.SubscriptionCount, Channel: name, SubscriptionCount: n})
	data := strconv.AppendInt([]byte(`{"subscription_count":`), int64(n), 10)
	env := h.envelope(eventJSON(nil, "pusher_internal:subscription_count", name, stringData(append(data, '}')), ""), 0, 0)
	key := channelKey(a, name)
	h.ops.submit(key, true, func() { h.publishAsync(a, key, env, "subscription_count_unpublished") })
}
