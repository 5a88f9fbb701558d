package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-rt/herald/loadgen"
)

// receiver is the webhook endpoint of the webhooks scenario: an HTTP server on
// 127.0.0.1 that every node's app posts its webhooks to. It checks each request as a
// Pusher app's backend would (X-Pusher-Key is the app key, X-Pusher-Signature the hex
// HMAC-SHA256 of the raw body with the app secret), answers 200 at once, and counts:
// requests and events by type; the delay from the request's time_ms to its receipt;
// every member event by (channel, user_id), so that a lost, duplicated or unmatched
// member_added or member_removed shows; and each channel's channel_occupied and
// channel_vacated.
//
// Concurrency: the server's handlers run on net/http's goroutines and update the
// figures under mu (requests and events also in atomics, which the sampler reads
// without the lock). Close stops the server and waits for Serve to return.
type receiver struct {
	key    string
	secret []byte
	ln     net.Listener
	srv    *http.Server
	served chan struct{} // closed when Serve returned

	requests, events atomic.Uint64 // accepted requests (signature valid) and their events

	mu      sync.Mutex
	counts  hookCounts
	last    time.Time          // receipt of the latest request
	delay   *loadgen.Histogram // request time_ms → receipt
	members map[memberKey]*memberSeen
	chans   map[string]*channelSeen
}

// hookCounts are what the receiver saw over the whole run.
type hookCounts struct {
	Requests uint64            `json:"requests"`
	Events   uint64            `json:"events"`
	ByType   map[string]uint64 `json:"by_type"`
	// BadSignature counts requests whose X-Pusher-Signature did not match (their
	// events are not counted), BadKey those with another X-Pusher-Key, BadBody those
	// that were not a POST of {"time_ms":…,"events":[…]} with a known event type.
	BadSignature uint64 `json:"bad_signature"`
	BadKey       uint64 `json:"bad_key"`
	BadBody      uint64 `json:"bad_body"`
}

type memberKey struct{ channel, user string }

// memberSeen is how many times one user's member_added and member_removed arrived in
// one channel, and whether a removal arrived before the addition.
type memberSeen struct {
	added, removed uint32
	removedFirst   bool
}

// channelSeen is one channel's occupied and vacated events in the order they arrived.
type channelSeen struct {
	occupied, vacated uint32
	events            []channelEvent
}

type channelEvent struct {
	at       time.Time
	timeMS   int64 // the request's time_ms
	occupied bool
}

// crossWindow is how far apart two events of a channel may arrive and still be taken
// for requests of two nodes that crossed in flight (a vacancy settled by one node, the
// next occupation reported by another): each node batches for up to 250 ms.
const crossWindow = time.Second

// alternation walks a channel's events in arrival order, which must alternate
// occupied, vacated, occupied, ... An event out of turn followed within crossWindow by
// one of the other kind is a crossing (the pair, swapped, is in turn); any other is
// out of turn: a channel occupied twice, or vacated while the receiver had it vacant.
// widest is the longest time between the two events of a crossing; byTimeMS counts the
// crossings whose requests' time_ms put them in turn (a receiver that orders by
// time_ms sees them in the right order).
func (c *channelSeen) alternation() (crossed, outOfTurn int, widest time.Duration, byTimeMS int) {
	open := false
	for i := 0; i < len(c.events); i++ {
		e := c.events[i]
		if e.occupied != open {
			open = e.occupied
			continue
		}
		if i+1 < len(c.events) && c.events[i+1].occupied != e.occupied && c.events[i+1].at.Sub(e.at) <= crossWindow {
			crossed++
			widest = max(widest, c.events[i+1].at.Sub(e.at))
			if c.events[i+1].timeMS < e.timeMS {
				byTimeMS++
			}
			i++
			continue
		}
		outOfTurn++
	}
	return crossed, outOfTurn, widest, byTimeMS
}

// hookBody is a webhook request's body.
type hookBody struct {
	TimeMS int64 `json:"time_ms"`
	Events []struct {
		Name    string `json:"name"`
		Channel string `json:"channel"`
		UserID  string `json:"user_id"`
	} `json:"events"`
}

// hookTypes are the event types Herald sends.
var hookTypes = map[string]bool{
	"channel_occupied": true, "channel_vacated": true, "member_added": true, "member_removed": true,
	"client_event": true, "cache_miss": true, "subscription_count": true,
}

