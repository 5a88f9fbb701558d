package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/herald-rt/herald/bench/cluster"
)

// The webhooks scenario: loadgen's presence storm across the nodes, every node's app
// posting its webhooks to the receiver, and the run waiting past the departure grace
// after every client left, until the last member_removed and channel_vacated arrived.

// departureGrace is Herald's: channel_vacated and member_removed wait it out.
const departureGrace = 3 * time.Second

// Settling, after loadgen ended (every client gone): the run is settled once the grace
// and settleMin more passed, no node has an event queued, the receiver got what the
// nodes count as sent, and nothing arrived for settleQuiet; and then, if the member
// and channel events do not balance yet, once nothing arrived for settleGiveUp (all
// bounded by settleMax).
const (
	settleMin    = time.Second
	settleQuiet  = time.Second
	settleGiveUp = departureGrace + 2*time.Second
	settleMax    = departureGrace + 20*time.Second
	settlePoll   = 200 * time.Millisecond
)

// webhookFigures are the webhooks scenario's own figures.
type webhookFigures struct {
	URL string `json:"url"`

	// Over the load phase (the sampler's window): what the receiver accepted, and what
	// the nodes counted as sent (herald_webhooks_sent_total).
	EventsPerSec     float64 `json:"events_per_s"`
	RequestsPerSec   float64 `json:"requests_per_s"`
	EventsPerRequest float64 `json:"events_per_request"`
	SentPerSec       float64 `json:"sent_per_s"`

	// Whole run, once settled.
	Received hookCounts         `json:"received"`
	Sent     map[string]float64 `json:"sent_by_type"` // herald_webhooks_sent_total by event, summed over the nodes
	SentAll  float64            `json:"sent"`
	Failed   float64            `json:"failed"`  // herald_webhooks_failed_total
	Dropped  float64            `json:"dropped"` // herald_webhooks_dropped_total
	Queued   float64            `json:"queued"`  // herald_webhooks_queued at the end
	// Subscribed is the presence subscriptions loadgen saw succeed (each a new user):
	// member_added should be about that (a connection closed by the churn before its
	// subscription_succeeded arrived may still have joined).
	Subscribed uint64 `json:"loadgen_subscribed"`

	// Event → 2xx (herald_webhook_latency_seconds summed over the nodes), ms, estimated
	// from its buckets. Herald dates the channel_vacated and member_removed it settles
	// after the grace when it settles them, so the figure measures delivery (HeldCount
	// counts those types); Fast* are the quantiles of the FastCount events that took at
	// most 2.5 s, and AllWithinMs the bucket bound that every event made.
	LatencyCount  uint64  `json:"latency_count"`
	LatencyP50Ms  float64 `json:"latency_p50_ms"`
	LatencyP99Ms  float64 `json:"latency_p99_ms"`
	LatencyMeanMs float64 `json:"latency_mean_ms"`
	FastCount     uint64  `json:"fast_count"`
	FastP50Ms     float64 `json:"fast_p50_ms,omitempty"`
	FastP99Ms     float64 `json:"fast_p99_ms,omitempty"`
	HeldCount     uint64  `json:"held_count"`
	AllWithinMs   float64 `json:"all_within_ms"`
	// SlowMeanMs bounds the mean of the events over 2.5 s (the held ones, grace
	// included): the sum of the others is only known to within their buckets.
	SlowMeanMs [2]float64 `json:"slow_mean_ms_bounds"`
	// LatencyBuckets are the histogram's cumulative counts by upper bound (ms).
	LatencyBuckets []latencyBucket `json:"latency_buckets,omitempty"`

	// Request time_ms → receipt at the receiver (time_ms is whole milliseconds, so
	// these read up to 1 ms high).
	DelayP50Ms float64 `json:"time_ms_to_receipt_p50_ms"`
	DelayP99Ms float64 `json:"time_ms_to_receipt_p99_ms"`
	DelayMaxMs float64 `json:"time_ms_to_receipt_max_ms"`

	// After every client left.
	SettleSeconds       float64 `json:"settled_after_s"` // from loadgen's end
	Settled             bool    `json:"settled"`
	MemberPairs         int     `json:"member_pairs"`
	MembersUnmatched    int     `json:"members_unmatched"`
	MembersDuplicated   int     `json:"members_duplicated"`
	MembersRemovedFirst int     `json:"members_removed_first"`
	ChannelsSeen        int     `json:"channels_seen"`
	ChannelsUnbalanced  int     `json:"channels_unbalanced"`
	// ChannelCrossings are pairs of a channel's events that arrived swapped within
	// crossWindow (two nodes' requests crossing in flight); ChannelOutOfTurn the
	// events that arrived out of alternation otherwise (occupied twice, or vacated
	// while vacant).
	ChannelCrossings int     `json:"channel_event_crossings"`
	CrossingWidestMs float64 `json:"channel_crossing_widest_ms"`
	// CrossingsByTimeMS are the crossings whose requests' time_ms tell the right order.
	CrossingsByTimeMS int `json:"channel_crossings_ordered_by_time_ms"`
	ChannelOutOfTurn  int `json:"channel_events_out_of_turn"`
}

