package loadgen

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Stats is what a Pool measured. Its JSON form (histograms in the HdrHistogram V2
// compressed format) lets separate processes merge their figures exactly.
type Stats struct {
	Counts Counts `json:"counts"`
	// Connect is the time from socket() to pusher:connection_established.
	Connect *Histogram `json:"connect"`
	// Latency is publish-to-receive: receive time minus the payload's timestamp, for
	// every sequenced delivery.
	Latency *Histogram `json:"latency"`
	// Events counts every channel event received, sequenced or not.
	Events int64 `json:"events"`
	// Delivered counts sequenced events received, duplicates included.
	Delivered int64 `json:"delivered"`
	// Duplicates counts sequenced events a connection had already received.
	Duplicates int64 `json:"duplicates"`
	// Reordered counts sequenced events that arrived after a later one.
	Reordered int64 `json:"reordered"`
	// Missing: see Pool.Stats.
	Missing int64 `json:"missing"`
	// Members counts pusher_internal:member_added and member_removed events received.
	Members int64 `json:"members,omitempty"`
	// MembersAdded counts pusher_internal:member_added events received (so
	// member_removed is Members − MembersAdded).
	MembersAdded int64 `json:"members_added,omitempty"`
	// MemberLatency is join-to-member_added: receive time minus the join time the
	// member's user_info carries (MemberTimestampKey), for every member_added that
	// has one.
	MemberLatency *Histogram `json:"member_latency,omitempty"`
	// Reasons counts why connections failed or closed, and errors the server sent:
	// "close_<code>", "eof", "handshake_timeout", "connect_<errno>",
	// "pusher_error_<code>", "subscription_error", ...
	Reasons map[string]int64 `json:"reasons"`
}

func newStats() *Stats {
	return &Stats{Connect: NewHistogram(), Latency: NewHistogram(), MemberLatency: NewHistogram(), Reasons: map[string]int64{}}
}

// Merge adds o's figures to s (counts included), as when combining the Stats of
// several worker processes.
func (s *Stats) Merge(o *Stats) error {
	s.Counts.add(o.Counts)
	return s.merge(o)
}

// merge adds everything but Counts.
func (s *Stats) merge(o *Stats) error {
	if err := s.Connect.Merge(o.Connect); err != nil {
		return err
	}
	if err := s.Latency.Merge(o.Latency); err != nil {
		return err
	}
	if o.MemberLatency != nil {
		if err := s.MemberLatency.Merge(o.MemberLatency); err != nil {
			return err
		}
	}
	s.Events += o.Events
	s.Delivered += o.Delivered
	s.Duplicates += o.Duplicates
	s.Reordered += o.Reordered
	s.Missing += o.Missing
	s.Members += o.Members
	s.MembersAdded += o.MembersAdded
	for k, v := range o.Reasons {
		s.Reasons[k] += v
	}
	return nil
}

// UnmarshalJSON fills s, allocating its histograms.
func (s *Stats) UnmarshalJSON(b []byte) error {
	type plain Stats
	n := plain(*newStats())
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%w: stats: %w", ErrHistogram, err)
	}
	*s = Stats(n)
	if s.Connect == nil {
		s.Connect = NewHistogram()
	}
	if s.Latency == nil {
		s.Latency = NewHistogram()
	}
	if s.MemberLatency == nil {
		s.MemberLatency = NewHistogram() // from a worker that predates it
	}
	if s.Reasons == nil {
		s.Reasons = map[string]int64{}
	}
	return nil
}

// ReasonsString lists the reasons sorted by name, "" when there are none.
func (s *Stats) ReasonsString() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.Reasons)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, s.Reasons[k])
	}
	return b.String()
}

// Sub returns s − o, where o is an earlier snapshot of the same Pool's Stats: the
// exact figures of the interval between them (histograms included; see
// Histogram.Sub).
func (s *Stats) Sub(o *Stats) (*Stats, error) {
	d := newStats()
	// A histogram that recorded nothing since o leaves its delta empty: skipping the
	// copy and the subtraction matters, because a worker takes a delta every second and
	// in a hold (no publishes, ramp over) neither histogram moves.
	for _, p := range []struct{ dst, cur, old *Histogram }{{d.Connect, s.Connect, o.Connect}, {d.Latency, s.Latency, o.Latency},
		{d.MemberLatency, s.MemberLatency, o.MemberLatency}} {
		if p.cur.Count() == p.old.Count() {
			continue
		}
		if err := p.dst.Merge(p.cur); err != nil {
			return nil, err
		}
		if err := p.dst.Sub(p.old); err != nil {
			return nil, err
		}
	}
	d.Counts = Counts{
		Dialed:      s.Counts.Dialed - o.Counts.Dialed,
		Established: s.Counts.Established - o.Counts.Established,
		Subscribed:  s.Counts.Subscribed - o.Counts.Subscribed,
		Failed:      s.Counts.Failed - o.Counts.Failed,
		Closed:      s.Counts.Closed - o.Counts.Closed,
	}
	d.Events = s.Events - o.Events
	d.Delivered = s.Delivered - o.Delivered
	d.Duplicates = s.Duplicates - o.Duplicates
	d.Reordered = s.Reordered - o.Reordered
	d.Missing = s.Missing - o.Missing
	d.Members = s.Members - o.Members
	d.MembersAdded = s.MembersAdded - o.MembersAdded
	for k, v := range s.Reasons {
		if v -= o.Reasons[k]; v != 0 {
			d.Reasons[k] = v
		}
	}
	return d, nil
}