// startReceiver listens on a free port of 127.0.0.1 and serves /hooks.
func startReceiver(key, secret string) (*receiver, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{
		key: key, secret: []byte(secret), ln: ln, served: make(chan struct{}),
		counts:  hookCounts{ByType: map[string]uint64{}},
		delay:   loadgen.NewHistogram(),
		members: map[memberKey]*memberSeen{},
		chans:   map[string]*channelSeen{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hooks", r.handle)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	go func() {
		defer close(r.served)
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

// URL is where the apps post their webhooks.
func (r *receiver) URL() string { return "http://" + r.ln.Addr().String() + "/hooks" }

// Close stops the server at once (the nodes are stopped by then) and waits for it.
func (r *receiver) Close() {
	_ = r.srv.Close()
	<-r.served
}

const maxHookBody = 1 << 20

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxHookBody+1))
	now := time.Now()
	if err != nil || req.Method != http.MethodPost || len(body) > maxHookBody {
		r.bad(func(c *hookCounts) { c.BadBody++ })
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if req.Header.Get("X-Pusher-Key") != r.key {
		r.bad(func(c *hookCounts) { c.BadKey++ })
		http.Error(w, "unknown key", http.StatusUnauthorized)
		return
	}
	if !validSignature(r.secret, body, req.Header.Get("X-Pusher-Signature")) {
		r.bad(func(c *hookCounts) { c.BadSignature++ })
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b hookBody
	if err := json.Unmarshal(body, &b); err != nil || b.TimeMS <= 0 {
		r.bad(func(c *hookCounts) { c.BadBody++ })
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	for _, ev := range b.Events {
		if !hookTypes[ev.Name] {
			r.bad(func(c *hookCounts) { c.BadBody++ })
			http.Error(w, "unknown event type", http.StatusBadRequest)
			return
		}
	}
	r.record(&b, now)
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) bad(f func(*hookCounts)) {
	r.mu.Lock()
	f(&r.counts)
	r.mu.Unlock()
}

// record counts one valid request received at now.
func (r *receiver) record(b *hookBody, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.Requests++
	r.counts.Events += uint64(len(b.Events))
	r.last = now
	r.delay.Record(now.Sub(time.UnixMilli(b.TimeMS)))
	for _, ev := range b.Events {
		r.counts.ByType[ev.Name]++
		switch ev.Name {
		case "member_added", "member_removed":
			k := memberKey{ev.Channel, ev.UserID}
			m := r.members[k]
			if m == nil {
				m = &memberSeen{}
				r.members[k] = m
			}
			if ev.Name == "member_added" {
				m.added++
			} else {
				m.removed++
				m.removedFirst = m.removedFirst || m.added == 0
			}
		case "channel_occupied", "channel_vacated":
			c := r.chans[ev.Channel]
			if c == nil {
				c = &channelSeen{}
				r.chans[ev.Channel] = c
			}
			occupied := ev.Name == "channel_occupied"
			if occupied {
				c.occupied++
			} else {
				c.vacated++
			}
			c.events = append(c.events, channelEvent{now, b.TimeMS, occupied})
		}
	}
	r.requests.Add(1)
	r.events.Add(uint64(len(b.Events)))
}

// validSignature reports whether sig is the hex HMAC-SHA256 of body with secret.
func validSignature(secret, body []byte, sig string) bool {
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// hookTally is the receiver's figures once the run settled.
type hookTally struct {
	hookCounts
	Last time.Time
	// DelayP50, DelayP99 and DelayMax are request time_ms → receipt, in ms.
	DelayP50, DelayP99, DelayMax float64
	// Members is the number of (channel, user) pairs seen; MembersUnmatched those
	// without exactly one member_added and one member_removed; MembersDuplicated the
	// pairs with either twice or more; MembersRemovedFirst those whose removal
	// arrived before their addition.
	Members, MembersUnmatched, MembersDuplicated, MembersRemovedFirst int
	// Channels is the number of channels with occupied or vacated events;
	// ChannelsUnbalanced those whose occupied and vacated counts differ;
	// ChannelCrossings and ChannelOutOfTurn are their events' crossings and
	// arrivals out of turn (channelSeen.alternation), CrossingWidest the longest
	// time between the two events of a crossing, CrossingsByTimeMS the crossings
	// that the requests' time_ms put in the right order.
	Channels, ChannelsUnbalanced, ChannelCrossings, ChannelOutOfTurn, CrossingsByTimeMS int
	CrossingWidest                                                                      time.Duration
}

func (r *receiver) tally() hookTally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := hookTally{hookCounts: r.counts, Last: r.last, Members: len(r.members), Channels: len(r.chans)}
	t.ByType = maps.Clone(r.counts.ByType)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if r.delay.Count() > 0 {
		t.DelayP50, t.DelayP99, t.DelayMax = ms(r.delay.Quantile(0.50)), ms(r.delay.Quantile(0.99)), ms(r.delay.Max())
	}
	for _, m := range r.members {
		if m.added != 1 || m.removed != 1 {
			t.MembersUnmatched++
		}
		if m.added > 1 || m.removed > 1 {
			t.MembersDuplicated++
		}
		if m.removedFirst {
			t.MembersRemovedFirst++
		}
	}
	for _, c := range r.chans {
		if c.occupied != c.vacated {
			t.ChannelsUnbalanced++
		}
		crossed, out, widest, byTimeMS := c.alternation()
		t.ChannelCrossings += crossed
		t.CrossingsByTimeMS += byTimeMS
		t.ChannelOutOfTurn += out
		t.CrossingWidest = max(t.CrossingWidest, widest)
	}
	return t
}