type latencyBucket struct {
	LeMs  float64 `json:"le_ms"`
	Count uint64  `json:"count"` // cumulative
}

// writeAppsFile writes the apps.json every node serves: the bench app with one
// webhook, to url, for every event type.
func writeAppsFile(dir, url string) (string, error) {
	doc := map[string]any{"apps": []any{map[string]any{
		"id": appID, "key": appKey, "secret": appSecret,
		"webhooks": []any{map[string]any{"url": url}},
	}}}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "webhooks-apps.json")
	return path, os.WriteFile(path, b, 0o600)
}

// settleWebhooks waits, from ended (loadgen's end: every client gone), until the
// webhooks settled (see settleMin), at most settleMax. It returns how long after ended
// that was and whether it settled.
func settleWebhooks(ctx context.Context, c *cluster.Cluster, rcv *receiver, ended time.Time) (time.Duration, bool) {
	for {
		now := time.Now()
		since := now.Sub(ended)
		if since >= departureGrace+settleMin {
			m, err := c.Counters(ctx)
			t := rcv.tally()
			quiet := now.Sub(t.Last)
			if err == nil && m["herald_webhooks_queued"] == 0 &&
				float64(t.Events) == m["herald_webhooks_sent_total"] && quiet >= settleQuiet &&
				(balanced(t) || quiet >= settleGiveUp) {
				return since, true
			}
		}
		if since >= settleMax || ctx.Err() != nil {
			return since, false
		}
		select {
		case <-ctx.Done():
		case <-time.After(settlePoll):
		}
	}
}

// balanced: every member added was removed, every channel occupied was vacated.
func balanced(t hookTally) bool {
	return t.ByType["member_added"] == t.ByType["member_removed"] &&
		t.ByType["channel_occupied"] == t.ByType["channel_vacated"] &&
		t.MembersUnmatched == 0 && t.ChannelsUnbalanced == 0 && t.ChannelOutOfTurn == 0
}

