package transport

import "sync/atomic"

// Stats are the transport's counters, safe to read at any time.
type Stats struct {
	Accepted        uint64 // TCP connections accepted
	Upgraded        uint64 // WebSocket handshakes completed
	HandshakeFailed uint64 // handshakes answered with an HTTP error or timed out
	HTTPRequests    uint64 // connections handed to the HTTP handler
	Open            int64  // WebSocket connections open now
	BytesIn         uint64
	BytesOut        uint64
	FramesIn        uint64
	FramesOut       uint64
	MailboxDropped  uint64            // fan-out jobs dropped because a loop's mailbox was full
	Closed          map[string]uint64 // closes by CloseReason.Label
}

// counters belong to one loop: only that loop writes them (load+store, no locked
// read-modify-write on the hot path, no cache line shared between loops); Stats
// reads them with atomic loads.
type counters struct {
	accepted, upgraded, hsFailed, httpReqs atomic.Uint64
	bytesIn, bytesOut, framesIn, framesOut atomic.Uint64
	open                                   atomic.Int64
	_                                      [64]byte // keep the next loop's counters off this cache line
}

// bump adds n to a counter that only the calling loop writes.
func bump(v *atomic.Uint64, n uint64) { v.Store(v.Load() + n) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{MailboxDropped: s.mailboxDropped.Load(), Closed: map[string]uint64{}}
	for _, l := range s.loops {
		c := &l.st
		st.Accepted += c.accepted.Load()
		st.Upgraded += c.upgraded.Load()
		st.HandshakeFailed += c.hsFailed.Load()
		st.HTTPRequests += c.httpReqs.Load()
		st.Open += c.open.Load()
		st.BytesIn += c.bytesIn.Load()
		st.BytesOut += c.bytesOut.Load()
		st.FramesIn += c.framesIn.Load()
		st.FramesOut += c.framesOut.Load()
	}
	s.closed.Range(func(k, v any) bool {
		st.Closed[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return st
}

// countClosed counts one close under its label. Labels are few; after the first
// close of a label this is a lock-free map read and one atomic add.
func (s *Server) countClosed(label string) {
	v, ok := s.closed.Load(label)
	if !ok {
		v, _ = s.closed.LoadOrStore(label, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}