// webhookFigures reads the nodes' webhook metrics and the receiver's tally once the
// run settled.
func (res *result) webhookFigures(ctx context.Context, c *cluster.Cluster, rcv *receiver) error {
	w := res.Webhooks
	t := rcv.tally()
	w.Received = t.hookCounts
	w.DelayP50Ms, w.DelayP99Ms, w.DelayMaxMs = t.DelayP50, t.DelayP99, t.DelayMax
	w.MemberPairs, w.MembersUnmatched, w.MembersDuplicated, w.MembersRemovedFirst =
		t.Members, t.MembersUnmatched, t.MembersDuplicated, t.MembersRemovedFirst
	w.ChannelsSeen, w.ChannelsUnbalanced = t.Channels, t.ChannelsUnbalanced
	w.ChannelCrossings, w.ChannelOutOfTurn = t.ChannelCrossings, t.ChannelOutOfTurn
	w.CrossingWidestMs = float64(t.CrossingWidest) / float64(time.Millisecond)
	w.CrossingsByTimeMS = t.CrossingsByTimeMS

	sent, err := c.SumBy(ctx, "herald_webhooks_sent_total", "event")
	if err != nil {
		return err
	}
	w.Sent, w.SentAll = sent, 0
	for _, v := range sent {
		w.SentAll += v
	}
	m, err := c.Counters(ctx)
	if err != nil {
		return err
	}
	w.Failed, w.Dropped, w.Queued = m["herald_webhooks_failed_total"], m["herald_webhooks_dropped_total"], m["herald_webhooks_queued"]

	h, err := c.Histogram(ctx, "herald_webhook_latency_seconds")
	if err != nil {
		return err
	}
	ms := func(s float64) float64 { return s * 1000 }
	w.LatencyCount = h.Count
	w.LatencyP50Ms, w.LatencyP99Ms = ms(h.Quantile(0.50)), ms(h.Quantile(0.99))
	if h.Count > 0 {
		w.LatencyMeanMs = ms(h.Sum / float64(h.Count))
	}
	w.HeldCount = t.ByType["member_removed"] + t.ByType["channel_vacated"]
	if n := h.CountAtMost(2.5); n > 0 {
		w.FastCount = uint64(n)
		w.FastP50Ms, w.FastP99Ms = ms(h.QuantileBelow(0.50, w.FastCount)), ms(h.QuantileBelow(0.99, w.FastCount))
		if slow := h.Count - w.FastCount; slow > 0 {
			lo, hi := h.SumAtMost(2.5)
			w.SlowMeanMs = [2]float64{ms((h.Sum - hi) / float64(slow)), ms((h.Sum - lo) / float64(slow))}
		}
	}
	for i, b := range h.Bounds {
		w.LatencyBuckets = append(w.LatencyBuckets, latencyBucket{ms(b), h.Cum[i]})
		if h.Cum[i] == h.Count && w.AllWithinMs == 0 {
			w.AllWithinMs = ms(b)
		}
	}
	for _, f := range []*float64{&w.LatencyP50Ms, &w.LatencyP99Ms} {
		if math.IsNaN(*f) {
			*f = 0
		}
	}
	return nil
}

// checkWebhooks records what a clean webhooks run must show.
func (res *result) checkWebhooks() {
	w := res.Webhooks
	if w == nil {
		return
	}
	fail := func(format string, a ...any) { res.Failed = append(res.Failed, fmt.Sprintf(format, a...)) }
	r := w.Received
	if !w.Settled {
		fail("webhooks did not settle within %.0f s after every client left (queued %.0f, received %d, sent %.0f)",
			w.SettleSeconds, w.Queued, r.Events, w.SentAll)
	}
	if r.ByType["member_added"] == 0 || r.ByType["channel_occupied"] == 0 {
		fail("no member_added or channel_occupied webhook received")
	}
	if float64(r.Events) != w.SentAll {
		fail("received %d webhook events, the nodes count %.0f sent", r.Events, w.SentAll)
	}
	for _, k := range slices.Sorted(maps.Keys(w.Sent)) {
		if float64(r.ByType[k]) != w.Sent[k] {
			fail("%s: received %d, the nodes count %.0f sent", k, r.ByType[k], w.Sent[k])
		}
	}
	if w.Failed != 0 || w.Dropped != 0 {
		fail("herald_webhooks_failed_total %.0f, herald_webhooks_dropped_total %.0f", w.Failed, w.Dropped)
	}
	if r.BadSignature != 0 || r.BadKey != 0 || r.BadBody != 0 {
		fail("requests refused by the receiver: %d bad signature, %d bad key, %d bad body", r.BadSignature, r.BadKey, r.BadBody)
	}
	if a, d := r.ByType["member_added"], r.ByType["member_removed"]; a != d || w.MembersUnmatched != 0 {
		fail("member_added %d, member_removed %d: %d of %d (channel, user) pairs without exactly one of each (%d duplicated)",
			a, d, w.MembersUnmatched, w.MemberPairs, w.MembersDuplicated)
	}
	if o, v := r.ByType["channel_occupied"], r.ByType["channel_vacated"]; o != v || w.ChannelsUnbalanced != 0 {
		fail("channel_occupied %d, channel_vacated %d: %d of %d channels occupied and vacated a different number of times",
			o, v, w.ChannelsUnbalanced, w.ChannelsSeen)
	}
	if w.ChannelOutOfTurn != 0 {
		fail("%d channel_occupied or channel_vacated out of turn (a channel occupied twice, or vacated while vacant, beyond %v of crossing)",
			w.ChannelOutOfTurn, crossWindow)
	}
}
